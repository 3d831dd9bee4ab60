"""Normalising ``(user_id, as_of_ts)`` requests from the shapes callers have."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

import pyarrow as pa

from store.errors import SchemaError

Requests: TypeAlias = "pa.Table | pa.RecordBatch | tuple[Sequence[Any], Sequence[int]] | Iterable[tuple[Any, int]]"


def normalize(requests: Requests, *, ts_column: str = "as_of_ts") -> tuple[list[str | bytes], list[int]]:
    """``(user_ids, as_of_ts)`` as Python lists, in request order.

    Accepts an Arrow table/batch with ``user_id`` and ``ts_column``, a pair of arrays, or
    an iterable of ``(user_id, as_of_ts)`` pairs. ``as_of_ts`` is int64 milliseconds UTC.

    Raises:
        SchemaError: a column is missing, the lengths differ, or a value is null.
    """
    users: list[Any]
    ts: list[Any]
    if isinstance(requests, (pa.Table, pa.RecordBatch)):
        missing = {"user_id", ts_column} - set(requests.schema.names)
        if missing:
            raise SchemaError(f"requests need column(s) {sorted(missing)}")
        users = requests.column("user_id").to_pylist()
        ts = requests.column(ts_column).to_pylist()
    elif isinstance(requests, tuple) and len(requests) == 2 and not isinstance(requests[0], (str, bytes)):
        users, ts = list(requests[0]), list(requests[1])
    else:
        pairs = [tuple(p) for p in requests]
        users = [p[0] for p in pairs]
        ts = [p[1] for p in pairs]
    if len(users) != len(ts):
        raise SchemaError(f"{len(users)} user ids but {len(ts)} timestamps")
    for i, (u, t) in enumerate(zip(users, ts, strict=True)):
        if u is None or t is None:
            raise SchemaError(f"request {i} has a null user_id or {ts_column}")
    return [u if isinstance(u, (str, bytes)) else str(u) for u in users], [int(t) for t in ts]
