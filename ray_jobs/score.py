"""``seqstore score``: batch scoring with Ray — sequences as of a time, a model, Parquet out.

Requests (Parquet with ``user_id`` and optional ``as_of_ts``; a missing or null
``as_of_ts`` means the job's start time) are split into units (row groups). Ray actors
assemble each batch with the store's reader (sequences and features as of the same time),
call the model with a dict of padded numpy arrays plus ``lengths`` (see
:func:`ray_jobs.assemble.model_inputs`), and write one Parquet part per unit to OUT with
``user_id``, ``as_of_ts`` and the model's output columns — exactly one row per request. An
empty unit's part gets the columns of the others once the job is done, so reading OUT never
loses them. One job at a time writes into OUT (:class:`ray_jobs.outputs.OutputLock`).

A model is ``MODULE:FUNCTION`` taking that dict and returning a dict of equal-length
columns (or one array, named ``score``). A model that raises stops the job with an error
naming the batch. Part names are unique per unit (file stem, a hash of the file's location,
row group), so files with the same name in different directories do not collide. A re-run
skips parts already written (parts are renamed into place only when complete) if they were
made from the same file as it is now, with the same settings (table, schema, model, ``max_len``,
features, and "now" when requests lack ``as_of_ts``), and hold one row per request; missing
or stale ones are redone. OUT must not hold parts of another input or made with other
settings: the job refuses to run rather than mix them in, unless ``overwrite``
(``--overwrite``) replaces them.

What identifies a model (:func:`model_identity`): its ``MODULE:FUNCTION``, the source of that
one module, and the version it declares — ``model_version`` (``--model-version``), else a
``MODEL_VERSION`` attribute of the function or of its module. Its weights, other modules and
installed packages are not looked at: a model that loads them should derive ``MODEL_VERSION``
from them (say, the weights file's hash), or a re-run after retraining trusts the old scores.
Each worker checks that the model it imported has the driver's identity.

Requests without ``as_of_ts`` are scored as of the job's "now", which is then part of the
settings and recorded in OUT: a re-run after an incomplete run resumes with that "now" (so
one output never mixes two), while a run after a complete one takes a new "now" and so refuses
the old parts unless ``overwrite`` (or pass the old ``now_ms`` to keep them).

User ids keep their type (int64 ids in, int64 out). ``as_of_ts`` is checked with the
writer's units rule against the job's "now" (seconds or microseconds are refused, naming the
file and row) unless ``allow_any_ts``.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ray_jobs.assemble import feature_rule, model_inputs
from ray_jobs.outputs import OutputLock
from ray_jobs.parts import (
    PartWriter,
    give_empty_parts_the_schema,
    job_settings,
    last_run,
    part_file_name,
    run_into_parts,
)
from ray_jobs.report import ReadingReport
from ray_jobs.runner import init_ray
from ray_jobs.units import Unit, plan
from ray_jobs.workers import StoreWorker, worker_actor
from store import SequenceStore
from store.config import Config
from store.errors import SchemaError, SeqStoreError
from store.inputs import check_times, request_table

Model = Callable[[dict[str, np.ndarray]], Any]
log = logging.getLogger(__name__)


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


def model_digest(spec: str) -> str:
    """A digest of the model's module source, so a re-run after the model's code changed
    does not trust parts scored by the old code ("" when the module has no source file)."""
    module = importlib.import_module(spec.partition(":")[0])
    path = getattr(module, "__file__", None)
    if not path:
        return ""
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()[:16]
    except OSError:
        return ""


PART_PREFIX = "part"
MODEL_VERSION_ATTR = "MODEL_VERSION"
IDENTITY_KEYS = ("model", "model_source", "model_version")


def model_identity(spec: str, version: str | None = None) -> dict[str, str]:
    """What identifies the model ``spec`` in the settings its parts are tagged with: ``model``
    (``MODULE:FUNCTION``), ``model_source`` (:func:`model_digest`) and, when there is one,
    ``model_version``: ``version`` if given, else the ``MODEL_VERSION`` attribute of the
    function, else of its module. Raises :class:`ModelError` as :func:`load_model` does."""
    model = load_model(spec)
    if version is None:
        module = importlib.import_module(spec.partition(":")[0])
        declared = getattr(model, MODEL_VERSION_ATTR, getattr(module, MODEL_VERSION_ATTR, None))
        version = None if declared is None else str(declared)
    identity = {"model": spec, "model_source": model_digest(spec)}
    return identity if version is None else {**identity, "model_version": version}


def requests_lack_as_of(fs: pafs.FileSystem, units: Sequence[Unit]) -> bool:
    """Whether any request of ``units`` has no ``as_of_ts`` (no such column, or a null in it):
    those are scored as of the job's "now". Reads the Parquet footers, and the column itself
    only for row groups whose statistics do not count nulls."""
    by_path: dict[str, list[Unit]] = {}
    for unit in units:
        if unit.num_rows:
            by_path.setdefault(unit.path, []).append(unit)
    for path, file_units in by_path.items():
        with fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            if "as_of_ts" not in parquet.schema_arrow.names:
                return True
            for unit in file_units:
                group = parquet.metadata.row_group(unit.row_group)
                chunk = next(group.column(i) for i in range(group.num_columns)
                             if group.column(i).path_in_schema == "as_of_ts")
                stats = chunk.statistics
                if stats is not None and stats.has_null_count:
                    nulls = stats.null_count
                else:
                    nulls = parquet.read_row_group(unit.row_group, columns=["as_of_ts"]).column(0).null_count
                if nulls:
                    return True
    return False


def job_now(out: Path, now_ms: int | None, *, resume: bool) -> int:
    """The job's "now": ``now_ms`` if given; else, with ``resume`` (requests lack ``as_of_ts``),
    the "now" of the last score run into ``out`` if it did not complete and recorded one, so
    that a resume scores as of the same time; else the clock."""
    if now_ms is not None:
        return now_ms
    if not resume:
        return int(time.time() * 1000)
    last = last_run(out, PART_PREFIX)
    recorded = (last or {}).get("settings", {}).get("now_ms")
    if last is not None and not last.get("completed") and isinstance(recorded, int):
        log.info("resuming the incomplete run into %s as of its now_ms=%d", out, recorded)
        return recorded
    return int(time.time() * 1000)



def part_name(unit: Unit) -> str:
    """The output part of ``unit``: unique per unit, stable across re-runs."""
    return part_file_name(PART_PREFIX, unit)


def _columns(output: Any, n: int, where: str) -> dict[str, Any]:
    columns = dict(output) if isinstance(output, dict) else {"score": output}
    for name, values in columns.items():
        if len(values) != n:
            raise ModelError(f"{where}: model output {name!r} has {len(values)} rows for {n} requests")
    return columns


class ScoreWorker(StoreWorker):
    """A Ray actor body: scores units of requests into Parquet parts."""

    def __init__(self, config: Config, table: str, model: str, fs: pafs.FileSystem, out: str, *, max_len: int,
                 features: Sequence[str], now_ms: int, batch_rows: int, settings: dict[str, Any],
                 model_version: str | None = None, allow_any_ts: bool = False) -> None:
        super().__init__(config, table)
        self.model_spec = model
        self.model = load_model(model)
        self.identity = model_identity(model, model_version)
        self.fs, self.out = fs, Path(out)
        self.max_len, self.features, self.now_ms, self.batch_rows = max_len, list(features), now_ms, batch_rows
        self.settings, self.allow_any_ts = settings, allow_any_ts

    def run(self, unit: Unit) -> dict[str, Any]:
        ours, theirs = ({k: d.get(k) for k in IDENTITY_KEYS} for d in (self.identity, self.settings))
        if ours != theirs:
            raise ModelError(f"the model this worker imported ({ours}) is not the driver's ({theirs}); "
                             "install the same model on every node")
        with self.fs.open_input_file(unit.path) as handle:
            requests = pq.ParquetFile(handle).read_row_group(unit.row_group)
        if "user_id" not in requests.schema.names:
            raise SchemaError(f"{unit.path}: requests need a 'user_id' column")
        users = requests.column("user_id").combine_chunks()
        if "as_of_ts" in requests.schema.names:
            try:
                as_of = pc.fill_null(requests.column("as_of_ts").combine_chunks().cast(pa.int64()), self.now_ms)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(f"{unit.path}: 'as_of_ts' must be int64 milliseconds UTC: {exc}") from None
        else:
            as_of = pa.array(np.full(len(users), self.now_ms, dtype=np.int64))
        if not self.allow_any_ts:
            # The job's "now", not this actor's clock: every node and every resume judges alike.
            check_times(as_of, "as_of_ts", now_ms=self.now_ms, source=unit.path, first_row=unit.first_row)
        counts = self.cache_counts()
        with PartWriter(self.out / part_name(unit), unit, self.settings) as part:
            for start in range(0, len(users), self.batch_rows):
                stop = min(start + self.batch_rows, len(users))
                where = f"{unit.path} rows {unit.first_row + start}..{unit.first_row + stop - 1}"
                ids, ts = users.slice(start, stop - start), as_of.slice(start, stop - start)
                batch, _ = model_inputs(self.table, request_table(ids, ts), max_len=self.max_len,
                                        features=self.features, allow_any_ts=True)  # checked above
                try:
                    output = self.model(batch)
                except Exception as exc:  # noqa: BLE001 - any model failure is reported with its batch
                    raise ModelError(f"model {self.model_spec} failed on {where}: {exc!r}") from None
                columns = _columns(output, stop - start, where)
                part.write(pa.table({"user_id": ids, "as_of_ts": ts,
                                     **{k: pa.array(np.asarray(v)) for k, v in columns.items()}}))
            part.close(empty=pa.table({"user_id": users.slice(0, 0), "as_of_ts": pa.array([], pa.int64())}))
        return {"rows": len(users), **self.cache_since(counts)}


@dataclass(kw_only=True)
class ScoreReport(ReadingReport):
    """The job's outcome (``--json``): ``requests`` read, ``scored`` rows in complete parts
    under ``out``, ``now_ms`` the job's "now" (the ``as_of_ts`` of requests without one), and
    the fields of :class:`~ray_jobs.report.ReadingReport`."""

    requests: int = 0
    scored: int = 0
    sequences_per_s: float = 0.0
    now_ms: int = 0
    out: str = ""


def run_score(requests_path: str, model: str, out: Path, table: str, *, max_len: int = 100,
              features: Sequence[str] = (), workers: int = 2, config: Config | None = None,
              batch_rows: int = 2_000, now_ms: int | None = None, model_version: str | None = None,
              overwrite: bool = False, allow_any_ts: bool = False, ray_address: str | None = None,
              on_plan: Callable[[Sequence[Unit]], None] | None = None,
              on_progress: Callable[[int], None] | None = None) -> ScoreReport:
    """Score every request; see the module docstring. Joins or starts Ray
    (:func:`ray_jobs.runner.init_ray` with ``ray_address``) once the input is planned.

    ``now_ms`` is the job's "now" (default: see :func:`job_now`); ``model_version`` declares the
    model's version (see :func:`model_identity`); ``overwrite`` replaces parts in ``out`` made
    with other settings or from other input; ``allow_any_ts`` skips the ``as_of_ts`` units
    check; ``on_plan`` hears the units about to run (parts not already there), ``on_progress``
    the requests of each one done.

    Raises :class:`ModelError` if the model cannot be imported, :class:`OutputInUseError` while
    another job writes into ``out``, and the store's errors (a missing table).
    """
    identity = model_identity(model, model_version)  # fails before starting actors if the model cannot be imported
    config = config or Config.from_env()
    t0 = time.monotonic()
    with SequenceStore(config, pool_size=1) as store:
        found = store.table(table)
    fs, units = plan(requests_path)
    with OutputLock(out):  # one job in out/: from choosing its "now" through the fix of empty parts
        lacks_as_of = requests_lack_as_of(fs, units)
        now_ms = job_now(out, now_ms, resume=lacks_as_of)
        settings = job_settings(found, "score", **identity, max_len=max_len, features=list(features),
                                inclusive=False, **feature_rule(features, False),
                                **({"now_ms": now_ms} if lacks_as_of else {}))
        init_ray(ray_address, workers)
        Worker = worker_actor(ScoreWorker)

        def spawn(_: int) -> Any:
            return Worker.remote(config, table, model, fs, str(out), max_len=max_len, features=list(features),
                                 now_ms=now_ms, batch_rows=batch_rows, settings=settings,
                                 model_version=model_version, allow_any_ts=allow_any_ts)

        run = run_into_parts(units, out, PART_PREFIX, spawn, workers=workers, settings=settings,
                             overwrite=overwrite, on_plan=on_plan, on_rows=on_progress)
        if not run.error:
            give_empty_parts_the_schema(out, run.units, run.names, settings=settings)
    # ``run.rows`` counts only parts that each hold their own unit's complete output.
    report = ScoreReport(requests=sum(u.num_rows for u in run.units), scored=run.rows, workers=workers,
                         now_ms=now_ms, out=str(out.resolve()))
    report.sequences_per_s = run.fill(report, t0)
    if report.completed and report.scored != report.requests:
        report.fail(f"{report.scored} rows scored for {report.requests} requests")
    return report
