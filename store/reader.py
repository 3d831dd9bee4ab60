"""Point-in-time sequence reads.

Time contract: for a request ``(user_id, as_of)``, an event is visible iff
``event_ts < as_of`` (``<=`` with ``inclusive=True``), and, with ``window_ms``, also
``event_ts >= as_of - window_ms``. Events come newest first, ties ordered by
``(event_ts, event_id)`` descending; ``oldest_first=True`` gives the exact reverse.
Expired (TTL) and trimmed (``max_events_per_user``) events are never returned.

Retention and history: TTL and the ``max_events_per_user`` trim delete old events for good,
so a *historical* read (an ``as_of`` in the past) may see fewer events than a read made at that
time did. Each output row says so: ``history_complete`` is False when the sequence is shorter
than ``max_len`` and its time range reaches below what retention keeps (the user's trim
watermark, or ``now - ttl``); trimmed events are always older than every kept one, so a full
sequence (``length == max_len``) is never affected. A read racing a trim returns the kept
events only: the watermark is read again after the scan (a trim records it before deleting).

Two tiers (see :mod:`store.compaction`): a user's compacted events are columnar chunks in
the user's own row, read for many users per ``getMultiple`` (:mod:`store.chunk_tier`) and
cut on arrays; events written since the user's last compaction are per-event cells, scanned
per request (:mod:`store.raw_tier`) only for users whose raw-tier flag is set. The two are
merged and deduplicated by ``(event_ts, event_id)``. The phases, per user:

1. one row-atomic get of the user's row: its raw-tier flag, its watermark and its newest
   chunks before ``as_of`` (for many users per ``getMultiple``);
2. unflagged users: more chunks if the first ones do not cover a request (rare);
3. flagged users: the raw scan, then their chunks read again;
4. on tables with ``max_events_per_user``: the watermarks read again.

A read racing a compaction finds each event raw (flag set, step 3), compacted, or both
(deduplicated, the raw copy winning), never neither — by the protocol of :mod:`store.user_meta`
(chunks and flag change together; raw cells go only after) and this order of reads: an
unflagged user's chunks in step 1 hold everything compacted before; a flagged user's chunks in
step 3 are read after its raw cells.

Requests are grouped by user: one chunk run serves every request of a user it covers (a
training export's labels). Requests run in slices of whole users (:data:`SLICE_USERS`,
:data:`SLICE_REQUESTS`), :data:`SLICE_THREADS` at a time, so memory per call is bounded by the
slices, ``max_len`` and a small constant, whatever the users' history lengths.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from store import keys
from store.chunk_tier import ChunkRuns, Columns, Request
from store.connection import idl
from store.errors import InvalidRequestError
from store.padding import padded
from store.raw_tier import RawScans, events_table
from store.requests import Requests, normalize
from store.table import META
from store.user_meta import RAW_FLAG, WATERMARK, parse_gets

if TYPE_CHECKING:
    from store.handle import TableHandle

MAX_TS = 2**63 - 1  # HBase timestamps are int64
SLICE_REQUESTS = 4_096
SLICE_USERS = 256  # users per slice: one getMultiple per round
SLICE_THREADS = 3
META_GETS_PER_CALL = 1_000


def read_sequences(
    table: TableHandle,
    requests: Requests,
    *,
    max_len: int,
    window_ms: int | None = None,
    event_types: Sequence[str] | None = None,
    fields: Sequence[str] | None = None,
    inclusive: bool = False,
    oldest_first: bool = False,
    allow_any_ts: bool = False,
) -> pa.Table:
    """Assemble each request's sequence as of its time.

    Args:
        table: the table to read.
        requests: ``(user_id, as_of_ts)`` pairs: an Arrow table with ``user_id`` and
            ``as_of_ts`` columns, a pair of arrays, or an iterable of tuples.
        max_len: at most this many events per sequence (the newest visible ones).
        window_ms: only events with ``event_ts >= as_of - window_ms``.
        event_types: only events whose ``event_type`` is one of these.
        fields: payload fields to return (default all); ``event_ts``/``event_id`` always.
        inclusive: make an event exactly at ``as_of`` visible.
        oldest_first: order each sequence oldest first (default newest first).
        allow_any_ts: accept any ``as_of_ts``; by default one that looks like seconds or
            microseconds (the writer's units rule) is refused.

    Returns:
        One row per request, in request order: ``user_id`` (as given, with its type),
        ``as_of_ts``, ``length``, ``history_complete`` (False when retention may have removed
        events this read would otherwise return; see the module docstring) and ``sequence``
        (``list<struct<event_ts, event_id, fields...>>``). Unknown users get an empty sequence.

    Raises:
        SchemaError: the requests' shape or user ids are invalid.
        InvalidRequestError: a bad option (``max_len``, ``window_ms``, ``fields``,
            ``event_types``) or an implausible ``as_of_ts``.
        StoreUnavailableError, HBaseError: as raised by the connection. Reads have no side
            effects and are safe to retry.
    """
    if max_len <= 0:
        raise InvalidRequestError("'max_len' must be > 0")
    if window_ms is not None and window_ms <= 0:
        raise InvalidRequestError("'window_ms' must be > 0")
    names = table.codec.field_names
    wanted = list(fields) if fields is not None else names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise InvalidRequestError(f"unknown field(s) {unknown}; the schema has {names}")
    if event_types is not None and "event_type" not in names:
        raise InvalidRequestError("'event_types' needs an 'event_type' field in the schema")
    batch = normalize(requests, allow_any_ts=allow_any_ts)
    read = _Read(table, max_len, window_ms, set(event_types) if event_types is not None else None, inclusive)
    # Requests grouped by user (stable), in slices of whole users read concurrently: while one
    # slice waits for HBase another decodes.
    order = sorted(range(len(batch.users)), key=batch.users.__getitem__)
    slices = _slices(order, batch.users)
    with ThreadPoolExecutor(max_workers=table.pool.size, thread_name_prefix="seqstore-read") as ex, \
            ThreadPoolExecutor(max_workers=SLICE_THREADS, thread_name_prefix="seqstore-slice") as sx:
        parts = list(sx.map(lambda chosen: read.slice(ex, [batch.users[i] for i in chosen],
                                                      [batch.ts[i] for i in chosen], wanted, oldest_first), slices))
    events_type = _sequence_type(table, wanted)
    if parts:
        merged = pa.concat_tables(parts).combine_chunks()
        inverse = np.empty(len(order), dtype=np.int64)
        inverse[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
        merged = merged.take(pa.array(inverse))
    else:
        merged = pa.table({"length": pa.array([], pa.int32()), "history_complete": pa.array([], pa.bool_()),
                           "sequence": pa.array([], events_type)})
    return pa.table({
        "user_id": batch.ids,
        "as_of_ts": pa.array(batch.ts, pa.int64()),
        "length": merged.column("length"),
        "history_complete": merged.column("history_complete"),
        "sequence": merged.column("sequence"),
    })


def _slices(order: list[int], users: list[str]) -> list[list[int]]:
    """``order`` (requests sorted by user) cut into slices of at most :data:`SLICE_USERS` users
    and :data:`SLICE_REQUESTS` requests, at user boundaries (a user with more requests than a
    slice holds is cut, which costs it one more run, nothing else)."""
    slices: list[list[int]] = []
    current: list[int] = []
    distinct = 0
    for k, i in enumerate(order):
        new_user = k == 0 or users[i] != users[order[k - 1]]
        if current and ((new_user and distinct >= SLICE_USERS) or len(current) >= SLICE_REQUESTS):
            slices.append(current)
            current, distinct = [], 0
            new_user = True
        current.append(i)
        distinct += new_user
    if current:
        slices.append(current)
    return slices


def _sequence_type(table: TableHandle, wanted: list[str]) -> pa.DataType:
    payload_types = {f.name: f.type for f in table.spec.schema.payload}
    struct_fields = [pa.field("event_ts", pa.int64(), nullable=False),
                     pa.field("event_id", pa.uint64(), nullable=False)]
    struct_fields += [pa.field(n, payload_types[n]) for n in wanted]
    return pa.list_(pa.struct(struct_fields))


class _Read:
    """One :func:`read_sequences` call's options; :meth:`slice` serves a slice of requests."""

    def __init__(self, table: TableHandle, max_len: int, window_ms: int | None, types: set[str] | None,
                 inclusive: bool) -> None:
        self.table = table
        self.max_len = max_len
        self.window_ms = window_ms
        self.types = types
        self.inclusive = inclusive
        self.tiered = table.spec.chunk_events is not None
        self.trimmed = table.spec.max_events_per_user is not None
        # The chunk tier's TTL, as HBase applies it to the raw tier (an event older than ttl is gone).
        self.ttl_floor = table.spec.ttl_floor(int(time.time() * 1000))

    def bounds(self, as_of: int, mark: tuple[int, int] | None) -> tuple[int, int]:
        """``(hi, lo)``: event_ts bounds of a request, ``lo`` with the window, TTL and watermark."""
        hi = min(as_of + 1, MAX_TS) if self.inclusive else as_of
        lo = max(0, as_of - self.window_ms) if self.window_ms else 0
        if self.ttl_floor is not None and self.tiered:
            lo = max(lo, self.ttl_floor)
        if mark is not None:
            lo = max(lo, mark[0])
        return hi, lo

    def slice(self, ex: ThreadPoolExecutor, users: list[str], as_of: list[int], wanted: list[str],
              oldest_first: bool) -> pa.Table:
        table = self.table
        unique = list(dict.fromkeys(users))
        position = {u: j for j, u in enumerate(unique)}
        prefixes = [keys.user_prefix(u, table.spec.salt_buckets) for u in unique]
        runs = ChunkRuns(table, ex, self.max_len, self.types)
        first = None
        if self.tiered:
            his = [0] * len(unique)
            for u, ts in zip(users, as_of, strict=True):
                his[position[u]] = max(his[position[u]], self.bounds(ts, None)[0])
            first = runs.first_gets(prefixes, his, [RAW_FLAG, WATERMARK] if self.trimmed else [RAW_FLAG])
            meta = parse_gets(first)
            flagged, before = meta.flagged, meta.marks
        else:
            flagged, before = set(range(len(unique))), (self.watermarks(ex, prefixes) if self.trimmed else {})
        reqs = []
        for u, ts in zip(users, as_of, strict=True):
            j = position[u]
            mark = before.get(j)
            hi, lo = self.bounds(ts, mark)
            reqs.append(Request(j, hi, lo, mark))
        raw_of = [i for i, r in enumerate(reqs) if r.user in flagged]
        if self.tiered:
            runs.fetch(prefixes, reqs, [i for i, r in enumerate(reqs) if r.user not in flagged], first)
        # Flagged users: the raw tier first, then their chunks again. A compaction in between
        # wrote its chunks before deleting the raw cells they replace: they are in this get.
        scans = RawScans(table, self.max_len, self.types)
        raw_events = list(ex.map(lambda i: scans.read(users[i], reqs[i].hi, reqs[i].lo, reqs[i].mark), raw_of))
        if self.tiered and raw_of:
            runs.fetch(prefixes, reqs, raw_of)
        after = self.watermarks(ex, prefixes) if self.trimmed else before
        # All candidate events in one table: each round's chunk events, then the raw events.
        raw_flat = [e for events in raw_events for e in events]
        tables = [*runs.tables, events_table(table, raw_flat)]
        offsets = np.cumsum([0, *(t.num_rows for t in tables)])
        events = pa.concat_tables(tables).combine_chunks()
        cols = Columns.of(events, None)
        candidates: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(reqs)
        for i, (round_id, idx) in runs.found.items():
            candidates[i] = idx + offsets[round_id]
        raw_start = int(offsets[-2])
        for i, found in zip(raw_of, raw_events, strict=True):
            raw_idx = np.arange(raw_start, raw_start + len(found), dtype=np.int64)
            raw_start += len(found)
            candidates[i] = _merge(cols, candidates[i], raw_idx) if self.tiered else raw_idx
        chosen = []
        lengths = np.zeros(len(reqs), dtype=np.int32)
        for i, r in enumerate(reqs):
            idx = candidates[i]
            mark = after.get(r.user)
            if mark is not None and mark != r.mark and len(idx):
                # A trim ran meanwhile: it recorded this watermark before deleting, so what it
                # deleted lies below it. Drop it all (no "kept, gap, older trimmed").
                ts = -cols.neg_ts[idx]
                idx = idx[(ts > mark[0]) | ((ts == mark[0]) & (cols.eid[idx] >= np.uint64(mark[1])))]
            idx = idx[: self.max_len]
            lengths[i] = len(idx)
            chosen.append(idx[::-1] if oldest_first else idx)
        flat = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
        picked = events.select(["event_ts", "event_id", *wanted]).take(pa.array(flat, pa.int64()))
        complete = self.history_complete(users, as_of, lengths, after, unique)
        offs = np.zeros(len(reqs) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offs[1:])
        struct = pa.StructArray.from_arrays(
            [picked.column(n).combine_chunks() for n in picked.schema.names],
            fields=list(_sequence_type(table, wanted).value_type))
        return pa.table({"length": pa.array(lengths, pa.int32()), "history_complete": pa.array(complete, pa.bool_()),
                         "sequence": pa.ListArray.from_arrays(pa.array(offs, pa.int32()), struct)})

    def watermarks(self, ex: ThreadPoolExecutor, prefixes: list[bytes]) -> dict[int, tuple[int, int]]:
        """Each user's trim watermark, by position."""
        t = idl()
        columns = [t.TColumn(family=META, qualifier=WATERMARK)]
        gets = [t.TGet(row=p, columns=columns) for p in prefixes]
        calls = [gets[i : i + META_GETS_PER_CALL] for i in range(0, len(gets), META_GETS_PER_CALL)]
        results = [r for part in ex.map(lambda g: self.table.pool.call("getMultiple", self.table.name_bytes, g), calls)
                   for r in part]
        return parse_gets(results).marks

    def history_complete(self, users: list[str], as_of: list[int], lengths: np.ndarray,
                         marks: dict[int, tuple[int, int]], unique: list[str]) -> np.ndarray:
        """Per request: False when retention may have deleted events inside its time range that it
        would return (it is short of ``max_len`` and its range reaches below what is kept)."""
        out = np.ones(len(users), dtype=bool)
        if self.ttl_floor is None and not marks:
            return out
        position = {u: j for j, u in enumerate(unique)}
        for i, n in enumerate(lengths.tolist()):
            if n >= self.max_len:
                continue  # retention removes only events older than every kept one
            lo = max(0, as_of[i] - self.window_ms) if self.window_ms else 0
            mark = marks.get(position[users[i]])
            if (mark is not None and lo <= mark[0]) or (self.ttl_floor is not None and lo < self.ttl_floor):
                out[i] = False
        return out


def _merge(cols: Columns, chunk_idx: np.ndarray, raw_idx: np.ndarray) -> np.ndarray:
    """Both tiers' candidates of one request, newest first, each event once."""
    if not len(raw_idx):
        return chunk_idx
    if not len(chunk_idx):
        return raw_idx
    idx = np.concatenate([raw_idx, chunk_idx])
    order = np.lexsort((~cols.eid[idx], cols.neg_ts[idx]))  # ts descending, then event_id descending
    idx = idx[order]
    ts, eid = cols.neg_ts[idx], cols.eid[idx]
    keep = np.ones(len(idx), dtype=bool)
    keep[1:] = (ts[1:] != ts[:-1]) | (eid[1:] != eid[:-1])
    return idx[keep]


def to_numpy(sequences: pa.Table, *, max_len: int, fields: Sequence[str] | None = None,
             pad: int | float = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Padded numpy arrays from :func:`read_sequences` output.

    Returns ``(arrays, lengths)``: ``arrays[name]`` has shape ``[batch, max_len]`` (plus the
    vector width for fixed-size-list fields), position 0 holding the first event of the
    sequence's order; slots past ``lengths[i]`` hold ``pad`` (None for strings).
    ``event_ts`` and ``event_id`` are always included.
    """
    seq = sequences.column("sequence").combine_chunks()
    events = seq.flatten()
    lengths = np.minimum(np.asarray(sequences.column("length").to_numpy(), dtype=np.int64), max_len)
    starts = np.asarray(seq.offsets.to_numpy()[:-1], dtype=np.int64)
    names = ["event_ts", "event_id", *(fields if fields is not None else
                                       [f.name for f in events.type if f.name not in ("event_ts", "event_id")])]
    out = {name: padded(events.field(name), starts, lengths, max_len, pad) for name in names}
    return out, lengths.astype(np.int32)
