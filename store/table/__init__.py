"""One table: its settings (:mod:`.spec`), its registration and DDL in ``seqstore_meta``
(:mod:`.registry`), the handle the store's modules take (:mod:`.handle`) and what jobs
record about it (:mod:`.job_records`).

May import :mod:`store.format`, :mod:`store.io` and :mod:`store.errors`.
"""

from store.table.handle import TableHandle
from store.table.registry import Registration
from store.table.spec import TableSpec

__all__ = ["Registration", "TableHandle", "TableSpec"]
