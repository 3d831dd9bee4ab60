"""The unit runner's fault handling with a real local Ray, and the backfill report it keeps possible."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray

from ray_jobs import runner as runner_module
from ray_jobs.backfill import JOB, run_backfill
from ray_jobs.runner import UnitRunner
from ray_jobs.units import Unit
from ray_jobs.verify import verify
from ray_jobs.workers import JobWorker
from store import SequenceTable
from store.errors import SeqStoreError
from store.table import job_records
from tests.conftest import HBaseServer, plan_units


def _units(tmp_path: Path, groups: int) -> list[Unit]:
    return plan_units(tmp_path, groups)


def _echo_actor() -> Any:
    class Echo(JobWorker):  # local, so Ray ships it by value
        def run(self, unit: Unit) -> dict[str, Any]:
            return {"rows": unit.num_rows}

    return ray.remote(num_cpus=0)(Echo)


@pytest.mark.slow
def test_a_ray_system_error_re_runs_the_unit_on_a_new_actor(
    ray_local: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    units = _units(tmp_path, 4)
    Echo = _echo_actor()
    spawned: list[int] = []

    def spawn(slot: int) -> Any:
        spawned.append(slot)
        return Echo.remote()

    real_get = ray.get
    injected: list[Any] = []
    unit_refs: list[Any] = []

    def submit(actor: Any, unit: Unit) -> Any:
        unit_refs.append(actor.run.remote(unit))
        return unit_refs[-1]

    def flaky_get(ref: Any, *args: Any, **kwargs: Any) -> Any:
        if not injected and ref in unit_refs:  # a unit's result, not an actor's start
            injected.append(ref)
            raise ray.exceptions.RaySystemError("injected: the object was lost")
        return real_get(ref, *args, **kwargs)

    monkeypatch.setattr(ray, "get", flaky_get)
    done: list[str] = []
    runner: UnitRunner[Unit] = UnitRunner(spawn, submit, workers=2)
    stats = runner.run(units, lambda unit, _result, _actors: done.append(unit.key))
    assert injected and sorted(done) == sorted(u.key for u in units)  # every unit exactly once
    assert stats.units_done == 4 and stats.units_retried == 1
    assert len(spawned) == 3  # two actors, one replaced


@pytest.mark.slow
def test_an_unexpected_error_in_the_driver_loop_is_a_resumable_seqstore_error(
    ray_local: None, tmp_path: Path
) -> None:
    Echo = _echo_actor()

    def explode(_unit: Unit, _result: Any, _actors: list[Any]) -> None:
        raise ray.exceptions.RaySystemError("injected: raylet gone")

    runner: UnitRunner[Unit] = UnitRunner(lambda _slot: Echo.remote(), lambda a, u: a.run.remote(u), workers=1)
    with pytest.raises(SeqStoreError, match=r"unexpected RaySystemError.*re-run the same command to resume"):
        runner.run(_units(tmp_path, 2), explode)


@pytest.mark.integration
@pytest.mark.slow
def test_backfill_writes_a_failed_resumable_report_on_an_unexpected_ray_error(
    ray_local: None, small_log: Path, make_table: Callable[..., SequenceTable], hbase_server: HBaseServer,
    tmp_path: Path,
) -> None:
    table = make_table(salt_buckets=2)
    seen: list[str] = []

    def fail_after_two(unit: Unit, _actors: list[Any]) -> None:
        seen.append(unit.key)
        if len(seen) == 2:
            raise ray.exceptions.RaySystemError("injected: raylet gone")

    report = run_backfill(str(small_log), table.name, workers=1, config=hbase_server.config(),
                          report_dir=tmp_path / "a", on_unit_done=fail_after_two)
    assert not report.completed
    saved = json.loads(Path(report.report_path).read_text())
    assert Path(report.report_path).parent == tmp_path / "a"
    assert saved["completed"] is False and "RaySystemError" in saved["error"]
    assert "re-run the same command to resume" in saved["error"]
    assert saved["units_done"] == 2 == len(job_records.load(table.handle.pool, table.name, JOB)) - 1  # + the input's

    resumed = run_backfill(str(small_log), table.name, workers=2, config=hbase_server.config(),
                           report_dir=tmp_path / "b")
    assert resumed.completed, resumed.error
    assert resumed.units_skipped == 2 and resumed.units_done == resumed.units_total - 2
    assert verify(str(small_log), table).ok


@pytest.mark.slow
def test_workers_ray_cannot_place_are_given_up_and_the_job_goes_on(
    ray_local: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slots 2 and 3 ask for a resource no node has: Ray keeps them pending forever, as it does
    # actors beyond a cluster's free CPU slots (after losing a node, say).
    monkeypatch.setattr(runner_module, "ACTOR_START_TIMEOUT_S", 3.0)
    Echo = _echo_actor()
    Unplaceable = Echo.options(resources={"no_such_node": 1})
    units = _units(tmp_path, 6)
    done: list[str] = []
    runner: UnitRunner[Unit] = UnitRunner(lambda slot: Echo.remote() if slot < 2 else Unplaceable.remote(),
                                          lambda a, u: a.run.remote(u), workers=4)
    stats = runner.run(units, lambda unit, _result, _actors: done.append(unit.key))
    assert sorted(done) == sorted(u.key for u in units) and stats.units_done == 6  # all on the two that started


@pytest.mark.slow
def test_a_short_job_waits_for_its_slow_starting_actor(ray_local: None, tmp_path: Path) -> None:
    # Without the start gate the quick actor would run all three units before the slow one is up.
    class Named(JobWorker):  # local, so Ray ships it by value
        def __init__(self, name: str, start_s: float) -> None:
            time.sleep(start_s)
            self.name = name

        def run(self, unit: Unit) -> str:
            return self.name

    Actor = ray.remote(num_cpus=0)(Named)
    ran: list[str] = []
    runner: UnitRunner[Unit] = UnitRunner(
        lambda slot: Actor.remote("quick", 0.0) if slot == 0 else Actor.remote("slow", 3.0),
        lambda a, u: a.run.remote(u), workers=2)
    runner.run(_units(tmp_path, 3), lambda _unit, name, _actors: ran.append(name))
    assert sorted(set(ran)) == ["quick", "slow"] and len(ran) == 3


@pytest.mark.slow
def test_a_job_whose_workers_all_cannot_start_stops_saying_so(
    ray_local: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "ACTOR_START_TIMEOUT_S", 2.0)
    Unplaceable = _echo_actor().options(resources={"no_such_node": 1})
    runner: UnitRunner[Unit] = UnitRunner(lambda _slot: Unplaceable.remote(), lambda a, u: a.run.remote(u),
                                          workers=2)
    with pytest.raises(SeqStoreError, match=r"no Ray worker could be started in 2 s.*re-run the same command"):
        runner.run(_units(tmp_path, 3), lambda *_: None)
