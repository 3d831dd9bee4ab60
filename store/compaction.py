"""Compaction: moving users' raw-tier events into columnar chunks, atomically per row.

The layout (see :mod:`store.chunks`): a user's compacted events are chunk cells in family
``c`` of the user's own row, holding disjoint, contiguous ranges of ``(event_ts, event_id)``;
events written since are raw cells in the user's bucket rows, and the user's ``raw`` flag
(:mod:`store.user_meta`) is set.

Compacting a user (a batch of users at a time, one window of at most
:data:`WINDOW_EVENTS` raw events per user and step, newest first):

1. The user's flag token is read before its raw cells. (A user with raw cells and no flag,
   left by a write that failed before flagging, is first flagged with a token of our own.)
2. Each raw event belongs to the chunk with the greatest oldest event not above it (the
   oldest chunk for events older than all): its *territory*. Only chunks that own a raw event
   are read and rewritten, so a late event costs one chunk, not the user's history.
3. Each such chunk's events and its raw events are merged (one event per ``(event_ts,
   event_id)``; events below the trim watermark or past the TTL dropped) and split into
   pieces of at most ``chunk_events`` events of near-equal size (so chunks hold half to all of
   it). A new piece is a cell never written before (its qualifier has a nonce).
4. One ``checkAndMutate`` on the user's row, conditional on the flag token read in 1, deletes
   the replaced chunks, puts the new pieces and clears the flag (or, while raw events remain
   — another window, or events newer than ``older_than_ms`` — renews it with a token of its
   own). Atomic: a reader sees the old chunks or the new ones, never a mix. If a write came in
   since step 1 (a new token) or another compaction of the user won, the check fails, nothing
   is written, and the user starts again.
5. Then the merged raw cells are deleted, exactly (qualifier and timestamp).

What a concurrent reader sees (it reads a user's flag and chunks in one row read, then, if
flagged, the raw cells and the chunks again): each event in the raw tier, in a chunk, or in
both between steps 4 and 5 (deduplicated by ``(event_ts, event_id)``); never in neither,
because the chunks are written, and the flag cleared, before the raw cells they replace are
deleted. A compaction that stops anywhere leaves a readable table; running it again finishes
the job (idempotent: events already in chunks merge with themselves).
"""

from __future__ import annotations

import itertools
import math
import os
import random
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
from store.table import CHUNKS, EVENTS, META, TableSpec
from store.user_meta import RAW_FLAG, WATERMARK, parse_watermark

if TYPE_CHECKING:
    from store.handle import TableHandle

WINDOW_EVENTS = 16_384  # raw events merged per atomic step of one user
BATCH_EVENTS = 65_536  # raw events held for a batch of users
SCAN_ROWS = 256
GETS_PER_CALL = 1_000
DELETES_PER_CALL = 4_000
_ATTEMPTS = 8  # a user changed by writes or another compaction meanwhile starts over, this often


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


def salt_ranges(spec: TableSpec) -> list[tuple[bytes, bytes]]:
    """``(start, stop)`` row ranges, one per salt value: units of parallel compaction."""
    n = spec.salt_buckets
    return [(bytes((s,)), bytes((s + 1,)) if s < 255 else b"") for s in range(n)]


def compact_range(table: TableHandle, start: bytes, stop: bytes, *, older_than_ms: int | None = None,
                  on_progress: Callable[[CompactionStats], None] | None = None) -> CompactionStats:
    """Compact every user whose row key lies in ``[start, stop)``: the flags are read first,
    then one streaming scan of the raw tier; users are merged in batches on the table's client
    pool. Idempotent; safe beside running writers and readers.

    Raises:
        TableNotFoundError: the table has no chunk tier (created before seqstore had one).
        StoreUnavailableError, HBaseError: as raised by the connection; running it again
            resumes (users already compacted have no raw events left).
    """
    check_tiered(table.spec)
    t = idl()
    flag_scan = t.TScan(startRow=start, stopRow=stop, columns=[t.TColumn(META, RAW_FLAG)])
    # Before the raw scan: a write after this point changes the token, so its flag stays.
    tokens = {r.row: r.columnValues[0].value for r in scan_results(table.pool, table.name_bytes, flag_scan, 10_000)
              if r.columnValues}
    stats = CompactionStats()
    seen: set[bytes] = set()
    with ThreadPoolExecutor(max_workers=table.pool.size, thread_name_prefix="seqstore-compact") as ex:
        batch: dict[bytes, list[tuple[bytes, Any]]] = {}
        held = 0
        for prefix, cell in _raw_cells(table, _raw_scan(start, stop, older_than_ms)):
            cells = batch.setdefault(prefix, [])
            cells.append(cell)
            held += 1
            if held >= BATCH_EVENTS and len(batch) > 1:
                last = batch.pop(prefix)  # this user may go on in the next rows
                stats.add(_compact_batch(table, ex, batch, tokens, older_than_ms))
                seen.update(batch)
                batch, held = {prefix: last}, len(last)
                if on_progress:
                    on_progress(stats)
        stats.add(_compact_batch(table, ex, batch, tokens, older_than_ms))
        seen.update(batch)
        # Flags of users with no raw event left (e.g. all expired, or compacted by a stopped run).
        stale = {p: tok for p, tok in tokens.items() if p not in seen}
        stats.flags_kept += sum(1 for ok in ex.map(lambda p: _clear_flag(table, p, stale[p], older_than_ms), stale)
                                if not ok)
    if on_progress:
        on_progress(stats)
    return stats


def compact_users(table: TableHandle, users: list[str | bytes], *,
                  older_than_ms: int | None = None) -> CompactionStats:
    """Compact the given users (see :func:`compact_range`)."""
    check_tiered(table.spec)
    stats = CompactionStats()
    prefixes = [keys.user_prefix(u, table.spec.salt_buckets) for u in dict.fromkeys(users)]
    with ThreadPoolExecutor(max_workers=table.pool.size, thread_name_prefix="seqstore-compact") as ex:
        for part in ex.map(lambda p: _compact_user(table, p, older_than_ms), prefixes):
            stats.add(part)
    return stats


def check_tiered(spec: TableSpec) -> None:
    """Raise :class:`TableNotFoundError` if the table has no chunk tier (it cannot be compacted)."""
    if spec.chunk_events is None:
        raise TableNotFoundError(
            f"table {spec.name!r} has no chunk tier (it was created before seqstore compacted tables), "
            "so it cannot be compacted; it is read from its raw tier only. Recreate it and backfill again "
            "to compact it")


def _raw_scan(start: bytes, stop: bytes, older_than_ms: int | None) -> Any:
    t = idl()
    scan = t.TScan(startRow=start, stopRow=stop, columns=[t.TColumn(family=EVENTS)], maxVersions=1, batchSize=4096)
    if older_than_ms is not None:
        scan.timeRange = t.TTimeRange(minStamp=0, maxStamp=older_than_ms)
    return scan


def _raw_cells(table: TableHandle, scan: Any) -> Iterator[tuple[bytes, tuple[bytes, Any]]]:
    """``(user prefix, (row, cell))`` of every raw cell the scan finds, newest first per user."""
    for result in scan_results(table.pool, table.name_bytes, scan, SCAN_ROWS):
        prefix = result.row[: -keys.BUCKET_LEN]
        for cv in result.columnValues:
            yield prefix, (result.row, cv)


def _compact_user(table: TableHandle, prefix: bytes, older_than_ms: int | None) -> CompactionStats:
    """One user, from scratch: its token, then its raw cells, then the merge; retried while
    writes or other compactions change the user meanwhile (bounded)."""
    stats = CompactionStats()
    stop = keys.prefix_end(prefix)
    for attempt in range(_ATTEMPTS):
        token = _flags(table, [prefix]).get(prefix)
        cells = [cell for _, cell in _raw_cells(table, _raw_scan(keys.row_key(prefix, keys.MAX_U64), stop,
                                                                 older_than_ms))]
        if not cells:
            if token is not None and not _clear_flag(table, prefix, token, older_than_ms):
                stats.flags_kept += 1
            return stats
        step = _merge_windows(table, prefix, cells, token, older_than_ms)
        stats.add(step)
        if step.users:
            return stats
        stats.retries += 1
        time.sleep(random.uniform(0, 0.02 * 2**attempt))
    raise SeqStoreError(f"table {table.name!r}: user row {prefix!r} kept changing during compaction "
                        f"({_ATTEMPTS} attempts); run the compaction again")


def _compact_batch(table: TableHandle, ex: ThreadPoolExecutor, batch: dict[bytes, list[tuple[bytes, Any]]],
                   tokens: dict[bytes, bytes], older_than_ms: int | None) -> CompactionStats:
    """Users of one scan batch, with the tokens read before the scan. One window per user
    here (shared gets and deletes); users with more raw events, and users whose check failed,
    go through :func:`_compact_user` on their own."""
    stats = CompactionStats()
    small = [p for p, cells in batch.items() if 0 < len(cells) <= WINDOW_EVENTS]
    large = [p for p, cells in batch.items() if len(cells) > WINDOW_EVENTS]
    plans = _plan_windows(table, {p: batch[p] for p in small}, tokens)
    results = list(ex.map(lambda plan: _apply(table, plan, older_than_ms, last=True), plans))
    _delete_raw(table, [plan for plan, ok in zip(plans, results, strict=True) if ok])
    for plan, ok in zip(plans, results, strict=True):
        if ok:
            stats.add(plan.stats())
            stats.users += 1
            stats.flags_kept += bool(plan.next_token)
    again = [plan.prefix for plan, ok in zip(plans, results, strict=True) if not ok] + large
    stats.retries += len(again) - len(large)
    for part in ex.map(lambda p: _compact_user(table, p, older_than_ms), again):
        stats.add(part)
    return stats


def _merge_windows(table: TableHandle, prefix: bytes, cells: list[tuple[bytes, Any]], token: bytes | None,
                   older_than_ms: int | None) -> CompactionStats:
    """All of one user's raw cells, window by window; ``users == 0`` in the result if a check
    failed (the windows before it are done; the caller starts the user again)."""
    stats = CompactionStats()
    for w in range(0, len(cells), WINDOW_EVENTS):
        window = cells[w : w + WINDOW_EVENTS]
        last = w + WINDOW_EVENTS >= len(cells)
        (plan,) = _plan_windows(table, {prefix: window}, {prefix: token} if token is not None else {})
        if not _apply(table, plan, older_than_ms, last=last):
            return stats
        _delete_raw(table, [plan])
        stats.add(plan.stats())
        token = plan.next_token
    stats.users = 1
    stats.flags_kept = int(bool(token))
    return stats


@dataclass
class _Plan:
    """One user's atomic step: the chunks it replaces and the pieces it puts."""

    prefix: bytes
    token: bytes | None  # the flag token the step is conditional on
    cells: list[tuple[bytes, Any]]  # the raw cells merged (row, TColumnValue)
    replaced: list[ChunkKey]
    pieces: list[tuple[bytes, bytes, int]]  # (qualifier, value, timestamp)
    next_token: bytes = b""

    def stats(self) -> CompactionStats:
        """What the step did (``users`` is counted by the caller: a user may take several)."""
        return CompactionStats(raw_events=len(self.cells), chunks_written=len(self.pieces),
                               chunks_replaced=len(self.replaced))


def _plan_windows(table: TableHandle, windows: dict[bytes, list[tuple[bytes, Any]]],
                  tokens: dict[bytes, bytes]) -> list[_Plan]:
    """The step of each user (one window each): two batched gets for all of them."""
    t = idl()
    users = list(windows)
    if not users:
        return []
    decode = table.codec.decode
    raws: dict[bytes, list[Event]] = {}
    gets = []
    for p in users:
        raw = []
        for _, cv in windows[p]:
            ts, eid = keys.parse_qualifier(cv.qualifier)
            raw.append((ts, eid, decode(cv.value)))
        raws[p] = raw
        start = first_qualifier_before(max(e[0] for e in raw) + 1)
        gets.append(t.TGet(row=p, columns=[t.TColumn(META, WATERMARK)]))
        gets.append(t.TGet(row=p, columns=[t.TColumn(family=CHUNKS)], maxVersions=1,
                           filterString=b"(KeyOnlyFilter()) AND (ColumnRangeFilter('" + start.replace(b"'", b"''")
                           + b"', true, '', false))"))
    results = _get_multiple(table, gets)
    marks: dict[bytes, tuple[int, int] | None] = {}
    owned: dict[bytes, dict[ChunkKey | None, list[Event]]] = {}
    value_gets = []
    for j, p in enumerate(users):
        mark_cells = results[2 * j].columnValues or []
        marks[p] = parse_watermark(mark_cells[0].value) if mark_cells else None
        chunks = [chunk_key(cv.qualifier, cv.timestamp) for cv in results[2 * j + 1].columnValues or []]
        owned[p] = _territories(chunks, raws[p])
        wanted = [k for k in owned[p] if k is not None]
        if wanted:
            value_gets.append(t.TGet(row=p, columns=[t.TColumn(CHUNKS, k.qualifier) for k in wanted], maxVersions=1))
    values: dict[bytes, dict[bytes, bytes]] = {}
    for result in _get_multiple(table, value_gets):
        values[result.row] = {cv.qualifier: cv.value for cv in result.columnValues or []}
    spec = table.spec
    floor = int(time.time() * 1000) - spec.ttl_s * 1000 if spec.ttl_days is not None else None
    plans = []
    for p in users:
        pieces: list[tuple[bytes, bytes, int]] = []
        for key, events in owned[p].items():
            # A chunk gone since its key was read was trimmed whole (a compaction replacing it
            # would have changed the flag token, failing the check): its events are not kept.
            chunk = values.get(p, {}).get(key.qualifier) if key is not None else None
            merged = _merged(table, events, chunk, marks[p], floor)
            for piece in _pieces(merged, spec.chunk_events or 2):
                ts = piece.column("event_ts")
                oldest = (ts[-1].as_py(), piece.column("event_id")[-1].as_py())
                pieces.append((chunk_qualifier(oldest, piece.num_rows), encode_chunk(piece, table.codec.current),
                               ts[0].as_py()))
        plans.append(_Plan(p, tokens.get(p), windows[p], [k for k in owned[p] if k is not None], pieces))
    return plans


def _apply(table: TableHandle, plan: _Plan, older_than_ms: int | None, *, last: bool) -> bool:
    """Step 4 for one user; False if its check failed (nothing written)."""
    t = idl()
    prefix = plan.prefix
    if plan.token is None:  # raw cells without a flag: flag them ourselves (if still unflagged), then as usual
        token = os.urandom(8)
        if not table.pool.call("checkAndPut", table.name_bytes, prefix, META, RAW_FLAG, None,
                               t.TPut(row=prefix, columnValues=[t.TColumnValue(META, RAW_FLAG, token)])):
            return False  # a write flagged the user meanwhile: start again with its token
        plan.token = token
    mutations = [t.TMutation(deleteSingle=t.TDelete(row=prefix, deleteType=t.TDeleteType.DELETE_COLUMN, columns=[
        t.TColumn(CHUNKS, k.qualifier, timestamp=k.newest_ts)])) for k in plan.replaced]
    cells = [t.TColumnValue(CHUNKS, q, v, timestamp=ts) for q, v, ts in plan.pieces]
    keep_flag = not last or (older_than_ms is not None and _has_raw(table, prefix, plan.cells))
    if keep_flag:
        plan.next_token = os.urandom(8)
        cells.append(t.TColumnValue(META, RAW_FLAG, plan.next_token))
    else:
        mutations.append(t.TMutation(deleteSingle=t.TDelete(row=prefix, deleteType=t.TDeleteType.DELETE_COLUMNS,
                                                             columns=[t.TColumn(META, RAW_FLAG)])))
    if cells:
        mutations.append(t.TMutation(put=t.TPut(row=prefix, columnValues=cells)))
    return bool(table.pool.call("checkAndMutate", table.name_bytes, prefix, META, RAW_FLAG, t.TCompareOp.EQUAL,
                                plan.token, t.TRowMutations(row=prefix, mutations=mutations)))


def _delete_raw(table: TableHandle, plans: list[_Plan]) -> None:
    """Step 5: the merged raw cells, exactly, in calls of about :data:`DELETES_PER_CALL` cells."""
    t = idl()
    rows: dict[bytes, list[Any]] = {}
    for plan in plans:
        for row, cv in plan.cells:
            rows.setdefault(row, []).append(t.TColumn(EVENTS, cv.qualifier, timestamp=cv.timestamp))
    deletes = [t.TDelete(row=r, columns=c, deleteType=t.TDeleteType.DELETE_COLUMN) for r, c in rows.items()]
    group: list[Any] = []
    size = 0
    for d in deletes:
        group.append(d)
        size += len(d.columns)
        if size >= DELETES_PER_CALL:
            table.pool.call("deleteMultiple", table.name_bytes, group)
            group, size = [], 0
    if group:
        table.pool.call("deleteMultiple", table.name_bytes, group)


def _get_multiple(table: TableHandle, gets: list[Any]) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(gets), GETS_PER_CALL):
        out.extend(table.pool.call("getMultiple", table.name_bytes, gets[i : i + GETS_PER_CALL]))
    return out


def _territories(chunks: list[ChunkKey], raw: list[Event]) -> dict[ChunkKey | None, list[Event]]:
    """The raw events by the chunk whose territory holds them: the chunk with the greatest
    oldest event not above the event, or the oldest chunk for events older than all. ``chunks``
    are the user's chunks with an oldest event not above the newest raw one, newest first
    (None: the user has none)."""
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


def _merged(table: TableHandle, raw: list[Event], chunk: bytes | None, mark: tuple[int, int] | None,
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


def _flags(table: TableHandle, prefixes: list[bytes]) -> dict[bytes, bytes]:
    t = idl()
    out: dict[bytes, bytes] = {}
    gets = [t.TGet(row=p, columns=[t.TColumn(META, RAW_FLAG)]) for p in prefixes]
    for p, result in zip(prefixes, _get_multiple(table, gets), strict=True):
        for cv in result.columnValues or []:
            out[p] = cv.value
    return out


def _clear_flag(table: TableHandle, prefix: bytes, token: bytes, older_than_ms: int | None) -> bool:
    """Clear a flag whose user has no raw event left to compact, if its token is still
    ``token``; False if it stays (a write came in, or raw events newer than ``older_than_ms``)."""
    t = idl()
    if older_than_ms is not None and _has_raw(table, prefix, []):
        return False
    mutation = t.TRowMutations(row=prefix, mutations=[t.TMutation(deleteSingle=t.TDelete(
        row=prefix, columns=[t.TColumn(META, RAW_FLAG)], deleteType=t.TDeleteType.DELETE_COLUMNS))])
    return bool(table.pool.call("checkAndMutate", table.name_bytes, prefix, META, RAW_FLAG, t.TCompareOp.EQUAL,
                                token, mutation))


def _has_raw(table: TableHandle, prefix: bytes, merged: list[tuple[bytes, Any]]) -> bool:
    """Whether the user has raw cells other than ``merged`` (those about to be compacted)."""
    t = idl()
    skip = {(row, cv.qualifier) for row, cv in merged}
    scan = t.TScan(startRow=keys.row_key(prefix, keys.MAX_U64), stopRow=keys.prefix_end(prefix),
                   columns=[t.TColumn(family=EVENTS)], filterString=b"KeyOnlyFilter()", batchSize=1000)
    for result in scan_results(table.pool, table.name_bytes, scan, 16):
        if any((result.row, cv.qualifier) not in skip for cv in result.columnValues):
            return True
    return False
