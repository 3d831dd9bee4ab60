"""Faults injected into real components during a backfill: a dead actor, a restarted or lost
Thrift server. Each run must complete (or stop resumably) with nothing lost or duplicated."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hbase import launcher
from ray_jobs.backfill import JOB, run_backfill
from ray_jobs.units import Unit
from ray_jobs.verify import verify
from store import SequenceTable
from store.table import job_records
from tests.cluster_faults import kill_role
from tests.conftest import HBaseServer

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.slow]


def _busy_workers(actor_class: str) -> list[int]:
    """Pids of Ray actors executing a method right now: Ray titles them ``ray::<Class>.<method>``."""
    busy = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith((f"ray::{actor_class}.run".encode(), f"ray::{actor_class}.load".encode())):
            busy.append(int(entry.name))
    return busy


def test_an_actor_killed_mid_unit_is_replaced_and_nothing_is_lost(
    ray_local: None, small_log: Path, make_table: Callable[..., SequenceTable], hbase_server: HBaseServer,
    tmp_path: Path,
) -> None:
    table = make_table(salt_buckets=2)
    killed: list[int] = []

    def kill_a_busy_actor(unit: Unit, actors: list[Any]) -> None:
        deadline = time.monotonic() + 10
        while not killed and time.monotonic() < deadline:  # the next unit is being written now
            for pid in _busy_workers("BackfillWorker")[:1]:
                os.kill(pid, signal.SIGKILL)  # mid-unit: its writes so far are in HBase, unrecorded
                killed.append(pid)
            time.sleep(0.005)

    report = run_backfill(str(small_log), table.name, workers=2, config=hbase_server.config(),
                          report_dir=tmp_path, on_unit_done=kill_a_busy_actor)
    assert killed, "no actor was caught inside a unit"
    assert report.completed, report.error
    assert report.units_retried >= 1 and report.units_done == report.units_total
    assert report.events_in == 30_000 == report.events_written + report.events_quarantined
    assert verify(str(small_log), table).ok


def test_thrift_server_down_for_seconds_mid_run_is_ridden_out(
    ray_local: None, small_log: Path, make_table: Callable[..., SequenceTable], hbase_server: HBaseServer,
    tmp_path: Path,
) -> None:
    if hbase_server.backend != "launcher":
        pytest.skip("restarting a Thrift server needs the launcher's own HBase")
    assert hbase_server.data_dir is not None
    data_dir = hbase_server.data_dir
    table = make_table(salt_buckets=2)
    outage: list[threading.Thread] = []

    def back_in_two_seconds() -> None:
        time.sleep(2)
        launcher.restart_role(data_dir, "thrift2")

    def take_thrift2_down(unit: Unit, actors: list[Any]) -> None:
        if not outage:  # after the first unit: the other 3 are written into and after the outage
            kill_role(data_dir, "thrift2")
            outage.append(threading.Thread(target=back_in_two_seconds))
            outage[0].start()

    # Ride out however long the JVM takes to start on a loaded machine (measured: 10 s), up to a minute.
    config = replace(hbase_server.config(), retries=1_000, max_backoff_ms=1_000, unavailable_after_ms=60_000)
    try:
        report = run_backfill(str(small_log), table.name, workers=2, config=config, report_dir=tmp_path,
                              on_unit_done=take_thrift2_down)
    finally:
        for thread in outage:
            thread.join(timeout=120)
    assert outage and report.completed, report.error
    assert report.into == "chunks" and report.units_done == report.units_total == 4  # groups of users
    assert verify(str(small_log), table).ok


def test_hbase_gone_past_the_retry_budget_stops_resumably(
    ray_local: None, small_log: Path, make_table: Callable[..., SequenceTable], hbase_server: HBaseServer,
    tmp_path: Path,
) -> None:
    if hbase_server.backend != "launcher":
        pytest.skip("taking a Thrift server away needs the launcher's own HBase")
    assert hbase_server.data_dir is not None
    table = make_table(salt_buckets=2)
    config = replace(hbase_server.config(), retries=2, backoff_ms=50, max_backoff_ms=200)

    def take_thrift2_away(unit: Unit, actors: list[Any]) -> None:
        kill_role(hbase_server.data_dir, "thrift2")  # type: ignore[arg-type]

    try:
        report = run_backfill(str(small_log), table.name, workers=1, config=config, report_dir=tmp_path / "a",
                              on_unit_done=take_thrift2_away)
    finally:
        launcher.restart_role(hbase_server.data_dir, "thrift2")
    assert not report.completed
    assert "re-run the same command to resume" in report.error
    assert 1 <= report.units_done < report.units_total
    done = job_records.load(table.handle.pool, table.name, JOB)
    assert len(done) == report.units_done + 1  # and the input's record (the "now" its partitions share)

    resumed = run_backfill(str(small_log), table.name, workers=2, config=hbase_server.config(),
                           report_dir=tmp_path / "b")
    assert resumed.completed and resumed.units_skipped == report.units_done
    assert resumed.units_done == report.units_total - report.units_done
    assert verify(str(small_log), table).ok
