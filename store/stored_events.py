"""Every stored event of a row range, from both tiers, each once: what a full recount needs.

:func:`stored_events` streams the ``(user prefix, event_ts, event_id)`` of every event a read
could return, for users whose rows lie in ``[start, stop)``: the raw tier's cells (family
``e`` of the user's bucket rows, keys only) and the events of the user's chunk cells (family
``c`` of the user's own row, decoded with one Arrow call per chunk). An event in both tiers
(between a compaction's chunk write and its raw deletes, or re-written after it was
compacted) is yielded once. Events a read never returns are left out: those below the
user's trim watermark (a chunk straddling it keeps them until the next compaction) and those
past the table's TTL.

Both tiers list a user's events newest first by ``(event_ts, event_id)`` (bucket rows newest
first and qualifiers newest first within a row; chunks disjoint and each sorted), and rows
sort by user prefix in both, so the tiers are merged as sorted streams: memory is bounded by
a scan page and one chunk, never by a user's history.

Exact on a table at rest. Beside a running compaction an event may move from the raw tier to
a chunk between the two scans' pages and be missed; beside writers, new events may or may not
be seen.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from store import keys
from store.chunks import decode_chunk
from store.connection import idl
from store.scanning import scan_results
from store.table import CHUNKS, EVENTS, META
from store.user_meta import WATERMARK, parse_watermark

if TYPE_CHECKING:
    from store.handle import TableHandle

RAW_CELLS_PER_RESULT = 1_000
RAW_RESULTS_PER_CALL = 100  # at most 100k keys per call
CHUNKS_PER_RESULT = 16
CHUNK_RESULTS_PER_CALL = 16
_MAX = np.uint64(keys.MAX_U64)


class Events(NamedTuple):
    """Some events of one user, newest first; a user's events may come in several of these."""

    prefix: bytes  # the user's row prefix (salt | len | user)
    event_ts: np.ndarray  # int64
    event_id: np.ndarray  # uint64


_Block = tuple[bytes, np.ndarray, np.ndarray]


def stored_events(table: TableHandle, start: bytes, stop: bytes) -> Iterator[Events]:
    """The stored events of users whose rows lie in ``[start, stop)`` (see the module docstring),
    grouped by user in row-key order, each ``(prefix, event_ts, event_id)`` once.

    Raises:
        SchemaError: a chunk names a schema version the table handle does not know.
        StoreUnavailableError, HBaseError: as raised by the connection. Reads only.
    """
    floor = table.spec.ttl_floor(int(time.time() * 1000))
    raw = itertools.groupby(_raw_blocks(table, start, stop), key=lambda b: b[0])
    tiered = table.spec.chunk_events is not None
    chunks = itertools.groupby(_chunk_blocks(table, start, stop) if tiered else iter(()), key=lambda b: b[0])
    marks = _watermarks(table, start, stop) if table.spec.max_events_per_user is not None else iter(())
    r, c, m = next(raw, None), next(chunks, None), next(marks, None)
    while r is not None or c is not None:
        prefix = min(g[0] for g in (r, c) if g is not None)
        while m is not None and m[0] < prefix:
            m = next(marks, None)
        mark = m[1] if m is not None and m[0] == prefix else None
        mine_r = r[1] if r is not None and r[0] == prefix else iter(())
        mine_c = c[1] if c is not None and c[0] == prefix else iter(())
        for ts, eid in _union(_visible(mine_r, mark, floor), _visible(mine_c, mark, floor)):
            if len(ts):
                yield Events(prefix, ts, eid)
        if r is not None and r[0] == prefix:
            r = next(raw, None)
        if c is not None and c[0] == prefix:
            c = next(chunks, None)


def _raw_blocks(table: TableHandle, start: bytes, stop: bytes) -> Iterator[_Block]:
    t = idl()
    scan = t.TScan(startRow=start, stopRow=stop, columns=[t.TColumn(family=EVENTS)], maxVersions=1,
                   batchSize=RAW_CELLS_PER_RESULT, filterString=b"KeyOnlyFilter()")
    for result in scan_results(table.pool, table.name_bytes, scan, RAW_RESULTS_PER_CALL):
        if not result.columnValues:
            continue
        quals = np.frombuffer(b"".join(cv.qualifier for cv in result.columnValues), dtype=">u8").reshape(-1, 2)
        yield (result.row[: -keys.BUCKET_LEN], (_MAX - quals[:, 0].astype(np.uint64)).astype(np.int64),
               _MAX - quals[:, 1].astype(np.uint64))


def _chunk_blocks(table: TableHandle, start: bytes, stop: bytes) -> Iterator[_Block]:
    t = idl()
    versions = {s.version: s for s in table.versions}
    current = table.codec.current
    scan = t.TScan(startRow=start, stopRow=stop, columns=[t.TColumn(family=CHUNKS)], maxVersions=1,
                   batchSize=CHUNKS_PER_RESULT)
    for result in scan_results(table.pool, table.name_bytes, scan, CHUNK_RESULTS_PER_CALL):
        for cv in result.columnValues or []:
            batch = decode_chunk(cv.value, versions, current)
            yield (result.row, np.asarray(batch.column("event_ts").to_numpy(), dtype=np.int64),
                   np.asarray(batch.column("event_id").to_numpy(), dtype=np.uint64))


def _watermarks(table: TableHandle, start: bytes, stop: bytes) -> Iterator[tuple[bytes, tuple[int, int]]]:
    t = idl()
    scan = t.TScan(startRow=start, stopRow=stop, columns=[t.TColumn(META, WATERMARK)])
    for result in scan_results(table.pool, table.name_bytes, scan, 10_000):
        for cv in result.columnValues or []:
            yield result.row, parse_watermark(cv.value)


def _visible(blocks: Iterator[_Block], mark: tuple[int, int] | None, floor: int | None
             ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for _, ts, eid in blocks:
        if mark is not None or floor is not None:
            keep = np.ones(len(ts), dtype=bool)
            if mark is not None:
                keep &= (ts > mark[0]) | ((ts == mark[0]) & (eid >= np.uint64(mark[1])))
            if floor is not None:
                keep &= ts >= floor
            ts, eid = ts[keep], eid[keep]
        yield ts, eid


def _at_or_above(ts: np.ndarray, eid: np.ndarray, bound: tuple[int, int]) -> np.ndarray:
    mask: np.ndarray = (ts > bound[0]) | ((ts == bound[0]) & (eid >= np.uint64(bound[1])))
    return mask


def _union(a: Iterator[tuple[np.ndarray, np.ndarray]], b: Iterator[tuple[np.ndarray, np.ndarray]]
           ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Two streams of events sorted newest first by ``(event_ts, event_id)``, each event once
    per stream, merged into one such stream with each event once. Holds one block per side
    (plus events tied at a block boundary)."""
    streams = [a, b]
    bufs: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0, np.int64), np.zeros(0, np.uint64))] * 2
    live = [True, True]
    while True:
        for k in (0, 1):
            while live[k] and not len(bufs[k][0]):
                block = next(streams[k], None)
                if block is None:
                    live[k] = False
                else:
                    bufs[k] = block
        if not live[0] and not live[1] and not len(bufs[0][0]) and not len(bufs[1][0]):
            return
        if not len(bufs[0][0]) or not len(bufs[1][0]):
            # One side is done: the other's events cannot meet another copy.
            k = 0 if len(bufs[0][0]) else 1
            yield bufs[k]
            bufs[k] = (bufs[k][0][:0], bufs[k][1][:0])
            continue
        # Events at or above the bound are complete on both sides: each live side's further
        # events lie below its last buffered one, which is at or below the bound.
        lasts = [(int(bufs[k][0][-1]), int(bufs[k][1][-1])) for k in (0, 1) if live[k]]
        bound = max(lasts) if lasts else (-(2**63), 0)
        out_ts, out_id = [], []
        for k in (0, 1):
            ts, eid = bufs[k]
            done = _at_or_above(ts, eid, bound)
            out_ts.append(ts[done])
            out_id.append(eid[done])
            bufs[k] = (ts[~done], eid[~done])
        ts, eid = np.concatenate(out_ts), np.concatenate(out_id)
        order = np.lexsort((eid, ts))[::-1]  # newest first
        ts, eid = ts[order], eid[order]
        if len(ts) > 1:
            keep = np.ones(len(ts), dtype=bool)
            keep[1:] = (ts[1:] != ts[:-1]) | (eid[1:] != eid[:-1])
            ts, eid = ts[keep], eid[keep]
        yield ts, eid
