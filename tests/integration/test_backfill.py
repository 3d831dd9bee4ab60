"""Backfill with real Ray into real HBase: verify, resume, --force, quarantine, the CLI flow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ray_jobs.backfill import run_backfill
from ray_jobs.generate import generate
from ray_jobs.verify import verify
from store import SequenceStore, SequenceTable
from store.tiers import RAW
from tests.conftest import HBaseServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# Into chunks the units are groups of users (MIN_PARTITIONS of them for this small log), into
# raw cells the log's 15 row groups; every other promise is the same.
@pytest.mark.parametrize(("into", "units"), [("chunks", 4), ("raw", 15)])
def test_backfill_verify_rerun_and_force(
    ray_local: None, small_log: Path, make_table: Callable[..., SequenceTable], tmp_path: Path,
    hbase_server: HBaseServer, store: SequenceStore, into: str, units: int,
) -> None:
    table = make_table(salt_buckets=4)
    report = run_backfill(str(small_log), table.name, workers=2, config=hbase_server.config(),
                          report_dir=tmp_path / "r1", into=into)
    assert report.completed, report.error
    assert report.into == into
    assert report.units_total == report.units_done == units and report.units_skipped == 0
    assert report.events_in == 30_000 == report.events_written + report.events_quarantined
    assert report.events_quarantined == 300 and sum(report.quarantine_by_reason.values()) == 300
    assert set(report.quarantine_by_reason) == {"missing_user", "user_id_too_long", "negative_timestamp",
                                                "seconds_not_ms", "future_timestamp", "wrong_type",
                                                "missing_field", "payload_too_large"}
    # Every quarantined row names its source file and row number, and that row is the bad one.
    quarantine = pq.read_table(report.quarantine_path)
    assert quarantine.num_rows == 300
    for row in quarantine.to_pylist()[:40]:
        source = pq.read_table(row["source"]).slice(row["position"], 1).to_pylist()[0]
        if row["reason"] == "missing_user":
            assert not source["user_id"]
        elif row["reason"] == "seconds_not_ms":
            assert source["event_ts"] < 10**11
        elif row["reason"] == "missing_field":
            assert source["item_id"] is None
    assert json.loads(Path(report.report_path).read_text())["events_written"] == report.events_written
    assert verify(str(small_log), table).ok
    raw_cells = sum(len(c.event_id) for c in table.stored_copies(b"", b"") if c.tier == RAW)
    assert raw_cells == (0 if into == "chunks" else report.events_written)  # into chunks: nothing to compact

    again = run_backfill(str(small_log), table.name, workers=2, config=hbase_server.config(),
                         report_dir=tmp_path / "r2", into=into)
    assert again.completed and again.units_skipped == units and again.units_done == 0 and again.events_in == 0

    forced = run_backfill(str(small_log), table.name, workers=2, config=hbase_server.config(), force=True,
                          report_dir=tmp_path / "r3", into=into)
    assert forced.completed and forced.units_done == units and forced.events_written == report.events_written
    result = verify(str(small_log), table)
    assert result.ok and result.events_found == result.events_expected and result.events_extra == 0

    # A dropped and re-created table starts with an empty manifest: nothing is skipped.
    store.drop_table(table.name)
    store.create_table(table.spec)
    fresh = run_backfill(str(small_log), table.name, workers=2, config=hbase_server.config(),
                         report_dir=tmp_path / "r4", into=into)
    assert fresh.completed and fresh.units_skipped == 0 and fresh.units_done == units


def test_cli_generate_create_backfill_verify(hbase_server: HBaseServer, table_prefix: str, tmp_path: Path) -> None:
    env = dict(os.environ)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ray_jobs.cli", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)

    name = f"{table_prefix}cli"
    gen = run("generate", "--users", "100", "--events", "5000", "--seed", "2", "--out", str(tmp_path / "in"),
              "--bad-fraction", "0.01", "--json")
    assert gen.returncode == 0, gen.stderr
    assert run("create-table", name, "--salt-buckets", "2").returncode == 0
    try:
        back = run("backfill", str(tmp_path / "in" / "*.parquet"), "--table", name, "--workers", "2", "--json")
        assert back.returncode == 0, back.stderr
        summary = json.loads(back.stdout)
        for key in ("events_in", "events_written", "events_quarantined", "quarantine_by_reason", "units_total",
                    "units_done", "units_skipped", "units_retried", "wall_s", "events_per_s", "quarantine_path"):
            assert key in summary
        assert summary["events_in"] == 5000 == summary["events_written"] + summary["events_quarantined"]
        checked = run("verify", str(tmp_path / "in"), "--table", name, "--json")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert json.loads(checked.stdout)["users_mismatched"] == 0
        # A verify against an input the table does not hold fails with a non-zero exit.
        generate(tmp_path / "other", users=10, events=100, seed=9)
        wrong = run("verify", str(tmp_path / "other"), "--table", name, "--json")
        assert wrong.returncode == 1 and json.loads(wrong.stdout)["events_missing"] == 100
    finally:
        run("drop-table", name)
    down = dict(env, SEQSTORE_HBASE="127.0.0.1:1", SEQSTORE_HBASE_THRIFT2="127.0.0.1:1", SEQSTORE_RETRIES="1")
    env = down
    failed = run("backfill", str(tmp_path / "in"), "--table", name, "--json")
    assert failed.returncode != 0 and "Traceback" not in failed.stderr and "127.0.0.1:1" in failed.stderr
