"""``seqstore backfill``: parallel, idempotent, resumable loads from Parquet with Ray.

Two ways in, one contract:

* **into chunks** (the default for a table with a chunk tier, ``into="chunks"``): the input is
  grouped by user (:mod:`ray_jobs.partitions`: a Ray task per row group splits it by a hash of
  the user id; Ray's object store holds the pieces), and each *partition* — a fixed group of
  users, the unit of work — is judged by the writer's rules and merged straight into those
  users' chunks by one actor (:class:`store.ChunkLoad`): each event written once, readable
  as it lands, nothing left to compact. Every partition of one input uses the "now" the
  input's first run recorded (its ``input:`` record), so a resumed run judges rows alike.
* **into raw cells** (``into="raw"``, and for tables without a chunk tier): units are row
  groups, streamed through the live writer (:meth:`store.SequenceTable.write`) as one raw
  cell per event, for ``seqstore compact`` to move into chunks later.

Ray actors — each with its own HBase connection pool, spread over the configured Thrift
servers — do the units. The driver:

* skips units the manifest (the ``backfill`` records of :mod:`store.table.job_records`, one per
  completed unit, keyed by its file's canonical location, so however the input is spelled, in
  HBase) records as done from the same file as it is now and
  into a table with the same settings (a digest of its spec), unless ``force``, which redoes
  this input's units and replaces their records one by one, never touching other inputs';
* judges every row with one "now" (the job's start) for the future-timestamp check, and
  records it per unit in the manifest, so ``verify`` applies exactly the writer's rule;
* records a unit as done only after the worker returned, i.e. after every write of the
  unit was acknowledged;
* re-runs a unit on another actor when its actor dies (``units_retried``), and retries a
  unit whose writes failed transiently, up to ``max_attempts``;
* stops with a clear error when HBase stays unreachable past the retry budget; the
  manifest then holds exactly the completed units and a re-run resumes from there;
* keeps every quarantined row (its file as ``source``, its row number in the file as
  ``position``, reason, field, detail: :data:`store.inputs.rows.QUARANTINE_SCHEMA`) in the report
  directory's ``quarantine/``, one Parquet file per unit that had any (``<unit slug>.parquet``:
  a row group's, or a partition's: ``users-<input>-p0003of0004.parquet``),
  written atomically *before* the unit is recorded. A re-done unit replaces its own file, so a
  report directory that re-runs share (``--report-dir``) holds every bad row of every unit done,
  once, whichever run did it (if recording the unit then fails, its file stays until the re-run
  replaces it). Each run writes its own ``report-<time>-<id>.json`` beside it, never an
  earlier run's;
* checks ``events_in == events_written + events_merged + events_quarantined`` (``events_merged``:
  rows stored as one event with an identical event of the same chunk — of the same
  partition, into chunks — see :class:`store.writer.WriteResult`).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ray_jobs.outputs import publish, temp_path
from ray_jobs.partitions import (
    DEFAULT_PARTITION_EVENTS,
    POSITION,
    Partition,
    input_fingerprint,
    input_key,
    partitions,
    split_unit,
)
from ray_jobs.parts import settings_digest
from ray_jobs.report import JobReport
from ray_jobs.runner import UnitRunner, init_ray
from ray_jobs.units import Unit, plan
from ray_jobs.workers import StoreWorker, actor_config, worker_actor
from store import SequenceStore, SequenceTable, WriteResult
from store.config import Config
from store.errors import SeqStoreError
from store.inputs import QUARANTINE_SCHEMA

log = logging.getLogger(__name__)

JOB = "backfill"  # the manifest: the job records of completed units, keyed by unit
QUARANTINE_DIR = "quarantine"  # in the report directory: one Parquet file per unit with bad rows


def recorded_entry(done: Mapping[str, dict[str, Any]], unit: Unit) -> dict[str, Any]:
    """The manifest's entry for ``unit`` among ``done`` (:func:`store.table.job_records.load` of
    :data:`JOB`), or ``{}``: the one under its key, else the one earlier versions recorded
    under its path as the input spelled it (:attr:`~ray_jobs.units.Unit.spelled_key`), so
    their manifests still resume. Callers check the entry's ``fingerprint`` before trusting it."""
    entry = done.get(unit.key)
    if entry is None and unit.spelled_key is not None:
        entry = done.get(unit.spelled_key)
    return entry or {}


def _recorded(done: Mapping[str, dict[str, Any]], unit: Unit | Partition) -> tuple[Any, Any]:
    entry = recorded_entry(done, unit) if isinstance(unit, Unit) else done.get(unit.key, {})
    return entry.get("fingerprint"), entry.get("table")


def recorded_now(done: Mapping[str, dict[str, Any]], units: list[Unit]) -> dict[str, int | None]:
    """The "now" each unit of an input was judged with (by unit key), from the manifest
    ``done``: the unit's own record (a backfill into raw cells), else the input's record (one
    into chunks, whose partitions share it); None where neither matches the input as it is."""
    entry = done.get(input_key(units), {})
    count = entry.get("partitions")
    shared = None
    if isinstance(count, int) and entry.get("fingerprint") == input_fingerprint(units, count):
        shared = entry.get("now_ms")
    out: dict[str, int | None] = {}
    for unit in units:
        own = recorded_entry(done, unit)
        out[unit.key] = own.get("now_ms") if own.get("fingerprint") == unit.fingerprint else shared
    return out


def keep_quarantine(directory: Path, unit: Unit | Partition, rows: pa.Table) -> None:
    """Make ``rows``, the quarantined rows of ``unit``, the file ``<directory>/<unit slug>.parquet``
    (written to a hidden temporary file, then :func:`ray_jobs.outputs.publish`), or remove that file
    when there are none: a re-done unit replaces what an earlier run kept for it, and never adds
    to it. Raises OSError; the unit's earlier file, if any, is then as it was."""
    target = directory / f"{unit.slug}.parquet"
    if not rows.num_rows:
        target.unlink(missing_ok=True)
        return
    tmp = temp_path(target)
    try:
        pq.write_table(rows, tmp)
        publish(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_report(report: BackfillReport) -> None:
    path = Path(report.report_path)
    tmp = temp_path(path)
    tmp.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    publish(tmp, path)


def table_digest(table: SequenceTable) -> str:
    """A digest of the table's settings: a unit recorded as done into a table with other
    settings (salt buckets, bucket size, retention, payload limit...) is not trusted."""
    return settings_digest(table.spec.settings())


class BackfillWorker(StoreWorker):
    """A Ray actor body: writes units of one table through its own connection pool."""

    def __init__(self, config: Config, table: str, filesystem: pafs.FileSystem, pool_size: int,
                 batch_rows: int, now_ms: int, hold_events: int = DEFAULT_PARTITION_EVENTS) -> None:
        super().__init__(config, table, pool_size=pool_size)
        self.fs = filesystem
        self.batch_rows = batch_rows
        self.now_ms = now_ms
        self.hold_events = hold_events

    def run(self, unit: Unit) -> dict[str, Any]:
        """Write one row group as raw cells; returns its counts and quarantine (Arrow IPC bytes)."""
        with self.fs.open_input_file(unit.path) as handle:
            parquet = pq.ParquetFile(handle)
            batches = parquet.iter_batches(batch_size=self.batch_rows, row_groups=[unit.row_group])
            result = self.table.write(batches, source=unit.path, start_position=unit.first_row,
                                      chunk_rows=self.batch_rows, now_ms=self.now_ms)
        if result.rows_in != unit.num_rows:
            raise SeqStoreError(f"{unit.key}: read {result.rows_in} rows, the file says {unit.num_rows}")
        return _outcome(result)

    def load(self, partition: Partition, sources: list[str], pieces: list[Any]) -> dict[str, Any]:
        """Merge one partition straight into its users' chunks; returns counts and quarantine.

        ``pieces``: object refs of its piece of every row group (``sources[j]`` the file of
        ``pieces[j]``), fetched one at a time, and merged whenever :attr:`hold_events` rows are
        held: memory is bounded by that setting and one piece, not by the partition (a user
        whose history alone is larger goes in several merges, each exact and idempotent).
        """
        import ray

        results: list[WriteResult] = []
        load, held = self.table.chunk_load(now_ms=self.now_ms), 0
        for source, ref in zip(sources, pieces, strict=True):
            piece: pa.Table = ray.get(ref)
            if piece.num_rows:
                load.add(piece.drop_columns([POSITION]), source=source, positions=piece.column(POSITION).to_numpy())
                held += piece.num_rows
            del piece
            if held >= self.hold_events:
                results.append(load.commit())
                load, held = self.table.chunk_load(now_ms=self.now_ms), 0
        results.append(load.commit())
        outcome = _outcome(WriteResult(
            rows_in=sum(r.rows_in for r in results), written=sum(r.written for r in results),
            quarantine=pa.concat_tables([r.quarantine for r in results]),
            put_calls=sum(r.put_calls for r in results), merged=sum(r.merged for r in results)))
        return {**outcome, "merges": len(results)}


def _outcome(result: WriteResult) -> dict[str, Any]:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, QUARANTINE_SCHEMA) as w:
        w.write_table(result.quarantine)
    return {"rows_in": result.rows_in, "written": result.written, "merged": result.merged,
            "quarantined": result.quarantined, "by_reason": result.by_reason(),
            "quarantine": sink.getvalue().to_pybytes()}


def _split(fs: pafs.FileSystem, units: list[Unit], count: int, wanted: frozenset[int]) -> dict[int, list[Any]]:
    """The shuffle: one Ray task per row group splits it by partition; returns each wanted
    partition's pieces (object refs, one per row group, in unit order) once every row group
    was read. Ray retries a task whose worker died and rebuilds a piece that was lost.

    Raises:
        SeqStoreError: a row group could not be read (naming it).
    """
    import ray

    task = ray.remote(split_unit).options(num_returns=count + 1)
    refs: list[Any] = [task.remote(fs, unit, count, wanted) for unit in units]
    pending = {r[0]: unit for r, unit in zip(refs, units, strict=True)}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        unit = pending.pop(ready[0])
        try:
            ray.get(ready[0])
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            raise SeqStoreError(f"cannot split {unit.key} by user: {_first_line(cause)}") from exc
    return {p: [r[p + 1] for r in refs] for p in sorted(wanted)}


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


@dataclass(kw_only=True)
class BackfillReport(JobReport):
    """The job's outcome (``--json``): events in, written, merged and quarantined (by reason),
    where this run's report file and the quarantine directory (read it whole with
    ``pq.read_table(quarantine_path)``) are, and the fields of :class:`~ray_jobs.report.JobReport`."""

    table: str
    input: str
    into: str = "chunks"  # "chunks": straight into the chunk tier; "raw": raw cells, to compact
    events_in: int = 0
    events_written: int = 0
    events_merged: int = 0
    events_quarantined: int = 0
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)
    merges: int = 0  # into chunks: bulk merges, one per partition and more for those over partition_events
    events_per_s: float = 0.0
    quarantine_path: str = ""
    report_path: str = ""


INTO = ("auto", "chunks", "raw")


def run_backfill(
    input_path: str,
    table: str,
    *,
    workers: int = 2,
    config: Config | None = None,
    force: bool = False,
    report_dir: Path | None = None,
    into: str = "auto",
    partition_events: int = DEFAULT_PARTITION_EVENTS,
    pool_size: int = 4,
    batch_rows: int = 10_000,
    max_attempts: int = 3,
    ray_address: str | None = None,
    on_plan: Callable[[list[Any]], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_unit_done: Callable[[Any, list[Any]], None] | None = None,
) -> BackfillReport:
    """Backfill ``input_path`` into ``table`` with ``workers`` Ray actors.

    Args:
        input_path: Parquet file, directory, glob, or pyarrow filesystem URI.
        table: a table created with ``seqstore create-table``.
        workers: concurrent actors.
        config: HBase endpoints (default :meth:`Config.from_env`); several Thrift2 servers
            are spread over the actors.
        force: re-run every unit of this input, whatever the manifest says (no duplicates: writes
            and merges are idempotent); each unit's record is replaced as it completes. Other
            inputs' records of the table are left alone.
        report_dir: where this run's ``report-<time>-<id>.json`` and the ``quarantine/``
            directory (a file per unit with bad rows) go; default
            ``seqstore-reports/backfill-<table>-<time>``. Re-runs may share one: earlier runs'
            reports are kept, and each unit's file holds its rows as last done.
        into: ``"chunks"`` (straight into the chunk tier, grouped by user), ``"raw"`` (raw
            cells, for a later compaction) or ``"auto"``: chunks if the table has a chunk tier.
        partition_events: into chunks, the input rows of one partition, about (at least
            :data:`~ray_jobs.partitions.MIN_PARTITIONS` partitions), and the most rows an actor
            holds before it merges them (a partition larger than this, e.g. with a heavy user, is
            merged in several goes): the setting that bounds an actor's memory.
        max_attempts: tries per unit before the job gives up.
        ray_address: the Ray cluster to join (see :func:`ray_jobs.runner.init_ray`), once the
            input is planned and the table found; Ray is started locally if neither this nor
            ``RAY_ADDRESS`` is set and Ray is not running.
        on_plan: called with the units about to run (those the manifest does not have).
        on_progress: called with the number of events of each finished unit.
        on_unit_done: called after each unit with the unit and the live actor handles
            (a test seam for fault injection).

    Returns the report; ``report.completed`` is False when the job stopped early (``error`` says why).
    """
    if workers <= 0:
        raise ValueError("'workers' must be > 0")
    if into not in INTO:
        raise ValueError(f"'into' must be one of {', '.join(INTO)}")
    config = config or Config.from_env()
    t0 = time.monotonic()
    now_ms = int(time.time() * 1000)
    fs, units = plan(input_path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report_dir = (report_dir or Path("seqstore-reports") / f"backfill-{table}-{stamp}").resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    quarantine_dir = report_dir / QUARANTINE_DIR
    quarantine_dir.mkdir(exist_ok=True)
    report = BackfillReport(table=table, input=input_path, workers=workers, quarantine_path=str(quarantine_dir),
                            report_path=str(report_dir / f"report-{stamp}-{uuid.uuid4().hex[:8]}.json"))
    with SequenceStore(config, pool_size=2) as store:
        target = store.table(table)
        digest = table_digest(target)  # fails fast, with a clear message, if there is no table
        tiered = target.spec.chunk_events is not None
        if into == "chunks":
            target.spec.check_tiered()
        report.into = "chunks" if into == "chunks" or (into == "auto" and tiered) else "raw"
        recorded = target.job_records(JOB)
        # --force redoes this input's units and lets record() replace their entries as they
        # complete; nothing is deleted, so other inputs' records (and this input's, if the run
        # stops early) stay as they were.
        done = {} if force else recorded
        work: list[Any]
        parts: list[Partition] = []
        if report.into == "raw":
            work = units
        else:
            work = parts = partitions(units, partition_events)
            now_ms = _input_now(target, recorded, parts[0], digest, now_ms, force=force)
        todo = [u for u in work if _recorded(done, u) != (u.fingerprint, digest)]
        report.units_total = len(work)
        report.units_skipped = len(work) - len(todo)
        if on_plan:
            on_plan(todo)

        init_ray(ray_address, workers)
        pieces: dict[int, list[Any]] = {}
        if report.into == "chunks" and todo:
            try:
                pieces = _split(fs, units, parts[0].count, frozenset(p.index for p in todo if isinstance(p, Partition)))
            except SeqStoreError as exc:
                report.fail(str(exc))
                _write_report(report)
                return report
        sources = [u.path for u in units]
        Worker = worker_actor(BackfillWorker)

        def spawn(i: int) -> Any:
            return Worker.remote(actor_config(config, i), table, fs, pool_size, batch_rows, now_ms, partition_events)

        def submit(actor: Any, unit: Any) -> Any:
            if isinstance(unit, Partition):
                return actor.load.remote(unit, sources, pieces[unit.index])  # refs in a list: fetched one by one
            return actor.run.remote(unit)

        reasons: Counter[str] = Counter()

        def done_one(unit: Any, outcome: dict[str, Any], actors: list[Any]) -> None:
            # Kept before the unit is recorded: a recorded unit is never redone, so its rows
            # must already be on disk.
            keep_quarantine(quarantine_dir, unit, pa.ipc.open_stream(outcome.pop("quarantine")).read_all())
            target.record_job(JOB, unit.key, {
                "unit": unit.key, "fingerprint": unit.fingerprint, "table": digest, "now_ms": now_ms,
                "rows_in": outcome["rows_in"],
                "written": outcome["written"], "merged": outcome["merged"], "quarantined": outcome["quarantined"],
                "done_at_ms": int(time.time() * 1000)})
            if isinstance(unit, Partition):
                pieces.pop(unit.index, None)  # its pieces leave the object store
            report.units_done += 1  # recorded: counted even if the job stops right after
            report.events_in += outcome["rows_in"]
            report.events_written += outcome["written"]
            report.events_merged += outcome["merged"]
            report.events_quarantined += outcome["quarantined"]
            report.merges += outcome.get("merges", 0)
            reasons.update(outcome["by_reason"])
            if on_progress:
                on_progress(outcome["rows_in"])
            if on_unit_done:
                on_unit_done(unit, actors)

        runner: UnitRunner[Any] = UnitRunner(spawn, submit, workers=workers, max_attempts=max_attempts)
        report.run(runner, todo, done_one)
    report.quarantine_by_reason = dict(sorted(reasons.items()))
    report.events_per_s = report.timed(t0, report.events_in)
    if report.events_in != report.events_written + report.events_merged + report.events_quarantined:
        report.fail(f"conservation violated: {report.events_in} in, {report.events_written} written, "
                    f"{report.events_quarantined} quarantined, {report.events_merged} merged")
    _write_report(report)
    return report


def _input_now(target: SequenceTable, recorded: Mapping[str, dict[str, Any]], part: Partition, digest: str,
               now_ms: int, *, force: bool) -> int:
    """The "now" every partition of this input is judged with: the one its first run recorded
    (the input's ``input:`` record), unless the input or the table changed or ``force``; else
    ``now_ms``, recorded before any partition runs."""
    entry = recorded.get(part.input_key, {})
    if not force and (entry.get("fingerprint"), entry.get("table")) == (part.fingerprint, digest):
        return int(entry["now_ms"])
    target.record_job(JOB, part.input_key, {"unit": part.input_key, "fingerprint": part.fingerprint,
                                            "table": digest, "now_ms": now_ms, "partitions": part.count})
    return now_ms
