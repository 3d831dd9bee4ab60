"""CLI errors as a user meets them: the real ``seqstore`` in a subprocess, one clear line, exit 2.

Nearly none of these reaches HBase: each fails before the job's first HBase call (some after
starting Ray, which is what they check). Joining Ray comes after the job has found its table, so
the test of an unreachable Ray address gives the real HBase and a real table.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store import SequenceTable
from tests.conftest import HBaseServer

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def seqstore(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SEQSTORE_"))}
    base["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.pop("PYTHONPATH", "")])])
    # No test here may reach HBase: should one get that far (a regression), it finds nothing to change.
    base["SEQSTORE_HBASE"] = base["SEQSTORE_HBASE_THRIFT2"] = "127.0.0.1:1"
    return subprocess.run([sys.executable, "-m", "ray_jobs.cli", *args], env={**base, **env}, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The only line on stderr, which must be ``seqstore: error: ...`` (exit 2, no traceback)."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqstore: error: "), result.stderr
    return lines[0]


def usage_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """argparse's shape for a bad argument: the usage, then one error line (exit 2, no traceback)."""
    assert result.returncode == 2, result.stderr
    usage, sep, error = result.stderr.partition("\nseqstore ")
    assert usage.startswith("usage: seqstore ") and sep and "Traceback" not in result.stderr, result.stderr
    assert error.count("\n") == 1, result.stderr
    return error.strip()


@pytest.fixture
def events(tmp_path: Path) -> Path:
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({"user_id": ["u1"], "event_ts": [1_700_000_000_000]}), path)
    return path


@pytest.mark.parametrize(("var", "value", "argv", "expected"), [
    ("SEQSTORE_WORKERS", "abc", ["backfill", "in", "--table", "t"],
     "backfill: error: argument --workers: invalid value from SEQSTORE_WORKERS='abc': expected an integer"),
    ("SEQSTORE_SALT_BUCKETS", "0", ["create-table", "t"],
     "create-table: error: argument --salt-buckets: invalid value from SEQSTORE_SALT_BUCKETS='0': must be > 0"),
    ("SEQSTORE_GEN_BAD_FRACTION", "lots", ["generate", "--out", "x"],
     "generate: error: argument --bad-fraction: invalid value from SEQSTORE_GEN_BAD_FRACTION='lots': "
     "expected a number"),
])
def test_a_bad_environment_value_is_a_usage_error(var: str, value: str, argv: list[str], expected: str) -> None:
    assert usage_error_line(seqstore(*argv, **{var: value})) == expected


def test_a_corrupt_parquet_file_that_is_not_first_is_named(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    pq.write_table(pa.table({"user_id": ["u1"]}), log / "part-0.parquet")
    (log / "part-1.parquet").write_bytes(b"\x00" * 64)
    line = one_error_line(seqstore("backfill", str(log), "--table", "t"))
    assert line.startswith(f"seqstore: error: cannot read Parquet file '{log / 'part-1.parquet'}': ")


@pytest.mark.parametrize(("argv", "flag"), [
    (["generate", "--out", "{blocker}/log"], "--out"),
    (["backfill", "{events}", "--table", "t", "--report-dir", "{blocker}/reports"], "--report-dir"),
    (["score", "--requests", "{events}", "--model", "m:f", "--table", "t", "--out", "{blocker}/scores"], "--out"),
    (["export", "--labels", "{events}", "--table", "t", "--out", "{blocker}"], "--out"),
])
def test_an_unwritable_output_directory_is_named_before_the_job_starts(
    argv: list[str], flag: str, tmp_path: Path, events: Path
) -> None:
    blocker = tmp_path / "a-file"  # nothing can be created under a regular file, even by root
    blocker.write_text("")
    argv = [a.format(blocker=blocker, events=events) for a in argv]
    line = one_error_line(seqstore(*argv))
    assert line.startswith(f"seqstore: error: cannot write to {flag} '{blocker}")
    assert line.endswith(("Not a directory", "it exists and is not a directory"))


@pytest.mark.slow
def test_a_model_module_that_raises_on_import_is_one_line(tmp_path: Path, events: Path) -> None:
    (tmp_path / "crashing_model.py").write_text("import math\nSCALE = 1 / math.floor(0.5)\n")
    result = seqstore("score", "--requests", str(events), "--model", "crashing_model:score", "--table", "t",
                      "--out", str(tmp_path / "scores"), "--workers", "1", PYTHONPATH=str(tmp_path))
    assert one_error_line(result) == ("seqstore: error: cannot load model 'crashing_model:score': importing "
                                      "'crashing_model' raised ZeroDivisionError: division by zero")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_an_unreachable_ray_address_fails_in_bounded_time_with_one_line(
    events: Path, hbase_server: HBaseServer, make_table: Callable[..., SequenceTable]
) -> None:
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    table = make_table()
    t0 = time.monotonic()
    result = seqstore("backfill", str(events), "--table", table.name, "--ray-address", address, **hbase_server.env())
    elapsed = time.monotonic() - t0
    line = one_error_line(result)
    assert line.startswith(f"seqstore: error: cannot join the Ray cluster at '{address}': ")
    assert elapsed < 60  # Ray's own defaults keep trying for about 14 minutes


@pytest.mark.slow
def test_joining_a_running_cluster_works_and_a_refused_join_says_why(
    events: Path, hbase_server: HBaseServer, make_table: Callable[..., SequenceTable]
) -> None:
    """The join's bounds and its quieting of Ray's output do not get in the way of a real join; a
    join the cluster refuses (here: no auth token) is one line with Ray's reason."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # Ray's token auth, with the token in the environment (no token file written to ~/.ray).
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    head = subprocess.Popen(
        [sys.executable, "-c", "import logging, sys, ray\n"
         "ctx = ray.init(address='local', num_cpus=1, include_dashboard=False, logging_level=logging.ERROR,"
         " object_store_memory=100 * 2**20)\n"
         "print(ctx.address_info['gcs_address'], flush=True)\nsys.stdin.read()\nray.shutdown()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**env, **auth})
    try:
        assert head.stdout is not None
        address = head.stdout.readline().strip()
        joined = subprocess.run(
            [sys.executable, "-c", "import sys, ray\nfrom ray_jobs.runner import init_ray\n"
             "init_ray(sys.argv[1], workers=1)\n"
             "print(ray.get(ray.remote(lambda: 42).remote()), ray.get_runtime_context().gcs_address)\n", address],
            env={**env, **auth, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
        assert joined.returncode == 0, joined.stderr
        assert joined.stdout.split() == ["42", address]
        refused = one_error_line(seqstore("backfill", str(events), "--table", make_table().name, "--ray-address",
                                          address, RAY_AUTH_MODE="token", **hbase_server.env()))
        assert refused.startswith(f"seqstore: error: cannot join the Ray cluster at '{address}': ")
        assert "AuthenticationError" in refused
    finally:
        head.communicate(timeout=60)  # closes stdin: the head shuts its Ray down and exits
