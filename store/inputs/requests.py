"""Normalising ``(user_id, as_of_ts)`` requests from the shapes callers have.

Accepted shapes, and nothing that could be read two ways:

* an Arrow table or record batch, or a ``dict`` of columns, with ``user_id`` and
  ``as_of_ts`` (the shape every internal caller uses);
* an iterable (list, generator, ...) of ``(user_id, as_of_ts)`` pairs;
* a pair of columns ``(user_ids, as_of_ts)``: a 2-tuple of arrays (lists, numpy or Arrow
  arrays) whose second array holds the timestamps.

A 2-tuple that fits both the pairs and the columns reading, such as ``((1, t1), (2, t2))``,
is refused with :class:`~store.errors.SchemaError` rather than guessed.

User ids may be strings, integers, UTF-8 bytes, or a Python mix of strings and integers;
they are keyed exactly as the event writer keys them (the integer ``5`` is user ``"5"``),
and outputs carry them back with the caller's type (:attr:`RequestBatch.ids`).

Timestamps are int64 milliseconds UTC and are checked with the writer's rule
(:func:`store.inputs.rows.implausible_times`): seconds, microseconds and negative values are an
:class:`~store.errors.InvalidRequestError` naming the column and the row, unless the caller
passes ``allow_any_ts=True`` for a deliberate far-past or far-future read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from store.errors import InvalidRequestError, SchemaError
from store.format.schema import USER_ID
from store.inputs.rows import Verdicts, conform_user_ids, implausible_times

Requests: TypeAlias = (
    "pa.Table | pa.RecordBatch | Mapping[str, Any] | tuple[Sequence[Any], Sequence[int]] | Iterable[tuple[Any, int]]"
)
AS_OF = "as_of_ts"


@dataclass(frozen=True, slots=True)
class RequestBatch:
    """Normalised requests, in request order.

    Attributes:
        ids: the user ids as the caller gave them (an Arrow array of their type), for outputs.
        users: the same ids as the store keys them (strings).
        ts: the timestamps, int64 milliseconds UTC.
    """

    ids: pa.Array
    users: list[str]
    ts: list[int]

    def __len__(self) -> int:
        return len(self.users)


def request_table(user_ids: Any, ts: Any, *, ts_column: str = AS_OF) -> pa.Table:
    """An explicit request table (``user_id``, ``ts_column``): what internal callers pass."""
    return pa.table({USER_ID: _id_array(user_ids), ts_column: _ts_array(ts, ts_column)})


def normalize(requests: Requests, *, ts_column: str = AS_OF, allow_any_ts: bool = False,
              now_ms: int | None = None) -> RequestBatch:
    """Requests as :class:`RequestBatch`.

    Args:
        requests: one of the shapes in the module docstring.
        ts_column: the timestamp column's name (``as_of_ts``; export labels use ``ts``).
        allow_any_ts: skip the units check (a deliberate far-past or far-future read).
        now_ms: "now" for the future check (default: the clock).

    Raises:
        SchemaError (a ``ValueError``): the shape is ambiguous or unknown, a column is
            missing, the lengths differ, a user id is null, empty, too long or not castable
            to a string, or a timestamp is null or not an integer.
        InvalidRequestError (a ``ValueError``): a timestamp looks like seconds or
            microseconds, or is negative; the message names the column, the row and the unit.
    """
    users: Any
    ts: Any
    if isinstance(requests, (pa.Table, pa.RecordBatch, Mapping)):
        names = requests.schema.names if isinstance(requests, (pa.Table, pa.RecordBatch)) else list(requests)
        missing = sorted({USER_ID, ts_column} - set(names))
        if missing:
            raise SchemaError(f"requests need column(s) {missing}")
        users, ts = requests[USER_ID], requests[ts_column]
    elif isinstance(requests, tuple) and len(requests) == 2 and _is_column_pair(requests, ts_column):
        users, ts = requests
    elif isinstance(requests, (str, bytes)) or not isinstance(requests, Iterable):
        raise SchemaError(f"requests must be a table, (user_id, {ts_column}) pairs or a pair of columns, "
                          f"not {type(requests).__name__}")
    else:
        users, ts = [], []
        for i, pair in enumerate(requests):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise SchemaError(f"request {i} is {pair!r}, not a (user_id, {ts_column}) pair")
            users.append(pair[0])
            ts.append(pair[1])
    ids = _id_array(users)
    times = _ts_array(ts, ts_column)
    if len(ids) != len(times):
        raise SchemaError(f"{len(ids)} user ids but {len(times)} timestamps")
    if not allow_any_ts:
        check_times(times, ts_column, now_ms=now_ms)
    return RequestBatch(ids, _keyed(ids), times.to_pylist())


def user_ids(values: Sequence[Any] | np.ndarray | pa.Array | pa.ChunkedArray) -> list[str]:
    """User ids as the event writer keys them (:func:`store.inputs.rows.conform_user_ids`).

    Raises:
        SchemaError: the ids mix types other than strings and integers, or one is null,
            empty, too long or not castable to a string; the message names its position and
            the reason code.
    """
    return _keyed(_id_array(values))


def check_times(ts: pa.Array, name: str, *, now_ms: int | None = None, first_row: int = 0,
                source: str = "") -> None:
    """Raise :class:`InvalidRequestError` for the first timestamp the units rule refuses.

    The message names the column, the request (or, with ``source``, the row of that file:
    ``first_row`` + position), the value and the likely unit.
    """
    values = np.asarray(ts.to_numpy(zero_copy_only=False), dtype=np.int64)
    for mask, reason, detail in implausible_times(values, name, now_ms=now_ms):
        if mask.any():
            i = int(np.argmax(mask))
            where = f"row {first_row + i} of {source}" if source else f"request {first_row + i}"
            raise InvalidRequestError(
                f"{name} of {where} is {int(values[i])}: {detail} ({reason}); "
                "pass allow_any_ts=True (--allow-any-ts) to read far past or future times deliberately")


def _id_array(values: Any) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        items = list(values)
        # A Python mix of strings and integers (not bools) is keyed as the writer keys each.
        if all(isinstance(u, str) or (isinstance(u, (int, np.integer)) and not isinstance(u, (bool, np.bool_)))
               for u in items):
            return pa.array([str(u) for u in items], pa.string())
        raise SchemaError(f"user ids must be strings, integers (or a mix of both) or bytes: {exc}") from exc


def _keyed(ids: pa.Array) -> list[str]:
    v = Verdicts.empty(len(ids))
    users = conform_user_ids(ids, v)
    if not v.valid.all():
        i = int(np.argmin(v.valid))
        raise SchemaError(f"user_id at position {i}: {v.reason[i]}: {v.detail[i]}")
    out: list[str] = users.to_pylist()
    return out


def _ts_array(values: Any, ts_column: str) -> pa.Array:
    try:
        column = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_null(column.type)):
            raise SchemaError(f"'{ts_column}' must be int64 milliseconds UTC, not {column.type}")
        ts = column.cast(pa.int64(), safe=True)  # safe: 1.5 is refused, 2.0 is 2
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise SchemaError(f"'{ts_column}' must be int64 milliseconds UTC: {exc}") from exc
    if isinstance(ts, pa.ChunkedArray):
        ts = ts.combine_chunks()
    if ts.null_count:
        i = int(np.argmax(np.asarray(ts.is_null().to_numpy(zero_copy_only=False), dtype=bool)))
        raise SchemaError(f"request {i} has a null {ts_column}")
    return ts


def _is_timestamp(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_array(value: Any) -> bool:
    if isinstance(value, (np.ndarray, pa.Array, pa.ChunkedArray)):
        return True
    return isinstance(value, Iterable) and hasattr(value, "__len__") and not isinstance(value, (str, bytes, Mapping))


def _is_column_pair(requests: tuple[Any, Any], ts_column: str) -> bool:
    """Whether a 2-tuple is ``(user_ids, timestamps)`` rather than two ``(user, ts)`` pairs."""
    a, b = requests
    if not _is_array(a) and not _is_array(b):
        raise SchemaError(f"requests {requests!r} look like one (user_id, {ts_column}) pair; "
                          f"pass a list of pairs: [(user_id, {ts_column})]")
    if not (_is_array(a) and _is_array(b)):
        raise SchemaError(f"requests {requests!r}: a pair of columns needs two arrays (user ids, {ts_column})")
    if not (len(a) == len(b) == 2 and isinstance(a, (tuple, list)) and isinstance(b, (tuple, list))):
        return True  # only two 2-element tuples/lists can also be read as two pairs
    as_pairs = all(not _is_array(p[0]) and _is_timestamp(p[1]) for p in (a, b))
    as_columns = not any(_is_array(u) for u in a) and all(_is_timestamp(t) for t in b)
    if as_pairs and as_columns:
        raise SchemaError(f"requests {requests!r} are ambiguous: two (user_id, {ts_column}) pairs or a pair of "
                          f"columns? Pass a table, a list of pairs [(user_id, {ts_column}), ...] or a dict "
                          f"{{'user_id': [...], '{ts_column}': [...]}}")
    return not as_pairs
