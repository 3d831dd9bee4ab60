"""The local cluster (`seqstore hbase start --regionservers 3`): every role its own JVM, every
RegionServer its own Thrift servers, regions spread over all of them, clients spread too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from hbase import launcher, probe, state
from hbase.processes import owned_alive
from store import Config, SequenceStore, TableSpec
from store.config import HBASE_ENV, HBASE_THRIFT2_ENV
from store.io.connection import ClientPool, idl
from tests.cluster_faults import kill_role, region_servers
from tests.conftest import CLUSTER_REGIONSERVERS, HBaseServer
from tests.ray_cluster import seqstore

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _local(cluster: HBaseServer) -> Path:
    if cluster.data_dir is None:
        pytest.skip("inspects the processes of the launcher's own cluster")
    return cluster.data_dir


def test_every_role_is_its_own_live_jvm_and_status_lists_them(hbase_cluster: HBaseServer) -> None:
    data_dir = _local(hbase_cluster)
    rt = state.read_runtime(data_dir)
    assert rt is not None and rt.regionservers == CLUSTER_REGIONSERVERS
    n = CLUSTER_REGIONSERVERS
    assert len(rt.pids) == 2 + 3 * n  # ZooKeeper, master, and per RegionServer: itself, Thrift1, Thrift2
    assert len(set(rt.pids.values())) == len(rt.pids)
    assert sorted(launcher.jvm_pids(data_dir)) == sorted(rt.pids.values())
    assert len(set(rt.thrift2_ports)) == len(set(rt.thrift_ports)) == len(set(rt.regionserver_ports)) == n

    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQSTORE_")}
    out = subprocess.run([sys.executable, "-m", "ray_jobs.cli", "hbase", "status", "--data-dir", str(data_dir),
                          "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["running"] is True
    assert report["alive"] == {role: True for role in rt.pids}
    assert report["thrift2_ports"] == rt.thrift2_ports

    human = subprocess.run([sys.executable, "-m", "ray_jobs.cli", "hbase", "status", "--data-dir", str(data_dir)],
                           env=env, capture_output=True, text=True, timeout=120)
    for role in ("zookeeper", "master", "regionserver_3", "thrift2_2"):
        assert f"  {role} " in human.stdout


def test_the_endpoint_file_spreads_clients_over_every_thrift_server(
    hbase_cluster: HBaseServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = _local(hbase_cluster)
    rt = state.read_runtime(data_dir)
    assert rt is not None
    monkeypatch.setenv("SEQSTORE_STATE_DIR", str(tmp_path))
    monkeypatch.delenv(HBASE_ENV, raising=False)
    monkeypatch.delenv(HBASE_THRIFT2_ENV, raising=False)
    state.record(rt)  # what `seqstore hbase start` leaves for every later command
    config = Config.from_env()
    assert [ep.port for ep in config.thrift2] == rt.thrift2_ports
    assert [ep.port for ep in config.thrift] == rt.thrift_ports
    pool = ClientPool(config, size=CLUSTER_REGIONSERVERS)
    with ExitStack() as held:  # all the pool's clients at once: one per Thrift2 server
        clients = [held.enter_context(pool.client()) for _ in range(CLUSTER_REGIONSERVERS)]
        for c in clients:
            c.call("tableExists", idl().TTableName(ns=b"default", qualifier=b"none"))
        assert sorted(c.endpoint.port for c in clients) == sorted(rt.thrift2_ports)
    pool.close()


def test_regions_of_a_presplit_table_are_balanced_over_the_regionservers(
    hbase_cluster: HBaseServer, table_prefix: str
) -> None:
    name = f"{table_prefix}balanced"
    with SequenceStore(hbase_cluster.config()) as store:
        store.create_table(TableSpec(name, salt_buckets=12))
        try:
            held = region_servers(hbase_cluster.thrift2_endpoints[0], name)
            assert sum(held.values()) == 12
            assert len(held) == len(hbase_cluster.thrift2_endpoints)  # every RegionServer holds some
            assert max(held.values()) - min(held.values()) <= 1, held
        finally:
            store.drop_table(name)


def test_events_round_trip_through_each_thrift2_server(hbase_cluster: HBaseServer, table_prefix: str) -> None:
    import pyarrow as pa

    name = f"{table_prefix}each"
    with SequenceStore(hbase_cluster.config()) as store:
        table = store.create_table(TableSpec(name, salt_buckets=6))
        try:
            for i, ep in enumerate(hbase_cluster.thrift2_endpoints):
                one = Config(thrift2=(ep,), timeout_ms=30_000)
                with SequenceStore(one) as via:
                    events = pa.table({"user_id": [f"u{i}"] * 3, "event_ts": [1_700_000_000_000 + k for k in range(3)],
                                       "event_id": [f"e{i}{k}" for k in range(3)], "item_id": [1, 2, 3],
                                       "event_type": ["click"] * 3, "dwell_ms": [10, 20, 30]})
                    assert via.table(name).write(events).written == 3
            for i in range(len(hbase_cluster.thrift2_endpoints)):
                seq = table.read_sequences([(f"u{i}", int(time.time() * 1000))], max_len=10)
                assert seq.column("length").to_pylist() == [3]
        finally:
            store.drop_table(name)


def test_a_dead_thrift_server_of_the_cluster_is_restarted_on_its_port_by_the_cli(hbase_cluster: HBaseServer) -> None:
    data_dir = _local(hbase_cluster)
    before = state.read_runtime(data_dir)
    assert before is not None
    kill_role(data_dir, "thrift2_2")  # as a crash would
    status = seqstore("hbase", "status", "--data-dir", str(data_dir), "--json")
    assert status.returncode == 1 and json.loads(status.stdout)["alive"]["thrift2_2"] is False
    done = seqstore("hbase", "restart", "thrift2_2", "--data-dir", str(data_dir), "--json")
    assert done.returncode == 0, done.stderr
    restarted = json.loads(done.stdout)
    assert restarted["was_alive"] is False and restarted["pid"] != before.pids["thrift2_2"]
    after = state.read_runtime(data_dir)
    assert after is not None and after.thrift2_ports == before.thrift2_ports
    assert owned_alive(restarted["pid"], data_dir)
    probe.probe_thrift2(after.host, after.thrift2_ports[1], idl(), timeout_s=20)  # serving on its old port
    status = seqstore("hbase", "status", "--data-dir", str(data_dir), "--json")
    assert status.returncode == 0 and all(json.loads(status.stdout)["alive"].values())
    # A live one is stopped and started again; what cannot be restarted alone is refused in one line.
    assert launcher.restart_role(data_dir, "thrift2_2").pids["thrift2_2"] != restarted["pid"]
    refused = seqstore("hbase", "restart", "zookeeper", "--data-dir", str(data_dir))
    assert refused.returncode == 2 and "regionserver_2" in refused.stderr and "Traceback" not in refused.stderr
