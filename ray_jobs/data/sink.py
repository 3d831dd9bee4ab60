"""Ray Data integration: write Datasets of events into a table, assemble sequences inside
``map_batches``, and build point-in-time training Datasets. Needs ``ray[data]``.

Writing: any Dataset of events — ``user_id``, ``event_ts`` (int64 ms UTC), the table's payload
fields and optionally ``event_id`` — goes through the store's writer, bad rows quarantined::

    import ray
    from ray_jobs.data import SequenceDatasink

    sink = SequenceDatasink("clicks", quarantine_dir="quarantine/")
    ray.data.read_parquet("data/events").map_batches(clean).write_datasink(sink)
    sink.result.written, sink.result.quarantined, sink.result.by_reason   # counts of the whole job

Scoring: a callable class for ``map_batches``; each actor holds its own connection pool::

    from ray_jobs.data import AssembleSequences

    scores = (ray.data.read_parquet("requests/")          # user_id, as_of_ts
              .map_batches(AssembleSequences, fn_constructor_kwargs={"table": "clicks", "max_len": 100},
                           concurrency=4, batch_format="pyarrow")
              .map_batches(Model, concurrency=2))

Training: labels (``user_id``, ``ts`` and label columns) in, one row per label out, with the
sequence and the feature versions strictly before ``ts``::

    from ray_jobs.data import training_dataset

    train = training_dataset("labels/", "clicks", max_len=100)
    for batch in train.select_columns(["label", "lengths", "item_id"]).iter_torch_batches(batch_size=256):
        ...

How sequences travel in Ray blocks: the columns are those of
:func:`ray_jobs.assemble.model_inputs` (what ``seqstore score`` hands a model): ``lengths``,
``history_complete``, one column per event field, newest event first and padded, and the
features. Numeric and boolean fields are tensor columns — ``[batch, max_len]`` arrays in numpy
batches (``[batch, max_len, width]`` for vectors). Ray Data cannot carry 2-D arrays of Python
objects, so string and binary fields are ``fixed_size_list<string>[max_len]`` columns (None
padding kept): a numpy batch holds one array per row, ``np.stack(batch["event_type"])`` is
the ``[batch, max_len]`` array. The request's own columns (``user_id``, the time, labels, ids)
pass through unchanged, types included.

Numpy batches (Ray's default ``batch_format``) turn a nullable integer column into floats
with NaN. :class:`SequenceDatasink` reads a NaN in a column the schema declares integer or
boolean (and in ``event_ts``) as the null it was, so such a row is judged as it would be from
the Parquet file; integers above 2**53 have lost digits by then, and a float ``event_id``
column is refused. Transform with ``batch_format="pyarrow"`` (or ``"pandas"``) to keep them exact.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray.data
from ray.data import Datasink
from ray.data.block import BlockAccessor
from ray.data.datasource import WriteResult
from ray.data.extensions import ArrowTensorArray

from ray_jobs.assemble import model_inputs
from ray_jobs.export import INCLUSIVE, LABEL_TS
from ray_jobs.outputs import publish, temp_path
from ray_jobs.runner import actor_config
from store import Config, InvalidRequestError, SchemaError, SeqStoreError, SequenceStore
from store.requests import check_times, request_table
from store.validate import QUARANTINE_SCHEMA

__all__ = ["AssembleSequences", "SequenceDatasink", "SinkResult", "training_dataset"]

log = logging.getLogger(__name__)

USER_ID, EVENT_TS, AS_OF = "user_id", "event_ts", "as_of_ts"
# A quarantined row: the store's quarantine record (``source`` is null: a block has no file;
# ``position`` is the row's place in its block), then the row itself as the
# Datasink received it (``row``, a struct of the block's columns).
EMPTY_QUARANTINE = QUARANTINE_SCHEMA.empty_table().append_column("row", pa.array([], pa.struct([])))


@dataclass(frozen=True, slots=True)
class SinkResult:
    """What one ``write_datasink(SequenceDatasink(...))`` did, summed over its write tasks.

    Attributes:
        rows_in: rows Ray handed to the write tasks; ``rows_in == written + merged + quarantined``.
        written: events written (cells of puts HBase acknowledged, see :class:`store.WriteResult`).
        merged: rows stored as one cell with an identical event of the same writer chunk.
        quarantined: rows rejected by the writer's rules.
        by_reason: quarantined rows per reason code.
        put_calls: Thrift calls made for the writes.
        write_tasks: Ray write tasks that ran.
        quarantine: quarantined rows held in memory (``reason``, ``field``, ``detail`` and
            ``row``, a struct of the row as received); empty when they went to files.
        quarantine_files: Parquet files holding every quarantined row (with ``quarantine_dir``).
        quarantine_omitted: quarantined rows counted but neither in ``quarantine`` nor in a
            file: over ``max_quarantine_rows`` without a ``quarantine_dir``.
    """

    rows_in: int
    written: int
    merged: int
    quarantined: int
    by_reason: dict[str, int]
    put_calls: int
    write_tasks: int
    quarantine: pa.Table
    quarantine_files: tuple[str, ...] = ()
    quarantine_omitted: int = 0


@dataclass
class _TaskOutcome:
    """One write task's counts and quarantined rows (its return value, sent to the driver)."""

    rows_in: int = 0
    written: int = 0
    merged: int = 0
    quarantined: int = 0
    put_calls: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    rows: pa.Table | None = None
    file: str | None = None


class SequenceDatasink(Datasink[_TaskOutcome]):
    """A Ray Data sink writing events into a sequence table through the store's writer.

    ``dataset.write_datasink(SequenceDatasink("clicks"))`` writes every block of the Dataset
    with :meth:`store.SequenceTable.write`; each write task opens its own
    :class:`~store.SequenceStore`. Rows are judged by the writer's rules, with one "now" for
    the whole write (taken when it starts) for the future-timestamp check; bad rows are
    quarantined, never written and never silently lost. After ``write_datasink`` returns,
    :attr:`result` holds that write's :class:`SinkResult` (None while a write runs and after
    one that failed). A sink may be reused for several writes: each takes its own "now" and
    names its own quarantine files.

    Parallelism is Ray Data's: one write task per bundle of blocks of at least
    ``rows_per_write`` rows, up to ``write_datasink(..., concurrency=N)`` at once. Ray 2.60's
    Parquet reader made one block of a 1M-event log (53 MiB in 4 files), so one write task,
    whatever ``override_num_blocks``; ``.repartition(n)`` before the write gives ``n`` blocks.

    Idempotent: an event's cell depends only on the event, so writing the same Dataset
    again, or Ray re-running a write task whose worker died, leaves the same cells. Failures:
    the store retries transport errors with backoff inside each call; a task whose HBase
    stayed unreachable (:class:`~store.StoreUnavailableError`) fails the job with the blocks
    written so far left in place; whether Ray retries a failed task is Ray's task options'
    business (``write_datasink(sink, ray_remote_args=...)``), and retrying is safe. There is no
    manifest: a re-run writes everything again (``seqstore backfill`` resumes from its manifest
    instead).

    Args:
        table: a table created with ``seqstore create-table`` (or :meth:`SequenceStore.create_table`).
        config: where HBase is; default :meth:`Config.from_env`, read here on the driver and
            shipped to the tasks (each spreads over the Thrift2 servers from another one).
        quarantine_dir: a directory (local path or pyarrow filesystem URI, reachable from
            every node) to write every quarantined row to, one Parquet file per write task
            that had any (``quarantine-<write id>-<task>.parquet``, written to a hidden
            temporary name and renamed, so a file is there whole or not at all). Without it
            the rows come back in :attr:`SinkResult.quarantine`, at most
            ``max_quarantine_rows`` of them (the counts are always complete).
        max_quarantine_rows: the bound of quarantined rows kept in memory without ``quarantine_dir``.
        pool_size: HBase connections per write task (concurrent put calls).
        chunk_rows: rows the writer validates and sends at a time.
        rows_per_write: rows Ray gathers for one write task (each opens its own connections).
        now_ms: "now" for the future-timestamp check of every write (default: the clock when
            each write starts).

    Raises (from ``write_datasink``):
        TableNotFoundError: no such table (before any row is written).
        SchemaError: a block's columns do not fit the table's schema (the rows before it are written).
        StoreUnavailableError, HBaseError: as raised by the writer.
        SeqStoreError: the write tasks' counts do not add up to the rows Ray handed them.
    """

    def __init__(self, table: str, *, config: Config | None = None,
                 quarantine_dir: str | os.PathLike[str] | None = None, max_quarantine_rows: int = 1_000,
                 pool_size: int = 4, chunk_rows: int = 10_000, rows_per_write: int = 50_000,
                 now_ms: int | None = None) -> None:
        for name, value in (("pool_size", pool_size), ("chunk_rows", chunk_rows), ("rows_per_write", rows_per_write)):
            if value <= 0:
                raise InvalidRequestError(f"'{name}' must be > 0")
        if max_quarantine_rows < 0:
            raise InvalidRequestError("'max_quarantine_rows' must be >= 0")
        self.table = table
        self.config = config or Config.from_env()
        self.quarantine_dir = _directory_uri(quarantine_dir) if quarantine_dir is not None else None
        self.max_quarantine_rows = max_quarantine_rows
        self.pool_size, self.chunk_rows, self.rows_per_write = pool_size, chunk_rows, rows_per_write
        self._fixed_now_ms = now_ms
        # Both taken again when each write starts (on_write_start).
        self.now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self.run_id = uuid.uuid4().hex[:12]  # names this write's quarantine files
        self.result: SinkResult | None = None

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_write

    def on_write_start(self, schema: Any = None) -> None:
        """On the driver, before the first write task (the tasks get the sink as it is after
        this): this write's "now" and id, :attr:`result` cleared; fail fast on a missing table."""
        self.result = None
        self.now_ms = int(time.time() * 1000) if self._fixed_now_ms is None else self._fixed_now_ms
        self.run_id = uuid.uuid4().hex[:12]
        with SequenceStore(self.config, pool_size=1) as store:
            store.table(self.table)
        if self.quarantine_dir is not None:
            fs, path = pafs.FileSystem.from_uri(self.quarantine_dir)
            fs.create_dir(path, recursive=True)

    def write(self, blocks: Iterable[Any], ctx: Any) -> _TaskOutcome:
        """One write task: every block through :meth:`SequenceTable.write`, counts summed."""
        out = _TaskOutcome()
        bad: list[pa.Table] = []
        keep = self.max_quarantine_rows if self.quarantine_dir is None else None
        with SequenceStore(actor_config(self.config, ctx.task_idx), pool_size=self.pool_size) as store:
            table = store.table(self.table)
            for block in blocks:
                events = _events(BlockAccessor.for_block(block).to_arrow(), table.spec.schema.payload)
                result = table.write(events, chunk_rows=self.chunk_rows, now_ms=self.now_ms)
                out.rows_in += result.rows_in
                out.written += result.written
                out.merged += result.merged
                out.quarantined += result.quarantined
                out.put_calls += result.put_calls
                out.by_reason.update(result.by_reason())
                if result.quarantined:
                    rows = _quarantined_rows(events, result.quarantine)
                    if keep is not None:
                        rows = rows.slice(0, max(0, keep - sum(t.num_rows for t in bad)))
                    bad.append(rows)
        if bad:
            rows = pa.concat_tables(bad, promote_options="permissive")
            if self.quarantine_dir is None:
                out.rows = rows
            else:
                out.file = self._save(rows, ctx.task_idx)
        return out

    def _save(self, rows: pa.Table, task: int) -> str:
        # Named by write and task: a task Ray runs again replaces its own file, never another
        # write's. Written under a hidden temporary name first, so a killed task leaves no
        # truncated file where readers look.
        fs, path = pafs.FileSystem.from_uri(self.quarantine_dir)
        fs.create_dir(path, recursive=True)
        name = f"{path.rstrip('/')}/quarantine-{self.run_id}-{task:05d}.parquet"
        if isinstance(fs, pafs.LocalFileSystem):
            target = Path(name)
            tmp = temp_path(target)
            try:
                pq.write_table(rows, tmp)
                publish(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            return name
        tmp_name = f"{path.rstrip('/')}/.{PurePosixPath(name).name}.{uuid.uuid4().hex}.tmp"
        pq.write_table(rows, tmp_name, filesystem=fs)
        fs.move(tmp_name, name)
        return f"{fs.type_name}://{name}"

    def on_write_complete(self, write_result: WriteResult[_TaskOutcome]) -> None:
        """Sum the tasks' outcomes into :attr:`result` and check that every row is accounted for."""
        outcomes: list[_TaskOutcome] = [o for o in write_result.write_returns if o is not None]
        reasons: Counter[str] = Counter()
        for o in outcomes:
            reasons.update(o.by_reason)
        held = [o.rows for o in outcomes if o.rows is not None]
        quarantine = (pa.concat_tables(held, promote_options="permissive").slice(0, self.max_quarantine_rows)
                      if held else EMPTY_QUARANTINE)
        files = tuple(sorted(o.file for o in outcomes if o.file))
        quarantined = sum(o.quarantined for o in outcomes)
        self.result = SinkResult(
            rows_in=sum(o.rows_in for o in outcomes), written=sum(o.written for o in outcomes),
            merged=sum(o.merged for o in outcomes), quarantined=quarantined, by_reason=dict(sorted(reasons.items())),
            put_calls=sum(o.put_calls for o in outcomes), write_tasks=len(outcomes), quarantine=quarantine,
            quarantine_files=files, quarantine_omitted=0 if files else quarantined - quarantine.num_rows)
        r = self.result
        if r.quarantine_omitted:
            log.warning("%d of %d quarantined rows were counted but not kept (max_quarantine_rows=%d); "
                        "pass quarantine_dir to keep them all", r.quarantine_omitted, r.quarantined,
                        self.max_quarantine_rows)
        if r.rows_in != write_result.num_rows or r.rows_in != r.written + r.merged + r.quarantined:
            raise SeqStoreError(f"conservation violated: Ray handed the write tasks {write_result.num_rows} rows; "
                                f"they saw {r.rows_in}, wrote {r.written}, merged {r.merged}, "
                                f"quarantined {r.quarantined}")

    def on_write_failed(self, error: Exception) -> None:
        log.error("writing into %r failed: %s (writes are idempotent: running the job again is safe)",
                  self.table, error)


def _directory_uri(directory: str | os.PathLike[str]) -> str:
    text = os.fspath(directory)
    return text if "://" in text else str(Path(text).resolve())


def _events(block: pa.Table, payload: pa.Schema) -> pa.Table:
    """``block`` with what Ray's numpy conversions did to nulls undone: NaN in a float column
    whose ``payload`` type is integer or boolean (or in ``event_ts``) becomes null again; a tensor
    column (Ray's extension type) becomes its list storage, which the writer casts to a vector field."""
    targets = {EVENT_TS: pa.int64(), **{f.name: f.type for f in payload}}
    columns: dict[str, pa.Array] = {}
    for name, chunked in zip(block.column_names, block.columns, strict=True):
        col = chunked.combine_chunks()
        target = targets.get(name)
        if target is not None and isinstance(col.type, pa.ExtensionType) and pa.types.is_fixed_size_list(target):
            col = col.storage
        if (target is not None and pa.types.is_floating(col.type)
                and (pa.types.is_integer(target) or pa.types.is_boolean(target))):
            col = pc.if_else(pc.is_nan(col), pa.nulls(len(col), col.type), col)
        columns[name] = col
    return pa.table(columns)


def _quarantined_rows(events: pa.Table, quarantine: pa.Table) -> pa.Table:
    rows = events.take(quarantine.column("position"))
    struct = pa.StructArray.from_arrays([c.combine_chunks() for c in rows.columns], names=rows.column_names)
    return quarantine.append_column("row", struct)


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
    column per event field (``[batch, max_len]`` tensors for numeric fields; see the module
    docstring) and the features. ``iter_torch_batches`` makes a tensor of every column, so
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
