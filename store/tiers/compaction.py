"""Compaction: moving users' raw-tier events into columnar chunks, atomically per row.

The layout (see :mod:`store.format.chunk`): a user's compacted events are chunk cells in family
``c`` of the user's own row, holding disjoint, contiguous ranges of ``(event_ts, event_id)``;
events written since are raw cells in the user's bucket rows, and the user's flag is set. The
protocol that keeps the tiers consistent under concurrent writers, readers and compactions —
who may change a user's chunks, on which token, and when raw cells may go — is told once, in
:mod:`store.tiers.user_meta`; this module follows it.

Compacting a user (a batch of users at a time; one *window* of the user's newest raw events
per step, at most :data:`WINDOW_EVENTS` events and :data:`WINDOW_BYTES` bytes, so memory never
holds a heavy user's whole backlog):

1. The user's flag token and its raw rows' write tokens are read before its raw cells. A user
   whose flag is clean but who has raw cells is claimed first (a token of our own).
2. :mod:`store.tiers.chunk_steps` plans the step: the chunks whose territories hold the raw
   events (a window is cut short where they pass its ``STEP_EVENTS``), merged with them (the
   raw copy winning; trimmed and expired events dropped) and cut into new pieces.
3. :func:`store.tiers.chunk_steps.commit` (the protocol's :func:`store.tiers.user_meta.commit`):
   one ``checkAndMutate`` of the user row on the token of 1
   deletes the replaced chunks, puts the new pieces and clears the flag (or, while raw events
   remain, renews it with a token of its own for the next window). If the check fails (a write
   or another compaction came in), nothing is written and the user starts again, at most
   :data:`ATTEMPTS` times; a user that keeps changing is *skipped* (left flagged, readable,
   counted and named in the stats), never an error.
4. :func:`store.tiers.user_meta.delete_merged` deletes the merged raw cells.

A compaction that stops anywhere leaves a readable table; running it again finishes the job
(idempotent: events already in chunks merge with themselves).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from store.format import keys
from store.format.chunk import ChunkKey, chunk_key, first_qualifier_before
from store.format.keys import CHUNKS, EVENTS, META
from store.io.calls import KEY_ONLY, all_of, columns_from, get_multiple
from store.io.connection import idl
from store.io.scanning import scan_results
from store.tiers import chunk_steps, user_meta
from store.tiers.raw_scans import Event, events_table
from store.tiers.user_meta import WATERMARK, flagged

if TYPE_CHECKING:
    from store.table.handle import TableHandle

WINDOW_EVENTS = 16_384  # raw events merged per atomic step of one user
WINDOW_BYTES = 16 * 1024 * 1024  # ... and their payload bytes
BATCH_EVENTS = 65_536  # raw events held for a batch of users
# A scan call returns at most SCAN_RESULTS results of at most RAW_BATCH cells (a wide row comes
# in several): 64k cells, whatever the rows' widths.
RAW_BATCH = 256
SCAN_RESULTS = 256
ATTEMPTS = 8  # a user changed by writes or another compaction meanwhile starts over, this often
SKIPPED_NAMED = 20  # skipped users named in the stats, at most


@dataclass
class CompactionStats:
    """What a compaction did (counts add up over calls)."""

    users: int = 0
    raw_events: int = 0  # raw cells merged into chunks and deleted
    chunks_written: int = 0
    chunks_replaced: int = 0
    retries: int = 0  # users started again after a concurrent change
    flags_kept: int = 0  # users still flagged afterwards (newer writes, or newer than older_than)
    users_skipped: int = 0  # users that kept changing for ATTEMPTS tries: left flagged, compacted next time
    raw_kept: int = 0  # merged raw cells not deleted: their row was re-written meanwhile (deleted next time)
    skipped: list[str] = field(default_factory=list)  # the first SKIPPED_NAMED skipped users

    def add(self, other: CompactionStats) -> None:
        for name in self.__dataclass_fields__:
            if name != "skipped":
                setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skipped = (self.skipped + other.skipped)[:SKIPPED_NAMED]


def compact_range(table: TableHandle, start: bytes, stop: bytes, *, older_than_ms: int | None = None,
                  on_progress: Callable[[CompactionStats], None] | None = None) -> CompactionStats:
    """Compact every user whose row key lies in ``[start, stop)``: the tokens are read first,
    then one streaming scan of the raw tier; users are merged in batches on the table's client
    pool. Idempotent; safe beside running writers, readers and other compactions. A user that
    kept changing is skipped (``users_skipped``), not an error.

    Raises:
        InvalidRequestError: the table has no chunk tier (:meth:`TableSpec.check_tiered`).
        StoreUnavailableError, HBaseError: as raised by the connection; running it again
            resumes (users already compacted have no raw events left).
    """
    table.spec.check_tiered()
    # Before the raw scan: a write after this point changes the token, so its flag stays.
    flags, row_tokens = user_meta.scan_tokens(table, start, stop)
    stats = CompactionStats()
    seen: set[bytes] = set()
    with ThreadPoolExecutor(max_workers=table.pool.size, thread_name_prefix="seqstore-compact") as ex:
        batch: dict[bytes, list[tuple[bytes, Any]]] = {}
        held = 0
        large: list[bytes] = []
        for prefix, cells in _users_cells(table, start, stop, older_than_ms):
            seen.add(prefix)
            if cells is None:
                large.append(prefix)
                continue
            batch[prefix] = cells
            held += len(cells)
            if held >= BATCH_EVENTS:
                stats.add(_compact_batch(table, ex, batch, flags, row_tokens, older_than_ms))
                batch, held = {}, 0
                if on_progress:
                    on_progress(stats)
        stats.add(_compact_batch(table, ex, batch, flags, row_tokens, older_than_ms))
        for part in ex.map(lambda p: _compact_user(table, p, older_than_ms), large):
            stats.add(part)
        # Flags of users with no raw event left (e.g. all expired, or compacted by a stopped run).
        stale = [p for p, token in flags.items() if flagged(token) and p not in seen]
        for part in ex.map(lambda p: _compact_user(table, p, older_than_ms), stale):
            stats.add(part)
    if on_progress:
        on_progress(stats)
    return stats


def compact_users(table: TableHandle, users: list[str | bytes], *,
                  older_than_ms: int | None = None) -> CompactionStats:
    """Compact the given users (see :func:`compact_range`)."""
    table.spec.check_tiered()
    stats = CompactionStats()
    prefixes = [keys.user_prefix(u, table.spec.salt_buckets) for u in dict.fromkeys(users)]
    with ThreadPoolExecutor(max_workers=table.pool.size, thread_name_prefix="seqstore-compact") as ex:
        for part in ex.map(lambda p: compact_prefix(table, p, older_than_ms), prefixes):
            stats.add(part)
    return stats


def compact_prefix(table: TableHandle, prefix: bytes, older_than_ms: int | None = None) -> CompactionStats:
    """Compact one user, by row prefix (:func:`compact_users`); a flagged user with no raw
    events left has its flag cleared."""
    return _compact_user(table, prefix, older_than_ms)


def _raw_scan(start: bytes, stop: bytes, older_than_ms: int | None) -> Any:
    t = idl()
    scan = t.TScan(startRow=start, stopRow=stop, columns=[t.TColumn(family=EVENTS)], maxVersions=1,
                   batchSize=RAW_BATCH)
    if older_than_ms is not None:
        scan.timeRange = t.TTimeRange(minStamp=0, maxStamp=older_than_ms)
    return scan


def _raw_cells(table: TableHandle, scan: Any, page: int = SCAN_RESULTS) -> Iterator[tuple[bytes, tuple[bytes, Any]]]:
    """``(user prefix, (row, cell))`` of every raw cell the scan finds, newest first per user;
    ``page``: results of the first call (growing to :data:`SCAN_RESULTS`)."""
    for result in scan_results(table.pool, table.name_bytes, scan, page, max_page=SCAN_RESULTS):
        prefix = result.row[: -keys.BUCKET_LEN]
        for cv in result.columnValues:
            yield prefix, (result.row, cv)


def _users_cells(table: TableHandle, start: bytes, stop: bytes, older_than_ms: int | None
                 ) -> Iterator[tuple[bytes, list[tuple[bytes, Any]] | None]]:
    """Each user with raw cells in ``[start, stop)``, in row order, with its cells if they fit
    one window, else None (then the scan skips the rest of the user: never held)."""
    while True:
        user: bytes | None = None
        cells: list[tuple[bytes, Any]] = []
        size = 0
        for prefix, cell in _raw_cells(table, _raw_scan(start, stop, older_than_ms)):
            if prefix != user:
                if user is not None:
                    yield user, cells
                user, cells, size = prefix, [], 0
            cells.append(cell)
            size += len(cell[1].value)
            if len(cells) > WINDOW_EVENTS or size > WINDOW_BYTES:
                yield user, None
                start = keys.prefix_end(user)
                break
        else:
            if user is not None:
                yield user, cells
            return
        if stop and start >= stop:
            return


def _window(table: TableHandle, prefix: bytes, after: tuple[bytes, bytes] | None, older_than_ms: int | None
            ) -> tuple[list[tuple[bytes, Any]], bool]:
    """The user's next window of raw cells after ``after`` (row, qualifier of the last cell of
    the previous window), newest first, and whether more cells follow it."""
    first = keys.row_key(prefix, keys.MAX_U64) if after is None else after[0]
    cells: list[tuple[bytes, Any]] = []
    size = 0
    pages = _raw_cells(table, _raw_scan(first, keys.prefix_end(prefix), older_than_ms), page=16)
    for _, (row, cv) in pages:
        if after is not None and row == after[0] and cv.qualifier <= after[1]:
            continue
        if cells and (len(cells) >= WINDOW_EVENTS or size + len(cv.value) > WINDOW_BYTES):
            return cells, True
        cells.append((row, cv))
        size += len(cv.value)
    return cells, False


def _compact_user(table: TableHandle, prefix: bytes, older_than_ms: int | None) -> CompactionStats:
    """One user, window by window, from its tokens on; started again while writes or other
    compactions change it meanwhile, at most :data:`ATTEMPTS` times, then skipped."""
    stats = CompactionStats()
    for attempt in range(ATTEMPTS):
        token, row_tokens = user_meta.user_tokens(table, prefix)
        if not flagged(token):
            if not _has_raw(table, prefix, []):
                return stats  # nothing raw: nothing to do
            claimed = user_meta.claim(table, prefix, token)
            if claimed is None:
                stats.retries += 1
                continue  # a writer flagged it meanwhile: read its token
            token = claimed
        before = stats.raw_events
        if _merge_windows(table, prefix, token, row_tokens, older_than_ms, stats):
            stats.users += int(stats.raw_events > before)
            return stats
        stats.retries += 1
        time.sleep(random.uniform(0, 0.02 * 2**attempt))
    stats.users_skipped += 1
    stats.skipped.append(keys.parse_row_key(prefix + bytes(keys.BUCKET_LEN))[1].decode("utf-8", "replace"))
    return stats


def _merge_windows(table: TableHandle, prefix: bytes, token: bytes, row_tokens: dict[bytes, bytes],
                   older_than_ms: int | None, stats: CompactionStats) -> bool:
    """The user's raw cells, window by window, each committed on the token the previous one
    left; False if a check failed (the windows before it are done; start the user again)."""
    after: tuple[bytes, bytes] | None = None
    while True:
        window, more = _window(table, prefix, after, older_than_ms)
        if not window:  # nothing (left) to merge: clear the flag unless newer raw events remain
            if older_than_ms is not None and _has_raw(table, prefix, []):
                stats.flags_kept += 1
                return True
            return user_meta.commit(table, prefix, token, [], [], keep_flag=False)[0]
        (plan,) = _plan_windows(table, {prefix: window}, {prefix: token})
        if len(plan.cells) < len(window):
            more = True  # cut short by the chunks it rewrites
        keep_flag = more or (older_than_ms is not None and _has_raw(table, prefix, plan.cells))
        if not _apply(table, plan, keep_flag=keep_flag):
            return False
        stats.raw_kept += user_meta.delete_merged(table, _by_row(plan.cells), row_tokens)
        stats.add(plan.stats())
        token = plan.next_token
        if not more:
            stats.flags_kept += int(flagged(token))
            return True
        row, cv = plan.cells[-1]
        after = (row, cv.qualifier)


def _compact_batch(table: TableHandle, ex: ThreadPoolExecutor, batch: dict[bytes, list[tuple[bytes, Any]]],
                   flags: dict[bytes, bytes], row_tokens: dict[bytes, bytes],
                   older_than_ms: int | None) -> CompactionStats:
    """Users of one scan batch (one window each), with the tokens read before the scan: shared
    gets and deletes. Users without a token (they must be claimed first), users whose window
    was cut short, and users whose check failed go through :func:`_compact_user` on their own."""
    stats = CompactionStats()
    ready = {p: cells for p, cells in batch.items() if flagged(flags.get(p))}
    plans = [plan for plan in _plan_windows(table, ready, flags) if len(plan.cells) == len(ready[plan.prefix])]
    keep = [older_than_ms is not None and _has_raw(table, plan.prefix, plan.cells) for plan in plans]
    results = list(ex.map(lambda pk: _apply(table, pk[0], keep_flag=pk[1]), zip(plans, keep, strict=True)))
    applied = [plan for plan, ok in zip(plans, results, strict=True) if ok]
    stats.raw_kept += user_meta.delete_merged(table, _by_row([c for plan in applied for c in plan.cells]), row_tokens,
                                              executor=ex)
    for plan in applied:
        stats.add(plan.stats())
        stats.users += 1
        stats.flags_kept += int(flagged(plan.next_token))
    done = {plan.prefix for plan in applied}
    again = [p for p in batch if p not in done]
    stats.retries += sum(1 for plan, ok in zip(plans, results, strict=True) if not ok)
    for part in ex.map(lambda p: _compact_user(table, p, older_than_ms), again):
        stats.add(part)
    return stats


def _by_row(cells: list[tuple[bytes, Any]]) -> dict[bytes, list[Any]]:
    rows: dict[bytes, list[Any]] = {}
    for row, cv in cells:
        rows.setdefault(row, []).append(cv)
    return rows


@dataclass
class _Plan:
    """One user's atomic step: the chunks it replaces and the pieces it puts."""

    prefix: bytes
    token: bytes  # the flag token the step is conditional on
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
    """The step of each user (one non-empty window each), two batched gets for all of them. A
    window whose territories hold more than :data:`~store.tiers.chunk_steps.STEP_EVENTS` chunk
    events is cut short (``len(plan.cells) < len(window)``)."""
    t = idl()
    users = list(windows)
    if not users:
        return []
    decode = table.codec.decode
    raws: dict[bytes, pa.Table] = {}
    gets = []
    for p in users:
        raw: list[Event] = []
        for _, cv in windows[p]:
            ts, eid = keys.parse_qualifier(cv.qualifier)
            raw.append((ts, eid, decode(cv.value)))
        raws[p] = events_table(table, raw)
        start = first_qualifier_before(max(e[0] for e in raw) + 1)
        gets.append(t.TGet(row=p, columns=[t.TColumn(META, WATERMARK)]))
        gets.append(t.TGet(row=p, columns=[t.TColumn(family=CHUNKS)], maxVersions=1,
                           filterString=all_of(KEY_ONLY, columns_from(start))))
    results = get_multiple(table.pool, table.name_bytes, gets)
    marks: dict[bytes, tuple[int, int] | None] = {}
    steps: dict[bytes, tuple[list[ChunkKey], np.ndarray]] = {}
    value_gets = []
    for j, p in enumerate(users):
        marks[p] = user_meta.parse_gets([results[2 * j]]).marks.get(0)
        chunks = [chunk_key(cv.qualifier, cv.timestamp) for cv in results[2 * j + 1].columnValues or []]
        new = raws[p]
        index, fit = chunk_steps.territories(chunks, new.column("event_ts").to_numpy(),
                                             new.column("event_id").to_numpy())
        raws[p], steps[p] = new.slice(0, fit), (chunks, index[:fit])
        wanted = chunk_steps.owned(index[:fit], chunks)
        if wanted:
            value_gets.append(t.TGet(row=p, columns=[t.TColumn(CHUNKS, k.qualifier) for k in wanted], maxVersions=1))
    values: dict[bytes, dict[bytes, bytes]] = {}
    for result in get_multiple(table.pool, table.name_bytes, value_gets):
        values[result.row] = {cv.qualifier: cv.value for cv in result.columnValues or []}
    floor = chunk_steps.merge_floor(table.spec)
    merged = [(p, chunk_steps.rewritten(table, p, raws[p], steps[p][1], steps[p][0], values.get(p, {}), marks[p],
                                        floor)) for p in users]
    return [_Plan(p, tokens[p], windows[p][:len(steps[p][1])], chunk_steps.owned(steps[p][1], steps[p][0]), pieces)
            for p, pieces in zip(users, chunk_steps.pieces(table, merged), strict=True)]


def _apply(table: TableHandle, plan: _Plan, *, keep_flag: bool) -> bool:
    """Step 4 for one user; False if its check failed (nothing written)."""
    applied, plan.next_token = chunk_steps.commit(table, plan.prefix, plan.token, plan.replaced, plan.pieces,
                                                  keep_flag=keep_flag)
    return applied


def _has_raw(table: TableHandle, prefix: bytes, merged: list[tuple[bytes, Any]]) -> bool:
    """Whether the user has raw cells other than ``merged`` (those about to be compacted)."""
    t = idl()
    skip = {(row, cv.qualifier) for row, cv in merged}
    scan = t.TScan(startRow=keys.row_key(prefix, keys.MAX_U64), stopRow=keys.prefix_end(prefix),
                   columns=[t.TColumn(family=EVENTS)], filterString=KEY_ONLY, batchSize=1000)
    for result in scan_results(table.pool, table.name_bytes, scan, 16):
        if any((result.row, cv.qualifier) not in skip for cv in result.columnValues):
            return True
    return False
