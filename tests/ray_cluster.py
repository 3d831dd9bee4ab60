"""A real multi-node Ray cluster on this machine: a head and two worker nodes, each of 4 CPUs.

Built with ``ray.cluster_utils.Cluster`` (each node its own raylet; the head also runs the
GCS), all in one temporary directory of ours, so :meth:`RayCluster.leftovers` can find every
process the cluster started — raylets, agents and actor workers all keep a log file open in
it. Each node carries a custom resource naming it (``seqstore_head``, ``seqstore_a``,
``seqstore_b``). Drivers join with ``ray.init(address=cluster.address)``; on one machine Ray
attaches a driver to the head's raylet, so killing a worker node never kills a driver.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Logical CPUs, not cores. At 4 a node is not half full with two one-CPU actors, so Ray's default
# scheduling packs a job's four actors onto two nodes (measured) where SPREAD uses all three: the
# tests can tell them apart. At 2, the default spreads them too.
NODE_CPUS = 4
OBJECT_STORE_BYTES = 150 * 2**20
WORKER_NODES = ("a", "b")


def _node_args(name: str) -> dict[str, Any]:
    return {"num_cpus": NODE_CPUS, "object_store_memory": OBJECT_STORE_BYTES, "resources": {f"seqstore_{name}": 1}}


@contextmanager
def _ray_tmpdir(temp_dir: Path) -> Iterator[None]:
    """Ray's default temporary directory is ``$RAY_TMPDIR/ray``: the cluster's session and the
    address file ``Cluster`` writes (and deletes at shutdown) go there, not to ``/tmp/ray``,
    which other Ray users of this machine share."""
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(temp_dir)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("RAY_TMPDIR")
        else:
            os.environ["RAY_TMPDIR"] = saved


@dataclass
class RayCluster:
    """The cluster and its nodes by name (``"head"``, ``"a"``, ``"b"``)."""

    cluster: Any
    temp_dir: Path
    nodes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls) -> RayCluster:
        from ray.cluster_utils import Cluster

        from ray_jobs.runner import _token_auth_if_token_available

        # As `ray start --head` does, and as a local Ray started earlier in the session leaves this
        # process: token authentication when this machine has a Ray token. Jobs joining the
        # cluster use it then (ray_jobs.runner.init_ray); without it they would be refused.
        _token_auth_if_token_available()
        # Short, so Ray's Unix socket paths (session dir + sockets/...) stay under the 107-byte limit.
        temp_dir = Path(tempfile.mkdtemp(prefix="seqray-", dir="/tmp"))
        try:
            with _ray_tmpdir(temp_dir):
                cluster = Cluster(initialize_head=True,
                                  head_node_args={**_node_args("head"), "include_dashboard": False})
        except BaseException:
            shutil.rmtree(temp_dir, ignore_errors=True)  # a half-started head dies with this process
            raise
        self = cls(cluster, temp_dir, {"head": cluster.head_node})
        try:
            for name in WORKER_NODES:
                self.add(name)
            cluster.wait_for_nodes(timeout=120)
        except BaseException:
            self.shutdown()
            raise
        return self

    @property
    def address(self) -> str:
        """What ``--ray-address`` takes (the GCS's ``host:port``)."""
        return str(self.cluster.address)

    def add(self, name: str) -> None:
        """Start worker node ``name`` (again, after :meth:`kill`)."""
        self.nodes[name] = self.cluster.add_node(**_node_args(name))

    def node_id(self, name: str) -> str:
        return str(self.nodes[name].node_id)

    def raylet_pid(self, name: str) -> int:
        from ray._private import ray_constants

        return int(self.nodes[name].all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)

    def actor_pids(self, name: str, title: str) -> list[int]:
        """Pids of node ``name``'s workers titled ``ray::<title>``: ``ray::<Class>`` for an idle
        actor, ``ray::<Class>.<method>`` while it runs that method. The node's raylet starts its
        workers, so they are its children."""
        raylet = str(self.raylet_pid(name))
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except (OSError, IndexError):
                continue
            if ppid == raylet and argv0 == f"ray::{title}":
                found.append(int(entry.name))
        return found

    def kill(self, name: str) -> None:
        """Kill worker node ``name`` as a machine failure would: SIGKILL to its raylet and agents (its
        actor workers exit as soon as their raylet is gone)."""
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=False)

    def restore(self) -> None:
        """Start again every worker node killed since the cluster started."""
        for name in WORKER_NODES:
            if name not in self.nodes:
                self.add(name)
        self.cluster.wait_for_nodes(timeout=120)

    def leftovers(self) -> list[int]:
        """Pids of processes that still hold a file in the cluster's temporary directory."""
        root = str(self.temp_dir)
        pids = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                if any(str(fd.readlink()).startswith(root) for fd in (entry / "fd").iterdir()):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def shutdown(self, *, timeout_s: float = 60) -> list[int]:
        """Stop every node; returns the pids still alive after ``timeout_s`` (then SIGKILLed)."""
        with _ray_tmpdir(self.temp_dir):
            self.cluster.shutdown()
        deadline = time.monotonic() + timeout_s
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.5)  # actor workers exit on their own once their raylet is gone
        for pid in left:  # ours: each held a file in our directory a moment ago
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left



REPO = Path(__file__).resolve().parents[1]


def seqstore_command(*args: str) -> list[str]:
    """``seqstore ARGS`` as a user runs it. Run it from :data:`REPO`: Ray puts a driver's working
    directory on its workers' ``sys.path``, so the cluster's actors then run this checkout's code,
    not another installed copy."""
    return [sys.executable, "-m", "ray_jobs.cli", *args]


def seqstore(*args: str, env: dict[str, str] | None = None, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``seqstore ARGS`` (see :func:`seqstore_command`) to the end, with ``env`` added to the
    environment (e.g. ``hbase_cluster.env()``)."""
    return subprocess.run(seqstore_command(*args), cwd=REPO, capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, **(env or {})})
