"""What a ``score`` re-run trusts, with real Ray and real HBase: the model's declared version,
the job's "now" for requests without ``as_of_ts``, and the columns of an empty unit's part."""

from __future__ import annotations

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
