"""A dead HBase is noticed in bounded time: the job says "HBase unreachable, retrying" while it
retries, then stops resumably; after a restart on the same data dir, a re-run completes.

The end-to-end test kills the HBase process (the standalone master JVM: ZooKeeper, master and
RegionServer) of its own instance under a running backfill, with the Thrift servers left up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from hbase import launcher
from hbase.state import Runtime
from ray_jobs.backfill import JOB, run_backfill
from ray_jobs.generate import generate
from ray_jobs.runner import UNREACHABLE_STATUS, UnitRunner, reporting_status
from ray_jobs.units import Unit
from ray_jobs.verify import verify
from ray_jobs.workers import JobWorker
from store import Config, Endpoint, SequenceStore, TableSpec
from store.errors import SeqStoreError, StoreUnavailableError
from store.table import job_records
from tests.cluster_faults import kill_role
from tests.conftest import plan_units

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.slow]

BUDGET_MS = 20_000  # Config.unavailable_after_ms for the test (default 60 s)


def _units(tmp_path: Path, groups: int) -> list[Unit]:
    return plan_units(tmp_path, groups)


def _unreachable_actor() -> Any:
    class Unreachable(JobWorker):  # local, so Ray ships it by value
        def __init__(self, failures: int) -> None:
            self.failures = failures

        def run(self, unit: Unit) -> dict[str, Any]:
            if self.failures:
                self.failures -= 1
                raise StoreUnavailableError("HBase unreachable: putMultiple failed for 2 s", "h:1", 2.0)
            return {"rows": unit.num_rows}

    return ray.remote(num_cpus=0)(Unreachable)


def test_units_failing_unreachable_stop_the_job_after_the_calls_budget(ray_local: None, tmp_path: Path) -> None:
    Actor = _unreachable_actor()
    statuses: list[str] = []
    runner: UnitRunner[Unit] = UnitRunner(lambda _slot: Actor.remote(10**6), lambda a, u: a.run.remote(u),
                                          workers=2, max_attempts=1000)  # only the time budget can stop it
    started = time.monotonic()
    with reporting_status(statuses.append), pytest.raises(SeqStoreError) as info:
        runner.run(_units(tmp_path, 4), lambda *_: None)
    assert time.monotonic() - started < 2.0 + 10  # the errors' 2 s budget, plus a backoff and slack
    assert str(info.value).startswith("HBase unreachable: ") and "\n" not in str(info.value)  # one line
    assert "re-run the same command to resume" in str(info.value)
    assert statuses == [UNREACHABLE_STATUS]


def test_the_status_clears_when_units_succeed_again(ray_local: None, tmp_path: Path) -> None:
    Actor = _unreachable_actor()
    statuses: list[str] = []
    done: list[str] = []
    runner: UnitRunner[Unit] = UnitRunner(lambda _slot: Actor.remote(1), lambda a, u: a.run.remote(u), workers=1)
    with reporting_status(statuses.append):
        runner.run(_units(tmp_path, 3), lambda unit, *_: done.append(unit.key))
    assert len(done) == 3 and runner.stats.units_retried == 1
    assert statuses == [UNREACHABLE_STATUS, ""]


@pytest.fixture
def own_hbase(isolated_state: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An HBase of this test's own (the shared one is never killed); no JVM is left afterwards."""
    data_dir = tmp_path_factory.mktemp("hbase-dead")
    launcher.start(data_dir)
    try:
        yield data_dir
    finally:
        launcher.stop(data_dir)
        assert not launcher.jvm_pids(data_dir), "JVMs left running"


def _config(rt: Runtime) -> Config:
    return Config(thrift=(Endpoint(rt.host, rt.thrift_port),), thrift2=(Endpoint(rt.host, rt.thrift2_port),),
                  unavailable_after_ms=BUDGET_MS)


def test_hbase_killed_under_a_backfill_is_reported_in_bounded_time_and_a_rerun_resumes(
    ray_local: None, own_hbase: Path, tmp_path: Path,
) -> None:
    rt = launcher.running(own_hbase)
    assert rt is not None
    config = _config(rt)
    log = tmp_path / "log"
    # Units of 12k rows: each writes 10k-row chunks of 3 puts, so puts are queued behind running ones.
    generate(log, users=400, events=48_000, seed=3, bad_fraction=0.01, files=1, row_group_rows=12_000)
    with SequenceStore(config) as store:
        store.create_table(TableSpec("dead_events", salt_buckets=2))
    killed_at: list[float] = []

    def kill_hbase(unit: Unit, actors: list[Any]) -> None:
        if not killed_at:  # after the first unit is recorded: the next one writes into a dead HBase
            kill_role(own_hbase, "master")  # SIGKILL; the Thrift servers stay up
            killed_at.append(time.monotonic())

    statuses: list[str] = []
    with reporting_status(statuses.append):
        report = run_backfill(str(log), "dead_events", workers=1, config=config, pool_size=2,
                              report_dir=tmp_path / "a", on_unit_done=kill_hbase)
    stopped_after_s = time.monotonic() - killed_at[0]
    assert not report.completed and report.units_done == 1
    # One call's budget to notice, as long again retrying units, plus start-up slack: not 14 minutes.
    assert stopped_after_s < 2 * BUDGET_MS / 1000 + 30, stopped_after_s
    assert "HBase unreachable" in report.error and "re-run the same command to resume" in report.error
    assert "\n" not in report.error  # one line: no remote traceback
    assert statuses == [UNREACHABLE_STATUS]

    rt, _ = launcher.start(own_hbase)  # the same data dir: the WAL is replayed
    config = _config(rt)
    resumed = run_backfill(str(log), "dead_events", workers=2, config=config, report_dir=tmp_path / "b")
    assert resumed.completed, resumed.error
    assert resumed.units_skipped == 1 and resumed.units_done == resumed.units_total - 1
    with SequenceStore(config) as store:
        table = store.table("dead_events")
        # One record per group of users, and the input's own.
        assert len(job_records.load(table.handle.pool, table.name, JOB)) == resumed.units_total + 1
        assert verify(str(log), table).ok
