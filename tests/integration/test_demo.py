"""`seqstore demo` runs the whole flow (small sizes) and reports every stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import HBaseServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_runs_end_to_end(hbase_server: HBaseServer, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ray_jobs.cli", "demo", "--users", "300", "--events", "20000", "--json",
         "--work-dir", str(tmp_path / "demo")],
        env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    stages = {s["stage"]: s for s in summary["stages"]}
    assert list(stages) == ["hbase", "generate", "backfill", "verify", "score", "export"]
    assert stages["backfill"]["rows"] == 20_000 and stages["backfill"]["quarantined"] == 20
    # Straight into chunks, and verify (both tiers) finds exactly the log's valid ones.
    assert stages["backfill"]["into"] == "chunks"
    assert stages["verify"]["rows"] == stages["backfill"]["written"]
    assert stages["verify"]["mismatched"] == 0
    assert stages["score"]["rows"] == 300
    assert pq.read_table(summary["outputs"]["scores"]).num_rows == 300
    assert pq.read_table(summary["outputs"]["training_rows"]).num_rows == stages["export"]["rows"] > 0
