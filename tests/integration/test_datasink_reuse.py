"""One ``SequenceDatasink`` used for several writes, with real Ray and real HBase: each write has
its own "now", its own quarantine files and its own result."""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

import ray_jobs.data.sink
from ray_jobs.data import SequenceDatasink
from store import SequenceTable
from tests.conftest import HBaseServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOW = int(time.time() * 1000)
DAY = 86_400_000


def _day(user: str) -> pa.Table:
    """One valid event a minute ago and one row without a user."""
    return pa.table({"user_id": [user, None], "event_ts": [NOW - 60_000] * 2, "event_type": ["view"] * 2,
                     "item_id": [1, 2]})


def test_a_reused_sink_judges_each_write_by_its_own_now_and_keeps_every_quarantined_row(
    ray_local: None, make_table: Callable[..., SequenceTable], hbase_server: HBaseServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = make_table()
    quarantine = tmp_path / "quarantine"
    # The sink is made, and first used, two days ago (a long-lived pipeline object): its clock says so.
    monkeypatch.setattr(ray_jobs.data.sink, "time", types.SimpleNamespace(time=lambda: (NOW - 2 * DAY) / 1000))
    sink = SequenceDatasink(table.name, config=hbase_server.config(), quarantine_dir=quarantine)
    ray.data.from_arrow(_day("monday")).write_datasink(sink)
    assert sink.result is not None and sink.result.by_reason == {"future_timestamp": 1, "missing_user": 1}
    monkeypatch.undo()

    # Today the same event is not in the future any more: the second write takes its own "now".
    ray.data.from_arrow(_day("tuesday")).write_datasink(sink)
    assert sink.result is not None and sink.result.by_reason == {"missing_user": 1} and sink.result.written == 1
    assert table.read_sequences([("tuesday", NOW)], max_len=5).column("length").to_pylist() == [1]
    # Every quarantined row of both writes is still there, each in its own file.
    kept = pq.read_table(quarantine)
    assert sorted(kept.column("reason").to_pylist()) == ["future_timestamp", "missing_user", "missing_user"]
    assert len(list(quarantine.glob("quarantine-*.parquet"))) == 2

    # A write that fails leaves no result behind, not the previous write's.
    with pytest.raises(Exception, match="bogus"):
        ray.data.from_arrow(_day("wednesday").append_column("bogus", pa.array([1, 2]))).write_datasink(sink)
    assert sink.result is None
