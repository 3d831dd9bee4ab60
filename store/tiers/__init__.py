"""A table's two tiers and the protocol between them: raw-cell scans (:mod:`.raw_scans`), chunk
runs (:mod:`.chunk_runs`), the per-user metadata protocol (:mod:`.user_meta`), what reads see
of both (:mod:`.view`), compaction, retention, and the audit of stored copies
(:mod:`.stored_events`).

May import :mod:`store.table`, :mod:`store.io`, :mod:`store.format` and :mod:`store.errors`;
never :mod:`store.inputs` or the verbs.
"""

from store.tiers.compaction import SKIPPED_NAMED, CompactionStats
from store.tiers.stored_events import CHUNK, COPIES, RAW, Copies, Resolved, resolve

__all__ = ["CHUNK", "COPIES", "RAW", "SKIPPED_NAMED", "CompactionStats", "Copies", "Resolved", "resolve"]
