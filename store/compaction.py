"""Compaction: moving users' raw-tier events into columnar chunks, atomically per row.

The layout (see :mod:`store.chunks`): a user's compacted events are chunk cells in family
``c`` of the user's own row, holding disjoint, contiguous ranges of ``(event_ts, event_id)``;
events written since are raw cells in the user's bucket rows, and the user's ``raw`` flag
(:mod:`store.user_meta`) is set.

Compacting one user, for each window of at most :data:`WINDOW_EVENTS` raw events (newest
first):

1. Each raw event belongs to the chunk with the greatest oldest event not above it (the
   oldest chunk for events older than all): its *territory*. Only chunks that own a raw event
   are read and rewritten, so a late event costs one chunk, not the user's history.
2. Each such chunk's events and its raw events are merged (one event per ``(event_ts,
   event_id)``; events below the trim watermark or past the TTL dropped) and split into
   pieces of at most ``chunk_events`` events of near-equal size (so chunks hold half to all of
   it). A new piece is a cell never written before (its qualifier has a nonce).
3. One ``checkAndMutate`` on the user's row, conditional on the chunk generation read in 1,
   deletes the replaced chunks, puts the new pieces and a new generation: atomic, so a reader
   sees the old chunks or the new ones, never a mix, and of two concurrent compactions of a
   user one wins and the other starts that user again.
4. Then the merged raw cells are deleted, exactly (qualifier and timestamp).

Last, the flag is cleared with a ``checkAndMutate`` on its token: a write that came in after
the flag was read changed the token, so its events keep the flag. With ``older_than_ms``
only raw events older than it are compacted, and the flag stays while newer ones remain.

What a concurrent reader sees (it reads flags, then raw cells, then chunks): each event in
the raw tier, in a chunk, or in both between steps 3 and 4 (deduplicated); never in neither,
because chunks are written before the raw cells they replace are deleted and the flag is
cleared last. A compaction that stops anywhere leaves a readable table; running it again
finishes the job (idempotent: events already in chunks merge with themselves).
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from store import keys
from store.chunks import ChunkKey, chunk_key, chunk_qualifier, decode_chunk, encode_chunk, first_qualifier_before
from store.connection import idl
from store.errors import SeqStoreError, TableNotFoundError
from store.raw_tier import Event, events_table
from store.scanning import scan_results
from store.table import CHUNKS, EVENTS, META
from store.user_meta import GENERATION, RAW_FLAG, WATERMARK, parse_watermark

if TYPE_CHECKING:
    from store.client import SequenceTable

WINDOW_EVENTS = 16_384  # raw events merged per atomic step of one user
BATCH_EVENTS = 65_536  # raw events held for a batch of users
SCAN_ROWS = 256
_ATTEMPTS = 8  # concurrent compactions of the same user each win or start over


@dataclass
class CompactionStats:
    """What a compaction did (counts add up over calls)."""

    users: int = 0
    raw_events: int = 0  # raw cells merged into chunks and deleted
    chunks_written: int = 0
    chunks_replaced: int = 0
    retries: int = 0  # users started again after a concurrent change
    flags_kept: int = 0  # users still flagged afterwards (newer writes, or newer than older_than)

    def add(self, other: CompactionStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def salt_ranges(table: SequenceTable) -> list[tuple[bytes, bytes]]:
    """``(start, stop)`` row ranges, one per salt value: units of parallel compaction."""
    n = table.spec.salt_buckets
    return [(bytes((s,)), bytes((s + 1,)) if s < 255 else b"") for s in range(n)]


def compact_range(table: SequenceTable, start: bytes, stop: bytes, *, older_than_ms: int | None = None,
                  on_progress: Callable[[CompactionStats], None] | None = None) -> CompactionStats:
    """Compact every user whose row key lies in ``[start, stop)``: the flags are read first,
    then one streaming scan of the raw tier; users are merged in batches on the table's client
    pool. Idempotent; safe beside running writers and readers.

    Raises:
        TableNotFoundError: the table has no chunk tier (created before seqstore had one).
        StoreUnavailableError, HBaseError: as raised by the connection; running it again
            resumes (users already compacted have no raw events left).
    """
    _check_tiered(table)
    t = idl()
    flag_scan = t.TScan(startRow=start, stopRow=stop, columns=[t.TColumn(META, RAW_FLAG)])
    # Before the raw scan: a write after this point changes the token, so its flag stays.
    tokens = {r.row: r.columnValues[0].value for r in scan_results(table.pool, table.name_bytes, flag_scan, 10_000)
              if r.columnValues}
    scan = _raw_scan(start, stop, older_than_ms)
    stats = CompactionStats()
    seen: set[bytes] = set()
    with ThreadPoolExecutor(max_workers=table.pool.size, thread_name_prefix="seqstore-compact") as ex:
        batch: dict[bytes, list[tuple[bytes, Any]]] = {}
        held = 0
        for row, cells in _rows(table, scan):
            prefix = row[: -keys.BUCKET_LEN]
            batch.setdefault(prefix, []).append((row, cells))
            held += len(cells)
            if held >= BATCH_EVENTS and len(batch) > 1:
                last = batch.pop(prefix)  # this user may go on in the next rows
                stats.add(_compact_users(table, ex, batch, tokens, older_than_ms))
                seen.update(batch)
                batch, held = {prefix: last}, sum(len(c) for _, c in last)
                if on_progress:
                    on_progress(stats)
        stats.add(_compact_users(table, ex, batch, tokens, older_than_ms))
        seen.update(batch)
        # Flags of users with no raw event left (e.g. all expired, or compacted by a stopped run).
        stats.add(_clear_flags(table, ex, {p: tok for p, tok in tokens.items() if p not in seen}, older_than_ms))
    if on_progress:
        on_progress(stats)
    return stats


def compact_users(table: SequenceTable, users: list[str | bytes], *,
                  older_than_ms: int | None = None) -> CompactionStats:
    """Compact the given users (see :func:`compact_range`)."""
    _check_tiered(table)
    prefixes = [keys.user_prefix(u, table.spec.salt_buckets) for u in dict.fromkeys(users)]
    tokens = _flags(table, prefixes)
    batch = {p: list(_rows(table, _raw_scan(keys.row_key(p, keys.MAX_U64), keys.prefix_end(p), older_than_ms)))
             for p in prefixes}
    with ThreadPoolExecutor(max_workers=table.pool.size, thread_name_prefix="seqstore-compact") as ex:
        stats = _compact_users(table, ex, batch, tokens, older_than_ms)
        stats.add(_clear_flags(table, ex, {p: tokens[p] for p, rows in batch.items() if not rows and p in tokens},
                               older_than_ms))
    return stats


def _raw_scan(start: bytes, stop: bytes, older_than_ms: int | None) -> Any:
    t = idl()
    scan = t.TScan(startRow=start, stopRow=stop, columns=[t.TColumn(family=EVENTS)], maxVersions=1, batchSize=4096)
    if older_than_ms is not None:
        scan.timeRange = t.TTimeRange(minStamp=0, maxStamp=older_than_ms)
    return scan


def _check_tiered(table: SequenceTable) -> None:
    if table.spec.chunk_events is None:
        raise TableNotFoundError(
            f"table {table.name!r} has no chunk tier (it was created before seqstore compacted tables); "
            "it is read from its raw tier only. Recreate it and backfill again to compact it")


def _rows(table: SequenceTable, scan: Any) -> Iterator[tuple[bytes, list[Any]]]:
    """Each raw row's cells, a wide row's partial results joined."""
    row: bytes | None = None
    cells: list[Any] = []
    for result in scan_results(table.pool, table.name_bytes, scan, SCAN_ROWS):
        if result.row != row:
            if row is not None and cells:
                yield row, cells
            row, cells = result.row, []
        cells.extend(result.columnValues)
    if row is not None and cells:
        yield row, cells


def _compact_users(table: SequenceTable, ex: ThreadPoolExecutor, batch: dict[bytes, list[tuple[bytes, Any]]],
                   tokens: dict[bytes, bytes], older_than_ms: int | None) -> CompactionStats:
    stats = CompactionStats()
    users = [p for p, rows in batch.items() if rows]
    for part in ex.map(lambda p: _compact_user(table, p, batch[p]), users):
        stats.add(part)
    stats.add(_clear_flags(table, ex, {p: tokens[p] for p in users if p in tokens}, older_than_ms))
    return stats


def _compact_user(table: SequenceTable, prefix: bytes, rows: list[tuple[bytes, Any]]) -> CompactionStats:
    """Merge one user's raw cells (``rows``, newest first) into its chunks, window by window."""
    stats = CompactionStats(users=1)
    cells = [(row, cv) for row, cvs in rows for cv in cvs]
    for w in range(0, len(cells), WINDOW_EVENTS):
        window = cells[w : w + WINDOW_EVENTS]
        for attempt in range(_ATTEMPTS):
            if _merge_window(table, prefix, window, stats):
                break
            stats.retries += 1
            time.sleep(0.01 * (attempt + 1) * (0.5 + np.random.random()))
        else:
            raise SeqStoreError(f"table {table.name!r}: the chunks of user row {prefix!r} kept changing during "
                                f"compaction ({_ATTEMPTS} attempts); run the compaction again")
    return stats


def _merge_window(table: SequenceTable, prefix: bytes, window: list[tuple[bytes, Any]], stats: CompactionStats) -> bool:
    """One atomic step; False if the user's chunks changed meanwhile (nothing was written)."""
    t = idl()
    spec = table.spec
    generation, mark = _meta(table, prefix)
    decode = table.codec.decode
    raw: list[Event] = []
    for _, cv in window:
        ts, eid = keys.parse_qualifier(cv.qualifier)
        raw.append((ts, eid, decode(cv.value)))
    owned = _territories(table, prefix, raw)
    values = _chunk_values(table, prefix, [k for k in owned if k is not None])
    floor = int(time.time() * 1000) - spec.ttl_s * 1000 if spec.ttl_days is not None else None
    mutations: list[Any] = []
    written = 0
    for key, events in owned.items():
        merged = _merged(table, events, values.get(key.qualifier) if key is not None else None, mark, floor)
        if key is not None:
            mutations.append(t.TMutation(deleteSingle=t.TDelete(row=prefix, deleteType=t.TDeleteType.DELETE_COLUMN,
                                                                 columns=[t.TColumn(CHUNKS, key.qualifier,
                                                                                    timestamp=key.newest_ts)])))
        for piece in _pieces(merged, spec.chunk_events or 2):
            ts = piece.column("event_ts")
            oldest = (ts[-1].as_py(), piece.column("event_id")[-1].as_py())
            value = encode_chunk(piece, table.codec.current)
            put = t.TPut(row=prefix, columnValues=[t.TColumnValue(CHUNKS, chunk_qualifier(oldest, piece.num_rows),
                                                                  value, timestamp=ts[0].as_py())])
            mutations.append(t.TMutation(put=put))
            written += 1
    new_generation = t.TColumnValue(META, GENERATION, os.urandom(8))
    if generation is None:
        # No generation yet means no chunk yet: only puts. (Thrift2's checkAndMutate cannot check
        # for absence: HBase 2.6 fails on the null value; checkAndPut can.)
        cells = [c for m in mutations for c in m.put.columnValues]
        applied = table.pool.call("checkAndPut", table.name_bytes, prefix, META, GENERATION, None,
                                  t.TPut(row=prefix, columnValues=[*cells, new_generation]))
    else:
        mutations.append(t.TMutation(put=t.TPut(row=prefix, columnValues=[new_generation])))
        applied = table.pool.call("checkAndMutate", table.name_bytes, prefix, META, GENERATION, t.TCompareOp.EQUAL,
                                  generation, t.TRowMutations(row=prefix, mutations=mutations))
    if not applied:
        return False
    stats.chunks_written += written
    stats.chunks_replaced += sum(1 for k in owned if k is not None)
    deletes: dict[bytes, list[Any]] = {}
    for row, cv in window:
        deletes.setdefault(row, []).append(t.TColumn(EVENTS, cv.qualifier, timestamp=cv.timestamp))
    table.pool.call("deleteMultiple", table.name_bytes,
                    [t.TDelete(row=r, columns=c, deleteType=t.TDeleteType.DELETE_COLUMN) for r, c in deletes.items()])
    stats.raw_events += len(window)
    return True


def _meta(table: SequenceTable, prefix: bytes) -> tuple[bytes | None, tuple[int, int] | None]:
    t = idl()
    result = table.pool.call("get", table.name_bytes, t.TGet(row=prefix, columns=[
        t.TColumn(META, GENERATION), t.TColumn(META, WATERMARK)]))
    cells = {cv.qualifier: cv.value for cv in result.columnValues or []}
    mark = parse_watermark(cells[WATERMARK]) if WATERMARK in cells else None
    return cells.get(GENERATION), mark


def _territories(table: SequenceTable, prefix: bytes, raw: list[Event]) -> dict[ChunkKey | None, list[Event]]:
    """The raw events by the chunk whose territory holds them: the chunk with the greatest
    oldest event not above the event, or the oldest chunk for events older than all (None:
    the user has no chunk that old or older)."""
    t = idl()
    newest = max(e[0] for e in raw)
    start = first_qualifier_before(newest + 1)
    get = t.TGet(row=prefix, columns=[t.TColumn(family=CHUNKS)], maxVersions=1,
                 filterString=b"(KeyOnlyFilter()) AND (ColumnRangeFilter('" + start.replace(b"'", b"''")
                 + b"', true, '', false))")
    result = table.pool.call("get", table.name_bytes, get)
    chunks = [chunk_key(cv.qualifier, cv.timestamp) for cv in result.columnValues or []]  # newest first
    if not chunks:
        return {None: raw}
    oldest_ts = -np.array([c.oldest[0] for c in chunks], dtype=np.int64)  # ascending
    owned: dict[ChunkKey | None, list[Event]] = {}
    for event in raw:
        j = int(np.searchsorted(oldest_ts, -event[0], "left"))  # first chunk with oldest_ts <= event_ts
        while j < len(chunks) and chunks[j].oldest > (event[0], event[1]):
            j += 1
        owned.setdefault(chunks[min(j, len(chunks) - 1)], []).append(event)
    return owned


def _chunk_values(table: SequenceTable, prefix: bytes, wanted: list[ChunkKey]) -> dict[bytes, bytes]:
    if not wanted:
        return {}
    t = idl()
    get = t.TGet(row=prefix, columns=[t.TColumn(CHUNKS, k.qualifier) for k in wanted], maxVersions=1)
    result = table.pool.call("get", table.name_bytes, get)
    return {cv.qualifier: cv.value for cv in result.columnValues or []}


def _merged(table: SequenceTable, raw: list[Event], chunk: bytes | None, mark: tuple[int, int] | None,
            floor: int | None) -> pa.Table:
    """A chunk's events and raw events, newest first, once each, without trimmed or expired ones."""
    parts = [events_table(table, raw)]
    if chunk is not None:
        versions = {s.version: s for s in table.versions}
        parts.append(pa.Table.from_batches([decode_chunk(chunk, versions, table.codec.current)]))
    merged = pa.concat_tables(parts).combine_chunks()
    merged = merged.sort_by([("event_ts", "descending"), ("event_id", "descending")])
    ts = np.asarray(merged.column("event_ts").to_numpy(), dtype=np.int64)
    eid = np.asarray(merged.column("event_id").to_numpy(), dtype=np.uint64)
    keep = np.ones(len(ts), dtype=bool)
    keep[1:] = (ts[1:] != ts[:-1]) | (eid[1:] != eid[:-1])
    if mark is not None:
        keep &= (ts > mark[0]) | ((ts == mark[0]) & (eid >= np.uint64(mark[1])))
    if floor is not None:
        keep &= ts >= floor
    return merged.filter(pa.array(keep)) if not keep.all() else merged


def _pieces(events: pa.Table, chunk_events: int) -> Iterator[pa.Table]:
    """``events`` (newest first) in consecutive pieces of near-equal size, at most ``chunk_events``."""
    n = events.num_rows
    if n == 0:
        return
    count = math.ceil(n / chunk_events)
    bounds = np.linspace(0, n, count + 1).round().astype(int)
    for a, b in itertools.pairwise(bounds):
        yield events.slice(int(a), int(b - a))


def _flags(table: SequenceTable, prefixes: list[bytes]) -> dict[bytes, bytes]:
    t = idl()
    out: dict[bytes, bytes] = {}
    for i in range(0, len(prefixes), 1000):
        part = prefixes[i : i + 1000]
        gets = [t.TGet(row=p, columns=[t.TColumn(META, RAW_FLAG)]) for p in part]
        for p, result in zip(part, table.pool.call("getMultiple", table.name_bytes, gets), strict=True):
            for cv in result.columnValues or []:
                out[p] = cv.value
    return out


def _clear_flags(table: SequenceTable, ex: ThreadPoolExecutor, tokens: dict[bytes, bytes],
                 older_than_ms: int | None) -> CompactionStats:
    """Clear each user's raw flag if its token is still the one read before its raw cells
    were (no write came in since) and, with ``older_than_ms``, no newer raw event remains."""
    t = idl()

    def clear(prefix: bytes) -> bool:
        if older_than_ms is not None and _has_raw(table, prefix):
            return False
        mutation = t.TRowMutations(row=prefix, mutations=[t.TMutation(deleteSingle=t.TDelete(
            row=prefix, columns=[t.TColumn(META, RAW_FLAG)], deleteType=t.TDeleteType.DELETE_COLUMNS))])
        return bool(table.pool.call("checkAndMutate", table.name_bytes, prefix, META, RAW_FLAG, t.TCompareOp.EQUAL,
                                    tokens[prefix], mutation))

    return CompactionStats(flags_kept=sum(1 for ok in ex.map(clear, list(tokens)) if not ok))


def _has_raw(table: SequenceTable, prefix: bytes) -> bool:
    t = idl()
    scan = t.TScan(startRow=keys.row_key(prefix, keys.MAX_U64), stopRow=keys.prefix_end(prefix),
                   columns=[t.TColumn(family=EVENTS)], filterString=b"(KeyOnlyFilter()) AND (FirstKeyOnlyFilter())")
    return bool(table.pool.call("getScannerResults", table.name_bytes, scan, 1))
