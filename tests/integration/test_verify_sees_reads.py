"""verify checks what reads return (F6 of the tier-protocol review), on the real HBase: a table
damaged the way F1, F2 and F3 damaged it fails verification, with the damage counted."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.verify import verify
from store import SequenceTable
from store.format.keys import CHUNKS
from store.io.connection import idl
from store.io.scanning import scan_results
from store.tiers import user_meta
from store.tiers.compaction import compact_users

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)


def _rows(users: list[str], ts: list[int], items: list[int], ids: list[str] | None = None) -> pa.Table:
    columns: dict[str, Any] = {"user_id": users, "event_ts": pa.array(ts, pa.int64()),
                               "event_type": ["view"] * len(users), "item_id": pa.array(items, pa.int64())}
    if ids is not None:
        columns["event_id"] = ids
    return pa.table(columns)


def _input(tmp_path: Path, rows: pa.Table) -> str:
    path = tmp_path / "in.parquet"
    pq.write_table(rows, path)
    return str(path)


def test_a_clean_table_verifies_before_and_after_compaction(make_table: Callable[..., SequenceTable],
                                                            tmp_path: Path) -> None:
    table = make_table(salt_buckets=2, chunk_events=4)
    rows = _rows(["a"] * 6 + ["b"] * 3, [NOW - 1000 * k for k in range(9)], list(range(9)))
    table.write(rows)
    path = _input(tmp_path, rows)
    before = verify(path, table)
    compact_users(table.handle, ["a", "b"])
    after = verify(path, table)
    for report in (before, after):
        assert report.ok, report
        assert (report.events_found, report.events_duplicated, report.raw_unread, report.payload_mismatched) == \
            (9, 0, 0, 0)


def test_an_event_in_two_chunks_fails_verify(make_table: Callable[..., SequenceTable], tmp_path: Path) -> None:
    """F1's damage: the same events in two chunks."""
    table = make_table(salt_buckets=1, chunk_events=4)
    rows = _rows(["a"] * 6, [NOW - 1000 * k for k in range(6)], list(range(6)))
    table.write(rows)
    compact_users(table.handle, ["a"])
    t = idl()
    h = table.handle
    prefix = b"\x00\x00\x01a"
    (result,) = [r for r in scan_results(h.pool, h.name_bytes, t.TScan(columns=[t.TColumn(family=CHUNKS)]), 10)]
    first = result.columnValues[0]
    copy = first.qualifier[:-8] + os.urandom(8)  # the same chunk under another nonce
    h.pool.call("put", h.name_bytes, t.TPut(row=prefix, columnValues=[
        t.TColumnValue(CHUNKS, copy, first.value, timestamp=first.timestamp)]))
    report = verify(_input(tmp_path, rows), table)
    assert not report.ok
    assert report.events_duplicated == int.from_bytes(first.qualifier[16:20], "big") > 0
    assert report.users_mismatched == 1 and report.mismatched_users == ["a"]


def test_raw_cells_of_an_unflagged_user_fail_verify(make_table: Callable[..., SequenceTable], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """F2's damage: an acknowledged raw event under an empty flag, which reads never return."""
    table = make_table(salt_buckets=1, chunk_events=4)
    table.write(_rows(["a"] * 2, [NOW - 5000, NOW - 4000], [1, 2]))
    compact_users(table.handle, ["a"])

    def lost(*_: Any) -> int:
        return 1  # the flag put "succeeded" but is not there (masked)

    monkeypatch.setattr(user_meta, "flag_users", lost)
    table.write(_rows(["a"], [NOW - 3000], [3]))
    monkeypatch.undo()
    rows = _rows(["a"] * 3, [NOW - 5000, NOW - 4000, NOW - 3000], [1, 2, 3])
    assert len(table.read_sequences(pa.table({"user_id": ["a"], "as_of_ts": [NOW]}), max_len=10)
               .column("sequence")[0]) == 2
    report = verify(_input(tmp_path, rows), table)
    assert not report.ok
    assert report.raw_unread == 1 and report.events_missing == 1 and report.mismatched_users == ["a"]
    compact_users(table.handle, ["a"])  # a compaction claims the user and merges the cell
    assert verify(_input(tmp_path, rows), table).ok


def test_a_payload_other_than_the_inputs_fails_verify(make_table: Callable[..., SequenceTable],
                                                      tmp_path: Path) -> None:
    """F3's damage: an explicitly identified event stored with another payload than the input's."""
    table = make_table(salt_buckets=1, chunk_events=4)
    table.write(_rows(["a", "a"], [NOW - 2000, NOW - 1000], [1, 2], ["x", "y"]))
    compact_users(table.handle, ["a"])
    corrected = _rows(["a", "a"], [NOW - 2000, NOW - 1000], [1, 20], ["x", "y"])
    report = verify(_input(tmp_path, corrected), table)
    assert not report.ok
    assert report.payload_mismatched == 1 and report.events_missing == 0 and report.events_extra == 0
    table.write(corrected)
    assert verify(_input(tmp_path, corrected), table).ok
