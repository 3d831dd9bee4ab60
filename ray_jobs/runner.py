"""Running units of work on a set of Ray actors, with the fault handling every job shares.

* An actor that dies (``RayActorError``) is replaced and its unit re-run elsewhere.
* A unit that failed with :class:`StoreUnavailableError` (HBase unreachable past the
  connection's own retry budget) is re-queued after a backoff.
* Either way a unit gets at most ``max_attempts`` tries; then, or on any other error, the
  job stops with a :class:`SeqStoreError` saying which unit failed and why.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from store.errors import SeqStoreError, StoreUnavailableError

log = logging.getLogger(__name__)


class HasKey(Protocol):
    @property
    def key(self) -> str: ...


U = TypeVar("U", bound=HasKey)


@dataclass
class RunStats:
    units_done: int = 0
    units_retried: int = 0


class UnitRunner(Generic[U]):
    """Feeds ``units`` to ``workers`` actors made by ``spawn(slot)``; ``submit(actor, unit)``
    returns an ObjectRef; ``on_done(unit, result, actors)`` runs in the driver per finished unit."""

    def __init__(self, spawn: Callable[[int], Any], submit: Callable[[Any, U], Any], *, workers: int,
                 max_attempts: int = 3) -> None:
        if workers <= 0:
            raise ValueError("'workers' must be > 0")
        self.spawn = spawn
        self.submit = submit
        self.workers = workers
        self.max_attempts = max_attempts
        self.stats = RunStats()

    def run(self, units: Sequence[U], on_done: Callable[[U, Any, list[Any]], None]) -> RunStats:
        import ray

        todo: deque[U] = deque(units)
        actors = [self.spawn(i) for i in range(min(self.workers, max(1, len(todo))))]
        idle = deque(range(len(actors)))
        attempts: Counter[str] = Counter()
        in_flight: dict[Any, tuple[int, U]] = {}
        try:
            while todo or in_flight:
                while todo and idle:
                    slot, unit = idle.popleft(), todo.popleft()
                    attempts[unit.key] += 1
                    in_flight[self.submit(actors[slot], unit)] = (slot, unit)
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
                for ref in ready:
                    slot, unit = in_flight.pop(ref)
                    idle.append(slot)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayActorError:
                        log.warning("actor %d died during %s; re-running the unit on a new actor", slot, unit.key)
                        actors[slot] = self.spawn(slot)
                        self._requeue(todo, unit, attempts, "its actor died")
                        continue
                    except ray.exceptions.RayTaskError as exc:
                        cause: BaseException = exc.as_instanceof_cause()  # type: ignore[no-untyped-call]
                        if isinstance(cause, StoreUnavailableError):
                            self._requeue(todo, unit, attempts, str(cause))
                            continue
                        raise SeqStoreError(f"unit {unit.key} failed: {_first_line(cause)}") from None
                    on_done(unit, result, actors)
                    self.stats.units_done += 1
        finally:
            for actor in actors:
                ray.kill(actor)
        return self.stats

    def _requeue(self, todo: deque[U], unit: U, attempts: Counter[str], why: str) -> None:
        self.stats.units_retried += 1
        if attempts[unit.key] >= self.max_attempts:
            raise SeqStoreError(
                f"unit {unit.key} failed {attempts[unit.key]} times (last: {why}); stopping. Completed units are "
                "recorded: re-run the same command to resume.")
        time.sleep(min(5.0, 0.5 * 2 ** attempts[unit.key]))
        todo.appendleft(unit)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # RayTaskError's text carries the remote traceback; the cause's own message comes last.
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else repr(exc)


def init_ray(address: str | None, workers: int) -> None:
    """Join ``address`` or start a local Ray sized for ``workers`` actors (quietly)."""
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    else:
        ray.init(num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False,
                 object_store_memory=512 * 2**20)


@dataclass
class PartsOutcome:
    """What :func:`run_into_parts` did: every unit, those it ran, and how it ended."""

    units: list[Any]
    ran: list[Any]
    stats: RunStats
    error: str = ""


def run_into_parts(input_path: str, out: Any, part_name: Callable[[Any], str], spawn: Callable[[int], Any], *,
                   workers: int, on_rows: Callable[[int], None] | None = None) -> PartsOutcome:
    """Run one actor call per unit of ``input_path`` whose output part is not in ``out`` yet.

    Each actor's ``run(unit)`` writes ``out/part_name(unit)`` atomically and returns
    ``{"rows": n}``; existing parts are skipped, so a re-run resumes where a crash left off.
    """
    from ray_jobs.units import plan

    _, units = plan(input_path)
    out.mkdir(parents=True, exist_ok=True)
    todo = [u for u in units if not (out / part_name(u)).exists()]

    def done(_unit: Any, result: dict[str, Any], _actors: list[Any]) -> None:
        if on_rows:
            on_rows(result["rows"])

    runner: UnitRunner[Any] = UnitRunner(spawn, lambda a, u: a.run.remote(u), workers=workers)
    outcome = PartsOutcome(units, todo, runner.stats)
    try:
        runner.run(todo, done)
    except SeqStoreError as exc:
        outcome.error = str(exc)
    return outcome
