"""Writing a Ray Dataset of events into a sequence table: :class:`SequenceDatasink`, a Ray Data
sink on the store's writer, and :class:`SinkResult`, what one write did.

Numpy batches (Ray's default ``batch_format``) turn a nullable integer column into floats
with NaN. :class:`SequenceDatasink` reads a NaN in a column the schema declares integer or
boolean (and in ``event_ts``) as the null it was, so such a row is judged as it would be from
the Parquet file; integers above 2**53 have lost digits by then, and a float ``event_id``
column is refused. Transform with ``batch_format="pyarrow"`` (or ``"pandas"``) to keep them exact.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.data import Datasink
from ray.data.block import BlockAccessor
from ray.data.datasource import WriteResult

from ray_jobs.outputs import publish, temp_path
from ray_jobs.workers import actor_config
from store import Config, InvalidRequestError, SeqStoreError, SequenceStore
from store import WriteResult as StoreWriteResult
from store.inputs import QUARANTINE_SCHEMA

__all__ = ["SequenceDatasink", "SinkResult"]

log = logging.getLogger(__name__)

EVENT_TS = "event_ts"
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


INTO = ("raw", "chunks")


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
    ``rows_per_write`` rows, up to ``write_datasink(..., concurrency=N)`` at once. Ray's Parquet
    reader may make fewer blocks than the log has files (one block, so one write task, for a
    whole log), whatever ``override_num_blocks``; ``.repartition(n)`` before the write gives ``n``
    blocks (``benchmarks/datasink_vs_backfill.py`` measures both ways).

    ``into="chunks"`` writes each task's rows as one bulk load instead (:meth:`SequenceTable.chunk_load`,
    what ``seqstore backfill`` does): straight into the users' chunks, no raw cell and nothing
    to compact, the writer's validation and quarantine unchanged. It is exact however the rows
    are spread over tasks (each task merges into what its users hold, safe beside other tasks,
    writers and compactions), and cheap when each user's rows reach few tasks: group the
    Dataset by user first, e.g. ``.repartition(n, keys=["user_id"])``. A task holds its rows
    until it commits (``rows_per_write`` and Ray's block sizes bound them).

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
        into: ``"raw"`` (:meth:`SequenceTable.write`, one cell per event, for a later
            compaction) or ``"chunks"`` (a bulk load per task; the table needs a chunk tier).

    Raises (from ``write_datasink``):
        TableNotFoundError: no such table (before any row is written).
        SchemaError: a block's columns do not fit the table's schema (the rows before it are written).
        StoreUnavailableError, HBaseError: as raised by the writer.
        SeqStoreError: the write tasks' counts do not add up to the rows Ray handed them.
    """

    def __init__(self, table: str, *, config: Config | None = None,
                 quarantine_dir: str | os.PathLike[str] | None = None, max_quarantine_rows: int = 1_000,
                 pool_size: int = 4, chunk_rows: int = 10_000, rows_per_write: int = 50_000,
                 now_ms: int | None = None, into: str = "raw") -> None:
        if into not in INTO:
            raise InvalidRequestError(f"'into' must be one of {', '.join(INTO)}")
        for name, value in (("pool_size", pool_size), ("chunk_rows", chunk_rows), ("rows_per_write", rows_per_write)):
            if value <= 0:
                raise InvalidRequestError(f"'{name}' must be > 0")
        if max_quarantine_rows < 0:
            raise InvalidRequestError("'max_quarantine_rows' must be >= 0")
        self.table = table
        self.into = into
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
        """One write task: every block through :meth:`SequenceTable.write` (``into="raw"``), or
        all of them as one :meth:`SequenceTable.chunk_load` (``into="chunks"``); counts summed."""
        out = _TaskOutcome()
        bad: list[pa.Table] = []
        keep = self.max_quarantine_rows if self.quarantine_dir is None else None

        def tally(result: StoreWriteResult, rows: Callable[[], pa.Table]) -> None:
            out.rows_in += result.rows_in
            out.written += result.written
            out.merged += result.merged
            out.quarantined += result.quarantined
            out.put_calls += result.put_calls
            out.by_reason.update(result.by_reason())
            if result.quarantined:
                held = rows()
                if keep is not None:
                    held = held.slice(0, max(0, keep - sum(t.num_rows for t in bad)))
                bad.append(held)

        with SequenceStore(actor_config(self.config, ctx.task_idx), pool_size=self.pool_size) as store:
            table = store.table(self.table)
            payload = table.spec.schema.payload
            if self.into == "raw":
                for block in blocks:
                    events = _events(BlockAccessor.for_block(block).to_arrow(), payload)
                    result = table.write(events, chunk_rows=self.chunk_rows, now_ms=self.now_ms)
                    tally(result, functools.partial(_quarantined_rows, events, result.quarantine))
            else:
                load = table.chunk_load(now_ms=self.now_ms)
                held_blocks: list[pa.Table] = []
                for block in blocks:
                    events = _events(BlockAccessor.for_block(block).to_arrow(), payload)
                    load.add(events, start_position=sum(b.num_rows for b in held_blocks))
                    held_blocks.append(events)
                result = load.commit()
                tally(result, functools.partial(_quarantined_rows_of_blocks, held_blocks, result.quarantine))
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


def _quarantined_rows_of_blocks(blocks: list[pa.Table], quarantine: pa.Table) -> pa.Table:
    """As :func:`_quarantined_rows` for a load of several ``blocks`` whose positions ran on from
    block to block: each row found in its block, its position made the place in that block."""
    starts = np.cumsum([0, *(b.num_rows for b in blocks)])
    position = np.asarray(quarantine.column("position").to_numpy(), dtype=np.int64)
    block = np.searchsorted(starts, position, side="right") - 1
    parts = []
    for j in np.unique(block).tolist():
        mine = np.flatnonzero(block == j)
        q = quarantine.take(pa.array(mine, pa.int64()))
        q = q.set_column(q.schema.get_field_index("position"), q.schema.field("position"),
                         pa.array(position[mine] - starts[j], pa.int64()))
        parts.append(_quarantined_rows(blocks[j], q))
    return pa.concat_tables(parts, promote_options="permissive")
