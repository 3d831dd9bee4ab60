"""Retention is honest about history: rows that retention may have cut say so, the watermark
never moves back, and a read racing a trim never returns kept events, a gap, then trimmed ones."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.export import run_export
from store import SequenceTable
from store.format import keys
from store.format.keys import EVENTS
from store.io.connection import idl
from store.tiers import chunk_runs, user_meta
from tests.conftest import HBaseServer

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
DAY = 86_400_000
T0 = NOW - 2 * DAY


def _events(user: str, ts: list[int]) -> pa.Table:
    return pa.table({"user_id": [user] * len(ts), "event_ts": ts, "event_type": ["view"] * len(ts),
                     "item_id": list(range(len(ts)))})


def _read(table: SequenceTable, as_of: int, max_len: int, **options: Any) -> tuple[list[int], bool]:
    out = table.read_sequences([("u", as_of)], max_len=max_len, **options)
    return [e["item_id"] for e in out.column("sequence")[0].as_py()], out.column("history_complete")[0].as_py()


def test_reads_that_a_trim_cut_say_so(make_table: Callable[..., SequenceTable]) -> None:
    table = make_table(max_events_per_user=5, bucket_ms=1_000)
    table.write(_events("u", [T0 + i * 1_000 for i in range(10)]))  # keeps items 5..9
    assert _read(table, NOW, 3) == ([9, 8, 7], True)  # full: trimmed events are older than all of these
    assert _read(table, NOW, 10) == ([9, 8, 7, 6, 5], False)  # items 0..4 were in range, and are gone
    assert _read(table, T0 + 7_000, 10) == ([6, 5], False)  # a historical read that serving saw longer
    assert _read(table, T0 + 2_000, 10) == ([], False)
    # A window that starts above the watermark cannot have lost anything.
    assert _read(table, NOW, 10, window_ms=NOW - T0 - 6_000) == ([9, 8, 7, 6], True)
    other = table.read_sequences([("never-trimmed", NOW)], max_len=10)
    assert other.column("history_complete").to_pylist() == [True]


def test_reads_that_ttl_cut_say_so(make_table: Callable[..., SequenceTable]) -> None:
    table = make_table(ttl_days=1)
    table.write(_events("u", [NOW - 3 * DAY, NOW - 3_600_000]))
    assert _read(table, NOW, 10) == ([1], False)  # item 0 expired, and was in range
    assert _read(table, NOW, 1) == ([1], True)
    assert _read(table, NOW, 10, window_ms=DAY // 2) == ([1], True)  # the window is inside what TTL keeps


def test_the_watermark_never_moves_back(make_table: Callable[..., SequenceTable]) -> None:
    table = make_table(max_events_per_user=3, bucket_ms=1_000)
    table.write(_events("u", [T0 + i * 1_000 for i in range(6)]))
    older = table.watermarks(["u"])["u"]
    table.write(_events("u", [T0 + 10_000 + i * 1_000 for i in range(6)]))
    newer = table.watermarks(["u"])["u"]
    assert newer > older
    # A concurrent trim that computed the older watermark lands its put last: it must not win.
    user_meta.put_watermark(table.handle, keys.user_prefix("u", table.spec.salt_buckets), older)
    assert table.watermarks(["u"])["u"] == newer


def test_a_read_racing_a_trim_returns_only_kept_events(
    make_table: Callable[..., SequenceTable], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trim of another writer lands between the reader's first read of the user's row (flag,
    watermark, newest chunks) and its raw scan: it has
    recorded its watermark (at item 7) and deleted item 6, but not yet item 5."""
    table = make_table(max_events_per_user=5, bucket_ms=1_000)
    table.write(_events("u", [T0 + i * 1_000 for i in range(10)]))  # keeps items 5..9
    real = chunk_runs.ChunkRuns.first_gets
    prefix = keys.user_prefix("u", table.spec.salt_buckets)
    stored = {e["item_id"]: (e["event_ts"], e["event_id"])
              for e in table.read_sequences([("u", NOW)], max_len=10).column("sequence")[0].as_py()}
    calls = []

    def racing(self: Any, *args: Any) -> Any:
        meta = real(self, *args)
        if not calls:  # the trim runs right after the reader's first watermark read
            user_meta.put_watermark(table.handle, prefix, stored[7])
            t = idl()
            ts, eid = stored[6]
            row = keys.row_key(prefix, keys.bucket_of(ts, table.spec.bucket_ms))
            column = t.TColumn(family=EVENTS, qualifier=keys.qualifier(ts, eid), timestamp=ts)
            table.handle.pool.call("deleteMultiple", table.handle.name_bytes, [
                t.TDelete(row=row, columns=[column], deleteType=t.TDeleteType.DELETE_COLUMN)])
        calls.append(args)
        return meta

    monkeypatch.setattr(chunk_runs.ChunkRuns, "first_gets", racing)
    assert _read(table, NOW, 10) == ([9, 8, 7], False)  # never [9, 8, 7, 5]


@pytest.mark.slow
def test_export_counts_rows_whose_history_retention_cut(
    ray_local: None, make_table: Callable[..., SequenceTable], hbase_server: HBaseServer, tmp_path: Path
) -> None:
    table = make_table(max_events_per_user=5, bucket_ms=1_000)
    table.write(_events("u", [T0 + i * 1_000 for i in range(10)]))
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"user_id": ["u", "u", "u"], "ts": [T0 + 3_000, T0 + 6_000, NOW]}), labels)
    report = run_export(str(labels), tmp_path / "train", table.name, max_len=3, workers=1,
                        config=hbase_server.config())
    assert report.completed, report.error
    assert report.rows_history_incomplete == 2  # the two old labels; the label at NOW has 3 of 3
    rows = pq.read_table(tmp_path / "train").sort_by("ts")
    assert rows.column("history_complete").to_pylist() == [False, False, True]
