"""The launcher's pure parts: rendered config, port choice, runtime records."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hbase import datadir, processes, state
from hbase.state import Runtime
from store import endpoint_file


def test_rendered_config_has_every_placeholder_filled(tmp_path: Path) -> None:
    ports = {"zk_port": 1, "master_port": 2, "regionserver_port": 3, "thrift_port": 4, "thrift2_port": 5}
    conf = datadir.render_config(tmp_path, ports)
    site = (conf / "hbase-site.xml").read_text()
    assert "${" not in site
    assert f"file://{tmp_path}/hbase" in site
    assert "<name>hbase.zookeeper.property.clientPort</name><value>1</value>" in site
    # file:// without the checksum layer: the WAL's hflush reaches the OS (hbase/DURABILITY.md), and
    # HBase's own hflush/hsync check of the WAL stream stays on.
    assert "<name>fs.file.impl</name><value>org.apache.hadoop.fs.RawLocalFileSystem</value>" in site
    assert "<name>hbase.unsafe.stream.capability.enforce</name>" not in site
    assert "aircompressor.ZstdCodec" in site
    assert (conf / "log4j2.properties").exists()


def test_ports_are_distinct_and_reused_on_the_next_start(tmp_path: Path) -> None:
    first = datadir.choose_ports(tmp_path, "127.0.0.1", None, None)
    assert len(set(first.values())) == 5
    assert datadir.choose_ports(tmp_path, "127.0.0.1", None, None) == first


def test_a_taken_saved_port_is_replaced(tmp_path: Path) -> None:
    first = datadir.choose_ports(tmp_path, "127.0.0.1", None, None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", first["zk_port"]))
        s.listen()
        second = datadir.choose_ports(tmp_path, "127.0.0.1", None, None)
    assert second["zk_port"] != first["zk_port"]
    assert second["master_port"] == first["master_port"]


def test_endpoint_records_round_trip_and_forget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQSTORE_STATE_DIR", str(tmp_path / "state"))
    rt = Runtime(host="127.0.0.1", thrift_port=1, thrift2_port=2, data_dir=str(tmp_path / "d"), zk_port=3,
                 master_port=4, regionserver_port=5, hbase_version="x", pids={"master": 10})
    state.record(rt)
    assert state.read_endpoint() == rt
    assert state.read_runtime(tmp_path / "d") == rt
    state.forget(tmp_path / "d")
    assert state.read_endpoint() is None and state.read_runtime(tmp_path / "d") is None


@pytest.mark.parametrize("env", [{"SEQSTORE_STATE_DIR": "s"}, {"XDG_STATE_HOME": "x"}, {}])
def test_the_store_reads_the_endpoint_the_launcher_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name in ("SEQSTORE_STATE_DIR", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, value in env.items():
        monkeypatch.setenv(name, str(tmp_path / value))
    assert endpoint_file.endpoint_file() == state.endpoint_file()
    assert endpoint_file.read_local_hbase() is None
    rt = Runtime(host="127.0.0.9", thrift_port=1, thrift2_port=2, data_dir=str(tmp_path / "d"), zk_port=3,
                 master_port=4, regionserver_port=5, hbase_version="x", regionservers=2,
                 thrift_ports=[1, 11], thrift2_ports=[2, 12], regionserver_ports=[5, 15])
    state.record(rt)
    assert endpoint_file.read_local_hbase() == endpoint_file.LocalHBase("127.0.0.9", (1, 11), (2, 12))


def test_a_recycled_pid_is_not_taken_for_hbase(tmp_path: Path) -> None:
    import os

    # Our own pid is alive but is not a JVM of this data dir.
    assert processes.owned_alive(os.getpid(), tmp_path) is False


def test_only_the_thrift_servers_get_the_fail_fast_client_settings(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    ports = {"zk_port": 1, "master_port": 2, "regionserver_port": 3, "thrift_port": 4, "thrift2_port": 5}
    conf = datadir.render_config(tmp_path, ports)

    def props(path: Path) -> dict[str, str]:
        return {p.findtext("name", ""): p.findtext("value", "") for p in ET.parse(path).getroot().iter("property")}

    master, thrift = props(conf / "hbase-site.xml"), props(datadir.thrift_conf_dir(tmp_path) / "hbase-site.xml")
    assert "hbase.client.operation.timeout" not in master  # the master's own clients keep HBase's defaults
    assert int(thrift["hbase.client.operation.timeout"]) < 30_000  # answers before our socket timeout
    assert int(thrift["zookeeper.recovery.retry"]) <= 3
    assert {k: v for k, v in thrift.items() if k in master} == master  # everything else is the same
    assert (datadir.thrift_conf_dir(tmp_path) / "log4j2.properties").exists()


def test_a_cluster_gets_distinct_ports_per_regionserver_reused_on_the_next_start(tmp_path: Path) -> None:
    first = datadir.choose_ports(tmp_path, "127.0.0.1", None, None, regionservers=3)
    assert len(first) == len(set(first.values())) == 2 + 3 * 3
    assert {"regionserver_port_3", "thrift_port_2", "thrift2_port_3"} <= set(first)
    assert datadir.choose_ports(tmp_path, "127.0.0.1", None, None, regionservers=3) == first


def test_a_cluster_layout_runs_every_role_as_its_own_process_on_its_own_ports(tmp_path: Path) -> None:
    from hbase import roles

    ports = datadir.choose_ports(tmp_path, "127.0.0.1", None, None, regionservers=3)
    procs = {p.role: p for p in roles.layout(3, ports, "127.0.0.1", tmp_path)}
    assert list(procs)[:2] == ["zookeeper", "master"]  # ZooKeeper first, Thrift servers last
    assert {p.kind for p in procs.values()} == {"zookeeper", "master", "regionserver", "thrift", "thrift2"}
    assert f"hbase.regionserver.port={ports['regionserver_port_2']}" in procs["regionserver_2"].args
    assert procs["thrift2_3"].args[:2] == ("-p", str(ports["thrift2_port_3"]))
    assert [p.role for p in roles.layout(1, ports, "127.0.0.1", tmp_path)] == ["master", "thrift", "thrift2"]
    thrift, cluster, zookeeper = roles.stop_order({"thrift": 1, "thrift2_2": 2, "master": 3,
                                                   "regionserver_2": 4, "zookeeper": 5})
    assert (sorted(thrift), sorted(cluster), zookeeper) == ([1, 2], [3, 4], [5])


def test_a_cluster_config_is_distributed_and_waits_for_every_regionserver(tmp_path: Path) -> None:
    ports = datadir.choose_ports(tmp_path, "127.0.0.1", None, None, regionservers=3)
    site = (datadir.render_config(tmp_path, ports, regionservers=3) / "hbase-site.xml").read_text()
    assert "<name>hbase.cluster.distributed</name><value>true</value>" in site
    assert "<name>hbase.master.wait.on.regionservers.mintostart</name><value>3</value>" in site
    standalone = (datadir.render_config(tmp_path / "s", ports) / "hbase-site.xml").read_text()
    assert "<name>hbase.cluster.distributed</name><value>false</value>" in standalone


def test_a_runtime_record_from_before_clusters_lists_its_one_regionserver(tmp_path: Path) -> None:
    old = {"host": "127.0.0.1", "thrift_port": 1, "thrift2_port": 2, "data_dir": str(tmp_path), "zk_port": 3,
           "master_port": 4, "regionserver_port": 5, "hbase_version": "x", "pids": {"master": 10}}
    rt = Runtime.from_json(old)
    assert (rt.regionservers, rt.thrift2_ports, rt.thrift_ports, rt.regionserver_ports) == (1, [2], [1], [5])
    assert rt.thrift2_endpoints == ["127.0.0.1:2"]
