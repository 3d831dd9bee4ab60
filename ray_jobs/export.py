"""``seqstore export``: point-in-time-correct training rows.

For each label row (``user_id``, ``ts`` and any label columns) the user's sequence strictly
before ``ts`` — an event at ``ts`` or later never appears — and the features as of ``ts`` by
the same rule (newest version with ``valid_from < ts``: a version stamped by the labelled
event itself never appears either) are written as Parquet shards: the label row's
columns (``user_id`` keeps its type), ``length``, ``history_complete``, one list column per
event field (``hist_event_ts``, ``hist_item_id``, ..., newest first) and one column per
feature. A label column named like an output column is refused. Units, parts, settings and
re-runs work as in :mod:`ray_jobs.score`; shards are streamed batch by batch, so a worker's
memory is bounded by ``batch_rows`` x ``max_len`` whatever the size of a row group.

``ts`` is checked with the writer's units rule, against one "now" for the whole job: a label
time in seconds or microseconds is refused, naming the file and the row, unless
``allow_any_ts`` — microseconds would otherwise let every later event leak into the training row.

Retention: on a table with ``ttl_days`` or ``max_events_per_user`` an old label may see
fewer events than were stored at its time (they were deleted since). Such rows have
``history_complete`` False, and the report counts them (``rows_history_incomplete``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ray_jobs.assemble import feature_rule
from ray_jobs.parts import PartWriter, job_settings, part_file_name, run_into_parts
from ray_jobs.report import ReadingReport
from ray_jobs.runner import init_ray
from ray_jobs.units import Unit, plan
from ray_jobs.workers import StoreWorker, worker_actor
from store import SequenceStore, SequenceTable
from store.config import Config
from store.errors import SchemaError
from store.inputs import check_times, request_table

LABEL_TS = "ts"
SHARD_PREFIX = "shard"
# The no-leakage rule, one option for both reads: events and feature versions strictly before ``ts``.
INCLUSIVE = False


def shard_name(unit: Unit) -> str:
    """The training shard of ``unit``: unique per unit, stable across re-runs."""
    return part_file_name(SHARD_PREFIX, unit)


def output_columns(table: SequenceTable, features: Sequence[str]) -> set[str]:
    """The columns export adds to each label row (a label column may not have these names)."""
    fields = ["event_ts", "event_id", *table.spec.schema.payload.names]
    return {"length", "history_complete", *(f"hist_{f}" for f in fields), *features}


class ExportWorker(StoreWorker):
    """A Ray actor body: turns units of labels into training shards."""

    def __init__(self, config: Config, table: str, fs: pafs.FileSystem, out: str, *, max_len: int,
                 features: Sequence[str], batch_rows: int, settings: dict[str, Any], now_ms: int,
                 allow_any_ts: bool = False) -> None:
        super().__init__(config, table)
        self.fs, self.out, self.now_ms = fs, Path(out), now_ms
        self.max_len, self.features, self.batch_rows = max_len, list(features), batch_rows
        self.settings, self.allow_any_ts = settings, allow_any_ts
        self.reserved = output_columns(self.table, self.features)

    def run(self, unit: Unit) -> dict[str, Any]:
        with self.fs.open_input_file(unit.path) as handle:
            parquet = pq.ParquetFile(handle)
            names = parquet.schema_arrow.names
            missing = {"user_id", LABEL_TS} - set(names)
            if missing:
                raise SchemaError(f"{unit.path}: labels need column(s) {sorted(missing)}")
            clash = sorted(self.reserved & set(names))
            if clash:
                raise SchemaError(f"{unit.path}: label column(s) {clash} have the names of columns export writes; "
                                  "rename them")
            rows = 0
            counts = self.cache_counts()
            with PartWriter(self.out / shard_name(unit), unit, self.settings) as part:
                for batch in parquet.iter_batches(batch_size=self.batch_rows, row_groups=[unit.row_group]):
                    part.write(self._rows(pa.Table.from_batches([batch]), unit, rows))
                    rows += batch.num_rows
                part.close(empty=self._rows(parquet.schema_arrow.empty_table(), unit, 0))
        return {"rows": rows, **self.cache_since(counts)}

    def _rows(self, labels: pa.Table, unit: Unit, offset: int) -> pa.Table:
        try:
            ts = labels.column(LABEL_TS).combine_chunks().cast(pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(f"{unit.path}: label '{LABEL_TS}' must be int64 milliseconds UTC: {exc}") from None
        if ts.null_count:
            i = int(pc.index(ts.is_null(), True).as_py())
            raise SchemaError(f"{unit.path}: label '{LABEL_TS}' of row {unit.first_row + offset + i} is null")
        if not self.allow_any_ts:
            # The job's "now", not this actor's clock: every node and every resume judges alike.
            check_times(ts, f"label {LABEL_TS}", now_ms=self.now_ms, source=unit.path,
                        first_row=unit.first_row + offset)
        requests = request_table(labels.column("user_id"), ts)
        seqs = self.table.read_sequences(requests, max_len=self.max_len, inclusive=INCLUSIVE, allow_any_ts=True)
        events = seqs.column("sequence").combine_chunks()
        columns: dict[str, Any] = {name: labels.column(name) for name in labels.schema.names}
        columns["length"] = seqs.column("length")
        columns["history_complete"] = seqs.column("history_complete")
        flat = events.flatten()
        for field in flat.type:
            columns[f"hist_{field.name}"] = pa.ListArray.from_arrays(events.offsets, flat.field(field.name))
        if self.features:
            feats = self.table.read_features(requests, self.features, inclusive=INCLUSIVE,
                                  allow_any_ts=True)
            for name in self.features:
                columns[name] = feats.column(name)
        return pa.table(columns)


@dataclass(kw_only=True)
class ExportReport(ReadingReport):
    """The job's outcome (``--json``): ``labels`` read, ``rows_written`` training rows in
    ``shards`` complete shards under ``out``, ``rows_history_incomplete`` of them with events
    retention had deleted, and the fields of :class:`~ray_jobs.report.ReadingReport`."""

    labels: int = 0
    rows_written: int = 0
    rows_history_incomplete: int = 0
    shards: int = 0
    rows_per_s: float = 0.0
    out: str = ""


def run_export(labels_path: str, out: Path, table: str, *, max_len: int = 100, features: Sequence[str] = (),
               workers: int = 2, config: Config | None = None, batch_rows: int = 2_000, overwrite: bool = False,
               allow_any_ts: bool = False, now_ms: int | None = None, ray_address: str | None = None,
               on_plan: Callable[[Sequence[Unit]], None] | None = None,
               on_progress: Callable[[int], None] | None = None) -> ExportReport:
    """Write training shards for every label row; see the module docstring. Joins or starts Ray
    (:func:`ray_jobs.runner.init_ray` with ``ray_address``) once the input is planned.

    ``overwrite`` replaces shards in ``out`` made with other settings or from other input;
    ``allow_any_ts`` skips the label ``ts`` units check, which judges "the future" from
    ``now_ms`` (default: the driver's clock when the job starts), one "now" for every actor;
    ``on_plan`` hears the units about to
    run (shards not already there), ``on_progress`` the label rows of each one done.
    """
    config = config or Config.from_env()
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    t0 = time.monotonic()
    with SequenceStore(config, pool_size=1) as store:
        settings = job_settings(store.table(table), "export", max_len=max_len, features=list(features),
                                inclusive=INCLUSIVE, **feature_rule(features, INCLUSIVE))
    fs, units = plan(labels_path)
    init_ray(ray_address, workers)
    Worker = worker_actor(ExportWorker)

    def spawn(_: int) -> Any:
        return Worker.remote(config, table, fs, str(out), max_len=max_len, features=list(features),
                             batch_rows=batch_rows, settings=settings, now_ms=now_ms, allow_any_ts=allow_any_ts)

    run = run_into_parts(units, out, SHARD_PREFIX, spawn, workers=workers, settings=settings, overwrite=overwrite,
                         on_plan=on_plan, on_rows=on_progress)
    # ``run.parts``/``run.rows`` count only shards that each hold their own unit's complete output.
    report = ExportReport(labels=sum(u.num_rows for u in run.units), shards=run.parts, rows_written=run.rows,
                          workers=workers, out=str(out.resolve()))
    if not run.error:
        report.rows_history_incomplete = sum(
            int(pc.sum(pc.invert(pq.read_table(out / name, columns=["history_complete"]).column(0))).as_py() or 0)
            for name in run.names)
    report.rows_per_s = run.fill(report, t0)
    if report.completed and report.rows_written != report.labels:
        report.fail(f"{report.rows_written} rows written for {report.labels} labels")
    return report
