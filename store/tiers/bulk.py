"""Bulk load: events merged straight into users' chunks, with no raw cell written.

A backfill sees a user's whole history at once; writing it as one raw cell per event and
compacting later writes every event three times. :func:`merge` instead cuts the events into
chunks and commits them with the chunk tier's own step (:mod:`store.tiers.chunk_steps`) under
the protocol of :mod:`store.tiers.user_meta`, so it is safe beside writers, readers,
compactions and other loads:

1. The users of a batch are read in batched gets: each one's flag, watermark and the keys of
   the chunks its new events may land in; then the chunks they land in. A user whose flag is
   set has raw events (or another compaction or load is on it): it is compacted first (its
   raw events move into chunks, the flag turns clean) and read again, at most
   :data:`ATTEMPTS` times.
2. Each user's step merges, cuts and commits on the flag value it read (one
   ``checkAndMutate``: rule 2 of :mod:`store.tiers.user_meta` makes that safe with no claim
   first, since every commit puts a new value), leaving a new clean token — or a token of
   ours while more of a heavy user's events follow, at most :data:`STEP_NEW_EVENTS` new events
   per step, so one commit stays small. A commit whose check failed (someone changed the user)
   starts that user's remaining events over from step 1.

Idempotent: events already in chunks merge with themselves (one event per ``(event_ts,
event_id)``, the new copy winning), so a re-run or an overlapping load stores nothing twice. A
load that stops anywhere leaves a readable table: every commit is whole, and a heavy user
stopped between steps is flagged with no raw events, which reads handle and the next
compaction or load clears.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from store.errors import SeqStoreError
from store.format import keys
from store.format.chunk import ChunkKey, chunk_key, first_qualifier_before
from store.format.keys import CHUNKS, META
from store.io.calls import KEY_ONLY, all_of, columns_from, get_multiple
from store.io.connection import idl
from store.tiers import chunk_steps, compaction
from store.tiers.user_meta import RAW_FLAG, UNFLAGGED, WATERMARK, flagged, parse_watermark

if TYPE_CHECKING:
    from store.table.handle import TableHandle

STEP_NEW_EVENTS = 65_536  # new events of one user per commit
BATCH_EVENTS = 131_072  # new events planned together (their users' gets are batched)
BATCH_USERS = 512
ATTEMPTS = 8  # claims of a user that keeps being changed meanwhile, before the load fails


@dataclass
class LoadStats:
    """What a bulk load did (counts add up over calls)."""

    users: int = 0
    events: int = 0  # new events merged into chunks
    chunks_written: int = 0
    chunks_replaced: int = 0
    compacted_first: int = 0  # users found flagged (raw events, another step) and compacted before their load
    retries: int = 0  # steps started over after a concurrent change
    calls: int = 0  # commits: one per user and step (gets are batched; compactions first count their own)

    def add(self, other: LoadStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class _User:
    prefix: bytes
    events: pa.Table  # chunk columns, newest first, once each
    done: int = 0  # events committed
    token: bytes | None = None  # the flag our last commit left (None: read it)
    ts: np.ndarray = field(init=False)  # events' event_ts and event_id, for planning without Arrow calls
    ids: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.ts = np.asarray(self.events.column("event_ts").to_numpy(), dtype=np.int64)
        self.ids = np.asarray(self.events.column("event_id").to_numpy(), dtype=np.uint64)


def merge(table: TableHandle, users: list[tuple[bytes, pa.Table]]) -> LoadStats:
    """Merge each user's new events into its chunks (see the module's steps).

    Args:
        users: ``(user row prefix, events)``, one entry per user, its events in the chunk tier's
            columns (``event_ts``, ``event_id``, the current schema's payload) sorted newest
            first, each ``(event_ts, event_id)`` once.

    Raises:
        InvalidRequestError: the table has no chunk tier.
        SeqStoreError: a user kept being changed for :data:`ATTEMPTS` tries (re-run the load).
        StoreUnavailableError, HBaseError: as raised by the connection; a re-run is safe.
    """
    table.spec.check_tiered()
    stats = LoadStats()
    with ThreadPoolExecutor(max_workers=table.pool.size, thread_name_prefix="seqstore-load") as ex:
        batch: list[_User] = []
        held = 0
        for prefix, events in users:
            if not events.num_rows:
                continue
            batch.append(_User(prefix, events))
            held += events.num_rows
            if held >= BATCH_EVENTS or len(batch) >= BATCH_USERS:
                stats.add(_load(table, ex, batch))
                batch, held = [], 0
        stats.add(_load(table, ex, batch))
    return stats


def _load(table: TableHandle, ex: ThreadPoolExecutor, users: list[_User]) -> LoadStats:
    stats = LoadStats(users=len(users))
    tries = dict.fromkeys((u.prefix for u in users), 0)
    ready = users
    while ready:
        steps, busy = _plan(table, ready)
        for user in busy:  # raw events, or someone else's step: compact it, then read it again
            _tried(tries, user)
        stats.compacted_first += len(busy)
        list(ex.map(lambda u: _compact_first(table, u, tries[u.prefix]), busy))
        results = list(ex.map(lambda step: _commit(table, *step), steps))
        stats.calls += len(steps)
        again: list[_User] = list(busy)
        for (user, _, replaced, new_pieces, taken), applied in zip(steps, results, strict=True):
            if applied:
                stats.events += taken
                stats.chunks_written += len(new_pieces)
                stats.chunks_replaced += len(replaced)
            else:
                stats.retries += 1
                _tried(tries, user)
                user.token = None
                time.sleep(random.uniform(0, 0.002 * 2 ** tries[user.prefix]))
            if user.done < user.events.num_rows:
                again.append(user)
        ready = again
    return stats


def _tried(tries: dict[bytes, int], user: _User) -> None:
    tries[user.prefix] += 1
    if tries[user.prefix] > ATTEMPTS:
        raise SeqStoreError(f"bulk load: user {_name(user.prefix)!r} kept changing for {ATTEMPTS} tries; "
                            "run the load again")


def _compact_first(table: TableHandle, user: _User, attempt: int) -> None:
    """Move a flagged user's raw events into chunks (clearing a stale flag)."""
    if attempt > 1:
        time.sleep(random.uniform(0, 0.002 * 2**attempt))
    compaction.compact_prefix(table, user.prefix)


def _plan(table: TableHandle, users: list[_User]
          ) -> tuple[list[tuple[_User, bytes, list[ChunkKey], list[chunk_steps.Piece], int]], list[_User]]:
    """The next step of each user — ``(user, token, chunks replaced, pieces, events taken)`` —
    and the users that are flagged by someone else (to compact first); two batched gets."""
    t = idl()
    gets = []
    for u in users:
        newest = int(u.ts[u.done])
        gets.append(t.TGet(row=u.prefix, columns=[t.TColumn(META, RAW_FLAG), t.TColumn(META, WATERMARK)]))
        gets.append(t.TGet(row=u.prefix, columns=[t.TColumn(family=CHUNKS)], maxVersions=1,
                           filterString=all_of(KEY_ONLY, columns_from(first_qualifier_before(newest + 1)))))
    results = get_multiple(table.pool, table.name_bytes, gets)
    planned = []
    busy = []
    value_gets = []
    for j, u in enumerate(users):
        cells = {cv.qualifier: cv.value for cv in results[2 * j].columnValues or []}
        if u.token is None:
            if flagged(cells.get(RAW_FLAG)):
                busy.append(u)
                continue
            u.token = cells.get(RAW_FLAG, UNFLAGGED)
        mark = parse_watermark(cells[WATERMARK]) if WATERMARK in cells else None
        chunks = [chunk_key(cv.qualifier, cv.timestamp) for cv in results[2 * j + 1].columnValues or []]
        end = u.done + STEP_NEW_EVENTS
        index, fit = chunk_steps.territories(chunks, u.ts[u.done:end], u.ids[u.done:end])
        owned = chunk_steps.owned(index[:fit], chunks)
        planned.append((u, u.events.slice(u.done, fit), index[:fit], chunks, owned, mark))
        if owned:
            value_gets.append(t.TGet(row=u.prefix, columns=[t.TColumn(CHUNKS, k.qualifier) for k in owned],
                                     maxVersions=1))
    values: dict[bytes, dict[bytes, bytes]] = {}
    for result in get_multiple(table.pool, table.name_bytes, value_gets):
        values[result.row] = {cv.qualifier: cv.value for cv in result.columnValues or []}
    floor = chunk_steps.merge_floor(table.spec)
    merged = [(u.prefix, chunk_steps.rewritten(table, u.prefix, new, index, chunks, values.get(u.prefix, {}), mark,
                                               floor)) for u, new, index, chunks, _, mark in planned]
    steps = [(u, u.token or UNFLAGGED, owned, new_pieces, new.num_rows)
             for (u, new, _, _, owned, _), new_pieces in zip(planned, chunk_steps.pieces(table, merged), strict=True)]
    return steps, busy


def _commit(table: TableHandle, user: _User, token: bytes, replaced: list[ChunkKey],
            new_pieces: list[chunk_steps.Piece], taken: int) -> bool:
    more = user.done + taken < user.events.num_rows
    applied, next_token = chunk_steps.commit(table, user.prefix, token, replaced, new_pieces, keep_flag=more)
    if applied:
        user.done += taken
        user.token = next_token
    return applied


def _name(prefix: bytes) -> str:
    return keys.parse_row_key(prefix + bytes(keys.BUCKET_LEN))[1].decode("utf-8", "replace")
