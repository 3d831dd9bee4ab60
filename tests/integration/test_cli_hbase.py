"""`seqstore hbase start/status/logs/stop` as a user runs them, on their own data dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import happybase
import pytest

from hbase import launcher

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def seqstore(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ray_jobs.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQSTORE_")}
    env["SEQSTORE_STATE_DIR"] = str(tmp_path / "state")
    env["SEQSTORE_HBASE_DATA_DIR"] = str(tmp_path / "hbase")
    return env


def test_start_status_logs_stop_and_persistence(user_env: dict[str, str], tmp_path: Path) -> None:
    data_dir = tmp_path / "hbase"
    try:
        started = seqstore("hbase", "start", "--json", env=user_env)
        assert started.returncode == 0, started.stderr
        info = json.loads(started.stdout)
        assert info["host"] == "127.0.0.1" and info["data_dir"] == str(data_dir)
        assert info["already_running"] is False
        assert {"thrift_port", "thrift2_port"} <= set(info)
        # The JVMs are found by their data-dir marker (what `stop` relies on): all three are.
        assert sorted(launcher.jvm_pids(data_dir)) == sorted(info["pids"].values())

        # A second start reports the running instance instead of starting another.
        again = seqstore("hbase", "start", "--json", env=user_env)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["pids"] == info["pids"]
        assert json.loads(again.stdout)["already_running"] is True

        status = seqstore("hbase", "status", "--json", env=user_env)
        assert status.returncode == 0 and json.loads(status.stdout)["running"] is True

        # The recorded endpoint is what clients find by default.
        conn = happybase.Connection(info["host"], info["thrift_port"], timeout=30_000)
        conn.create_table("cli_persist", {"f": {"max_versions": 1, "block_cache_enabled": True}})
        conn.table("cli_persist").put(b"k", {b"f:q": b"kept"})
        conn.close()

        logs = seqstore("hbase", "logs", "-n", "5", env=user_env)
        assert logs.returncode == 0 and logs.stdout.strip()

        stopped = seqstore("hbase", "stop", env=user_env)
        assert stopped.returncode == 0, stopped.stderr
        assert launcher.jvm_pids(data_dir) == []
        down = seqstore("hbase", "status", "--json", env=user_env)
        assert down.returncode == 1 and json.loads(down.stdout)["running"] is False

        restarted = json.loads(seqstore("hbase", "start", "--json", env=user_env).stdout)
        conn = happybase.Connection(restarted["host"], restarted["thrift_port"], timeout=30_000)
        assert conn.table("cli_persist").row(b"k") == {b"f:q": b"kept"}
        conn.close()
    finally:
        seqstore("hbase", "stop", env=user_env)
    assert launcher.jvm_pids(data_dir) == []
