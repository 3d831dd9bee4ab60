"""The JVMs of one runtime: which processes run, with which arguments, in which order.

One RegionServer is the standalone runtime: the master JVM holds ZooKeeper, the master and
the RegionServer, next to a Thrift1 and a Thrift2 server. Several RegionServers run in
distributed mode, every role a JVM of its own, as HBase's pseudo-distributed setup and
``bin/local-regionservers.sh`` do: ZooKeeper (``HQuorumPeer``), the master, and per
RegionServer its own RPC port and its own Thrift1 and Thrift2 servers.

A role names one process (its key in ``Runtime.pids`` and its log file): ``master``,
``thrift``, ``thrift2``, ``zookeeper``, and for the RegionServer ``i`` > 1 the kind with a
suffix, e.g. ``regionserver_2``, ``thrift2_3`` (:func:`role_key`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hbase.datadir import port_key

THRIFT_KINDS = ("thrift", "thrift2")


@dataclass(frozen=True, slots=True)
class Process:
    """One JVM of a runtime."""

    role: str  # the key in Runtime.pids and the log's name
    kind: str  # the key in jvm.MAIN_CLASSES
    args: tuple[str, ...]

    @property
    def is_thrift(self) -> bool:
        """A Thrift server: an HBase client, given the Thrift servers' conf dir."""
        return self.kind in THRIFT_KINDS


def role_key(kind: str, index: int) -> str:
    """The role of RegionServer ``index``'s (1-based) process of ``kind``: ``thrift2``, ``thrift2_2``..."""
    return port_key(kind, index)


def layout(regionservers: int, ports: dict[str, int], bind: str, data_dir: Path) -> list[Process]:
    """The processes of a runtime of ``regionservers`` RegionServers, in start order."""
    if regionservers < 1:
        raise ValueError("a runtime needs at least one RegionServer")
    procs = [] if regionservers == 1 else [Process("zookeeper", "zookeeper", ())]
    procs.append(Process("master", "master", ("start",)))
    for i in range(1, regionservers + 1) if regionservers > 1 else ():
        role = role_key("regionserver", i)
        procs.append(Process(role, "regionserver", (
            "-D", f"hbase.regionserver.port={ports[port_key('regionserver_port', i)]}",
            "-D", f"hbase.tmp.dir={data_dir / 'tmp' / role}",
            "start",
        )))
    for i in range(1, regionservers + 1):
        for kind in THRIFT_KINDS:
            port = ports[port_key(f"{kind}_port", i)]
            procs.append(Process(role_key(kind, i), kind, ("-p", str(port), "-b", bind, "start")))
    return procs


def stop_order(pids: dict[str, int]) -> list[list[int]]:
    """The pids of a runtime in the waves ``stop`` ends them: Thrift servers, then the cluster
    (master and RegionServers, shut down together by the master), then ZooKeeper."""
    thrift = [pid for role, pid in pids.items() if role.split("_")[0] in THRIFT_KINDS]
    cluster = [pid for role, pid in pids.items() if role.split("_")[0] in ("master", "regionserver")]
    zookeeper = [pid for role, pid in pids.items() if role == "zookeeper"]
    return [thrift, cluster, zookeeper]
