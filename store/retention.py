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

import struct
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from store import keys
from store.connection import idl
from store.scanning import scan_results
from store.table import EVENTS, META

if TYPE_CHECKING:
    from store.client import SequenceTable

WATERMARK = b"trim"
_MARK = struct.Struct(">QQ")
SCAN_ROWS = 64
DELETES_PER_CALL = 2_000


def watermarks(table: SequenceTable, users: Iterable[str | bytes]) -> dict[str | bytes, tuple[int, int]]:
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
                ts, eid = _MARK.unpack(cv.value)
                marks[user] = (ts, eid)
    return marks


def trim(table: SequenceTable, users: Iterable[str | bytes]) -> int:
    """Trim each user to the table's ``max_events_per_user``; returns events deleted.

    Idempotent; safe to re-run.
    """
    keep = table.spec.max_events_per_user
    if keep is None:
        return 0
    with ThreadPoolExecutor(max_workers=table.pool.size, thread_name_prefix="seqstore-trim") as ex:
        return sum(ex.map(lambda u: _trim_user(table, u, keep), list(users)))


def _trim_user(table: SequenceTable, user: str | bytes, keep: int) -> int:
    t = idl()
    prefix = keys.user_prefix(user, table.spec.salt_buckets)
    scan = t.TScan(startRow=keys.row_key(prefix, 2**64 - 1), stopRow=keys.prefix_end(prefix),
                   columns=[t.TColumn(family=EVENTS)], maxVersions=1, batchSize=1000,
                   filterString=b"KeyOnlyFilter()")
    seen = deleted = 0
    pending: dict[bytes, list[Any]] = {}
    for result in scan_results(table.pool, table.name_bytes, scan, SCAN_ROWS):
        for cv in result.columnValues:
            seen += 1
            if seen == keep:
                mark_qualifier = cv.qualifier
            elif seen > keep:
                if seen == keep + 1:  # watermark first, deletes after
                    put_watermark(table, prefix, keys.parse_qualifier(mark_qualifier))
                pending.setdefault(result.row, []).append(
                    t.TColumn(family=EVENTS, qualifier=cv.qualifier, timestamp=cv.timestamp))
                deleted += 1
                if deleted % DELETES_PER_CALL == 0:
                    _delete(table, pending)
    _delete(table, pending)
    return deleted


def put_watermark(table: SequenceTable, prefix: bytes, mark: tuple[int, int]) -> None:
    """Record ``mark`` (``(event_ts, event_id)`` of the oldest kept event) for the user of ``prefix``.

    The cell is stamped with the mark's event time: a concurrent trim that computed an older
    watermark writes an older version, which HBase (``VERSIONS=1``) never returns, so the
    watermark never moves back in time.
    """
    t = idl()
    table.pool.call("put", table.name_bytes, t.TPut(row=prefix, columnValues=[
        t.TColumnValue(META, WATERMARK, _MARK.pack(*mark), timestamp=mark[0])]))


def _delete(table: SequenceTable, pending: dict[bytes, list[Any]]) -> None:
    if not pending:
        return
    t = idl()
    deletes = [t.TDelete(row=row, columns=cols, deleteType=t.TDeleteType.DELETE_COLUMN)
               for row, cols in pending.items()]
    table.pool.call("deleteMultiple", table.name_bytes, deletes)
    pending.clear()
