"""``seqstore score``: batch scoring with Ray — sequences as of a time, a model, Parquet out.

Requests (Parquet with ``user_id`` and optional ``as_of_ts``; a missing or null
``as_of_ts`` means the job's start time) are split into units (row groups). Ray actors
assemble each batch with the store's reader (sequences and features as of the same time),
call the model with a dict of padded numpy arrays plus ``lengths`` (see
:func:`ray_jobs.assemble.model_inputs`), and write one Parquet part per unit to OUT with
``user_id``, ``as_of_ts`` and the model's output columns — exactly one row per request.

A model is ``MODULE:FUNCTION`` taking that dict and returning a dict of equal-length
columns (or one array, named ``score``). A model that raises stops the job with an error
naming the batch. Part names are unique per unit (file stem, a hash of the file's location,
row group), so files with the same name in different directories do not collide. A re-run
skips parts already written (parts are renamed into place only when complete) if they were
made from the same file as it is now and hold one row per request; others are redone. OUT
must not hold parts of another input: the job refuses to run rather than mix them in.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ray_jobs.assemble import model_inputs
from ray_jobs.parts import part_file_name, run_into_parts, write_part
from ray_jobs.units import Unit, plan
from store import SequenceStore
from store.config import Config
from store.errors import SchemaError, SeqStoreError

Model = Callable[[dict[str, np.ndarray]], Any]


class ModelError(SeqStoreError):
    """The model raised or returned something unusable for one batch (not retried)."""


def load_model(spec: str) -> Model:
    """Import ``MODULE:FUNCTION`` and return the function.

    Raises :class:`ModelError` (one line, naming ``spec``) if the spec is malformed, the module
    cannot be found, raises anything while being imported (a syntax error, a failing top-level
    statement), lacks the attribute, or the attribute is not callable.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelError(f"model must be MODULE:FUNCTION, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"cannot load model {spec!r}: {exc}") from exc
    except Exception as exc:  # user code: whatever its import raises, say so in one line
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise ModelError(f"cannot load model {spec!r}: importing {module_name!r} raised "
                         f"{type(exc).__name__}{': ' + lines[0] if lines else ''}") from exc
    try:
        model = getattr(module, attr)
    except AttributeError as exc:
        raise ModelError(f"cannot load model {spec!r}: {exc}") from exc
    if not callable(model):
        raise ModelError(f"model {spec!r} is not callable")
    return model  # type: ignore[no-any-return]


PART_PREFIX = "part"


def part_name(unit: Unit) -> str:
    """The output part of ``unit``: unique per unit, stable across re-runs."""
    return part_file_name(PART_PREFIX, unit)


def _columns(output: Any, n: int, where: str) -> dict[str, Any]:
    columns = dict(output) if isinstance(output, dict) else {"score": output}
    for name, values in columns.items():
        if len(values) != n:
            raise ModelError(f"{where}: model output {name!r} has {len(values)} rows for {n} requests")
    return columns


class ScoreWorker:
    """A Ray actor body: scores units of requests into Parquet parts."""

    def __init__(self, config: Config, table: str, model: str, fs: pafs.FileSystem, out: str, *, max_len: int,
                 features: Sequence[str], now_ms: int, batch_rows: int) -> None:
        self.store = SequenceStore(config, pool_size=8)
        self.table = self.store.table(table)
        self.model_spec = model
        self.model = load_model(model)
        self.fs, self.out = fs, Path(out)
        self.max_len, self.features, self.now_ms, self.batch_rows = max_len, list(features), now_ms, batch_rows

    def pid(self) -> int:
        return os.getpid()

    def run(self, unit: Unit) -> dict[str, Any]:
        with self.fs.open_input_file(unit.path) as handle:
            requests = pq.ParquetFile(handle).read_row_group(unit.row_group)
        if "user_id" not in requests.schema.names:
            raise SchemaError(f"{unit.path}: requests need a 'user_id' column")
        users = requests.column("user_id").to_pylist()
        if "as_of_ts" in requests.schema.names:
            as_of = [self.now_ms if t is None else int(t) for t in requests.column("as_of_ts").to_pylist()]
        else:
            as_of = [self.now_ms] * len(users)
        parts = []
        for start in range(0, len(users), self.batch_rows):
            stop = min(start + self.batch_rows, len(users))
            where = f"{unit.path} rows {unit.first_row + start}..{unit.first_row + stop - 1}"
            batch, _ = model_inputs(self.table, users[start:stop], as_of[start:stop], max_len=self.max_len,
                                    features=self.features)
            try:
                output = self.model(batch)
            except Exception as exc:  # noqa: BLE001 - any model failure is reported with its batch
                raise ModelError(f"model {self.model_spec} failed on {where}: {exc!r}") from None
            columns = _columns(output, stop - start, where)
            parts.append(pa.table({"user_id": pa.array(users[start:stop], pa.string()),
                                   "as_of_ts": pa.array(as_of[start:stop], pa.int64()),
                                   **{k: pa.array(np.asarray(v)) for k, v in columns.items()}}))
        result = pa.concat_tables(parts) if parts else pa.table({"user_id": pa.array([], pa.string())})
        write_part(result, self.out / part_name(unit), unit)
        return {"rows": len(users)}


@dataclass
class ScoreReport:
    requests: int = 0
    scored: int = 0
    units_total: int = 0
    units_done: int = 0
    units_skipped: int = 0
    units_retried: int = 0
    wall_s: float = 0.0
    sequences_per_s: float = 0.0
    out: str = ""
    completed: bool = False
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_score(requests_path: str, model: str, out: Path, table: str, *, max_len: int = 100,
              features: Sequence[str] = (), workers: int = 2, config: Config | None = None,
              batch_rows: int = 2_000, now_ms: int | None = None,
              on_progress: Callable[[int], None] | None = None) -> ScoreReport:
    """Score every request; see the module docstring. Ray must be initialised."""
    import ray

    load_model(model)  # fail before starting actors if the model cannot be imported
    config = config or Config.from_env()
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    t0 = time.monotonic()
    with SequenceStore(config, pool_size=1) as store:
        store.table(table)  # a clear error now if the table does not exist
    fs, units = plan(requests_path)
    Worker = ray.remote(num_cpus=1, max_restarts=0)(ScoreWorker)

    def spawn(_: int) -> Any:
        return Worker.remote(config, table, model, fs, str(out), max_len=max_len, features=list(features),
                             now_ms=now_ms, batch_rows=batch_rows)

    run = run_into_parts(units, out, PART_PREFIX, spawn, workers=workers, on_rows=on_progress)
    # ``run.rows`` counts only parts that each hold their own unit's complete output.
    report = ScoreReport(requests=sum(u.num_rows for u in run.units), units_total=len(run.units),
                         units_done=run.stats.units_done, units_skipped=len(run.units) - len(run.ran),
                         units_retried=run.stats.units_retried, out=str(out.resolve()), scored=run.rows,
                         completed=not run.error, error=run.error)
    report.wall_s = round(time.monotonic() - t0, 2)
    processed = sum(u.num_rows for u in run.ran) if report.completed else 0
    report.sequences_per_s = round(processed / report.wall_s, 1) if report.wall_s else 0.0
    if report.completed and report.scored != report.requests:
        report.completed = False
        report.error = f"{report.scored} rows scored for {report.requests} requests"
    return report
