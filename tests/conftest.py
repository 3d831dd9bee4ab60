"""One session-wide HBase for the suite, from one of three back ends.

* ``SEQSTORE_HBASE=host:port[,...]`` set: that HBase (``SEQSTORE_HBASE_THRIFT2`` for its
  Thrift2 servers; several endpoints are spread over, as a cluster's clients do).
* ``--hbase=docker``: the image of ``docker/compose.yml`` through pytest-docker (``up --build
  --wait``: the compose health check, a real round trip), on two free host ports, taken down
  with its volume at the end. ``SEQSTORE_COMPOSE_FILES`` (``os.pathsep``-separated, relative
  to the repository) adds override files: ``make test-docker`` adds ``docker/compose.ci.yml``.
* otherwise (the default, and what CI uses): the project's own launcher, on a fresh data
  dir, stopped at the end of the session with no JVM left behind.

Tests of the distributed deployment take ``hbase_cluster``: the external HBase if it lists
several Thrift2 servers, else a local cluster of three RegionServers the launcher starts
(``seqstore hbase start --regionservers 3``), for the session.

Each test that touches HBase takes ``table_prefix``: a unique prefix whose tables are
dropped when the test ends.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import happybase
import pytest
from hypothesis import settings
from pytest_docker.plugin import DockerComposeExecutor

from hbase import launcher
from hbase.state import Runtime
from store import SequenceStore, SequenceTable, TableSpec
from store.config import HBASE_ENV, HBASE_THRIFT2_ENV, Config, Endpoint
from tests.ray_cluster import RayCluster

# Speed is measured in benchmarks/, not asserted by tests: no per-example deadline (a loaded
# 2-core machine makes Hypothesis's default 200 ms a timing test).
settings.register_profile("seqstore", deadline=None)
settings.load_profile("seqstore")

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--hbase", choices=["launcher", "docker"], default="launcher",
        help="where the integration tests' HBase comes from (SEQSTORE_HBASE overrides both)",
    )


DISTRIBUTED_FIXTURES = {"hbase_cluster", "ray_cluster"}
# The HBase the user pointed the suite at, read before any fixture sets these variables for the
# session's own HBase (``hbase_server`` exports its endpoints, and the cluster must not take
# them for an external HBase).
EXTERNAL_HBASE = {name: os.environ[name] for name in (HBASE_ENV, HBASE_THRIFT2_ENV) if os.environ.get(name)}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests of the distributed deployment last, together: the local HBase cluster and
    the Ray cluster start at the first of them, and nothing else runs beside their JVMs."""
    items.sort(key=lambda item: bool(DISTRIBUTED_FIXTURES & set(getattr(item, "fixturenames", ()))))


@dataclass
class HBaseServer:
    """The suite's HBase. ``data_dir`` is set only for the launcher back end."""

    backend: str
    host: str
    thrift_port: int
    thrift2_port: int | None
    data_dir: Path | None = None
    # Every server when there are several (a cluster); the first is thrift_port/thrift2_port.
    thrift_endpoints: tuple[Endpoint, ...] = ()
    thrift2_endpoints: tuple[Endpoint, ...] = ()
    # Docker back end: the compose project that runs the container.
    compose: DockerComposeExecutor | None = None

    def __post_init__(self) -> None:
        if not self.thrift_endpoints:
            self.thrift_endpoints = (Endpoint(self.host, self.thrift_port),)
        if not self.thrift2_endpoints and self.thrift2_port:
            self.thrift2_endpoints = (Endpoint(self.host, self.thrift2_port),)

    def config(self) -> Config:
        return Config(thrift=self.thrift_endpoints, thrift2=self.thrift2_endpoints, timeout_ms=30_000)

    def env(self) -> dict[str, str]:
        """The environment variables that point seqstore (CLI or Python) at this HBase."""
        return {HBASE_ENV: ",".join(map(str, self.thrift_endpoints)),
                HBASE_THRIFT2_ENV: ",".join(map(str, self.thrift2_endpoints))}

    @classmethod
    def from_runtime(cls, backend: str, rt: Runtime) -> HBaseServer:
        return cls(backend, rt.host, rt.thrift_port, rt.thrift2_port, Path(rt.data_dir),
                   tuple(Endpoint(rt.host, p) for p in rt.thrift_ports),
                   tuple(Endpoint(rt.host, p) for p in rt.thrift2_ports))

    def connect(self) -> happybase.Connection:
        return happybase.Connection(self.host, self.thrift_port, timeout=30_000)

    def restart(self) -> None:
        """Stop and start again on the same data: ``docker compose restart`` (waiting on the
        health check again) for Docker, the launcher on the same data dir otherwise."""
        if self.compose is not None:
            self.compose.execute(f"restart {COMPOSE_SERVICE}")
            self.compose.execute("up -d --wait")
            return
        assert self.data_dir is not None, "restart needs the launcher or the Docker back end"
        launcher.stop(self.data_dir)
        rt, _ = launcher.start(self.data_dir)
        self.host, self.thrift_port, self.thrift2_port = rt.host, rt.thrift_port, rt.thrift2_port
        os.environ[HBASE_ENV] = f"{rt.host}:{rt.thrift_port}"
        os.environ[HBASE_THRIFT2_ENV] = f"{rt.host}:{rt.thrift2_port}"


@pytest.fixture(scope="session")
def isolated_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep the user's endpoint file out of the suite: runtime records go to a temp dir."""
    state_dir = tmp_path_factory.mktemp("state")
    mp = pytest.MonkeyPatch()
    mp.setenv("SEQSTORE_STATE_DIR", str(state_dir))
    yield state_dir
    mp.undo()


COMPOSE_FILES_ENV = "SEQSTORE_COMPOSE_FILES"
COMPOSE_SERVICE = "hbase"
# The host ports docker/compose.yml publishes (or, with compose.ci.yml, HBase binds).
DOCKER_PORT_ENVS = ("SEQSTORE_THRIFT_PORT", "SEQSTORE_THRIFT2_PORT")


@pytest.fixture(scope="session")
def docker_compose_file() -> list[str]:
    files = os.environ.get(COMPOSE_FILES_ENV) or "docker/compose.yml"
    return [str(REPO / name) for name in files.split(os.pathsep) if name]


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    # --build reuses the layer cache (a second or two when nothing changed); --wait returns once
    # the compose health check (a create/put/get/delete round trip) passes, or fails.
    return ["up --build -d --wait"]


@pytest.fixture(scope="session")
def docker_ports() -> Iterator[tuple[int, int]]:
    """Two free host ports for the container's Thrift servers, unless the user set them."""
    mp = pytest.MonkeyPatch()
    for name in DOCKER_PORT_ENVS:
        if not os.environ.get(name):
            mp.setenv(name, str(_free_port()))
    yield int(os.environ[DOCKER_PORT_ENVS[0]]), int(os.environ[DOCKER_PORT_ENVS[1]])
    mp.undo()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def hbase_server(
    request: pytest.FixtureRequest, isolated_state: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HBaseServer]:
    mp = pytest.MonkeyPatch()
    if HBASE_ENV in EXTERNAL_HBASE:
        yield _external()
        return
    if request.config.getoption("--hbase") == "docker":
        port, port2 = request.getfixturevalue("docker_ports")
        request.getfixturevalue("docker_services")  # up --build -d --wait
        compose = DockerComposeExecutor(request.getfixturevalue("docker_compose_command"),
                                        request.getfixturevalue("docker_compose_file"),
                                        request.getfixturevalue("docker_compose_project_name"))
        server = HBaseServer("docker", "127.0.0.1", port, port2, compose=compose)
        for name, value in server.env().items():
            mp.setenv(name, value)
        yield server
        mp.undo()
        return
    data_dir = tmp_path_factory.mktemp("hbase")
    rt, _ = launcher.start(data_dir)
    server = HBaseServer.from_runtime("launcher", rt)
    for name, value in server.env().items():
        mp.setenv(name, value)
    try:
        yield server
    finally:
        launcher.stop(data_dir)
        mp.undo()
    leftover = launcher.jvm_pids(data_dir)
    assert not leftover, f"JVMs left running after stop: {leftover}"


def _external() -> HBaseServer:
    thrift = tuple(Endpoint.parse(part) for part in EXTERNAL_HBASE[HBASE_ENV].split(",") if part.strip())
    thrift2 = tuple(Endpoint.parse(part) for part in EXTERNAL_HBASE.get(HBASE_THRIFT2_ENV, "").split(",")
                    if part.strip())
    return HBaseServer("external", thrift[0].host, thrift[0].port, thrift2[0].port if thrift2 else None,
                       thrift_endpoints=thrift, thrift2_endpoints=thrift2)


CLUSTER_REGIONSERVERS = 3


@pytest.fixture(scope="session")
def hbase_cluster(isolated_state: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HBaseServer]:
    """An HBase of several RegionServers, each with its own Thrift servers (see the module doc).

    ``data_dir`` is set only for the local cluster: tests that kill its processes need it.
    Tests that take this fixture pass ``hbase_cluster.env()`` (or ``config()``) explicitly;
    the session's default endpoint stays the suite's ``hbase_server``.
    """
    if HBASE_ENV in EXTERNAL_HBASE:
        server = _external()
        if len(server.thrift2_endpoints) < 2:
            pytest.skip(f"{HBASE_THRIFT2_ENV} names one Thrift2 server: not a cluster")
        yield server
        return
    data_dir = tmp_path_factory.mktemp("hbase-cluster")
    rt, _ = launcher.start(data_dir, regionservers=CLUSTER_REGIONSERVERS)
    try:
        yield HBaseServer.from_runtime("cluster", rt)
    finally:
        launcher.stop(data_dir)
    leftover = launcher.jvm_pids(data_dir)
    assert not leftover, f"JVMs left running after stop: {leftover}"


@pytest.fixture
def table_prefix(hbase_server: HBaseServer) -> Iterator[str]:
    """A unique table-name prefix for one test; its tables are dropped afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield prefix
    conn = hbase_server.connect()
    try:
        for name in conn.tables():
            if name.decode().startswith(prefix):
                conn.delete_table(name, disable=True)
    finally:
        conn.close()


@pytest.fixture
def store(hbase_server: HBaseServer) -> Iterator[SequenceStore]:
    with SequenceStore(hbase_server.config(), pool_size=4) as s:
        yield s


@pytest.fixture
def make_table(store: SequenceStore, table_prefix: str) -> Iterator[Callable[..., SequenceTable]]:
    """Create sequence tables named with the test's prefix; they are dropped afterwards."""
    created: list[str] = []

    def make(suffix: str = "events", **spec: Any) -> SequenceTable:
        name = f"{table_prefix}{suffix}"
        created.append(name)
        return store.create_table(TableSpec(name, **spec))

    yield make
    for name in created:
        store.drop_table(name)


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A real local Ray for the session (4 CPUs' worth of actors on this machine)."""
    import ray

    from ray_jobs.runner import init_ray

    init_ray(None, workers=4)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A real Ray cluster on this machine: a head and two worker nodes of 2 CPUs each (see
    ``tests/ray_cluster.py``); jobs join it with ``--ray-address ray_cluster.address``. A test
    that kills a node starts it again with ``ray_cluster.restore()``. No Ray process is left
    behind at the end of the session."""
    cluster = RayCluster.start()
    try:
        yield cluster
    finally:
        left = cluster.shutdown()
    assert not left, f"Ray processes left running after shutdown (killed): {left}"


@pytest.fixture(scope="session")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated log: 30k events of 300 users, 1% malformed, 3 files x 5 row groups."""
    from ray_jobs.generate import generate

    out = tmp_path_factory.mktemp("log")
    generate(out, users=300, events=30_000, seed=11, bad_fraction=0.01, files=3, row_group_rows=2_000)
    return out


def plan_units(tmp_path: Path, groups: int) -> list[Any]:
    """Units of a small Parquet file of ``groups`` row groups of 2 rows (for runner tests)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ray_jobs.units import plan

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"x": list(range(2 * groups))}), path, row_group_size=2)
    return plan(str(path))[1]
