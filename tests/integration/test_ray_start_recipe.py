"""The README's "A local cluster" recipe as a user types it: ``ray start --head``, then
``seqstore backfill ... --ray-address`` joining it, on a machine where Ray has run before (so
``~/.ray/auth_token`` exists and ``ray start`` turns on token authentication, as Ray >= 2.5x does)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from tests.conftest import HBaseServer, _free_port
from tests.ray_cluster import REPO, seqstore_command

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RAY = str(Path(sys.executable).with_name("ray"))


def _holding(root: Path) -> list[int]:
    """Live processes holding a file under ``root``: every process of a Ray whose temporary
    directory it is (GCS, raylet, agents, workers all keep logs open there)."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # exited, not yet reaped
            if any(str(fd.readlink()).startswith(str(root)) for fd in (entry / "fd").iterdir()):
                pids.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return pids


def _stop(root: Path, timeout_s: float = 30) -> list[int]:
    """Stop the Ray whose temporary directory is ``root``, by its processes' ids: ``ray stop``
    (what the README says) would stop every Ray on this machine, other users' too. SIGTERM,
    then SIGKILL what is left after ``timeout_s``; returns the pids that had to be killed."""
    for pid in _holding(root):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while (left := _holding(root)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10  # a SIGKILLed process is gone soon, not at once
    while left and _holding(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def seqstore(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``seqstore ARGS`` with exactly the environment ``env`` (this process's may have Ray's
    RAY_AUTH_MODE set by an earlier local Ray), from the repository (see ``seqstore_command``)."""
    return subprocess.run(seqstore_command(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def ray_head(tmp_path: Path, hbase_server: HBaseServer) -> Iterator[tuple[str, dict[str, str]]]:
    """``ray start --head`` as the README runs it, on a free port, in a home where Ray has left its
    token; yields the address and the environment the user's shell has. Stopped afterwards, even
    when the test fails."""
    home = tmp_path / "home"
    home.mkdir()
    # Short: Ray's Unix socket paths (session dir + sockets/...) must stay under 107 bytes; its own,
    # so that this Ray's session is not where other Ray users of the machine look (/tmp/ray).
    ray_tmp = Path(tempfile.mkdtemp(prefix="seqrs-", dir="/tmp"))
    env = {**os.environ, **hbase_server.env(), "HOME": str(home), "RAY_TMPDIR": str(ray_tmp)}
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    # What any earlier local Ray (a `seqstore backfill` without --ray-address, say) leaves behind.
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    assert (home / ".ray" / "auth_token").exists()
    port = _free_port()
    try:
        started = subprocess.run(
            [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
             "--include-dashboard=false"],
            env=env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stderr[-3000:]
        yield f"127.0.0.1:{port}", env
    finally:
        _stop(ray_tmp)
        assert not _holding(ray_tmp), "Ray processes left running"
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_the_readme_local_cluster_recipe_joins_the_ray_it_started(
    ray_head: tuple[str, dict[str, str]], table_prefix: str, tmp_path: Path
) -> None:
    address, env = ray_head
    name = f"{table_prefix}clicks"
    log = tmp_path / f"log-{uuid.uuid4().hex[:6]}"
    assert seqstore("generate", "--out", str(log), "--events", "3000", "--users", "50", "--files", "2",
                    "--row-group-rows", "500", env=env).returncode == 0
    created = seqstore("create-table", name, "--salt-buckets", "2", env=env)
    assert created.returncode == 0, created.stderr
    back = seqstore("backfill", str(log), "--table", name, "--workers", "2", "--ray-address", address, "--json",
                    "--report-dir", str(tmp_path / "report"), env=env)
    assert back.returncode == 0, back.stderr[-2000:]
    assert "Token authentication" not in back.stderr  # Ray's notice while joining goes to the debug log
    summary = json.loads(back.stdout)
    assert summary["completed"] and summary["events_in"] == 3000
    assert summary["units_done"] == summary["units_total"] == 4  # groups of users
    checked = seqstore("verify", str(log), "--table", name, "--json", env=env)
    assert checked.returncode == 0 and json.loads(checked.stdout)["users_mismatched"] == 0, checked.stderr
