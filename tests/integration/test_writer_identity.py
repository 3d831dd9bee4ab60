"""Event identity against real HBase: bad explicit ids are quarantined, merges are counted."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.backfill import JOB, run_backfill
from store import SequenceStore, SequenceTable
from store.table import job_records
from tests.conftest import HBaseServer

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
T0 = NOW - 86_400_000


def _stored(table: SequenceTable, users: list[str]) -> list[list[tuple[int, int]]]:
    """Per user, the ``(event_ts, item_id)`` of every stored event."""
    out = table.read_sequences([(u, NOW) for u in users], max_len=10_000)
    return [[(e["event_ts"], e["item_id"]) for e in s] for s in out.column("sequence").to_pylist()]


def test_bad_event_ids_in_the_middle_of_a_chunk_are_quarantined_and_the_rest_written(
    make_table: Callable[..., SequenceTable],
) -> None:
    table = make_table()
    n = 1_000
    ids: list[bytes | None] = [f"evt-{i}".encode() for i in range(n)]
    ids[300], ids[500], ids[700] = b"\xc3\x28", b"", None  # not UTF-8, empty, null
    data = pa.table({
        "user_id": [f"u{i % 10}" for i in range(n)], "event_ts": pa.array([T0 + i for i in range(n)], pa.int64()),
        "event_type": ["view"] * n, "item_id": pa.array(range(n), pa.int64()), "event_id": pa.array(ids, pa.binary()),
    })
    result = table.write(data, source="part-0.parquet", start_position=5_000, chunk_rows=n)  # one chunk
    assert (result.rows_in, result.written, result.merged, result.quarantined) == (n, n - 3, 0, 3)
    assert result.quarantine.select(["position", "reason", "field", "source"]).to_pylist() == [
        {"position": 5_300, "reason": "invalid_event_id", "field": "event_id", "source": "part-0.parquet"},
        {"position": 5_500, "reason": "invalid_event_id", "field": "event_id", "source": "part-0.parquet"},
        {"position": 5_700, "reason": "missing_event_id", "field": "event_id", "source": "part-0.parquet"},
    ]
    stored = _stored(table, [f"u{k}" for k in range(10)])
    assert sorted(item for events in stored for _, item in events) == sorted(set(range(n)) - {300, 500, 700})


def test_an_integer_event_id_is_its_decimal_string(make_table: Callable[..., SequenceTable]) -> None:
    table = make_table()
    row = {"user_id": ["u"], "event_ts": pa.array([T0], pa.int64()), "event_type": ["view"]}
    table.write(pa.table({**row, "item_id": pa.array([1], pa.int64()), "event_id": pa.array([42], pa.int64())}))
    table.write(pa.table({**row, "item_id": pa.array([2], pa.int64()), "event_id": ["42"]}))
    assert _stored(table, ["u"]) == [[(T0, 2)]]  # the same event, rewritten


def test_a_double_click_is_one_stored_event_counted_as_merged(make_table: Callable[..., SequenceTable]) -> None:
    table = make_table()
    click = {"user_id": ["u", "u"], "event_ts": pa.array([T0, T0], pa.int64()), "event_type": ["click"] * 2,
             "item_id": pa.array([7, 7], pa.int64())}
    result = table.write(pa.table(click))
    assert (result.rows_in, result.written, result.merged, result.quarantined) == (2, 1, 1, 0)
    assert result.rows_in == result.written + result.merged + result.quarantined
    assert _stored(table, ["u"]) == [[(T0, 7)]]
    # Distinct explicit ids tell the two clicks apart: both are stored.
    other = make_table("ids")
    both = other.write(pa.table({**click, "event_id": ["c1", "c2"]}))
    assert (both.written, both.merged) == (2, 0) and _stored(other, ["u"]) == [[(T0, 7), (T0, 7)]]


@pytest.mark.slow
def test_backfill_reports_merged_events_and_bad_ids_without_stopping(
    ray_local: None, make_table: Callable[..., SequenceTable], tmp_path: Path, hbase_server: HBaseServer,
    store: SequenceStore,
) -> None:
    table = make_table()
    n = 200
    ids: list[bytes | None] = [f"e{i}".encode() for i in range(n)]
    ids[50], ids[120] = b"\xff", None
    users = [f"u{i % 3}" for i in range(n)]
    users[81], ids[81] = users[80], ids[80]  # the same event (same time, user and id) delivered twice
    pq.write_table(pa.table({
        "user_id": users, "event_ts": pa.array([T0 + i // 2 * 2 for i in range(n)], pa.int64()),
        "event_type": ["view"] * n, "item_id": pa.array(range(n), pa.int64()), "event_id": pa.array(ids, pa.binary()),
    }), tmp_path / "log.parquet", row_group_size=100)
    # Merges are counted per unit of the raw path (row groups), which this test is about.
    report = run_backfill(str(tmp_path / "log.parquet"), table.name, workers=1, into="raw",
                          config=hbase_server.config(),
                          report_dir=tmp_path / "report")
    assert report.completed, report.error
    assert (report.events_in, report.events_written, report.events_merged, report.events_quarantined) == (
        n, n - 3, 1, 2)
    assert report.quarantine_by_reason == {"invalid_event_id": 1, "missing_event_id": 1}
    entries = job_records.load(store.pool, table.name, JOB)
    assert sorted(e["merged"] for e in entries.values()) == [0, 1]
    assert sum(len(events) for events in _stored(table, ["u0", "u1", "u2"])) == n - 3
