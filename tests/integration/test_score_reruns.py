"""What a ``score`` re-run trusts, with real Ray and real HBase: the model's declared version,
the job's "now" for requests without ``as_of_ts``, and the columns of an empty unit's part."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.score import run_score
from store import SequenceTable
from tests.conftest import HBaseServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOW = int(time.time() * 1000)
MODEL = "ray_jobs.examples.models:recency_similarity"


@pytest.fixture
def clicks(make_table: Callable[..., SequenceTable]) -> SequenceTable:
    table = make_table()
    table.write(pa.table({"user_id": [f"u{i % 5}" for i in range(20)], "event_ts": [NOW - 60_000 * (i + 1)
                                                                                   for i in range(20)],
                          "event_type": ["view"] * 20, "item_id": list(range(20))}))
    return table


def _requests(path: Path, users: list[Any], as_of: list[int | None] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: dict[str, Any] = {"user_id": pa.array(users, pa.string())}
    if as_of is not None:
        columns["as_of_ts"] = pa.array(as_of, pa.int64())
    pq.write_table(pa.table(columns), path)
    return path


def _as_of(out: Path) -> set[int]:
    """The distinct ``as_of_ts`` of every row scored into ``out``."""
    return set(pq.read_table(out).column("as_of_ts").to_pylist())


def test_an_empty_request_file_keeps_the_model_columns_in_the_output(
    ray_local: None, clicks: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    # "a_empty" sorts first: pyarrow takes a directory's schema from its first file.
    _requests(tmp_path / "req" / "a_empty.parquet", [], [])
    _requests(tmp_path / "req" / "b.parquet", ["u1", "u2"], [NOW, NOW])
    report = run_score(str(tmp_path / "req"), MODEL, tmp_path / "out", clicks.name, workers=1,
                       config=hbase_server.config())
    assert report.completed, report.error
    assert report.units_total == 2 and report.scored == 2
    out = pq.read_table(tmp_path / "out")
    assert out.column_names == ["user_id", "as_of_ts", "score", "history"] and out.num_rows == 2
    again = run_score(str(tmp_path / "req"), MODEL, tmp_path / "out", clicks.name, workers=1,
                      config=hbase_server.config())
    assert again.completed and again.units_skipped == 2  # the rewritten empty part is still its unit's


def test_a_run_after_a_complete_one_does_not_pass_old_scores_off_as_now(
    ray_local: None, clicks: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    req = _requests(tmp_path / "users.parquet", ["u1", "u2", "u3"])  # no as_of_ts: "now"

    def score(**options: Any) -> Any:
        return run_score(str(req), MODEL, tmp_path / "out", clicks.name, workers=1, config=hbase_server.config(),
                         **options)

    first = score()
    assert first.completed, first.error
    (first_now,) = _as_of(tmp_path / "out")
    time.sleep(0.01)
    second = score()  # the next day's run, say
    assert not second.completed and second.units_done == 0
    assert "other settings (now_ms: " in second.error and "--overwrite" in second.error
    fresh = score(overwrite=True)
    assert fresh.completed and fresh.units_done == 1
    (fresh_now,) = _as_of(tmp_path / "out")
    assert fresh_now > first_now and fresh.now_ms == fresh_now
    same = score(now_ms=fresh_now)  # asking for the same "now" trusts what was scored as of it
    assert same.completed and same.units_skipped == 1


def test_a_resume_scores_as_of_the_stopped_runs_now(
    ray_local: None, clicks: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    _requests(tmp_path / "req" / "a.parquet", ["u1", "u2"])
    bad = _requests(tmp_path / "req" / "b.parquet", ["u3", None])  # a null user id stops the job
    first = run_score(str(tmp_path / "req"), MODEL, tmp_path / "out", clicks.name, workers=1,
                      config=hbase_server.config())
    assert not first.completed and "missing_user" in first.error and first.units_done == 1
    (first_now,) = _as_of(tmp_path / "out")
    before = bad.stat().st_mtime_ns
    _requests(bad, ["u3", "u4"])
    os.utime(bad, ns=(before + 10**9, before + 10**9))  # a new mtime even on a coarse clock
    time.sleep(0.01)
    resumed = run_score(str(tmp_path / "req"), MODEL, tmp_path / "out", clicks.name, workers=1,
                        config=hbase_server.config())
    assert resumed.completed, resumed.error
    assert resumed.units_skipped == 1 and resumed.units_done == 1
    assert _as_of(tmp_path / "out") == {first_now} and resumed.now_ms == first_now


def test_a_new_model_version_is_not_trusted_with_the_old_versions_scores(
    ray_local: None, clicks: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    req = _requests(tmp_path / "req.parquet", ["u1", "u2"], [NOW, NOW])

    def score(version: str, **options: Any) -> Any:
        return run_score(str(req), MODEL, tmp_path / "out", clicks.name, workers=1, config=hbase_server.config(),
                         model_version=version, **options)

    assert score("2024-01").completed
    assert score("2024-01").units_skipped == 1
    refused = score("2024-02")
    assert not refused.completed and 'model_version: "2024-01" -> "2024-02"' in refused.error
    assert score("2024-02", overwrite=True).units_done == 1


TEAM_MODEL = textwrap.dedent("""
    import json
    from pathlib import Path

    import numpy as np

    _WEIGHTS = json.loads((Path(__file__).parent / "weights.json").read_text())
    MODEL_VERSION = _WEIGHTS["version"]  # what identifies this model: its weights, not its source


    def score(batch):
        return {"score": np.full(len(batch["lengths"]), _WEIGHTS["w"], dtype=np.float64)}
""")


def test_retrained_weights_declared_in_model_version_are_rescored_not_trusted(
    clicks: SequenceTable, tmp_path: Path
) -> None:
    # The same command before and after retraining: the model's source is unchanged, its weights are not.
    models = tmp_path / "models"
    models.mkdir()
    (models / "team_model.py").write_text(TEAM_MODEL)
    req = _requests(tmp_path / "req.parquet", ["u1", "u2"], [NOW, NOW])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(models), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "ray_jobs.cli", "score", "--requests", str(req), "--table", clicks.name,
               "--model", "team_model:score", "--out", str(tmp_path / "out"), "--workers", "1", "--json"]

    def run(version: str, weight: float) -> subprocess.CompletedProcess[str]:
        (models / "weights.json").write_text(json.dumps({"version": version, "w": weight}))
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    first = run("v1", 1.0)
    assert first.returncode == 0, first.stderr
    retrained = run("v2", 2.0)
    assert retrained.returncode == 1, retrained.stdout
    assert 'model_version: "v1" -> "v2"' in retrained.stderr and "--overwrite" in retrained.stderr
    assert pq.read_table(tmp_path / "out").column("score").to_pylist() == [1.0, 1.0]  # nothing mixed in
