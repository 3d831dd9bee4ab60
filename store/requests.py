"""Normalising ``(user_id, as_of_ts)`` requests from the shapes callers have.

Accepted shapes, and nothing that could be read two ways:

* an iterable (list, generator, ...) of ``(user_id, as_of_ts)`` pairs;
* a pair of columns ``(user_ids, as_of_ts)``: a 2-tuple of arrays (lists, numpy or Arrow
  arrays) whose second array holds the timestamps;
* a ``dict`` of columns, or an Arrow table/batch, with ``user_id`` and ``as_of_ts``.

A 2-tuple that fits both the pairs and the columns reading, such as ``((1, t1), (2, t2))``,
is refused with :class:`~store.errors.SchemaError` rather than guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from store.errors import SchemaError
from store.schema import USER_ID
from store.validate import Verdicts, conform_user_ids

Requests: TypeAlias = (
    "pa.Table | pa.RecordBatch | Mapping[str, Any] | tuple[Sequence[Any], Sequence[int]] | Iterable[tuple[Any, int]]"
)


def normalize(requests: Requests, *, ts_column: str = "as_of_ts") -> tuple[list[str], list[int]]:
    """``(user_ids, as_of_ts)`` as Python lists, in request order.

    User ids are converted as the event writer converts them (:func:`user_ids`), so an
    integer ``5`` reads user ``"5"``. ``as_of_ts`` is int64 milliseconds UTC.

    Raises:
        SchemaError (a ``ValueError``): the shape is ambiguous or unknown, a column is
        missing, the lengths differ, a user id is null, empty or too long, or a timestamp is
        null or not an integer.
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
        raise SchemaError(f"requests must be (user_id, {ts_column}) pairs, a pair of columns or a table, "
                          f"not {type(requests).__name__}")
    else:
        users, ts = [], []
        for i, pair in enumerate(requests):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise SchemaError(f"request {i} is {pair!r}, not a (user_id, {ts_column}) pair")
            users.append(pair[0])
            ts.append(pair[1])
    if len(users) != len(ts):
        raise SchemaError(f"{len(users)} user ids but {len(ts)} timestamps")
    return user_ids(users), _timestamps(ts, ts_column)


def user_ids(values: Sequence[Any] | np.ndarray | pa.Array | pa.ChunkedArray) -> list[str]:
    """User ids as the event writer keys them (:func:`store.validate.conform_user_ids`).

    Raises:
        SchemaError: the ids mix types, or one is null, empty, too long or not castable to
            a string; the message names its position and the reason code.
    """
    try:
        column = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise SchemaError(f"user ids must all be strings, all bytes or all integers: {exc}") from exc
    v = Verdicts.empty(len(column))
    users = conform_user_ids(column, v)
    if not v.valid.all():
        i = int(np.argmin(v.valid))
        raise SchemaError(f"user_id at position {i}: {v.reason[i]}: {v.detail[i]}")
    out: list[str] = users.to_pylist()
    return out


def _timestamps(values: Any, ts_column: str) -> list[int]:
    try:
        column = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_null(column.type)):
            raise SchemaError(f"'{ts_column}' must be int64 milliseconds UTC, not {column.type}")
        ts = column.cast(pa.int64(), safe=True)  # safe: 1.5 is refused, 2.0 is 2
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise SchemaError(f"'{ts_column}' must be int64 milliseconds UTC: {exc}") from exc
    if ts.null_count:
        i = int(np.argmax(np.asarray(ts.is_null().to_numpy(zero_copy_only=False), dtype=bool)))
        raise SchemaError(f"request {i} has a null {ts_column}")
    out: list[int] = ts.to_pylist()
    return out


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
                          f"columns? Pass a list of pairs [(user_id, {ts_column}), ...] or a dict "
                          f"{{'user_id': [...], '{ts_column}': [...]}}")
    return not as_pairs
