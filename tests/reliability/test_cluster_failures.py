"""Failures of a real multi-RegionServer HBase under running jobs: a RegionServer SIGKILLed, a
Thrift2 server gone, a region split and a major compaction forced. Every job completes with
nothing lost and nothing duplicated (verify clean; one output row per request)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hbase import launcher, state
from hbase.processes import owned_alive
from hbase.roles import role_key
from ray_jobs.backfill import run_backfill
from ray_jobs.score import run_score
from ray_jobs.units import Unit
from ray_jobs.verify import verify
from store import Config, SequenceStore, SequenceTable, TableSpec
from tests import cluster_faults
from tests.conftest import HBaseServer
from tests.reliability import test_wal_durability as wal

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.slow]

MODEL = "ray_jobs.examples.models:recency_similarity"


@pytest.fixture
def cluster(hbase_cluster: HBaseServer) -> Iterator[HBaseServer]:
    """The local cluster, healed afterwards: a process a test killed is started again."""
    if hbase_cluster.data_dir is None:
        pytest.skip("kills processes of the launcher's own cluster")
    yield hbase_cluster
    rt = state.read_runtime(hbase_cluster.data_dir)
    assert rt is not None
    for role, pid in rt.pids.items():
        if not owned_alive(pid, hbase_cluster.data_dir):
            launcher.restart_role(hbase_cluster.data_dir, role)


@pytest.fixture
def cluster_table(cluster: HBaseServer) -> Iterator[SequenceTable]:
    """A table of six regions, two per RegionServer, dropped afterwards."""
    name = f"t{uuid.uuid4().hex[:10]}_events"
    with SequenceStore(cluster.config()) as store:
        yield store.create_table(TableSpec(name, salt_buckets=6))
        store.drop_table(name)


def riding_out(cluster: HBaseServer) -> Config:
    """Client settings that outlast a RegionServer's recovery on a loaded 2-core machine: its
    ZooKeeper session expires (10 s), then its WAL is split and its regions reopen elsewhere."""
    return replace(cluster.config(), retries=1_000, max_backoff_ms=2_000, unavailable_after_ms=180_000)


def _after_units(n: int, action: Callable[[], None]) -> tuple[Callable[[Unit, list[Any]], None], list[float]]:
    """An ``on_unit_done`` hook that runs ``action`` once, after the ``n``-th unit; records when."""
    done: list[Unit] = []
    fired: list[float] = []

    def hook(unit: Unit, _actors: list[Any]) -> None:
        done.append(unit)
        if len(done) == n and not fired:
            fired.append(time.monotonic())
            action()

    return hook, fired


def test_regionserver_sigkilled_mid_backfill_its_regions_move_and_the_job_completes(
    ray_local: None, small_log: Path, cluster: HBaseServer, cluster_table: SequenceTable, tmp_path: Path
) -> None:
    assert cluster.data_dir is not None
    rt = state.read_runtime(cluster.data_dir)
    assert rt is not None
    first = cluster.thrift2_endpoints[0]
    victim_port = rt.regionserver_ports[1]
    assert cluster_faults.region_servers(first, cluster_table.name)[victim_port] >= 1  # it holds some of them
    hook, fired = _after_units(3, lambda: cluster_faults.kill_role(cluster.data_dir, "regionserver_2"))  # type: ignore[arg-type]

    report = run_backfill(str(small_log), cluster_table.name, workers=2, config=riding_out(cluster),
                          report_dir=tmp_path, on_unit_done=hook, partition_events=2_000)  # 15 groups of users
    assert fired, "the RegionServer was never killed"
    assert report.completed, report.error
    assert report.units_done == report.units_total == 15
    assert report.events_in == 30_000 == report.events_written + report.events_quarantined
    held = cluster_faults.region_servers(first, cluster_table.name)
    assert victim_port not in held and sum(held.values()) == 6  # every region reopened on a live server
    assert verify(str(small_log), cluster_table).ok


def test_thrift2_server_gone_mid_backfill_clients_fail_over_to_the_others(
    ray_local: None, small_log: Path, cluster: HBaseServer, cluster_table: SequenceTable, tmp_path: Path
) -> None:
    assert cluster.data_dir is not None
    hook, fired = _after_units(2, lambda: cluster_faults.kill_role(cluster.data_dir, "thrift2_2"))  # type: ignore[arg-type]
    # The default client settings: moving to the next endpoint is immediate, no outage to ride out.
    report = run_backfill(str(small_log), cluster_table.name, workers=3, config=cluster.config(),
                          report_dir=tmp_path, on_unit_done=hook, partition_events=2_000)
    assert fired and report.completed, report.error
    assert report.units_done == report.units_total == 15
    rt = state.read_runtime(cluster.data_dir)
    assert rt is not None and not owned_alive(rt.pids["thrift2_2"], cluster.data_dir)  # gone for the whole rest
    assert verify(str(small_log), cluster_table).ok


@pytest.fixture(scope="module")
def long_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200k events of 2,000 users in 20 units: a backfill that lasts while a split is forced."""
    from ray_jobs.generate import generate

    out = tmp_path_factory.mktemp("long_log")
    generate(out, users=2_000, events=200_000, seed=5, bad_fraction=0.001, files=4, row_group_rows=10_000)
    return out


def _split_then_compact(cluster: HBaseServer, table: str) -> int:
    """Split every region of ``table`` (waiting until meta shows the daughters), then request a
    major compaction, which runs in the background; returns the number of regions."""
    assert cluster.data_dir is not None
    regions = cluster_faults.split(cluster.data_dir, cluster.thrift2_endpoints[0], table)
    cluster_faults.major_compact(cluster.thrift_endpoints[0], table)
    return regions


def test_split_and_major_compaction_forced_during_a_backfill(
    ray_local: None, long_log: Path, cluster: HBaseServer, cluster_table: SequenceTable, tmp_path: Path
) -> None:
    # After the 2nd unit, the job's loop waits for the split, so the units in flight are written
    # while the regions flush and split, and every later one into the daughters while they compact.
    regions: list[int] = []
    done: list[Unit] = []

    def hook(unit: Unit, _actors: list[Any]) -> None:
        done.append(unit)
        if len(done) == 2:
            regions.append(_split_then_compact(cluster, cluster_table.name))

    # Into raw cells: a write load over the whole job, while the regions split and compact.
    report = run_backfill(str(long_log), cluster_table.name, workers=2, config=riding_out(cluster),
                          report_dir=tmp_path, on_unit_done=hook, into="raw")
    assert regions and regions[0] > 6
    assert len(done) == 20, "units after the split"
    assert report.completed, report.error
    assert report.units_done == report.units_total == 20
    assert verify(str(long_log), cluster_table).ok


def test_split_and_major_compaction_forced_during_a_read_heavy_score(
    ray_local: None, long_log: Path, cluster: HBaseServer, cluster_table: SequenceTable, tmp_path: Path
) -> None:
    config = riding_out(cluster)
    assert run_backfill(str(long_log), cluster_table.name, workers=2, config=config, report_dir=tmp_path,
                        into="raw").completed
    users = sorted({u for u in pq.read_table(long_log, columns=["user_id"]).column("user_id").to_pylist()
                    if isinstance(u, str) and 0 < len(u) < 100})  # not the log's malformed ids
    now = int(time.time() * 1000)
    n = 24_000  # requests of the log's users at many times, in 12 units
    requests = pa.table({"user_id": [users[i % len(users)] for i in range(n)],
                         "as_of_ts": pa.array([now - (i % 97) * 3_600_000 for i in range(n)], pa.int64())})
    req = tmp_path / "requests.parquet"
    pq.write_table(requests, req, row_group_size=2_000)
    baseline = run_score(str(req), MODEL, tmp_path / "before", cluster_table.name, max_len=50, workers=2,
                         config=config, now_ms=now)
    assert baseline.completed, baseline.error

    regions: list[int] = []
    progress: list[int] = []

    def on_progress(requests_done: int) -> None:  # after a unit: the loop waits for the split
        progress.append(requests_done)
        if len(progress) == 1:
            regions.append(_split_then_compact(cluster, cluster_table.name))

    report = run_score(str(req), MODEL, tmp_path / "during", cluster_table.name, max_len=50, workers=2,
                       config=config, now_ms=now, on_progress=on_progress)
    assert regions and regions[0] > 6
    assert report.completed, report.error
    assert len(progress) > 1 and sum(progress[1:]) > 0, "requests scored after the split"
    assert report.requests == report.scored == n
    keys = [("user_id", "ascending"), ("as_of_ts", "ascending")]
    before = pq.read_table(tmp_path / "before").sort_by(keys)
    during = pq.read_table(tmp_path / "during").sort_by(keys)
    assert during.num_rows == n
    assert during.select(["user_id", "as_of_ts", "history", "score"]).equals(
        before.select(["user_id", "as_of_ts", "history", "score"]))


def test_puts_acknowledged_by_a_regionserver_survive_its_sigkill(cluster: HBaseServer) -> None:
    """The multi-RegionServer half of test_wal_durability: the RegionServer holding the table is
    SIGKILLed mid-write and the running master recovers its WAL into another RegionServer."""
    assert cluster.data_dir is not None
    rt = state.read_runtime(cluster.data_dir)
    assert rt is not None
    table = f"t{uuid.uuid4().hex[:10]}_wal"
    wal.create_table(rt, table)
    try:
        holder = next(iter(cluster_faults.region_servers(cluster.thrift2_endpoints[0], table)))
        role = role_key("regionserver", rt.regionserver_ports.index(holder) + 1)
        data_dir = cluster.data_dir
        acked, stats = wal.write_until_killed(rt, table, 0, lambda: cluster_faults.kill_role(data_dir, role),
                                              acks_before_kill=400)
        assert stats.in_flight_at_kill >= 1 and stats.acked >= 400, stats
        assert wal.missing_writes(rt, table, acked) == []  # read back once its region reopened elsewhere
        assert holder not in cluster_faults.region_servers(cluster.thrift2_endpoints[0], table)
    finally:
        with SequenceStore(cluster.config()) as store:
            name = wal.idl().TTableName(ns=b"default", qualifier=table.encode())
            store.pool.call("disableTable", name)
            store.pool.call("deleteTable", name)
