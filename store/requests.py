"""Normalising ``(user_id, as_of_ts)`` requests from the shapes callers have."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from store.errors import SchemaError

Requests = pa.Table | pa.RecordBatch | tuple[Sequence[Any], Sequence[int]] | Iterable[tuple[Any, int]]


def normalize(requests: Requests, *, ts_column: str = "as_of_ts") -> tuple[list[str], list[int]]:
    """``(user_ids, as_of_ts)`` as Python lists, in request order.

    Accepts an Arrow table/batch with ``user_id`` and ``ts_column``, a pair of arrays, or
    an iterable of ``(user_id, as_of_ts)`` pairs. ``as_of_ts`` is int64 milliseconds UTC.
    """
    if isinstance(requests, (pa.Table, pa.RecordBatch)):
        missing = {"user_id", ts_column} - set(requests.schema.names)
        if missing:
            raise SchemaError(f"requests need column(s) {sorted(missing)}")
        users = requests.column("user_id").to_pylist()
        ts = requests.column(ts_column).to_pylist()
    elif isinstance(requests, tuple) and len(requests) == 2 and not isinstance(requests[0], (str, bytes)):
        users = list(np.asarray(requests[0], dtype=object))
        ts = [int(x) for x in np.asarray(requests[1])]
    else:
        pairs = list(requests)
        users = [p[0] for p in pairs]
        ts = [int(p[1]) for p in pairs]
    if len(users) != len(ts):
        raise SchemaError(f"{len(users)} user ids but {len(ts)} timestamps")
    for i, (u, t) in enumerate(zip(users, ts, strict=True)):
        if u is None or t is None:
            raise SchemaError(f"request {i} has a null user_id or {ts_column}")
    return [str(u) if not isinstance(u, (str, bytes)) else u for u in users], [int(t) for t in ts]
