"""Retention by count: keep each user's newest ``max_events_per_user`` events.

Meaning: an event is *trimmed* once ``max_events_per_user`` newer events (by
``(event_ts, event_id)``) of the same user are stored. The writer trims the users it
touched after each chunk: it records the user's watermark — the ``(event_ts, event_id)`` of
the oldest event kept — and then deletes the older cells. Readers skip everything below
the watermark, so a trimmed event is never returned, even by a read racing the deletes
(the reader reads the watermark again after its scan).

History: a trim deletes for good. A read "as of" a past time may therefore see fewer events
than a read made at that time; :func:`store.reader.read_sequences` flags such rows
(``history_complete`` False). The watermark cell is stamped with its event time, so of two
concurrent trims the one with the newer watermark wins (within one millisecond, the later write).

(Retention by age is the events family's TTL: the cell timestamp is the event time, so
HBase itself hides and drops events older than ``ttl_days``.)
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from store.format import keys
from store.format.chunk import chunk_key, first_qualifier_before
from store.format.keys import CHUNKS, EVENTS
from store.format.visibility import Mark, below
from store.io.calls import KEY_ONLY, all_of, columns_from, delete_multiple
from store.io.connection import idl
from store.io.scanning import scan_results
from store.tiers import user_meta
from store.tiers.view import TierView

if TYPE_CHECKING:
    from store.table.handle import TableHandle

SCAN_ROWS = 64
TRIM_USERS = 256  # users gathered at a time: bounds memory to TRIM_USERS x max_events_per_user events


def trim(table: TableHandle, users: Iterable[str | bytes]) -> int:
    """Trim each user to the table's ``max_events_per_user``; returns events deleted.

    The tier view (:class:`store.tiers.view.TierView`, what reads see) finds each user's
    ``keep``-th newest event, for :data:`TRIM_USERS` users at a time;
    where older events exist, its ``(event_ts, event_id)`` becomes the watermark, then the raw
    cells below it and the chunks wholly below it are deleted. A chunk straddling it keeps its
    older events until compaction rewrites it; reads skip them. Idempotent; safe to re-run.
    """
    keep = table.spec.max_events_per_user
    users = list(dict.fromkeys(users))
    if keep is None or not users:
        return 0
    view = TierView(table, max_len=keep)
    deleted = 0
    with ThreadPoolExecutor(max_workers=table.pool.size, thread_name_prefix="seqstore-trim") as ex:
        for start in range(0, len(users), TRIM_USERS):
            some = users[start : start + TRIM_USERS]
            found = view.gather(ex, some, [keys.MAX_TS] * len(some))
            ts, eid = found.events.column("event_ts"), found.events.column("event_id")
            full = [(u, (ts[int(p[-1])].as_py(), eid[int(p[-1])].as_py()))
                    for u, p in zip(some, found.picks, strict=True) if len(p) == keep]
            deleted += sum(ex.map(lambda um: _trim_user(table, *um), full))
    return deleted


def _trim_user(table: TableHandle, user: str | bytes, mark: Mark) -> int:
    """Delete what lies below ``mark`` (the user's oldest kept event), watermark first."""
    t = idl()
    prefix = keys.user_prefix(user, table.spec.salt_buckets)
    raw: dict[bytes, list[Any]] = {}
    n_raw = 0
    start = keys.scan_start(prefix, keys.bucket_of(mark[0], table.spec.bucket_ms))
    scan = t.TScan(startRow=start, stopRow=keys.prefix_end(prefix), columns=[t.TColumn(family=EVENTS)],
                   maxVersions=1, batchSize=1000, timeRange=t.TTimeRange(minStamp=0, maxStamp=mark[0] + 1),
                   filterString=KEY_ONLY)
    for result in scan_results(table.pool, table.name_bytes, scan, SCAN_ROWS):
        for cv in result.columnValues:
            if below(keys.parse_qualifier(cv.qualifier), mark):
                raw.setdefault(result.row, []).append(
                    t.TColumn(family=EVENTS, qualifier=cv.qualifier, timestamp=cv.timestamp))
                n_raw += 1
    chunks = _chunks_below(table, prefix, mark) if table.spec.chunk_events is not None else []
    if not raw and not chunks:
        return 0
    user_meta.put_watermark(table, prefix, mark)  # watermark first, deletes after
    deleted = 0
    rows = list(raw.items())
    for i in range(0, len(rows), 100):
        deleted += _delete(table, dict(rows[i : i + 100]))
    whole = [c for c in chunks if c.newest_ts < mark[0]]
    if whole:
        cols = [t.TColumn(family=CHUNKS, qualifier=c.qualifier, timestamp=c.newest_ts) for c in whole]
        _delete(table, {prefix: cols})
        deleted += sum(c.events for c in whole)
    return deleted


def _chunks_below(table: TableHandle, prefix: bytes, mark: Mark) -> list[Any]:
    """The keys of the user's chunks holding events older than ``mark`` (oldest event below it)."""
    t = idl()
    get = t.TGet(row=prefix, columns=[t.TColumn(family=CHUNKS)], maxVersions=1,
                 filterString=all_of(KEY_ONLY, columns_from(first_qualifier_before(mark[0] + 1))))
    result = table.pool.call("get", table.name_bytes, get)
    found = [chunk_key(cv.qualifier, cv.timestamp) for cv in result.columnValues or []]
    return [c for c in found if below(c.oldest, mark)]


def _delete(table: TableHandle, pending: dict[bytes, list[Any]]) -> int:
    if not pending:
        return 0
    t = idl()
    deletes = [t.TDelete(row=row, columns=cols, deleteType=t.TDeleteType.DELETE_COLUMN)
               for row, cols in pending.items()]
    delete_multiple(table.pool, table.name_bytes, deletes)
    return sum(len(cols) for cols in pending.values())
