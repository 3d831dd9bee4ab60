"""One atomic step of a user's chunks: where new events land, the pieces that replace the
chunks they land in, and the commit. Pure planning plus one call; the protocol the commit
follows (tokens, the flag) is :mod:`store.tiers.user_meta`'s.

Compaction (the new events are a user's raw cells) and the bulk load (a job's input,
:mod:`store.tiers.bulk`) both change chunks through these functions, so chunks are cut,
merged and committed one way:

1. :func:`territories`: each new event belongs to the chunk with the greatest oldest event not
   above it (the oldest chunk for events older than all). Only chunks that own a new event
   are read and rewritten, so a late event costs one chunk, not the user's history; a step
   stops where the chunks it would rewrite pass :data:`STEP_EVENTS` events.
2. :func:`rewritten`, :func:`merged`: a chunk's events and the new ones, once each (the new copy wins), without
   events below the trim watermark or expired (:func:`merge_floor`).
3. :func:`pieces`: consecutive pieces of near-equal size, at most ``chunk_events`` events and
   :data:`CHUNK_BYTES` bytes, for many users in one go; each becomes a cell never written
   before (its qualifier has a nonce).
4. :func:`commit`: one ``checkAndMutate`` of the user row deletes the replaced chunks and puts
   the pieces, on the flag token read before everything merged.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.format.chunk import ChunkKey, chunk_qualifier, decode_chunk, encode_sorted_chunks
from store.format.keys import CHUNKS
from store.format.visibility import Mark, kept, newest_first_once
from store.io.connection import idl
from store.tiers import user_meta

if TYPE_CHECKING:
    from store.table.handle import TableHandle
    from store.table.spec import TableSpec

STEP_EVENTS = 65_536  # chunk events one step may rewrite besides its new events
CHUNK_BYTES = 4 * 1024 * 1024  # a chunk value's bytes at most (unless one event is more); HBase allows 10 MB
TTL_MARGIN_MS = 3_600_000  # a merge drops an expired event only this long after reads stop returning it

Piece = tuple[bytes, bytes, int]  # (qualifier, value, cell timestamp) of a new chunk cell


def merge_floor(spec: TableSpec, now_ms: int | None = None) -> int | None:
    """The event time below which a merge drops events as expired: the TTL floor
    (:meth:`TableSpec.ttl_floor`) less :data:`TTL_MARGIN_MS`; None without a TTL."""
    floor = spec.ttl_floor(int(time.time() * 1000) if now_ms is None else now_ms)
    return floor - TTL_MARGIN_MS if floor is not None else None


def territories(chunks: list[ChunkKey], ts: np.ndarray, eid: np.ndarray) -> tuple[np.ndarray, int]:
    """Per new event (``ts``, ``eid``: sorted newest first), the index in ``chunks`` of the chunk
    whose territory holds it, or -1 where the user has no chunks; and how many of the first
    events one step takes (at least one): as many as keep the chunks to rewrite within
    :data:`STEP_EVENTS` events.

    ``chunks`` are the user's chunks whose oldest event is not above the newest new one,
    newest first (a key-only get from :func:`~store.format.chunk.first_qualifier_before`).
    Vectorised: one sort of the chunks' oldest events among the new ones.
    """
    n = len(ts)
    if not chunks:
        return np.full(n, -1, dtype=np.int64), n
    k = len(chunks)
    oldest_ts = np.array([c.oldest[0] for c in reversed(chunks)], dtype=np.int64)  # ascending
    oldest_id = np.array([c.oldest[1] for c in reversed(chunks)], dtype=np.uint64)
    all_ts = np.concatenate([oldest_ts, np.asarray(ts, dtype=np.int64)])
    all_id = np.concatenate([oldest_id, np.asarray(eid, dtype=np.uint64)])
    kind = np.concatenate([np.zeros(k, dtype=np.int8), np.ones(n, dtype=np.int8)])
    order = np.lexsort((kind, all_id, all_ts))  # a chunk's oldest sorts before an equal event
    is_event = kind[order] == 1
    at_or_below = np.cumsum(~is_event)[is_event]  # chunks whose oldest is not above each event
    count = np.empty(n, dtype=np.int64)
    count[order[is_event] - k] = at_or_below
    index = (k - 1) - np.maximum(count - 1, 0)  # newest-first index; the oldest chunk below all
    # Newest first, the index never decreases: a territory's events are consecutive.
    first = np.flatnonzero(np.diff(index, prepend=-2))
    rewritten = np.cumsum([chunks[int(index[i])].events for i in first])
    over = first[(rewritten > STEP_EVENTS) & (first > 0)]
    return index, int(over[0]) if len(over) else n


def merged(table: TableHandle, prefix: bytes, new: pa.Table, chunk: bytes | None, mark: Mark | None,
           floor: int | None) -> pa.Table:
    """``new`` events (chunk columns, newest first, once each) and a chunk's events, newest
    first, once each (the new copy wins), without events below ``mark`` or expired before ``floor``."""
    if chunk is None:  # new events only: already sorted, once each
        if mark is None and (floor is None or pc.min(new.column("event_ts")).as_py() >= floor):
            return new
        keep = kept(np.asarray(new.column("event_ts").to_numpy()), np.asarray(new.column("event_id").to_numpy()),
                    mark, floor)
        return new.filter(pa.array(keep))
    versions = {s.version: s for s in table.versions}
    old = decode_chunk(chunk, versions, table.codec.current, prefix)
    events = pa.concat_tables([new, old]).combine_chunks()
    ts = np.asarray(events.column("event_ts").to_numpy(), dtype=np.int64)
    eid = np.asarray(events.column("event_id").to_numpy(), dtype=np.uint64)
    order = newest_first_once(ts, eid)
    order = order[kept(ts[order], eid[order], mark, floor)]
    return events.take(pa.array(order, pa.int64()))


def pieces(table: TableHandle, users: Sequence[tuple[bytes, Sequence[pa.Table]]]) -> list[list[Piece]]:
    """Step 3 for many users at once: each user's event tables (``(row prefix, tables)``, each
    newest first, once each) as new chunk cells — per table the fewest consecutive pieces of
    near-equal size with at most the table's ``chunk_events`` events each and, measured on the
    encoded values, at most :data:`CHUNK_BYTES` bytes (a table cut finer and encoded again if
    not). All pieces are encoded in one call (:func:`encode_sorted_chunks`: one content id
    computation for all of them)."""
    current = table.codec.current
    per = table.spec.chunk_events or 2
    plan: list[tuple[int, pa.Table, list[int]]] = []
    slices: list[pa.Table] = []
    rows: list[bytes] = []
    for u, (prefix, tables) in enumerate(users):
        for events in tables:
            n = events.num_rows
            if n:
                bounds = cuts(n, -(-n // per))
                plan.append((u, events, bounds))
                slices.extend(events.slice(a, b - a) for a, b in itertools.pairwise(bounds))
                rows.extend([prefix] * (len(bounds) - 1))
    values = encode_sorted_chunks(slices, rows, current)
    out: list[list[Piece]] = [[] for _ in users]
    done = 0
    for u, events, bounds in plan:
        encoded = values[done : done + len(bounds) - 1]
        done += len(bounds) - 1
        if max(len(v) for v in encoded) > CHUNK_BYTES and len(encoded) < events.num_rows:
            bounds, encoded = _finer(table, users[u][0], events, encoded)
        ts = events.column("event_ts").to_numpy()
        ids = events.column("event_id").to_numpy()
        out[u].extend((chunk_qualifier((int(ts[b - 1]), int(ids[b - 1])), b - a), v, int(ts[a]))
                      for (a, b), v in zip(itertools.pairwise(bounds), encoded, strict=True))
    return out


def _finer(table: TableHandle, prefix: bytes, events: pa.Table, encoded: list[bytes]) -> tuple[list[int], list[bytes]]:
    """Cuts of ``events`` whose encoded values are each at most :data:`CHUNK_BYTES` (or one event)."""
    n = events.num_rows
    count = len(encoded)
    while max(len(v) for v in encoded) > CHUNK_BYTES and count < n:
        count = min(n, max(2 * count, -(-sum(len(v) for v in encoded) // CHUNK_BYTES)))
        bounds = cuts(n, count)
        encoded = encode_sorted_chunks([events.slice(a, b - a) for a, b in itertools.pairwise(bounds)],
                                       [prefix] * count, table.codec.current)
    return cuts(n, count), encoded


def cuts(n: int, count: int) -> list[int]:
    """The bounds of ``count`` consecutive near-equal pieces of ``n`` events (``0 < count <= n``)."""
    return [(i * n + count // 2) // count for i in range(count + 1)]


def rewritten(table: TableHandle, prefix: bytes, new: pa.Table, index: np.ndarray, chunks: list[ChunkKey],
              values: Mapping[bytes, bytes], mark: Mark | None, floor: int | None) -> list[pa.Table]:
    """Step 2 for one user: per territory of ``new`` events (``index`` from :func:`territories`,
    ``values`` the owned chunks' values by qualifier), the events replacing its chunk — cut into
    cells by :func:`pieces`. A chunk gone since its key was read was trimmed whole (a step
    replacing it would have changed the flag token, failing the commit): its events are not kept."""
    out: list[pa.Table] = []
    # index never decreases: one territory when its ends agree (a new user: all -1)
    starts = [0] if index[0] == index[-1] else np.flatnonzero(np.diff(index, prepend=-2)).tolist()
    for a, b in itertools.pairwise([*starts, len(index)]):
        j = int(index[a])
        chunk = values.get(chunks[j].qualifier) if j >= 0 else None
        out.append(merged(table, prefix, new.slice(a, b - a), chunk, mark, floor))
    return out


def owned(index: np.ndarray, chunks: list[ChunkKey]) -> list[ChunkKey]:
    """The chunks a step replaces: those owning one of its events."""
    if not chunks:
        return []
    return [chunks[j] for j in np.unique(index).tolist() if j >= 0]


def commit(table: TableHandle, prefix: bytes, token: bytes, replaced: list[ChunkKey], new_pieces: list[Piece], *,
           keep_flag: bool) -> tuple[bool, bytes]:
    """Step 4: delete ``replaced`` and put ``new_pieces`` on the user row, atomically, if its
    flag is still ``token`` (:func:`store.tiers.user_meta.commit`); ``(applied, the flag now)``."""
    t = idl()
    mutations = [t.TMutation(deleteSingle=t.TDelete(row=prefix, deleteType=t.TDeleteType.DELETE_COLUMN, columns=[
        t.TColumn(CHUNKS, k.qualifier, timestamp=k.newest_ts)])) for k in replaced]
    cells = [t.TColumnValue(CHUNKS, q, v, timestamp=ts) for q, v, ts in new_pieces]
    return user_meta.commit(table, prefix, token, mutations, cells, keep_flag=keep_flag)
