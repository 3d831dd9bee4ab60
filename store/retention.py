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

from store import keys
from store.chunks import chunk_key, first_qualifier_before
from store.connection import idl
from store.requests import request_table
from store.scanning import scan_results
from store.table import CHUNKS, EVENTS, META
from store.user_meta import WATERMARK, pack_watermark, parse_watermark

if TYPE_CHECKING:
    from store.handle import TableHandle

SCAN_ROWS = 64
DELETES_PER_CALL = 2_000
MAX_TS = 2**63 - 1


def watermarks(table: TableHandle, users: Iterable[str | bytes]) -> dict[str | bytes, tuple[int, int]]:
    """The trim watermark of each user that has one (one ``getMultiple`` per 1000 users)."""
    t = idl()
    unique = list(dict.fromkeys(users))
    marks: dict[str | bytes, tuple[int, int]] = {}
    column = [t.TColumn(family=META, qualifier=WATERMARK)]
    for start in range(0, len(unique), 1000):
        chunk = unique[start : start + 1000]
        gets = [t.TGet(row=keys.user_prefix(u, table.spec.salt_buckets), columns=column) for u in chunk]
        for user, result in zip(chunk, table.pool.call("getMultiple", table.name_bytes, gets), strict=True):
            for cv in result.columnValues:
                marks[user] = parse_watermark(cv.value)
    return marks


def trim(table: TableHandle, users: Iterable[str | bytes]) -> int:
    """Trim each user to the table's ``max_events_per_user``; returns events deleted.

    One batched read finds each user's ``keep``-th newest event (both tiers, deduplicated);
    where older events exist, its ``(event_ts, event_id)`` becomes the watermark, then the raw
    cells below it and the chunks wholly below it are deleted. A chunk straddling it keeps its
    older events until compaction rewrites it; reads skip them. Idempotent; safe to re-run.
    """
    from store.reader import read_sequences  # the reader imports this module's neighbours

    keep = table.spec.max_events_per_user
    users = list(dict.fromkeys(users))
    if keep is None or not users:
        return 0
    seqs = read_sequences(table, request_table(users, [MAX_TS] * len(users)), max_len=keep,
                          fields=[], allow_any_ts=True)
    lengths = seqs.column("length").to_pylist()
    offsets = seqs.column("sequence").combine_chunks().offsets.to_pylist()
    events = seqs.column("sequence").combine_chunks().flatten()
    ts, eids = events.field("event_ts").to_pylist(), events.field("event_id").to_pylist()
    full = [(u, (ts[offsets[i + 1] - 1], eids[offsets[i + 1] - 1])) for i, u in enumerate(users) if lengths[i] == keep]
    with ThreadPoolExecutor(max_workers=table.pool.size, thread_name_prefix="seqstore-trim") as ex:
        return sum(ex.map(lambda um: _trim_user(table, *um), full))


def _trim_user(table: TableHandle, user: str | bytes, mark: tuple[int, int]) -> int:
    """Delete what lies below ``mark`` (the user's oldest kept event), watermark first."""
    t = idl()
    prefix = keys.user_prefix(user, table.spec.salt_buckets)
    raw: dict[bytes, list[Any]] = {}
    n_raw = 0
    start = keys.scan_start(prefix, keys.bucket_of(mark[0], table.spec.bucket_ms))
    scan = t.TScan(startRow=start, stopRow=keys.prefix_end(prefix), columns=[t.TColumn(family=EVENTS)],
                   maxVersions=1, batchSize=1000, timeRange=t.TTimeRange(minStamp=0, maxStamp=mark[0] + 1),
                   filterString=b"KeyOnlyFilter()")
    for result in scan_results(table.pool, table.name_bytes, scan, SCAN_ROWS):
        for cv in result.columnValues:
            if keys.parse_qualifier(cv.qualifier) < mark:
                raw.setdefault(result.row, []).append(
                    t.TColumn(family=EVENTS, qualifier=cv.qualifier, timestamp=cv.timestamp))
                n_raw += 1
    chunks = _chunks_below(table, prefix, mark) if table.spec.chunk_events is not None else []
    if not raw and not chunks:
        return 0
    put_watermark(table, prefix, mark)  # watermark first, deletes after
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


def _chunks_below(table: TableHandle, prefix: bytes, mark: tuple[int, int]) -> list[Any]:
    """The keys of the user's chunks holding events older than ``mark`` (oldest event below it)."""
    t = idl()
    start = first_qualifier_before(mark[0] + 1)
    get = t.TGet(row=prefix, columns=[t.TColumn(family=CHUNKS)], maxVersions=1,
                 filterString=b"(KeyOnlyFilter()) AND (ColumnRangeFilter('" + start.replace(b"'", b"''")
                 + b"', true, '', false))")
    result = table.pool.call("get", table.name_bytes, get)
    found = [chunk_key(cv.qualifier, cv.timestamp) for cv in result.columnValues or []]
    return [c for c in found if c.oldest < mark]


def put_watermark(table: TableHandle, prefix: bytes, mark: tuple[int, int]) -> None:
    """Record ``mark`` (``(event_ts, event_id)`` of the oldest kept event) for the user of ``prefix``.

    The cell is stamped with the mark's event time: a concurrent trim that computed an older
    watermark writes an older version, which HBase (``VERSIONS=1``) never returns, so the
    watermark never moves back in time.
    """
    t = idl()
    table.pool.call("put", table.name_bytes, t.TPut(row=prefix, columnValues=[
        t.TColumnValue(META, WATERMARK, pack_watermark(mark), timestamp=mark[0])]))


def _delete(table: TableHandle, pending: dict[bytes, list[Any]]) -> int:
    if not pending:
        return 0
    t = idl()
    deletes = [t.TDelete(row=row, columns=cols, deleteType=t.TDeleteType.DELETE_COLUMN)
               for row, cols in pending.items()]
    table.pool.call("deleteMultiple", table.name_bytes, deletes)
    return sum(len(cols) for cols in pending.values())
