"""Batch scoring and training export with real Ray and real HBase."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.export import run_export
from ray_jobs.score import run_score
from store import SequenceTable
from tests.conftest import HBaseServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOW = int(time.time() * 1000)
T0 = NOW - 5 * 86_400_000
STEP = 60_000  # user u<k> has an event every minute from T0


@pytest.fixture
def scored_table(make_table: Callable[..., SequenceTable]) -> SequenceTable:
    table = make_table(salt_buckets=2, features=pa.schema([pa.field("emb", pa.list_(pa.float16(), 4)),
                                                            pa.field("segment", pa.string())]))
    rows = [(f"u{u}", T0 + i * STEP, "click" if i % 3 else "view", 100 * u + i) for u in range(20) for i in range(30)]
    table.write(pa.table({"user_id": [r[0] for r in rows], "event_ts": [r[1] for r in rows],
                          "event_type": [r[2] for r in rows], "item_id": [r[3] for r in rows]}))
    table.write_features(pa.table({"user_id": ["u1", "u1"], "valid_from_ts": [T0, T0 + 10 * STEP],
                                   "emb": [[1, 0, 0, 0], [0, 1, 0, 0]], "segment": ["new", "regular"]}))
    return table


def _requests(path: Path, users: list[str], as_of: list[int | None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"user_id": users, "as_of_ts": pa.array(as_of, pa.int64())}), path, row_group_size=7)
    return path


def test_score_writes_one_row_per_request_and_resumes(
    ray_local: None, scored_table: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    users = [f"u{i % 25}" for i in range(30)]  # five unknown users, some repeated
    as_of = [None if i % 4 == 0 else T0 + (i % 30) * STEP for i in range(30)]
    req = _requests(tmp_path / "req" / "r.parquet", users, as_of)
    report = run_score(str(req), "ray_jobs.examples.models:recency_similarity", tmp_path / "out", scored_table.name,
                       max_len=10, features=["emb", "segment"], workers=2, config=hbase_server.config(), now_ms=NOW)
    assert report.completed, report.error
    assert report.requests == report.scored == 30 and report.units_total == 5
    out = pq.read_table(tmp_path / "out").sort_by([("as_of_ts", "ascending"), ("user_id", "ascending")])
    assert out.column_names == ["user_id", "as_of_ts", "score", "history"]
    expected = sorted(zip([a if a is not None else NOW for a in as_of], users, strict=True))
    assert list(zip(out.column("as_of_ts").to_pylist(), out.column("user_id").to_pylist(), strict=True)) == expected
    history = dict(zip(zip(out.column("user_id").to_pylist(), out.column("as_of_ts").to_pylist(), strict=True),
                       out.column("history").to_pylist(), strict=True))
    assert history[("u3", NOW)] == 10 and history[("u20", NOW)] == 0
    assert history[("u3", T0 + 3 * STEP)] == 3  # only the events strictly before as_of
    assert np.isfinite(out.column("score").to_numpy()).all()

    again = run_score(str(req), "ray_jobs.examples.models:recency_similarity", tmp_path / "out", scored_table.name,
                      max_len=10, features=["emb", "segment"], workers=2, config=hbase_server.config(), now_ms=NOW)
    assert again.completed and again.units_skipped == 5 and again.scored == 30


def test_a_failing_model_is_a_clear_error_naming_the_batch(
    ray_local: None, scored_table: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    req = _requests(tmp_path / "req.parquet", ["u1", "u2"], [NOW, NOW])
    report = run_score(str(req), "tests.models:failing_model", tmp_path / "out", scored_table.name,
                       workers=1, config=hbase_server.config())
    assert not report.completed
    assert "failing_model failed on" in report.error and f"{req} rows 0..1" in report.error
    assert "this model always fails (2 requests)" in report.error
    assert not list((tmp_path / "out").glob("*.parquet"))


def test_export_never_leaks_an_event_at_or_after_the_label_time(
    ray_local: None, scored_table: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    users = [f"u{u}" for u in rng.integers(0, 20, 200)]
    # Label times exactly on event times, between them, before any event and after all.
    ts = [int(T0 + k * STEP + (0 if k % 2 else STEP // 2)) for k in rng.integers(-2, 33, 200)]
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"user_id": users, "ts": ts, "label": rng.integers(0, 2, 200),
                             "weight": rng.random(200)}), labels, row_group_size=64)
    scored_table.compact_users([f"u{u}" for u in range(20)])  # chunks: what the workers' caches hold
    report = run_export(str(labels), tmp_path / "train", scored_table.name, max_len=50, features=["segment"],
                        workers=2, config=hbase_server.config())
    assert report.completed, report.error
    assert report.rows_written == 200 and report.shards == 4
    cache = report.chunk_cache  # 4 units over 2 actors, the same 20 users in each: later units hit
    assert cache["hits"] > 0 and cache["misses"] > 0
    assert cache["hit_ratio"] == round(cache["hits"] / (cache["hits"] + cache["misses"]), 4)
    rows = pq.read_table(tmp_path / "train").to_pylist()
    assert len(rows) == 200
    for row in rows:
        assert all(t < row["ts"] for t in row["hist_event_ts"]), "leakage"
        expected = [T0 + i * STEP for i in range(30) if T0 + i * STEP < row["ts"]][::-1][:50]
        assert row["hist_event_ts"] == expected
        assert row["length"] == len(expected)
        assert len(row["hist_item_id"]) == row["length"]
        if row["user_id"] == "u1":
            assert row["segment"] == (None if row["ts"] <= T0 else "new" if row["ts"] <= T0 + 10 * STEP else "regular")
    assert {"label", "weight"} <= set(rows[0])


def test_torch_dataset_over_export_shards(
    ray_local: None, scored_table: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch", reason="the optional torch extra is not installed")
    from torch.utils.data import DataLoader

    from ray_jobs.examples.torch_model import gru_score
    from ray_jobs.torch_data import SequenceShards

    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"user_id": [f"u{i % 20}" for i in range(100)], "ts": [NOW] * 100,
                             "label": [i % 2 for i in range(100)]}), labels, row_group_size=30)
    assert run_export(str(labels), tmp_path / "train", scored_table.name, max_len=8, workers=2,
                      config=hbase_server.config()).completed
    loader = DataLoader(SequenceShards(tmp_path / "train", fields=["item_id"], labels=["label"], max_len=8),
                        batch_size=32, num_workers=2)
    batches = list(loader)
    assert sum(len(b["label"]) for b in batches) == 100
    assert batches[0]["item_id"].shape[1] == 8 and batches[0]["item_id"].dtype == torch.int64
    assert (batches[0]["length"] == 8).all()
    scores = gru_score({"item_id": batches[0]["item_id"].numpy(), "lengths": batches[0]["length"].numpy()})
    assert scores["score"].shape == (32,)


def test_cli_score_with_json_summary(scored_table: SequenceTable, tmp_path: Path) -> None:
    req = _requests(tmp_path / "req.parquet", ["u1", "u2", "nobody"], [None, NOW, NOW])
    result = subprocess.run(
        [sys.executable, "-m", "ray_jobs.cli", "score", "--requests", str(req), "--table", scored_table.name,
         "--model", "ray_jobs.examples.models:recency_similarity", "--out", str(tmp_path / "out"), "--json",
         "--max-len", "20", "--chunk-cache", "off"], env=dict(os.environ), capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["requests"] == summary["scored"] == 3
    assert {"wall_s", "sequences_per_s"} <= set(summary)
    assert summary["chunk_cache"] == {"hits": 0, "misses": 0, "hit_ratio": None}
    bad = subprocess.run(
        [sys.executable, "-m", "ray_jobs.cli", "score", "--requests", str(req), "--table", scored_table.name,
         "--model", "ray_jobs.examples.models:recency_similarity", "--out", str(tmp_path / "out3"),
         "--chunk-cache", "lots"], env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].endswith(
        "argument --chunk-cache: expected a size such as 256MiB, 2GB or off, got 'lots'")
    failed = subprocess.run(
        [sys.executable, "-m", "ray_jobs.cli", "score", "--requests", str(req), "--table", scored_table.name,
         "--model", "tests.models:failing_model", "--out", str(tmp_path / "out2")],
        env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1 and "failing_model failed on" in failed.stderr and "Traceback" not in failed.stderr



def _partition(path: Path, users: list[str], as_of: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"user_id": users, "as_of_ts": pa.array(as_of, pa.int64()),
                             "ts": pa.array(as_of, pa.int64())}), path, row_group_size=7)


def _pairs(table: pa.Table, ts: str) -> list[tuple[str, int]]:
    return sorted(zip(table.column("user_id").to_pylist(), table.column(ts).to_pylist(), strict=True))


def test_score_and_export_over_partitions_with_the_same_file_names(
    ray_local: None, scored_table: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    # date=1/part-0.parquet and date=2/part-0.parquet: every request still gives exactly one row.
    req = tmp_path / "req"
    rows: dict[int, list[tuple[str, int]]] = {}
    for day in (1, 2):
        users = [f"u{(day * 7 + i) % 23}" for i in range(20)]  # u20..u22 are unknown
        as_of = [T0 + (day * 10 + i % 15) * STEP for i in range(20)]
        _partition(req / f"date={day}" / "part-0.parquet", users, as_of)
        rows[day] = list(zip(users, as_of, strict=True))
    model = "ray_jobs.examples.models:recency_similarity"
    cfg = hbase_server.config()

    def score() -> Any:
        return run_score(str(req), model, tmp_path / "scores", scored_table.name, max_len=10, workers=2,
                         config=cfg, now_ms=NOW)

    def export() -> Any:
        return run_export(str(req), tmp_path / "train", scored_table.name, max_len=10, workers=2, config=cfg)

    scored, exported = score(), export()
    assert scored.completed and exported.completed, (scored.error, exported.error)
    assert scored.units_total == 6 and scored.requests == scored.scored == 40
    assert exported.shards == 6 and exported.labels == exported.rows_written == 40
    assert _pairs(pq.read_table(tmp_path / "scores"), "as_of_ts") == sorted(rows[1] + rows[2])
    train = pq.read_table(tmp_path / "train")
    assert _pairs(train, "ts") == sorted(rows[1] + rows[2])
    for row in train.to_pylist():
        n = int(row["user_id"][1:])
        assert row["length"] == (min(10, (row["ts"] - T0) // STEP) if n < 20 else 0)

    # A re-run over the same input trusts every part; one over a replaced partition redoes only it.
    again = score()
    assert again.completed and again.units_skipped == 6 and again.scored == 40
    replaced = rows[2][::-1]
    day2 = req / "date=2" / "part-0.parquet"
    before = day2.stat().st_mtime_ns
    _partition(day2, [u for u, _ in replaced], [t for _, t in rows[2]])
    os.utime(day2, ns=(before + 10**9, before + 10**9))  # a new mtime even on a coarse clock
    rows[2] = [(u, t) for (u, _), (_, t) in zip(replaced, rows[2], strict=True)]
    redone = score()
    assert redone.completed, redone.error
    assert redone.units_skipped == 3 and redone.units_done == 3 and redone.scored == 40
    assert _pairs(pq.read_table(tmp_path / "scores"), "as_of_ts") == sorted(rows[1] + rows[2])

    # Parts of another input in the output directory are refused, never mixed in or counted.
    other = run_score(str(req / "date=1"), model, tmp_path / "scores", scored_table.name, max_len=10,
                      workers=1, config=cfg, now_ms=NOW)
    assert not other.completed and "no unit of this input produces" in other.error
    assert other.scored == 0
