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
sequence (``length == max_len``) is never affected.

What a read sees of the two tiers, and why a read racing a compaction or a trim sees each
event once, is :mod:`store.tiers.view`'s; the rules that decide it are :mod:`store.format.visibility`'s.

Requests are grouped by user: one chunk run serves every request of a user it covers (a
training export's labels). Requests run in slices of whole users (:data:`SLICE_USERS`,
:data:`SLICE_REQUESTS`), :data:`SLICE_THREADS` at a time, so memory per call is bounded by the
slices, ``max_len`` and a small constant, whatever the users' history lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from store.errors import InvalidRequestError
from store.inputs.requests import Requests, normalize
from store.tiers.view import Gathered, TierView

if TYPE_CHECKING:
    from store.table.handle import TableHandle

SLICE_REQUESTS = 4_096
SLICE_USERS = 256  # users per slice: one getMultiple per round
SLICE_THREADS = 3


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
    view = TierView(table, max_len=max_len, window_ms=window_ms, inclusive=inclusive,
                    types=set(event_types) if event_types is not None else None)
    # Requests grouped by user (stable), in slices of whole users read concurrently: while one
    # slice waits for HBase another decodes. HBase calls go through the pool's shared threads; a
    # call of one slice (an online read) starts no thread of its own.
    order = sorted(range(len(batch.users)), key=batch.users.__getitem__)
    slices = _slices(order, batch.users)
    ex = table.pool.executor

    def one(chosen: list[int]) -> pa.Table:
        return _slice(view, ex, [batch.users[i] for i in chosen], [batch.ts[i] for i in chosen], wanted, oldest_first)

    if len(slices) <= 1:
        parts = [one(chosen) for chosen in slices]
    else:
        with ThreadPoolExecutor(max_workers=SLICE_THREADS, thread_name_prefix="seqstore-slice") as sx:
            parts = list(sx.map(one, slices))
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



def _slice(view: TierView, ex: ThreadPoolExecutor, users: list[str], as_of: list[int], wanted: list[str],
           oldest_first: bool) -> pa.Table:
    """One slice of requests as rows of the output (without the request columns)."""
    found = view.gather(ex, users, as_of)
    lengths = np.fromiter((len(p) for p in found.picks), dtype=np.int32, count=len(found.picks))
    chosen = [p[::-1] for p in found.picks] if oldest_first else found.picks
    flat = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    picked = found.events.select(["event_ts", "event_id", *wanted]).take(pa.array(flat, pa.int64()))
    offs = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offs[1:])
    struct = pa.StructArray.from_arrays(
        [picked.column(n).combine_chunks() for n in picked.schema.names],
        fields=list(_sequence_type(view.table, wanted).value_type))
    return pa.table({"length": pa.array(lengths, pa.int32()),
                     "history_complete": pa.array(_history_complete(view, users, as_of, lengths, found), pa.bool_()),
                     "sequence": pa.ListArray.from_arrays(pa.array(offs, pa.int32()), struct)})


def _history_complete(view: TierView, users: list[str], as_of: list[int], lengths: np.ndarray,
                      found: Gathered) -> np.ndarray:
    """Per request: False when retention may have deleted events inside its time range that it
    would return (it is short of ``max_len`` and its range reaches below what is kept)."""
    out = np.ones(len(users), dtype=bool)
    floor, marks = view.ttl_floor, found.marks
    if floor is None and not marks:
        return out
    position = {u: j for j, u in enumerate(found.users)}
    for i, n in enumerate(lengths.tolist()):
        if n >= view.max_len:
            continue  # retention removes only events older than every kept one
        lo = max(0, as_of[i] - view.window_ms) if view.window_ms else 0
        mark = marks.get(position[users[i]])
        if (mark is not None and lo <= mark[0]) or (floor is not None and lo < floor):
            out[i] = False
    return out
