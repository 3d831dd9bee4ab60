"""The Docker back end itself (``make test-docker``): these pass only against a real container."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pyarrow as pa
import pytest

from store import SequenceTable
from tests.conftest import COMPOSE_SERVICE, HBaseServer

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)


def container_state(server: HBaseServer) -> dict[str, str]:
    """Docker's own view of the service's container: its id, start time, health and processes."""
    assert server.compose is not None
    cid = server.compose.execute(f"ps -q {COMPOSE_SERVICE}").decode().split()[-1]
    started, health = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.StartedAt}} {{.State.Health.Status}}", cid],
        check=True, capture_output=True, text=True, timeout=60).stdout.split()
    top = server.compose.execute(f"top {COMPOSE_SERVICE}").decode()
    return {"id": cid, "started": started, "health": health, "top": top}


@pytest.fixture
def docker_server(hbase_server: HBaseServer) -> HBaseServer:
    if hbase_server.compose is None:
        pytest.skip("needs the Docker back end: `make test-docker` (pytest --hbase=docker)")
    return hbase_server


def test_sequences_survive_docker_compose_restart(
    docker_server: HBaseServer, make_table: Callable[..., SequenceTable]
) -> None:
    before = container_state(docker_server)
    assert before["health"] == "healthy"
    # HBase's JVMs run inside the container (the launcher's standalone master + Thrift servers).
    assert "HMaster" in before["top"] and "ThriftServer" in before["top"]
    table = make_table()
    users = [f"u{i}" for i in range(50)]
    written = table.write(pa.table({
        "user_id": [u for u in users for _ in range(20)],
        "event_ts": pa.array([NOW - 1_000 * (k + 1) for _ in users for k in range(20)], pa.int64()),
        "event_type": ["click"] * 1_000,
        "item_id": pa.array([i * 100 + k for i in range(50) for k in range(20)], pa.int64()),
    }))
    assert written.written == 1_000
    requests = [(u, NOW) for u in users]
    expected = table.read_sequences(requests, max_len=20).to_pylist()

    docker_server.restart()  # docker compose restart, then wait on the health check again

    after = container_state(docker_server)
    assert after["id"] == before["id"] and after["started"] != before["started"], "the container did not restart"
    assert after["health"] == "healthy"
    assert table.read_sequences(requests, max_len=20).to_pylist() == expected
    assert sum(row["length"] for row in expected) == 1_000
