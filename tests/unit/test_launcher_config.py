"""The launcher's pure parts: rendered config, port choice, runtime records."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hbase import datadir, processes, state
from hbase.state import Runtime


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
