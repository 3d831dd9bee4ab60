"""What callers hand in: event rows — conformed to a schema, each rejected one with a
:class:`Reason` (:mod:`.rows`) — and read requests (:mod:`.requests`).

May import :mod:`store.format` and :mod:`store.errors`.
"""

from store.inputs.requests import Requests, check_times, normalize, request_table, user_ids
from store.inputs.rows import QUARANTINE_SCHEMA, Reason, conform

__all__ = ["QUARANTINE_SCHEMA", "Reason", "Requests", "check_times", "conform", "normalize", "request_table",
           "user_ids"]
