"""Sequences inside ``map_batches``: :class:`AssembleSequences`, requests in, padded sequence
columns out.

How sequences travel in Ray blocks: the columns are those of
:func:`ray_jobs.assemble.model_inputs` (what ``seqstore score`` hands a model): ``lengths``,
``history_complete``, one column per event field, newest event first and padded, and the
features. Numeric and boolean fields are tensor columns — ``[batch, max_len]`` arrays in numpy
batches (``[batch, max_len, width]`` for vectors). Ray Data cannot carry 2-D arrays of Python
objects, so string and binary fields are ``fixed_size_list<string>[max_len]`` columns (None
padding kept): a numpy batch holds one array per row, ``np.stack(batch["event_type"])`` is
the ``[batch, max_len]`` array. The request's own columns (``user_id``, the time, labels, ids)
pass through unchanged, types included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from ray.data.block import BlockAccessor
from ray.data.extensions import ArrowTensorArray

from ray_jobs.assemble import model_inputs
from store import Config, InvalidRequestError, SchemaError, SequenceStore
from store.inputs import request_table

__all__ = ["AssembleSequences"]

USER_ID, AS_OF = "user_id", "as_of_ts"


class AssembleSequences:
    """A callable class for ``map_batches``: requests in, padded sequence columns out.

    Each actor opens its own :class:`~store.SequenceStore` (a connection pool) in
    ``__init__``. A batch holds ``user_id`` (any id type the writer accepts) and ``as_of_ts``
    (int64 ms UTC), in any batch format Ray gives (pyarrow, pandas, numpy). The output has the
    batch's own columns, unchanged, plus the columns of :func:`ray_jobs.assemble.model_inputs`
    for the same requests — the sequences ``seqstore score`` gives a model — carried as the
    module docstring says. One output row per request, in request order.

    Args:
        table: the table to read.
        max_len: events per sequence (newest first).
        features: feature columns to add, each as of the request's time.
        config: where HBase is; default :meth:`Config.from_env` *in each actor* — on a
            cluster whose nodes do not have the variables, pass it.
        inclusive: see events and feature versions at ``as_of_ts`` too (default: strictly before;
            one rule for both, :func:`ray_jobs.assemble.model_inputs`).
        allow_any_ts: skip the units check of ``as_of_ts``.
        pool_size: HBase connections per actor.

    Raises (in the actor; the Dataset's consumption raises Ray Data's ``UserCodeException``
    with this error's type and message in its text):
        TableNotFoundError: no such table.
        SchemaError: a column is missing, a user id or time is invalid, or a request column
            has the name of an output column.
        InvalidRequestError: an ``as_of_ts`` looks like seconds or microseconds.

    Reads only; safe to retry.
    """

    def __init__(self, table: str, *, max_len: int, features: Sequence[str] = (), config: Config | None = None,
                 inclusive: bool = False, allow_any_ts: bool = False, pool_size: int = 8) -> None:
        if max_len <= 0:
            raise InvalidRequestError("'max_len' must be > 0")
        self._store = SequenceStore(config, pool_size=pool_size)
        self._table = self._store.table(table)
        self._max_len, self._features = max_len, list(features)
        self._inclusive, self._allow_any_ts = inclusive, allow_any_ts
        self._feature_types = {f.name: f.type for f in self._table.spec.features}

    def __call__(self, batch: Any) -> pa.Table:
        rows = BlockAccessor.for_block(BlockAccessor.batch_to_block(batch)).to_arrow()
        inputs, seqs = model_inputs(self._table, self._requests(rows), max_len=self._max_len,
                                    features=self._features, inclusive=self._inclusive,
                                    allow_any_ts=self._allow_any_ts)
        added = {name: values for name, values in inputs.items() if name not in (USER_ID, AS_OF)}
        clash = sorted(set(added) & set(rows.column_names))
        if clash:
            raise SchemaError(f"request column(s) {clash} have the names of sequence columns; rename them")
        events = seqs.schema.field("sequence").type.value_type
        columns = {name: rows.column(name) for name in rows.column_names}
        for name, values in added.items():
            columns[name] = self._column(name, values, events)
        return pa.table(columns)

    def _requests(self, rows: pa.Table) -> pa.Table:
        missing = sorted({USER_ID, AS_OF} - set(rows.column_names))
        if missing:
            raise SchemaError(f"requests need column(s) {missing}")
        return request_table(rows.column(USER_ID), rows.column(AS_OF))

    def _column(self, name: str, values: np.ndarray, events: pa.StructType) -> pa.Array:
        if values.ndim == 1:
            return pa.array(values, type=self._feature_types.get(name) if values.dtype == object else None)
        if values.dtype == object:  # string/binary events: Ray Data cannot carry 2-D object arrays
            kind = events.field(events.get_field_index(name)).type
            return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=kind), values.shape[1])
        return ArrowTensorArray.from_numpy(np.ascontiguousarray(values))
