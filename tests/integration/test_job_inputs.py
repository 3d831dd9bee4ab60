"""What real logs contain, through real Ray and real HBase: integer user ids end to end, re-runs
with other settings, label times in the wrong unit, label columns named like outputs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.backfill import run_backfill
from ray_jobs.export import run_export
from ray_jobs.score import run_score
from ray_jobs.verify import verify
from store import SequenceTable
from tests.conftest import HBaseServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOW = int(time.time() * 1000)
T0 = NOW - 3 * 86_400_000
STEP = 60_000
MODEL = "ray_jobs.examples.models:recency_similarity"
OTHER_MODEL = "ray_jobs.examples.models:history_length"


@pytest.fixture
def int_table(ray_local: None, make_table: Callable[..., SequenceTable], hbase_server: HBaseServer,
              tmp_path: Path) -> SequenceTable:
    """Users 1000..1011 (int64 ids), user 1000 + k with 10 + k events a minute apart, backfilled."""
    table = make_table(salt_buckets=2)
    rows = [(1000 + u, T0 + i * STEP, 7 * u + i) for u in range(12) for i in range(10 + u)]
    log = tmp_path / "log" / "events.parquet"
    log.parent.mkdir()
    pq.write_table(pa.table({"user_id": pa.array([r[0] for r in rows], pa.int64()),
                             "event_ts": [r[1] for r in rows], "event_type": ["click"] * len(rows),
                             "item_id": [r[2] for r in rows]}), log, row_group_size=50)
    report = run_backfill(str(log), table.name, workers=2, config=hbase_server.config(), report_dir=tmp_path / "r")
    assert report.completed and report.events_written == len(rows), report.error
    assert verify(str(log), table).ok
    return table


def _write(path: Path, table: pa.Table, row_group_size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_int64_user_ids_score_and_export_and_keep_their_type(
    int_table: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    # 9 rows per unit and 7 per batch: every unit ends with a batch of exactly two numeric ids,
    # the shape that used to be refused as "ambiguous".
    users = [1000 + (i % 12) for i in range(18)]
    req = _write(tmp_path / "req.parquet", pa.table({"user_id": pa.array(users, pa.int64())}), 9)
    score = run_score(str(req), MODEL, tmp_path / "scores", int_table.name, max_len=50, workers=2,
                      config=hbase_server.config(), batch_rows=7, now_ms=NOW)
    assert score.completed, score.error
    out = pq.read_table(tmp_path / "scores")
    assert out.schema.field("user_id").type == pa.int64()
    assert sorted(out.column("user_id").to_pylist()) == sorted(users)
    lengths = dict(zip(out.column("user_id").to_pylist(), out.column("history").to_pylist(), strict=True))
    assert lengths == {1000 + u: 10 + u for u in range(12)}

    label_ts = [T0 + (i % 5) * STEP for i in range(18)]  # strictly before: i % 5 events visible
    labels = _write(tmp_path / "labels.parquet", pa.table({"user_id": pa.array(users, pa.int64()),
                                                          "ts": label_ts, "label": [i % 2 for i in range(18)]}), 9)
    export = run_export(str(labels), tmp_path / "train", int_table.name, max_len=50, workers=2,
                        config=hbase_server.config(), batch_rows=7)
    assert export.completed, export.error
    rows = pq.read_table(tmp_path / "train")
    assert rows.schema.field("user_id").type == pa.int64()
    for row in rows.to_pylist():
        assert all(t < row["ts"] for t in row["hist_event_ts"])
        assert row["length"] == (row["ts"] - T0) // STEP and row["history_complete"]
    assert export.rows_history_incomplete == 0


def test_a_rerun_with_other_settings_refuses_then_overwrites(
    int_table: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    req = _write(tmp_path / "req.parquet", pa.table({"user_id": pa.array([1003, 1005], pa.int64())}), 1)
    out = tmp_path / "scores"
    first = run_score(str(req), MODEL, out, int_table.name, max_len=50, workers=1, config=hbase_server.config())
    assert first.completed, first.error
    before = pq.read_table(out).column("score").to_pylist()

    for changed in ({"model": OTHER_MODEL}, {"max_len": 5}):
        options = {"model": MODEL, "max_len": 50, **changed}
        again = run_score(str(req), str(options["model"]), out, int_table.name, max_len=int(options["max_len"]),
                          workers=1, config=hbase_server.config())
        assert not again.completed and again.scored == 0 and again.units_skipped == 0
        assert "made with other settings" in again.error and "--overwrite" in again.error
        assert next(iter(changed)) in again.error  # names what differs
        assert pq.read_table(out).column("score").to_pylist() == before  # untouched

    replaced = run_score(str(req), OTHER_MODEL, out, int_table.name, max_len=50, workers=1,
                         config=hbase_server.config(), overwrite=True)
    assert replaced.completed and replaced.units_skipped == 0 and replaced.scored == 2, replaced.error
    scores = dict(zip(*(pq.read_table(out).column(c).to_pylist() for c in ("user_id", "score")), strict=True))
    assert scores == {1003: 13.0, 1005: 15.0}  # the new model's output: the history length
    # These requests have no as_of_ts: the same settings include the same "now" (a plain re-run
    # after a complete one would score as of a new now, and refuse these parts).
    same = run_score(str(req), OTHER_MODEL, out, int_table.name, max_len=50, workers=1, config=hbase_server.config(),
                     now_ms=replaced.now_ms)
    assert same.completed and same.units_skipped == 2


def test_label_times_in_microseconds_or_seconds_are_a_clear_error(
    int_table: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    for scale, unit in ((1000, "microseconds"), (1 / 1000, "seconds")):
        ts = [T0 + 5 * STEP, int((T0 + 5 * STEP) * scale)]
        labels = _write(tmp_path / f"labels-{unit}.parquet",
                        pa.table({"user_id": pa.array([1001, 1002], pa.int64()), "ts": ts}), 10)
        report = run_export(str(labels), tmp_path / f"train-{unit}", int_table.name, max_len=50, workers=1,
                            config=hbase_server.config())
        assert not report.completed and report.rows_written == 0
        assert f"label ts of row 1 of {labels} is {ts[1]}" in report.error and unit in report.error
        assert "allow_any_ts" in report.error
    # The escape hatch: a deliberate far-future read sees everything.
    far = _write(tmp_path / "far.parquet", pa.table({"user_id": pa.array([1001], pa.int64()), "ts": [2**62]}), 10)
    report = run_export(str(far), tmp_path / "train-far", int_table.name, max_len=50, workers=1,
                        config=hbase_server.config(), allow_any_ts=True)
    assert report.completed, report.error
    assert pq.read_table(tmp_path / "train-far").column("length").to_pylist() == [11]


def test_label_columns_named_like_output_columns_are_refused(
    int_table: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    for clash in ("length", "hist_item_id", "history_complete"):
        labels = _write(tmp_path / f"{clash}.parquet", pa.table({
            "user_id": pa.array([1001], pa.int64()), "ts": [NOW], clash: [1]}), 10)
        report = run_export(str(labels), tmp_path / f"train-{clash}", int_table.name, max_len=5, workers=1,
                            config=hbase_server.config())
        assert not report.completed and f"label column(s) ['{clash}']" in report.error
