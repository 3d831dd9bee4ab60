"""The unit runner and actors that fail, with a real local Ray: an actor whose constructor
fails (a model module missing on the node, HBase unreachable while it starts), an actor Ray
reports unavailable while it still runs its unit, an actor that dies on every unit."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import ray

from ray_jobs import runner as runner_module
from ray_jobs.runner import RESUME_HINT, UnitRunner
from ray_jobs.units import Unit
from ray_jobs.workers import JobWorker, worker_actor
from store.errors import SeqStoreError, StoreUnavailableError
from tests.conftest import plan_units

pytestmark = pytest.mark.slow


def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "BACKOFF_BASE_S", 0.05)
    monkeypatch.setattr(runner_module, "BACKOFF_MAX_S", 0.1)


def test_a_worker_whose_constructor_fails_stops_the_job_with_the_constructors_error(
    ray_local: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_backoff(monkeypatch)

    class NeedsModel(JobWorker):  # local, so Ray ships it by value
        def __init__(self) -> None:
            import team_models_not_installed  # type: ignore[import-not-found]  # noqa: F401  # not on this node

        def run(self, unit: Unit) -> int:
            return unit.num_rows

    Worker = worker_actor(NeedsModel)
    runner: UnitRunner[Unit] = UnitRunner(lambda _slot: Worker.remote(), lambda a, u: a.run.remote(u), workers=2)
    done: list[str] = []
    with pytest.raises(SeqStoreError) as stopped:
        runner.run(plan_units(tmp_path, 3), lambda unit, _result, _actors: done.append(unit.key))
    message = str(stopped.value)
    assert "ModuleNotFoundError: No module named 'team_models_not_installed'" in message
    assert RESUME_HINT not in message and "\n" not in message  # a re-run as is would fail the same way
    assert not done and runner.stats.units_retried == 0  # no unit was run, or retried, on a broken worker


def test_hbase_unreachable_while_workers_start_is_an_outage_ridden_out_then_given_up(
    ray_local: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_backoff(monkeypatch)
    starts = tmp_path / "starts"
    starts.mkdir()

    class Flaky(JobWorker):  # HBase unreachable for the first `down` starts (counted in files)
        def __init__(self, down: int, budget_s: float) -> None:
            (starts / f"{os.getpid()}-{time.monotonic_ns()}").touch()
            if len(list(starts.iterdir())) <= down:
                raise StoreUnavailableError("HBase unreachable after 3 tries", "127.0.0.1:1",
                                            unavailable_after_s=budget_s)

        def run(self, unit: Unit) -> int:
            return unit.num_rows

    Worker = worker_actor(Flaky)
    units = plan_units(tmp_path, 3)
    done: list[str] = []
    statuses: list[str] = []
    with runner_module.reporting_status(statuses.append):
        ridden: UnitRunner[Unit] = UnitRunner(lambda _slot: Worker.remote(2, 120.0), lambda a, u: a.run.remote(u),
                                              workers=1)
        ridden.run(units, lambda unit, _result, _actors: done.append(unit.key))
    assert sorted(done) == sorted(u.key for u in units) and ridden.stats.units_retried == 0
    assert len(list(starts.iterdir())) == 3 and statuses == [runner_module.UNREACHABLE_STATUS, ""]

    never: UnitRunner[Unit] = UnitRunner(lambda _slot: Worker.remote(10**6, 3.0), lambda a, u: a.run.remote(u),
                                         workers=1)
    t0 = time.monotonic()
    unreachable = r"^HBase unreachable: .*HBase unreachable after 3 tries \(127\.0\.0\.1:1\)"
    with pytest.raises(SeqStoreError, match=unreachable):
        never.run(units, lambda *_: None)
    assert time.monotonic() - t0 < 30  # the outage budget (3 s here), not a worker per unit attempt


def test_an_unavailable_actor_is_killed_before_its_unit_is_run_again(
    ray_local: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_backoff(monkeypatch)
    marks = tmp_path / "marks"
    marks.mkdir()

    class Writer(JobWorker):
        def run(self, unit: Unit) -> int:
            time.sleep(2)  # writing the unit...
            (marks / f"{os.getpid()}-rg{unit.row_group}").touch()  # ...and done with it
            return os.getpid()

    Worker = worker_actor(Writer)
    handles: list[Any] = []  # like any caller's, they keep the actors from Ray's garbage collection
    fake: list[Any] = []

    def spawn(_slot: int) -> Any:
        handles.append(Worker.remote())
        return handles[-1]

    def submit(actor: Any, unit: Unit) -> Any:
        ref = actor.run.remote(unit)
        if fake:
            return ref
        fake.append(ray.put(None))  # the first attempt: Ray will say its actor is unavailable
        return fake[0]

    real_get = ray.get

    def get(ref: Any, *args: Any, **kwargs: Any) -> Any:
        if fake and ref == fake[0]:
            raise ray.exceptions.ActorUnavailableError("injected: RPC error reaching the actor", None)
        return real_get(ref, *args, **kwargs)

    monkeypatch.setattr(ray, "get", get)
    units = plan_units(tmp_path, 1)
    pids: list[int] = []
    runner: UnitRunner[Unit] = UnitRunner(spawn, submit, workers=1)
    runner.run(units, lambda _unit, pid, _actors: pids.append(pid))
    assert len(handles) == 2 and runner.stats.units_retried == 1
    time.sleep(3)  # the first actor, had it been left running, would have finished the unit by now
    assert sorted(m.name for m in marks.iterdir()) == [f"{pids[0]}-rg0"]  # written once, by the new actor


def test_the_reason_of_an_actor_that_dies_on_every_try_is_rays_own(
    ray_local: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_backoff(monkeypatch)

    class Dies(JobWorker):
        def run(self, unit: Unit) -> int:
            os._exit(3)

    Worker = worker_actor(Dies)
    runner: UnitRunner[Unit] = UnitRunner(lambda _slot: Worker.remote(), lambda a, u: a.run.remote(u), workers=1,
                                          max_attempts=2)
    with pytest.raises(SeqStoreError, match=r"failed 2 times \(last: ActorDiedError: .+\)") as stopped:
        runner.run(plan_units(tmp_path, 1), lambda *_: None)
    assert "its actor died)" not in str(stopped.value) and RESUME_HINT in str(stopped.value)
