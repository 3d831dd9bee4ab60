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

Each request is one Thrift2 ``getScannerResults`` call in the common case: a scan from the
user's bucket of ``as_of`` back in time, with the server filtering on the cell timestamp
(= event time) and returning at most ``max_len`` cells per row. Continuations fetch
geometrically more rows for users whose recent buckets are sparse, resuming inside a wide row
where an ``event_types`` filter rejected most of it (see :mod:`store.scanning`). Requests run
concurrently on the table's client pool. Memory per request is bounded by ``max_len``
times a small constant, whatever the user's history length.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from store import keys
from store.codec import payload_array
from store.connection import idl
from store.errors import InvalidRequestError
from store.requests import Requests, normalize
from store.scanning import scan_results
from store.table import DAY_MS, EVENTS
from store.vectors import vector_rows

if TYPE_CHECKING:
    from store.client import SequenceTable

FIRST_ROWS = 2
Event = tuple[int, int, list[Any]]  # (event_ts, event_id, payload values)
# Cells one getScannerResults call may return (page rows x max_len): bounds one Thrift reply.
SCAN_CELLS_PER_CALL = 8_192
MAX_TS = 2**63 - 1  # HBase timestamps are int64


def read_sequences(
    table: SequenceTable,
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
    users, as_of = batch.users, batch.ts
    type_filter = set(event_types) if event_types is not None else None
    trimmed = table.spec.max_events_per_user is not None
    before = table.watermarks(users) if trimmed else {}
    plan = _Plan(table, max_len, window_ms, inclusive, type_filter, names.index("event_type") if type_filter else -1)

    def one(i: int) -> list[Event]:
        return plan.read(users[i], as_of[i], before.get(users[i]))

    with ThreadPoolExecutor(max_workers=table.pool.size, thread_name_prefix="seqstore-read") as ex:
        sequences = list(ex.map(one, range(len(users))))
    if trimmed:
        # A trim records its watermark before deleting, so any deletion this read saw is covered
        # by the watermark as it is now: drop what lies below it (no "kept, gap, older trimmed").
        after = table.watermarks(users)
        for i, user in enumerate(users):
            mark = after.get(user)
            if mark is not None and mark != before.get(user):
                sequences[i] = [e for e in sequences[i] if (e[0], e[1]) >= mark]
    else:
        after = {}
    complete = _history_complete(table, users, as_of, sequences, after, max_len, window_ms)
    return _to_arrow(table, batch.ids, as_of, sequences, complete, wanted, oldest_first)


def _history_complete(table: SequenceTable, users: list[str], as_of: list[int], sequences: list[list[Event]],
                      marks: dict[str | bytes, tuple[int, int]], max_len: int, window_ms: int | None) -> np.ndarray:
    """Per request: False when retention may have deleted events inside its time range that it
    would return (it is short of ``max_len`` and its range reaches below what is kept)."""
    ttl_days = table.spec.ttl_days
    ttl_floor = int(time.time() * 1000) - int(ttl_days * DAY_MS) if ttl_days is not None else None
    out = np.ones(len(users), dtype=bool)
    if ttl_floor is None and not marks:
        return out
    for i, seq in enumerate(sequences):
        if len(seq) >= max_len:
            continue  # retention removes only events older than every kept one
        lo = max(0, as_of[i] - window_ms) if window_ms else 0
        mark = marks.get(users[i])
        if (mark is not None and lo <= mark[0]) or (ttl_floor is not None and lo < ttl_floor):
            out[i] = False
    return out


class _Plan:
    """How one table is read for one call; :meth:`read` serves one request."""

    def __init__(self, table: SequenceTable, max_len: int, window_ms: int | None, inclusive: bool,
                 types: set[str] | None, type_index: int) -> None:
        self.table = table
        self.max_len = max_len
        self.window_ms = window_ms
        self.inclusive = inclusive
        self.types = types
        self.type_index = type_index
        self.t = idl()
        self.columns = [self.t.TColumn(family=EVENTS)]
        # Cells per row seen so far in this call: the first scan of the next request asks for
        # enough rows to fill max_len at once (one round trip) instead of growing from FIRST_ROWS.
        # Threads update these without a lock; a lost update only makes one guess less informed.
        self.seen_cells = 0
        self.seen_rows = 0

    def first_rows(self) -> int:
        if self.seen_rows < 8:
            return FIRST_ROWS
        per_row = max(1.0, self.seen_cells / self.seen_rows)
        if per_row >= self.max_len:
            return 1  # one row (batched to max_len cells) is enough
        # One spare row absorbs the variance of row widths.
        return max(1, min(math.ceil(self.max_len / per_row) + 1, SCAN_CELLS_PER_CALL // self.max_len))

    def read(self, user: str | bytes, as_of: int, watermark: tuple[int, int] | None) -> list[Event]:
        spec = self.table.spec
        hi = min(as_of + 1, MAX_TS) if self.inclusive else as_of  # exclusive upper bound on event_ts
        lo = max(0, as_of - self.window_ms) if self.window_ms else 0
        if watermark is not None:
            lo = max(lo, watermark[0])
        if hi <= lo:
            return []
        prefix = keys.user_prefix(user, spec.salt_buckets)
        low_bucket = keys.bucket_of(lo, spec.bucket_ms)
        stop = keys.row_key(prefix, low_bucket - 1) if low_bucket > 0 else keys.prefix_end(prefix)
        start = keys.scan_start(prefix, keys.bucket_of(hi - 1, spec.bucket_ms))
        scan = self.t.TScan(startRow=start, stopRow=stop, columns=self.columns, maxVersions=1,
                            timeRange=self.t.TTimeRange(minStamp=lo, maxStamp=hi), batchSize=self.max_len)
        out: list[Event] = []
        decode = self.table.codec.decode
        results = scan_results(self.table.pool, self.table.name_bytes, scan, self.first_rows(),
                               max_page=SCAN_CELLS_PER_CALL // self.max_len)
        for result in results:
            # A result of max_len cells is a (possibly partial) wide row: it counts as max_len wide.
            self.seen_rows += 1
            self.seen_cells += len(result.columnValues)
            for cv in result.columnValues:
                ts, eid = keys.parse_qualifier(cv.qualifier)
                if watermark is not None and (ts, eid) < watermark:
                    continue
                payload = decode(cv.value)
                if self.types is not None and payload[self.type_index] not in self.types:
                    continue
                out.append((ts, eid, payload))
                if len(out) == self.max_len:
                    return out
        return out


def _to_arrow(table: SequenceTable, ids: pa.Array, as_of: list[int], sequences: list[list[Event]],
              complete: np.ndarray, wanted: list[str], oldest_first: bool) -> pa.Table:
    names = table.codec.field_names
    payload_types = {f.name: f.type for f in table.spec.schema.payload}
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int32, count=len(sequences))
    offsets = np.zeros(len(sequences) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = [e for s in sequences for e in (reversed(s) if oldest_first else s)]
    idx = [names.index(n) for n in wanted]
    children = [pa.array([e[0] for e in flat], pa.int64()), pa.array([e[1] for e in flat], pa.uint64())]
    children += [payload_array([e[2][j] for e in flat], payload_types[n]) for j, n in zip(idx, wanted, strict=True)]
    struct_fields = [pa.field("event_ts", pa.int64(), nullable=False),
                     pa.field("event_id", pa.uint64(), nullable=False)]
    struct_fields += [pa.field(n, payload_types[n]) for n in wanted]
    events = pa.StructArray.from_arrays(children, fields=struct_fields)
    seq = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), events)
    return pa.table({
        "user_id": ids,
        "as_of_ts": pa.array(as_of, pa.int64()),
        "length": pa.array(lengths, pa.int32()),
        "history_complete": pa.array(complete, pa.bool_()),
        "sequence": seq,
    })


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
    batch = len(lengths)
    row = np.repeat(np.arange(batch), lengths)
    col = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    src = np.repeat(starts, lengths) + col
    names = ["event_ts", "event_id", *(fields if fields is not None else
                                       [f.name for f in events.type if f.name not in ("event_ts", "event_id")])]
    out: dict[str, np.ndarray] = {}
    for name in names:
        child = events.field(name)
        if pa.types.is_fixed_size_list(child.type):
            rows, valid = vector_rows(child)
            arr = np.full((batch, max_len, child.type.list_size), pad, dtype=rows.dtype)
            keep = valid[src]  # a null vector stays pad, as a null scalar does
            arr[row[keep], col[keep]] = rows[src[keep]]
        elif pa.types.is_string(child.type) or pa.types.is_binary(child.type):
            values = np.asarray(child.to_pylist(), dtype=object)
            arr = np.full((batch, max_len), None, dtype=object)
            arr[row, col] = values[src]
        else:
            values = (child.fill_null(pad) if child.null_count else child).to_numpy(zero_copy_only=False)
            arr = np.full((batch, max_len), pad, dtype=values.dtype)
            arr[row, col] = values[src]
        out[name] = arr
    return out, lengths.astype(np.int32)
