"""``seqstore backfill --compact`` when the compaction cannot even start: the completed backfill's
report is still printed, with the compaction's error, and the command exits 1."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ray_jobs.backfill
from ray_jobs import cli
from store import SequenceStore, TableSpec
from tests.conftest import HBaseServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_compaction_that_raises_after_a_completed_backfill_still_reports_the_backfill(
    ray_local: None, hbase_server: HBaseServer, table_prefix: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"{table_prefix}compact"
    t0 = int(time.time() * 1000) - 86_400_000
    pq.write_table(pa.table({"user_id": ["u1", "u2", None], "event_ts": [t0, t0 + 1, t0 + 2],
                             "event_type": ["view"] * 3, "item_id": [1, 2, 3]}), tmp_path / "in.parquet")
    with SequenceStore(hbase_server.config()) as store:
        store.create_table(TableSpec(name, salt_buckets=2))
    real_backfill = ray_jobs.backfill.run_backfill

    def backfill_then_lose_the_table(*args: Any, **kwargs: Any) -> Any:
        report = real_backfill(*args, **kwargs)
        with SequenceStore(hbase_server.config()) as store:  # dropped by someone meanwhile
            store.drop_table(name)
        return report

    monkeypatch.setattr(ray_jobs.backfill, "run_backfill", backfill_then_lose_the_table)
    code = cli.main(["backfill", str(tmp_path / "in.parquet"), "--table", name, "--compact", "--json",
                     "--workers", "1", "--report-dir", str(tmp_path / "report")])
    out, err = capsys.readouterr()
    assert code == 1, err
    summary = json.loads(out)
    assert summary["completed"] and summary["events_in"] == 3 and summary["events_written"] == 2
    assert summary["events_quarantined"] == 1 and Path(summary["report_path"]).exists()
    assert summary["compaction"]["completed"] is False and name in summary["compaction"]["error"]
    assert f"seqstore: compaction after the backfill did not complete: {summary['compaction']['error']}" in err
