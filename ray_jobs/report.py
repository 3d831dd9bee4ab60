"""What every job's report has: its units, retries, Ray nodes, time and outcome.

Each job's report (:class:`~ray_jobs.backfill.BackfillReport`, ``CompactReport``,
``ScoreReport``, ``ExportReport``) is a :class:`JobReport` with the job's own counts added
(the jobs that read sequences: a :class:`ReadingReport`, with their chunk caches' counts);
:meth:`JobReport.to_json` is what ``--json`` prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ray_jobs.runner import RunStats, UnitRunner
from store.errors import SeqStoreError


@dataclass(kw_only=True)
class JobReport:
    """The fields every job reports.

    Attributes:
        units_total: units of work the job has (row groups, salt ranges).
        units_done: units this run completed (counted by the job as it records each one).
        units_skipped: units already done by an earlier run (resumed, not redone).
        units_retried: unit runs repeated after a failure (a dead actor, HBase unreachable).
        nodes: Ray nodes the job's actors ran on.
        workers: actors asked for (``--workers``).
        wall_s: the job's time, seconds.
        completed: every unit done and every count checked; else ``error`` says why, and
            running the same command again resumes.
    """

    units_total: int = 0
    units_done: int = 0
    units_skipped: int = 0
    units_retried: int = 0
    nodes: int = 0
    workers: int = 0
    wall_s: float = 0.0
    completed: bool = False
    error: str = ""

    def run(self, runner: UnitRunner[Any], units: Sequence[Any], on_done: Callable[[Any, Any, list[Any]], None]
            ) -> None:
        """Run ``units`` with ``runner``: ``completed``, or the ``error`` that stopped the job;
        then the runner's counts (:meth:`ran`)."""
        try:
            runner.run(units, on_done)
            self.completed = True
        except SeqStoreError as exc:
            self.error = str(exc)
        finally:
            self.ran(runner.stats)

    def ran(self, stats: RunStats) -> None:
        """Take the runner's counts: units retried, the nodes used."""
        self.units_retried = stats.units_retried
        self.nodes = len(stats.nodes)

    def fail(self, error: str) -> None:
        self.completed = False
        self.error = error

    def timed(self, started: float, processed: int) -> float:
        """Set ``wall_s`` from ``started`` (``time.monotonic()``); returns ``processed`` per second."""
        self.wall_s = round(time.monotonic() - started, 2)
        return round(processed / self.wall_s, 1) if self.wall_s else 0.0

    def to_json(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return asdict(self)


@dataclass(kw_only=True)
class ReadingReport(JobReport):
    """A job that reads sequences (score, export): the fields of :class:`JobReport`, and what
    the workers' chunk caches served (:mod:`store.table.chunk_cache`).

    Attributes:
        chunk_cache: ``hits`` (chunks served from memory), ``misses`` (decoded from their
            bytes) and ``hit_ratio`` (None when no chunk was read, or no cache is on), summed
            over the units this run ran.
    """

    chunk_cache: dict[str, Any] = field(default_factory=dict)

    def cache_counts(self, hits: int, misses: int) -> None:
        total = hits + misses
        self.chunk_cache = {"hits": hits, "misses": misses, "hit_ratio": round(hits / total, 4) if total else None}
