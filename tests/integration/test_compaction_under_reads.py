"""Compaction beside readers: a read racing a compaction sees every event exactly once (never
in neither tier, never twice), and two compactions of one table racing each other leave the
same events in disjoint chunks (the flag token's check-and-mutate, store.tiers.user_meta)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from store import SequenceTable
from store.format.chunk import chunk_key, decode_chunk
from store.format.keys import CHUNKS, user_prefix
from store.io.connection import idl
from store.tiers import compaction
from store.tiers.compaction import CompactionStats, compact_range

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
HOUR = 3_600_000
USERS = [f"user-{i:03d}" for i in range(120)]
MAX_LEN = 1_000


def _events(rng: np.random.Generator, users: list[str], per_user: int, lo: int, hi: int,
            first_item: int) -> pa.Table:
    """``per_user`` events per user at random times in ``[lo, hi)``; item ids are unique."""
    n = len(users) * per_user
    ts = rng.integers(lo, hi, n)
    ties = np.arange(0, n - 1, 7)
    ts[ties] = ts[ties + 1]  # some ties on event_ts
    return pa.table({
        "user_id": pa.array(np.repeat(users, per_user), pa.string()),
        "event_ts": pa.array(ts, pa.int64()),
        "event_type": pa.array(rng.choice(["view", "click"], n), pa.string()),
        "item_id": pa.array(np.arange(first_item, first_item + n), pa.int64()),
        "dwell_ms": pa.array(rng.integers(0, 1000, n), pa.int32()),
    })


class Expected:
    """Each user's stored events, as ``(event_ts, item_id)`` (item ids are unique per event)."""

    def __init__(self) -> None:
        self.events: dict[str, set[tuple[int, int]]] = {u: set() for u in USERS}

    def add(self, rows: pa.Table) -> None:
        for u, ts, item in zip(*(rows.column(c).to_pylist() for c in ("user_id", "event_ts", "item_id")),
                               strict=True):
            self.events[u].add((ts, item))


def _check(table: SequenceTable, expected: Expected) -> int:
    """One read of every user; asserts each sequence is exactly the user's events, newest
    first, each once. Returns the events read."""
    out = table.read_sequences([(u, NOW + 1) for u in USERS], max_len=MAX_LEN, fields=["item_id"])
    total = 0
    for u, seq in zip(USERS, out.column("sequence").to_pylist(), strict=True):
        got = [(e["event_ts"], e["item_id"]) for e in seq]
        want = expected.events[u]
        dupes = len(got) - len(set(got))
        assert dupes == 0, f"{u}: {dupes} duplicate event(s)"
        assert set(got) == want, f"{u}: missing {sorted(want - set(got))[:5]}, extra {sorted(set(got) - want)[:5]}"
        keys = [(e["event_ts"], e["event_id"]) for e in seq]
        assert keys == sorted(keys, reverse=True), f"{u}: not newest first"
        total += len(got)
    return total


class Reader:
    """Reads every user in a loop on its own thread and checks each read."""

    def __init__(self, table: SequenceTable, expected: Expected) -> None:
        self.table, self.expected = table, expected
        self.stop = threading.Event()
        self.reads = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                _check(self.table, self.expected)
                self.reads += 1
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def __enter__(self) -> Reader:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the reader did not stop"
        if self.error is not None:
            raise self.error


def _compact_all(table: SequenceTable, reader: Reader | None = None) -> CompactionStats:
    stats = CompactionStats()
    for start, stop in table.salt_ranges():
        stats.add(compact_range(table.handle, start, stop))
        if reader is not None and reader.error is not None:
            break  # the reader saw a wrong read: stop early, the reader reports it
    return stats


def _chunks(table: SequenceTable, user: str) -> list[tuple[tuple[int, int], list[tuple[int, int]]]]:
    """Each chunk of ``user``: its key's oldest event and its events ``(event_ts, event_id)``."""
    t = idl()
    get = t.TGet(row=user_prefix(user, table.spec.salt_buckets), columns=[t.TColumn(family=CHUNKS)], maxVersions=1)
    result = table.handle.pool.call("get", table.handle.name_bytes, get)
    versions = {s.version: s for s in table.schema_versions}
    out = []
    for cv in result.columnValues or []:
        batch = decode_chunk(cv.value, versions, table.handle.codec.current, result.row)
        events = list(zip(batch.column("event_ts").to_pylist(), batch.column("event_id").to_pylist(), strict=True))
        key = chunk_key(cv.qualifier, cv.timestamp)
        assert key.events == len(events) and key.oldest == events[-1] and key.newest_ts == events[0][0]
        out.append((key.oldest, events))
    return out


def _assert_disjoint_chunks(table: SequenceTable, expected: Expected) -> None:
    for u in USERS:
        chunks = _chunks(table, u)
        flat = [e for _, events in chunks for e in events]
        assert len(flat) == len(set(flat)), f"{u}: an event is in two chunks"
        assert flat == sorted(flat, reverse=True), f"{u}: chunks overlap or are out of order"
        assert len(flat) == len(expected.events[u])
        assert all(len(events) <= (table.spec.chunk_events or 0) for _, events in chunks)


@pytest.fixture
def small_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Merge a user's raw events a few at a time, so a reader races many atomic steps per user."""
    monkeypatch.setattr(compaction, "WINDOW_EVENTS", 16)


def _late_events(rng: np.random.Generator, table: SequenceTable, expected: Expected, first_item: int) -> pa.Table:
    """Late events: older than every chunk, inside the chunks' range, newer than all; plus
    exact repeats of events already compacted."""
    users = USERS[::3]
    parts = [_events(rng, users, 3, NOW - 30 * 24 * HOUR, NOW - 20 * 24 * HOUR, first_item),
             _events(rng, users, 3, NOW - 10 * 24 * HOUR, NOW - HOUR, first_item + 10_000),
             _events(rng, users, 3, NOW - HOUR, NOW, first_item + 20_000)]
    seq = table.read_sequences([(u, NOW + 1) for u in users[:10]], max_len=3)
    repeats = []
    for u, events in zip(users[:10], seq.column("sequence").to_pylist(), strict=True):
        repeats += [{"user_id": u, **{k: e[k] for k in ("event_ts", "event_type", "item_id", "dwell_ms")}}
                    for e in events]
    parts.append(pa.Table.from_pylist(repeats, schema=parts[0].schema))
    late = pa.concat_tables(parts)
    expected.add(late)
    return late


def test_reads_during_compaction_see_every_event_once(make_table: Callable[..., SequenceTable],
                                                      small_windows: None) -> None:
    rng = np.random.default_rng(5)
    table = make_table(salt_buckets=4, bucket_ms=HOUR, chunk_events=16)
    expected = Expected()
    first = _events(rng, USERS, 60, NOW - 10 * 24 * HOUR, NOW - HOUR, 0)
    table.write(first, on_invalid="raise")
    expected.add(first)
    total = _check(table, expected)
    assert total == 60 * len(USERS)

    with Reader(table, expected) as reader:
        stats = _compact_all(table, reader)
        during_first = reader.reads
    assert stats.raw_events == total and stats.chunks_written >= total // 16
    assert during_first >= 2, f"only {during_first} reads overlapped the compaction"

    table.write(_late_events(rng, table, expected, 100_000), on_invalid="raise")
    _check(table, expected)
    with Reader(table, expected) as reader:
        stats = _compact_all(table, reader)
        during_second = reader.reads
    assert stats.raw_events > 0 and stats.chunks_replaced > 0
    assert during_second >= 1, f"only {during_second} reads overlapped the second compaction"
    _check(table, expected)
    _assert_disjoint_chunks(table, expected)


def test_two_concurrent_compactions_leave_one_copy_of_each_event(make_table: Callable[..., SequenceTable],
                                                                 small_windows: None) -> None:
    rng = np.random.default_rng(9)
    table = make_table(salt_buckets=4, bucket_ms=HOUR, chunk_events=8)
    expected = Expected()
    first = _events(rng, USERS, 40, NOW - 10 * 24 * HOUR, NOW - HOUR, 0)
    table.write(first, on_invalid="raise")
    expected.add(first)
    retries = 0
    for round_ in range(2):
        with Reader(table, expected), ThreadPoolExecutor(2) as ex:
            results: list[Any] = list(ex.map(lambda _: _compact_all(table), range(2)))
        retries += sum(s.retries for s in results)
        # Each raw event is merged at least once; both compactions together may merge some twice
        # (a raw cell read by both), which must not show as two events.
        if round_ == 0:
            assert sum(s.raw_events for s in results) >= first.num_rows
        assert sum(s.users for s in results) > 0  # which of the two gets which users is up to timing
        _check(table, expected)
        _assert_disjoint_chunks(table, expected)
        if round_ == 0:
            table.write(_late_events(rng, table, expected, 100_000), on_invalid="raise")
    print(f"concurrent compaction retries: {retries}")
