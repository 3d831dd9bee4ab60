"""``seqstore export``: point-in-time-correct training rows.

For each label row (``user_id``, ``ts`` and any label columns) the user's sequence strictly
before ``ts`` — an event at ``ts`` or later never appears — and the features as of ``ts``
(newest version with ``valid_from <= ts``) are written as Parquet shards: the label row's
columns, ``length``, one list column per event field (``hist_event_ts``, ``hist_item_id``,
..., newest first) and one column per feature. Units, parts and re-runs work as in
:mod:`ray_jobs.score`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ray_jobs.parts import part_file_name, run_into_parts, write_part
from ray_jobs.units import Unit, plan
from store import SequenceStore
from store.config import Config
from store.errors import SchemaError

LABEL_TS = "ts"
SHARD_PREFIX = "shard"


def shard_name(unit: Unit) -> str:
    """The training shard of ``unit``: unique per unit, stable across re-runs."""
    return part_file_name(SHARD_PREFIX, unit)


class ExportWorker:
    """A Ray actor body: turns units of labels into training shards."""

    def __init__(self, config: Config, table: str, fs: pafs.FileSystem, out: str, *, max_len: int,
                 features: Sequence[str], batch_rows: int) -> None:
        self.store = SequenceStore(config, pool_size=8)
        self.table = self.store.table(table)
        self.fs, self.out = fs, Path(out)
        self.max_len, self.features, self.batch_rows = max_len, list(features), batch_rows

    def pid(self) -> int:
        return os.getpid()

    def run(self, unit: Unit) -> dict[str, Any]:
        with self.fs.open_input_file(unit.path) as handle:
            labels = pq.ParquetFile(handle).read_row_group(unit.row_group)
        missing = {"user_id", LABEL_TS} - set(labels.schema.names)
        if missing:
            raise SchemaError(f"{unit.path}: labels need column(s) {sorted(missing)}")
        parts = []
        for start in range(0, labels.num_rows, self.batch_rows):
            chunk = labels.slice(start, self.batch_rows)
            users = chunk.column("user_id").to_pylist()
            ts = [int(t) for t in chunk.column(LABEL_TS).to_pylist()]
            # Strictly before the label's time: inclusive=False is the no-leakage guarantee.
            seqs = self.table.read_sequences((users, ts), max_len=self.max_len, inclusive=False)
            events = seqs.column("sequence").combine_chunks()
            columns: dict[str, Any] = {name: chunk.column(name) for name in chunk.schema.names}
            columns["length"] = seqs.column("length")
            flat = events.flatten()
            for field in flat.type:
                columns[f"hist_{field.name}"] = pa.ListArray.from_arrays(events.offsets, flat.field(field.name))
            if self.features:
                feats = self.table.read_features((users, ts), self.features)
                for name in self.features:
                    columns[name] = feats.column(name)
            parts.append(pa.table(columns))
        result = pa.concat_tables(parts)
        write_part(result, self.out / shard_name(unit), unit)
        return {"rows": labels.num_rows}


@dataclass
class ExportReport:
    labels: int = 0
    rows_written: int = 0
    shards: int = 0
    units_skipped: int = 0
    units_retried: int = 0
    wall_s: float = 0.0
    rows_per_s: float = 0.0
    out: str = ""
    completed: bool = False
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_export(labels_path: str, out: Path, table: str, *, max_len: int = 100, features: Sequence[str] = (),
               workers: int = 2, config: Config | None = None, batch_rows: int = 2_000,
               on_progress: Callable[[int], None] | None = None) -> ExportReport:
    """Write training shards for every label row; see the module docstring. Ray must be initialised."""
    import ray

    config = config or Config.from_env()
    t0 = time.monotonic()
    with SequenceStore(config, pool_size=1) as store:
        store.table(table)
    fs, units = plan(labels_path)
    Worker = ray.remote(num_cpus=1, max_restarts=0)(ExportWorker)

    def spawn(_: int) -> Any:
        return Worker.remote(config, table, fs, str(out), max_len=max_len, features=list(features),
                             batch_rows=batch_rows)

    run = run_into_parts(units, out, SHARD_PREFIX, spawn, workers=workers, on_rows=on_progress)
    # ``run.parts``/``run.rows`` count only shards that each hold their own unit's complete output.
    report = ExportReport(labels=sum(u.num_rows for u in run.units), shards=run.parts, rows_written=run.rows,
                          units_skipped=len(run.units) - len(run.ran), units_retried=run.stats.units_retried,
                          out=str(out.resolve()), completed=not run.error, error=run.error)
    report.wall_s = round(time.monotonic() - t0, 2)
    processed = sum(u.num_rows for u in run.ran) if report.completed else 0
    report.rows_per_s = round(processed / report.wall_s, 1) if report.wall_s else 0.0
    if report.completed and report.rows_written != report.labels:
        report.completed = False
        report.error = f"{report.rows_written} rows written for {report.labels} labels"
    return report
