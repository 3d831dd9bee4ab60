"""``seqstore compact``: compaction of a table's raw tier into chunks, on Ray actors.

The table's row space is split into units, one per salt value
(:meth:`store.SequenceTable.salt_ranges`); each actor, with its own HBase connection pool,
runs :func:`store.tiers.compaction.compact_range` over its unit. Units run through the jobs'
:class:`~ray_jobs.runner.UnitRunner`: an actor that dies is replaced and its unit re-run, a
unit that failed because HBase was unreachable is retried after a backoff, and the job stops
with a clear error when HBase stays unreachable past the retry budget.

No manifest: the compaction's state lives in HBase (users' raw-tier flags, raw cells and
chunks), and every step of it is atomic per row and idempotent. A re-run — of a unit after a
failure, or of the whole job after it stopped — therefore resumes where it left off, and a
run after a completed one compacts nothing (``raw_events == 0``). It is safe beside running
writers and readers (see :mod:`store.tiers.compaction`).

``older_than_days`` compacts only raw events whose ``event_ts`` is older than that many days
before the job's start (one cut-off for every unit, retries included); the users' newer raw
events stay raw and their flags stay set (``flags_kept``).

Counts come from the units that completed: a unit that failed and was re-run reports only its
last, successful run (the failed attempt's work is then found done, not counted twice).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from ray_jobs.report import JobReport
from ray_jobs.runner import UnitRunner, init_ray
from ray_jobs.workers import StoreWorker, actor_config, worker_actor
from store import SequenceStore, SequenceTable
from store.config import Config
from store.format import DAY_MS
from store.tiers import SKIPPED_NAMED, CompactionStats


@dataclass(frozen=True, slots=True)
class CompactUnit:
    """One salt value's row range ``[start, stop)``."""

    salt: int
    start: bytes
    stop: bytes

    @property
    def key(self) -> str:
        return f"salt{self.salt:03d}"


def units_of(table: SequenceTable) -> list[CompactUnit]:
    """The compaction units of ``table``: one per salt range."""
    return [CompactUnit(i, start, stop) for i, (start, stop) in enumerate(table.salt_ranges())]


class CompactWorker(StoreWorker):
    """A Ray actor body: compacts units of one table through its own connection pool."""

    def __init__(self, config: Config, table: str, pool_size: int, older_than_ms: int | None) -> None:
        super().__init__(config, table, pool_size=pool_size)
        self.older_than_ms = older_than_ms

    def run(self, unit: CompactUnit) -> dict[str, Any]:
        stats = self.table.compact_range(unit.start, unit.stop, older_than_ms=self.older_than_ms)
        return {f.name: getattr(stats, f.name) for f in fields(stats)}


@dataclass(kw_only=True)
class CompactReport(JobReport):
    """The job's outcome (``--json``), with the fields of :class:`~ray_jobs.report.JobReport`
    (a unit is a salt range).

    ``users`` had raw events compacted; ``raw_events`` raw cells were merged into chunks and
    deleted; ``chunks_written`` new chunk cells replaced ``chunks_replaced`` old ones;
    ``retries`` counts users started again after a concurrent change (a writer or another
    compaction); ``flags_kept`` users are still flagged (raw events newer than
    ``older_than``, or written during the run); ``users_skipped`` users kept changing on every
    attempt (e.g. written every few milliseconds): they stay readable from the raw tier and the
    next run compacts them; ``skipped`` names the first of them. ``raw_kept`` merged raw cells
    were left in place because their row was re-written meanwhile (the next run deletes them).
    """

    table: str
    older_than_days: float | None = None
    older_than_ms: int | None = None
    users: int = 0
    raw_events: int = 0
    chunks_written: int = 0
    chunks_replaced: int = 0
    retries: int = 0
    flags_kept: int = 0
    users_skipped: int = 0
    raw_kept: int = 0
    skipped: list[str] = field(default_factory=list)
    events_per_s: float = 0.0


def run_compact(table: str, *, older_than_days: float | None = None, workers: int = 2, config: Config | None = None,
                ray_address: str | None = None, pool_size: int = 4, max_attempts: int = 3,
                on_plan: Callable[[list[CompactUnit]], None] | None = None,
                on_progress: Callable[[CompactionStats], None] | None = None) -> CompactReport:
    """Compact ``table`` with ``workers`` Ray actors, one unit per salt range; see the module docstring.

    Args:
        table: a table with a chunk tier (``TableSpec.chunk_events`` set).
        older_than_days: compact only raw events older than this many days (by event time);
            None compacts all of them.
        workers: concurrent actors.
        config: HBase endpoints (default :meth:`Config.from_env`); several Thrift2 servers are
            spread over the actors.
        ray_address: the Ray cluster to join (see :func:`ray_jobs.runner.init_ray`); Ray is
            started locally if neither this nor ``RAY_ADDRESS`` is set and Ray is not running.
        pool_size: HBase connections (and compaction threads) per actor.
        max_attempts: tries per unit before the job gives up.
        on_plan: called with the units (salt ranges) before they run.
        on_progress: called in the driver with each finished unit's :class:`CompactionStats`.

    Returns the report; ``report.completed`` is False when the job stopped early (``error`` says
    why; a re-run resumes).

    Raises:
        TableNotFoundError: no such table, or it has no chunk tier.
        ValueError: ``workers`` or ``older_than_days`` out of range.
        SeqStoreError: Ray cannot be joined; StoreUnavailableError, HBaseError: from opening the table.
    """
    if workers <= 0:
        raise ValueError("'workers' must be > 0")
    if older_than_days is not None and not older_than_days > 0:
        raise ValueError("'older_than_days' must be > 0")
    config = config or Config.from_env()
    t0 = time.monotonic()
    older_than_ms = (int(time.time() * 1000) - int(older_than_days * DAY_MS)) if older_than_days is not None else None
    with SequenceStore(config, pool_size=1) as store:
        spec_table = store.table(table)  # a clear TableNotFoundError before Ray starts
        spec_table.spec.check_tiered()
        units = units_of(spec_table)
    if on_plan:
        on_plan(units)
    init_ray(ray_address, workers)
    report = CompactReport(table=table, older_than_days=older_than_days, older_than_ms=older_than_ms,
                           units_total=len(units), workers=workers)
    Worker = worker_actor(CompactWorker)

    def spawn(slot: int) -> Any:
        return Worker.remote(actor_config(config, slot), table, pool_size, older_than_ms)

    def done(_unit: CompactUnit, outcome: dict[str, Any], _actors: list[Any]) -> None:
        stats = CompactionStats(**outcome)
        for name in ("users", "raw_events", "chunks_written", "chunks_replaced", "retries", "flags_kept",
                     "users_skipped", "raw_kept"):
            setattr(report, name, getattr(report, name) + getattr(stats, name))
        report.skipped = (report.skipped + stats.skipped)[:SKIPPED_NAMED]
        report.units_done += 1
        if on_progress:
            on_progress(stats)

    runner: UnitRunner[CompactUnit] = UnitRunner(spawn, lambda actor, unit: actor.run.remote(unit), workers=workers,
                                                 max_attempts=max_attempts)
    report.run(runner, units, done)
    report.events_per_s = report.timed(t0, report.raw_events)
    return report
