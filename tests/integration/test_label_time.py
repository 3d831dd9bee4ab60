"""Training rows at the label's time, with real Ray and real HBase: one rule for events and
features (strictly before ``ts``), and one "now" per job for the label-time check."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.data import training_dataset
from ray_jobs.export import run_export
from ray_jobs.score import run_score
from store import SequenceTable
from tests.conftest import HBaseServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOW = int(time.time() * 1000)
DAY = 86_400_000
TS = NOW - 3 * DAY  # the label: "the user bought at TS"


@pytest.fixture
def purchases(make_table: Callable[..., SequenceTable]) -> SequenceTable:
    """A buyer's events (one a day before, the labelled purchase at TS) and a purchase counter
    updated by each purchase, stamped with its time."""
    table = make_table(features=pa.schema([pa.field("purchases", pa.int64())]))
    table.write(pa.table({"user_id": ["b", "b"], "event_ts": [TS - DAY, TS], "event_type": ["buy", "buy"],
                          "item_id": [1, 2]}))
    table.write_features(pa.table({"user_id": ["b", "b"], "valid_from_ts": [TS - DAY, TS], "purchases": [1, 2]}))
    return table


def _labels(path: Path) -> Path:
    pq.write_table(pa.table({"user_id": ["b", "b"], "ts": [TS, TS + 1], "label": [1, 0]}), path)
    return path


def test_export_row_sees_neither_the_labelled_event_nor_the_feature_version_it_stamped(
    ray_local: None, purchases: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    report = run_export(str(_labels(tmp_path / "labels.parquet")), tmp_path / "train", purchases.name, max_len=5,
                        features=["purchases"], workers=1, config=hbase_server.config())
    assert report.completed, report.error
    rows = sorted(pq.read_table(tmp_path / "train").to_pylist(), key=lambda r: r["ts"])
    assert [(r["hist_item_id"], r["purchases"]) for r in rows] == [([1], 1), ([2, 1], 2)]


def test_training_dataset_row_sees_neither_the_labelled_event_nor_the_feature_version_it_stamped(
    ray_local: None, purchases: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    train = training_dataset(str(_labels(tmp_path / "labels.parquet")), purchases.name, max_len=5,
                             features=["purchases"], config=hbase_server.config(), concurrency=1)
    rows = sorted(train.take_all(), key=lambda r: r["ts"])
    assert [(int(r["lengths"]), int(r["purchases"])) for r in rows] == [(1, 1), (2, 2)]


# A job whose "now" is two days behind its actors' clocks: the label and request times just
# before the real now lie more than a day in its future, so the job refuses them — on every
# node and every resume alike — instead of each actor judging them by its own clock.
BEHIND = NOW - 2 * DAY
LATER = [NOW - 60_000]


def test_export_judges_label_times_by_the_jobs_now(
    ray_local: None, purchases: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"user_id": ["b"], "ts": LATER}), labels)
    report = run_export(str(labels), tmp_path / "train", purchases.name, workers=1, config=hbase_server.config(),
                        now_ms=BEHIND)
    assert not report.completed
    assert f"label ts of row 0 of {labels} is {LATER[0]}" in report.error and "future" in report.error


def test_score_judges_as_of_times_by_the_jobs_now(
    ray_local: None, purchases: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    requests = tmp_path / "requests.parquet"
    pq.write_table(pa.table({"user_id": ["b"], "as_of_ts": LATER}), requests)
    report = run_score(str(requests), "ray_jobs.examples.models:recency_similarity", tmp_path / "scores",
                       purchases.name, workers=1, config=hbase_server.config(), now_ms=BEHIND)
    assert not report.completed
    assert f"as_of_ts of row 0 of {requests} is {LATER[0]}" in report.error and "future" in report.error


def test_training_dataset_judges_label_times_by_the_jobs_now(
    ray_local: None, purchases: SequenceTable, hbase_server: HBaseServer, tmp_path: Path
) -> None:
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"user_id": ["b"], "ts": LATER}), labels)
    train = training_dataset(str(labels), purchases.name, max_len=5, config=hbase_server.config(), now_ms=BEHIND,
                             concurrency=1)
    with pytest.raises(Exception, match=rf"label ts of request 0 is {LATER[0]}: .*future"):
        train.take_all()
