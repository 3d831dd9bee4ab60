"""Point-in-time training rows as a Ray Dataset: :func:`training_dataset`, the rule of
``seqstore export`` on labels read through :class:`~ray_jobs.data.assemble.AssembleSequences`."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import ray.data

from ray_jobs.data.assemble import AS_OF, USER_ID, AssembleSequences
from ray_jobs.export import INCLUSIVE, LABEL_TS
from store import Config, SchemaError, SequenceStore
from store.inputs import check_times, request_table

__all__ = ["training_dataset"]


class _TrainingRows(AssembleSequences):
    """Labels (``user_id``, ``ts``) in: sequences and feature versions strictly before ``ts``."""

    def __init__(self, table: str, *, max_len: int, features: Sequence[str], config: Config,
                 allow_any_ts: bool, now_ms: int) -> None:
        # export's no-leakage rule, for events and features alike; the label times are checked here, as export does.
        super().__init__(table, max_len=max_len, features=features, config=config, inclusive=INCLUSIVE,
                         allow_any_ts=True)
        self._check_ts, self._now_ms = not allow_any_ts, now_ms

    def _requests(self, rows: pa.Table) -> pa.Table:
        missing = sorted({USER_ID, LABEL_TS} - set(rows.column_names))
        if missing:
            raise SchemaError(f"labels need column(s) {missing}")
        requests = request_table(rows.column(USER_ID), rows.column(LABEL_TS), ts_column=LABEL_TS)
        if self._check_ts:
            # The job's "now", not this actor's clock: every actor judges alike.
            check_times(requests.column(LABEL_TS).combine_chunks(), f"label {LABEL_TS}", now_ms=self._now_ms)
        return requests.rename_columns([USER_ID, AS_OF])


def training_dataset(labels: Any, table: str, *, max_len: int, features: Sequence[str] = (),
                     config: Config | None = None, allow_any_ts: bool = False, now_ms: int | None = None,
                     concurrency: int = 2, batch_size: int = 1024) -> Any:
    """Point-in-time training rows as a lazy ``ray.data.Dataset``, one per label row.

    The rule of ``seqstore export``: each row's sequence holds the user's events strictly
    before the label's ``ts`` — an event at ``ts`` or later never appears — and the features
    are the newest versions with ``valid_from < ts`` (a version stamped by the labelled event
    itself never appears either). Columns: the label row's own (``user_id``
    and ``ts`` with their types, label columns), then ``lengths``, ``history_complete``, one
    column per event field (``[batch, max_len]`` tensors for numeric fields; see
    :mod:`ray_jobs.data.assemble`) and the features. ``iter_torch_batches`` makes a tensor of every column, so
    select numeric ones first: ``ds.select_columns(["label", "lengths", "item_id"])``.

    Args:
        labels: a ``ray.data.Dataset`` or a Parquet path (file, directory, glob or URI) with
            ``user_id``, ``ts`` (int64 ms UTC) and any label columns.
        table: the table to read.
        max_len: events per sequence (newest first).
        features: feature columns to add, each its newest version before ``ts``.
        config: where HBase is; default :meth:`Config.from_env` (read here, shipped to the actors).
        allow_any_ts: skip the units check of ``ts`` (seconds or microseconds are refused:
            microseconds would let every later event leak into the row).
        now_ms: the "now" that check judges the future from, the same for every actor
            (default: the clock, here).
        concurrency: actors assembling sequences, each with its own connection pool.
        batch_size: labels per call.

    Raises:
        TableNotFoundError: no such table (here, before anything runs).
        SchemaError, InvalidRequestError: a label column is missing or named like an output
            column, a ``ts`` is null or in the wrong unit (when the Dataset is consumed, inside
            Ray Data's ``UserCodeException``; the message names the row within its batch).

    Reads only; consuming the Dataset again reads again.
    """
    config = config or Config.from_env()
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    with SequenceStore(config, pool_size=1) as store:
        store.table(table)
    dataset = labels if isinstance(labels, ray.data.Dataset) else ray.data.read_parquet(os.fspath(labels))
    return dataset.map_batches(
        _TrainingRows, fn_constructor_kwargs={"table": table, "max_len": max_len, "features": list(features),
                                              "config": config, "allow_any_ts": allow_any_ts, "now_ms": now_ms},
        concurrency=concurrency, batch_size=batch_size, batch_format="pyarrow")
