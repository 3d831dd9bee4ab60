"""One table: its settings (:mod:`.spec`), its registration and DDL in ``seqstore_meta``
(:mod:`.registry`), the handle the store's modules take (:mod:`.handle`), the decoded chunks
its reads keep (:mod:`.chunk_cache`) and what jobs record about it (:mod:`.job_records`).

May import :mod:`store.format`, :mod:`store.io` and :mod:`store.errors`.
"""

from store.table.chunk_cache import CacheStats, ChunkCache
from store.table.handle import TableHandle
from store.table.registry import Registration
from store.table.spec import TableSpec

__all__ = ["CacheStats", "ChunkCache", "Registration", "TableHandle", "TableSpec"]
