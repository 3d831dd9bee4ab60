"""The store's write and read paths against real HBase: the time contract and its edges."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from store import SequenceTable, to_numpy

pytestmark = pytest.mark.integration

DAY = 86_400_000
NOW = int(time.time() * 1000)
T0 = NOW - 30 * DAY  # far enough back for any window, recent enough for any TTL below


def events(rows: list[tuple[str, int, str, int]], dwell: list[int | None] | None = None) -> pa.Table:
    return pa.table({
        "user_id": [r[0] for r in rows],
        "event_ts": pa.array([r[1] for r in rows], pa.int64()),
        "event_type": [r[2] for r in rows],
        "item_id": pa.array([r[3] for r in rows], pa.int64()),
        "dwell_ms": pa.array(dwell if dwell is not None else [None] * len(rows), pa.int32()),
    })


def seq(table: SequenceTable, user: str, as_of: int, **kw: Any) -> list[tuple[int, int]]:
    """(event_ts, item_id) of one user's sequence."""
    out = table.read_sequences([(user, as_of)], max_len=kw.pop("max_len", 1000), **kw)
    return [(e["event_ts"], e["item_id"]) for e in out.column("sequence")[0].as_py()]


def test_round_trip_all_fields_newest_first(make_table: Callable[..., SequenceTable]) -> None:
    table = make_table()
    result = table.write(events([("u", T0 + 1, "view", 10), ("u", T0 + 3, "click", 30), ("u", T0 + 2, "play", 20)],
                                dwell=[100, None, 300]))
    assert (result.rows_in, result.written, result.quarantined) == (3, 3, 0)
    out = table.read_sequences([("u", NOW)], max_len=10)
    assert out.column_names == ["user_id", "as_of_ts", "length", "history_complete", "sequence"]
    got = out.column("sequence")[0].as_py()
    assert [(e["event_ts"], e["event_type"], e["item_id"], e["dwell_ms"]) for e in got] == [
        (T0 + 3, "click", 30, None), (T0 + 2, "play", 20, 300), (T0 + 1, "view", 10, 100)]
    assert out.column("length").to_pylist() == [3]
    assert [e["item_id"] for e in table.read_sequences([("u", NOW)], max_len=2).column("sequence")[0].as_py()] == [
        30, 20]


def test_event_exactly_at_as_of_is_excluded_unless_inclusive(make_table: Callable[..., SequenceTable]) -> None:
    table = make_table()
    table.write(events([("u", T0, "view", 1), ("u", T0 + 1, "view", 2), ("u", T0 + 2, "view", 3)]))
    assert seq(table, "u", T0 + 1) == [(T0, 1)]
    assert seq(table, "u", T0 + 1, inclusive=True) == [(T0 + 1, 2), (T0, 1)]
    assert seq(table, "u", T0) == []
    assert seq(table, "u", T0 + 3, window_ms=2) == [(T0 + 2, 3), (T0 + 1, 2)]
    # The window's lower edge is as_of - window_ms, included, with or without `inclusive`.
    assert seq(table, "u", T0 + 2, window_ms=2) == [(T0 + 1, 2), (T0, 1)]
    assert seq(table, "u", T0 + 2, window_ms=2, inclusive=True) == [(T0 + 2, 3), (T0 + 1, 2), (T0, 1)]


def test_same_millisecond_events_both_survive_in_a_stable_order(make_table: Callable[..., SequenceTable]) -> None:
    table = make_table()
    table.write(events([("u", T0, "view", 1), ("u", T0, "click", 2), ("u", T0, "view", 3)]))
    newest = table.read_sequences([("u", NOW)], max_len=10).column("sequence")[0].as_py()
    oldest = table.read_sequences([("u", NOW)], max_len=10, oldest_first=True).column("sequence")[0].as_py()
    assert sorted(e["item_id"] for e in newest) == [1, 2, 3]
    keys_ = [(e["event_ts"], e["event_id"]) for e in newest]
    assert keys_ == sorted(keys_, reverse=True)  # ties ordered by (event_ts, event_id), newest first
    assert oldest == newest[::-1]
    # An explicit event_id keeps even identical-content events apart.
    table.write(events([("v", T0, "view", 1), ("v", T0, "view", 1)]).append_column("event_id", pa.array(["a", "b"])))
    assert len(seq(table, "v", NOW)) == 2


def test_sequences_span_many_time_buckets(make_table: Callable[..., SequenceTable]) -> None:
    table = make_table(bucket_ms=1_000)
    rows = [("u", T0 + i * 250, "view", i) for i in range(40)]  # 4 events per bucket, 10 buckets
    table.write(events(rows))
    assert seq(table, "u", T0 + 40 * 250, max_len=100) == [(r[1], r[3]) for r in reversed(rows)]
    # as_of on a bucket boundary: the event at the boundary is excluded, the bucket before is whole.
    assert seq(table, "u", T0 + 2_000, max_len=5) == [(T0 + 1750, 7), (T0 + 1500, 6), (T0 + 1250, 5),
                                                      (T0 + 1000, 4), (T0 + 750, 3)]
    assert seq(table, "u", T0 + 2_000, inclusive=True, max_len=1) == [(T0 + 2000, 8)]
    # Sparse history: one event per bucket over many buckets still fills max_len.
    sparse = [("s", T0 + i * 10_000, "view", i) for i in range(60)]
    table.write(events(sparse))
    assert [i for _, i in seq(table, "s", NOW, max_len=50)] == list(range(59, 9, -1))


def test_unicode_and_prefix_colliding_users_stay_apart(make_table: Callable[..., SequenceTable]) -> None:
    table = make_table(salt_buckets=1)  # one salt: all users share the key space
    users = ["1", "12", "123", "12\x00", "ü", "u", "用户😀"]
    table.write(events([(u, T0 + i, "view", i) for i, u in enumerate(users)]))
    for i, u in enumerate(users):
        assert seq(table, u, NOW) == [(T0 + i, i)], u


def test_unknown_users_in_the_middle_keep_request_order(make_table: Callable[..., SequenceTable]) -> None:
    table = make_table()
    table.write(events([("a", T0, "view", 1), ("c", T0, "view", 3)]))
    out = table.read_sequences(pa.table({"user_id": ["a", "ghost", "c", "ghost2", "a"],
                                         "as_of_ts": [NOW, NOW, NOW, NOW, T0]}), max_len=5)
    assert out.column("user_id").to_pylist() == ["a", "ghost", "c", "ghost2", "a"]
    assert out.column("length").to_pylist() == [1, 0, 1, 0, 0]
    assert [s[0]["item_id"] if s else None for s in out.column("sequence").to_pylist()] == [1, None, 3, None, None]


def test_padded_numpy_and_event_type_filter(make_table: Callable[..., SequenceTable]) -> None:
    table = make_table()
    table.write(events([("a", T0 + i, "click" if i % 2 else "view", i) for i in range(5)], dwell=[1, 2, 3, None, 5]))
    out = table.read_sequences([("a", NOW), ("b", NOW)], max_len=4, event_types=["view"])
    arrays, lengths = to_numpy(out, max_len=4)
    assert lengths.tolist() == [3, 0]
    assert arrays["item_id"].tolist() == [[4, 2, 0, 0], [0, 0, 0, 0]]
    assert arrays["dwell_ms"].dtype == np.int32 and arrays["dwell_ms"][0].tolist() == [5, 3, 1, 0]
    assert arrays["event_type"][0].tolist() == ["view", "view", "view", None]


def test_rewriting_the_same_input_leaves_exactly_the_same_cells(
    make_table: Callable[..., SequenceTable], hbase_server: Any
) -> None:
    table = make_table()
    data = events([(f"u{i % 7}", T0 + i * 1000, "view", i) for i in range(500)])
    table.write(data)

    def cells() -> list[tuple[bytes, bytes, bytes, int]]:
        conn = hbase_server.connect()
        try:
            # The event cells; the users' raw-tier flags (m:raw) carry a token each write renews.
            return [(row, q, v, ts) for row, cols in conn.table(table.name).scan(columns=[b"e"], include_timestamp=True)
                    for q, (v, ts) in sorted(cols.items())]
        finally:
            conn.close()

    before = cells()
    assert len(before) == 500
    assert table.read_sequences([(f"u{i}", T0 + 10**7) for i in range(7)], max_len=500).column("length").to_pylist() \
        == [sum(1 for i in range(500) if i % 7 == u) for u in range(7)]
    table.write(data)
    table.write(data.slice(100, 50))
    assert cells() == before


@pytest.mark.slow
def test_a_user_with_a_million_events_reads_max_len_in_bounded_memory(
    make_table: Callable[..., SequenceTable]
) -> None:
    table = make_table(bucket_ms=3_600_000)
    n = 1_000_000
    ts = np.arange(n, dtype=np.int64) * 2_000 + (NOW - n * 2_000)  # one event every 2 s up to now
    data = pa.table({"user_id": pa.array(["heavy"] * n), "event_ts": pa.array(ts),
                     "event_type": pa.array(["view"] * n), "item_id": pa.array(np.arange(n, dtype=np.int64)),
                     "dwell_ms": pa.nulls(n, pa.int32())})
    assert table.write(data, chunk_rows=50_000).written == n
    table.read_sequences([("heavy", NOW)], max_len=100)  # warm-up: imports, connections
    tracemalloc.start()
    out = table.read_sequences([("heavy", NOW + 1), ("heavy", int(ts[n // 2]))], max_len=100)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    newest = out.column("sequence")[0].as_py()
    assert [e["item_id"] for e in newest] == list(range(n - 1, n - 101, -1))
    assert [e["item_id"] for e in out.column("sequence")[1].as_py()][:2] == [n // 2 - 1, n // 2 - 2]
    # Stated bound: reading 2 x 100 of 1,000,000 events allocates under 8 MiB of Python memory.
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_event_type_filter_reaches_past_thousands_of_cells_in_one_wide_row(
    make_table: Callable[..., SequenceTable]
) -> None:
    # 20k views and 3 rare buys in one row (one bucket): the buys sit at the row's old end, so the
    # reader must resume inside the row several times, each time after the cells it already saw.
    table = make_table()
    n = 20_000
    base = NOW - DAY // 2
    types = ["buy" if i in (0, 1, 7) else "view" for i in range(n)]
    table.write(pa.table({"user_id": ["w"] * n, "event_ts": pa.array([base + i for i in range(n)], pa.int64()),
                          "event_type": types, "item_id": pa.array(range(n), pa.int64()),
                          "dwell_ms": pa.nulls(n, pa.int32())}))
    out = table.read_sequences([("w", NOW), ("w", base + 5)], max_len=5, event_types=["buy"])
    assert [e["item_id"] for e in out.column("sequence")[0].as_py()] == [7, 1, 0]
    assert [e["item_id"] for e in out.column("sequence")[1].as_py()] == [1, 0]


def test_oldest_first_is_the_newest_max_len_events_reversed(make_table: Callable[..., SequenceTable]) -> None:
    table = make_table(bucket_ms=2)  # the 6 events span 3 rows
    table.write(events([("u", T0 + i, "view", i) for i in range(6)]))
    assert seq(table, "u", NOW, max_len=3) == [(T0 + 5, 5), (T0 + 4, 4), (T0 + 3, 3)]
    assert seq(table, "u", NOW, max_len=3, oldest_first=True) == [(T0 + 3, 3), (T0 + 4, 4), (T0 + 5, 5)]
    assert seq(table, "u", T0 + 3, max_len=2, oldest_first=True) == [(T0 + 1, 1), (T0 + 2, 2)]
