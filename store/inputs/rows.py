"""Row validation: every rejected row gets a reason code, the field and its position.

Validation is column-wise (pyarrow.compute) over a record batch and never raises for bad
rows: it splits a batch into the rows to write and a quarantine table. A batch whose
*columns* do not fit the schema (a required column missing, an unknown column) is a
:class:`~store.errors.SchemaError` instead: no row of it could be written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.errors import SchemaError
from store.format import keys
from store.format.schema import EVENT_ID, EVENT_TS, USER_ID, EventSchema
from store.format.vectors import null_vector_items

# A millisecond timestamp below this (1973-03-03) is almost surely seconds (5138 AD as seconds).
MIN_PLAUSIBLE_MS = 100_000_000_000
DEFAULT_MAX_FUTURE_MS = 24 * 3600 * 1000


def implausible_times(ts: np.ndarray, name: str, *, now_ms: int | None = None,
                      max_future_ms: int = DEFAULT_MAX_FUTURE_MS) -> list[tuple[np.ndarray, Reason, str]]:
    """The one rule for timestamp units, on writes (event times) and reads (``as_of_ts``, label ``ts``).

    Returns ``(rows, reason, detail)`` per failed check, first check first: negative; below
    ``MIN_PLAUSIBLE_MS`` (seconds, not milliseconds); more than ``max_future_ms`` after ``now_ms``
    (default: the clock), i.e. microseconds or nanoseconds.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return [
        (ts < 0, Reason.NEGATIVE_TIMESTAMP, f"{name} is negative"),
        (ts < MIN_PLAUSIBLE_MS, Reason.SECONDS_NOT_MS,
         f"{name} looks like seconds (before 1973 as milliseconds); timestamps are int64 milliseconds UTC"),
        (ts > now + max_future_ms, Reason.FUTURE_TIMESTAMP,
         f"{name} is more than {max_future_ms} ms in the future: microseconds? timestamps are int64 milliseconds UTC"),
    ]


class Reason(StrEnum):
    """Why a row was quarantined."""

    MISSING_USER = "missing_user"
    USER_ID_TOO_LONG = "user_id_too_long"
    MISSING_TIMESTAMP = "missing_timestamp"
    NEGATIVE_TIMESTAMP = "negative_timestamp"
    SECONDS_NOT_MS = "seconds_not_ms"
    FUTURE_TIMESTAMP = "future_timestamp"
    WRONG_TYPE = "wrong_type"
    MISSING_FIELD = "missing_field"
    NULL_IN_VECTOR = "null_in_vector"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    MISSING_EVENT_ID = "missing_event_id"
    INVALID_EVENT_ID = "invalid_event_id"


# The one shape of a quarantine record, wherever it is kept (``WriteResult.quarantine``, the
# backfill's ``quarantine/<unit>.parquet`` files, the Datasink's, which adds the ``row`` itself): where the
# row came from (``source``, e.g. its file, and its 0-based ``position`` there) and why it
# was refused (the reason code, the field, a detail).
QUARANTINE_SCHEMA = pa.schema([
    pa.field("source", pa.string()),
    pa.field("position", pa.int64(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("field", pa.string(), nullable=False),
    pa.field("detail", pa.string(), nullable=False),
])


@dataclass(slots=True)
class Verdicts:
    """Per-row first failure of one batch (``reason[i] == ""`` means the row is valid)."""

    reason: np.ndarray
    field: np.ndarray
    detail: np.ndarray

    @classmethod
    def empty(cls, n: int) -> Verdicts:
        return cls(np.full(n, "", dtype=object), np.full(n, "", dtype=object), np.full(n, "", dtype=object))

    def reject(self, mask: np.ndarray, reason: Reason, field: str, detail: str | np.ndarray) -> None:
        """Mark rows in ``mask`` that are still valid (the first failure wins)."""
        fresh = mask & (self.reason == "")
        self.reason[fresh] = reason.value
        self.field[fresh] = field
        self.detail[fresh] = detail if isinstance(detail, str) else detail[fresh]

    @property
    def valid(self) -> np.ndarray:
        return np.asarray(self.reason == "", dtype=bool)

    def quarantine(self, positions: np.ndarray, source: str | None) -> pa.Table:
        bad = ~self.valid
        n = int(bad.sum())
        return pa.table({
            "source": pa.array([source] * n, pa.string()),
            "position": pa.array(positions[bad], pa.int64()),
            "reason": pa.array(self.reason[bad].tolist(), pa.string()),
            "field": pa.array(self.field[bad].tolist(), pa.string()),
            "detail": pa.array(self.detail[bad].tolist(), pa.string()),
        }, schema=QUARANTINE_SCHEMA)


def _mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def _uncastable(col: pa.Array, target: pa.DataType) -> np.ndarray:
    """Rows of ``col`` that do not cast to ``target``, found by bisection: a slice that casts
    is cleared at once, so a few bad rows among many cost O(bad * log n) casts, not one
    Python-level cast per row."""
    bad = np.zeros(len(col), dtype=bool)
    todo = [(0, len(col))]
    while todo:
        lo, hi = todo.pop()
        try:
            pc.cast(col.slice(lo, hi - lo), target, safe=True)
            continue
        except _CAST_ERRORS:
            pass
        if hi - lo == 1:
            bad[lo] = True
        else:
            mid = (lo + hi) // 2
            todo += [(lo, mid), (mid, hi)]
    return bad


def _cast_column(col: pa.Array, target: pa.DataType, name: str, v: Verdicts, *,
                 reason: Reason = Reason.WRONG_TYPE, detail: str = "") -> pa.Array:
    """Cast ``col`` to ``target``; rows whose value cannot be cast are rejected as ``reason``."""
    if col.type == target:
        return col
    try:
        return pc.cast(col, target, safe=True)
    except _CAST_ERRORS:
        pass
    bad = _uncastable(col, target)
    v.reject(bad, reason, name, detail or f"not a valid {target}")
    cleaned = pc.if_else(pa.array(bad), pa.nulls(len(col), col.type), col)
    try:
        return pc.cast(cleaned, target, safe=True)
    except _CAST_ERRORS as exc:
        raise SchemaError(f"column {name!r} of type {col.type} cannot be read as {target}: {exc}") from exc


def conform_user_ids(col: pa.Array | pa.ChunkedArray, v: Verdicts) -> pa.Array:
    """User ids as they are keyed: cast to string (``5`` is ``"5"``, bytes must be UTF-8).

    Null and empty ids are rejected as ``missing_user``, ids over ``MAX_USER_BYTES`` as
    ``user_id_too_long``, uncastable ones as ``wrong_type``. This is the one rule for user
    ids: events, features and read requests all go through it.
    """
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    users = _cast_column(col, pa.string(), USER_ID, v)
    v.reject(_mask(pc.is_null(users)), Reason.MISSING_USER, USER_ID, "user_id is null")
    lengths = pc.binary_length(users)
    v.reject(_mask(pc.equal(lengths, 0)), Reason.MISSING_USER, USER_ID, "user_id is empty")
    v.reject(_mask(pc.greater(lengths, keys.MAX_USER_BYTES)), Reason.USER_ID_TOO_LONG, USER_ID,
             f"user_id longer than {keys.MAX_USER_BYTES} bytes")
    return users


def conform_event_ids(col: pa.Array | pa.ChunkedArray, v: Verdicts) -> pa.Array:
    """Explicit event ids as they are hashed: cast to string (``5`` is ``"5"``).

    The rule: an ``event_id`` column names every event of the input. A null id is rejected
    as ``missing_event_id`` — never identified by content instead, which would merge the
    distinct events an explicit id exists to tell apart, or store one event twice once its
    id is known. An empty id, or bytes that are not UTF-8, are ``invalid_event_id``.

    Raises:
        SchemaError: the column is not string, binary or integer (floats are refused: an id
            above 2**53 has already lost digits, so two events may share one).
    """
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    t = col.type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) or pa.types.is_integer(t)
            or pa.types.is_null(t)):
        raise SchemaError(f"column {EVENT_ID!r} must be string, binary or integer, not {t}")
    ids = _cast_column(col, pa.string(), EVENT_ID, v, reason=Reason.INVALID_EVENT_ID,
                       detail="event_id is not valid UTF-8")
    v.reject(_mask(pc.is_null(ids)), Reason.MISSING_EVENT_ID, EVENT_ID,
             "event_id is null; an event_id column must name every event")
    v.reject(_mask(pc.equal(pc.binary_length(ids), 0)), Reason.INVALID_EVENT_ID, EVENT_ID, "event_id is empty")
    return ids


def reject_null_vector_items(col: pa.Array, name: str, v: Verdicts) -> pa.Array:
    """Reject rows whose vector has a null item (``null_in_vector``); returns ``col`` with
    those vectors nulled, so the rejected rows cannot reach the encoder."""
    first = null_vector_items(col)
    bad = first >= 0
    if not bad.any():
        return col
    detail = np.full(len(col), "", dtype=object)
    detail[bad] = [f"item {i} of {name} is null; a vector is whole or null" for i in first[bad].tolist()]
    v.reject(bad, Reason.NULL_IN_VECTOR, name, detail)
    return pc.if_else(pa.array(bad), pa.nulls(len(col), col.type), col)


def conform(batch: pa.RecordBatch, schema: EventSchema, *, now_ms: int | None = None,
            max_future_ms: int = DEFAULT_MAX_FUTURE_MS) -> tuple[pa.RecordBatch, Verdicts]:
    """Cast ``batch`` to ``schema`` and judge every row (everything but the payload size).

    Returns the batch with the schema's columns (plus ``event_id`` if given, see
    :func:`conform_event_ids`), cast, and the verdicts. Raises :class:`SchemaError` when the
    columns themselves do not fit.
    """
    names = set(batch.schema.names)
    payload = schema.payload
    unknown = sorted(names - {USER_ID, EVENT_TS, EVENT_ID, *payload.names})
    if unknown:
        raise SchemaError(
            f"column(s) {', '.join(map(repr, unknown))} are not in the table's schema "
            f"(fields: {', '.join(schema.arrow.names)}); add them as nullable fields with evolve_schema first"
        )
    required = [USER_ID, EVENT_TS, *(f.name for f in payload if not f.nullable)]
    missing = [c for c in required if c not in names]
    if missing:
        raise SchemaError(f"input has no column(s) {', '.join(map(repr, missing))} required by the schema")

    n = batch.num_rows
    v = Verdicts.empty(n)
    users = conform_user_ids(batch.column(USER_ID), v)

    ts = _cast_column(batch.column(EVENT_TS), pa.int64(), EVENT_TS, v)
    v.reject(_mask(pc.is_null(ts)), Reason.MISSING_TIMESTAMP, EVENT_TS, "event_ts is null")
    ts_np = np.asarray(ts.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    for mask, reason, detail in implausible_times(ts_np, EVENT_TS, now_ms=now_ms, max_future_ms=max_future_ms):
        v.reject(mask, reason, EVENT_TS, detail)

    columns = {USER_ID: users, EVENT_TS: ts}
    for f in payload:
        col = _cast_column(batch.column(f.name), f.type, f.name, v) if f.name in names else pa.nulls(n, f.type)
        if pa.types.is_fixed_size_list(f.type):
            col = reject_null_vector_items(col, f.name, v)
        if not f.nullable:
            v.reject(_mask(pc.is_null(col)), Reason.MISSING_FIELD, f.name, f"{f.name} is null")
        columns[f.name] = col
    if EVENT_ID in names:
        columns[EVENT_ID] = conform_event_ids(batch.column(EVENT_ID), v)
    return pa.RecordBatch.from_pydict(columns), v
