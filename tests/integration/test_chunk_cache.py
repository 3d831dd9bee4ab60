"""The chunk cache on the real HBase: cached reads equal uncached ones at every step of random
writes, compactions, trims and reads (a small cache, so blocks are evicted and users are partly
held), and a chunk replaced between a read's key-only get and its value get is never served."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pytest

from store import SequenceStore, SequenceTable
from store.tiers import chunk_runs
from tests.conftest import HBaseServer

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
DAY = 86_400_000
USERS = [f"u{i:02d}" for i in range(24)]
STEPS = 40


@pytest.fixture
def stores(hbase_server: HBaseServer) -> Iterator[tuple[SequenceStore, SequenceStore]]:
    """A store with a small cache (evictions happen) and one with none, on the same HBase."""
    config = hbase_server.config()
    with SequenceStore(dataclasses.replace(config, chunk_cache_bytes=16 * 1024), pool_size=4) as cached, \
            SequenceStore(dataclasses.replace(config, chunk_cache_bytes=0), pool_size=4) as plain:
        yield cached, plain


def _events(rng: random.Random, users: list[str], n: int, next_item: list[int]) -> pa.Table:
    rows: dict[str, list[Any]] = {"user_id": [], "event_ts": [], "event_type": [], "item_id": [], "dwell_ms": []}
    for _ in range(n):
        rows["user_id"].append(rng.choice(users))
        # mostly recent, some late (old) events, ties on purpose
        ts = NOW - rng.choice([rng.randrange(1, 3_600_000), rng.randrange(1, 30 * DAY), 5 * DAY])
        rows["event_ts"].append(ts)
        rows["event_type"].append(rng.choice(["view", "click", "buy"]))
        rows["item_id"].append(next_item[0])
        next_item[0] += 1
        rows["dwell_ms"].append(rng.choice([None, rng.randrange(0, 5000)]))
    return pa.table({"user_id": pa.array(rows["user_id"], pa.string()),
                     "event_ts": pa.array(rows["event_ts"], pa.int64()),
                     "event_type": pa.array(rows["event_type"], pa.string()),
                     "item_id": pa.array(rows["item_id"], pa.int64()),
                     "dwell_ms": pa.array(rows["dwell_ms"], pa.int32())})


def _read_both(rng: random.Random, cached: SequenceTable, plain: SequenceTable) -> None:
    users = rng.sample([*USERS, "nobody"], rng.randrange(1, 12))
    as_of = [rng.choice([NOW + 1, NOW - rng.randrange(0, 20 * DAY)]) for _ in users]
    if rng.random() < 0.3:  # a user with several requests (an export's labels)
        users += [users[0]] * 3
        as_of += [NOW - rng.randrange(0, 20 * DAY) for _ in range(3)]
    options: dict[str, Any] = {"max_len": rng.choice([1, 5, 17, 200])}
    if rng.random() < 0.3:
        options["window_ms"] = rng.choice([DAY, 7 * DAY])
    if rng.random() < 0.3:
        options["event_types"] = ["click", "buy"]
    if rng.random() < 0.3:
        options["fields"] = ["item_id"]
    want = plain.read_sequences((users, as_of), **options)
    got = cached.read_sequences((users, as_of), **options)
    assert got.equals(want), f"cached read differs for {list(zip(users, as_of, strict=True))} {options}"


@pytest.mark.parametrize("trimmed", [False, True])
def test_cached_reads_equal_uncached_reads_through_writes_compactions_and_trims(
        make_table: Callable[..., SequenceTable], stores: tuple[SequenceStore, SequenceStore], trimmed: bool) -> None:
    rng = random.Random(11 + trimmed)
    spec = {"max_events_per_user": 40} if trimmed else {}
    name = make_table("cache", salt_buckets=2, chunk_events=8, **spec).name
    cached, plain = (s.table(name) for s in stores)
    next_item = [0]
    cached.write(_events(rng, USERS, 600, next_item), on_invalid="raise")
    cached.compact_users(USERS)
    ops = ["read"] * 5 + ["write", "compact", "compact"] + (["trim"] if trimmed else [])
    counts = dict.fromkeys(ops, 0)
    for _ in range(STEPS):
        op = rng.choice(ops)
        counts[op] += 1
        if op == "write":
            cached.write(_events(rng, rng.sample(USERS, 5), rng.randrange(1, 40), next_item), on_invalid="raise")
        elif op == "compact":
            cached.compact_users(rng.sample(USERS, rng.randrange(1, len(USERS))))
        elif op == "trim":
            cached.trim(rng.sample(USERS, 6))
        _read_both(rng, cached, plain)
        _read_both(rng, cached, plain)
    stats = stores[0].chunk_cache.stats() if stores[0].chunk_cache else None
    assert stats is not None and stats.hits > 100 and stats.misses > 0, stats
    assert stats.evicted_blocks > 0 and stats.bytes <= stats.capacity, stats
    assert counts["compact"] > 3 and counts["write"] > 1, counts
    assert stores[1].chunk_cache is None


def test_a_chunk_replaced_after_the_key_only_get_is_never_served(
        make_table: Callable[..., SequenceTable], stores: tuple[SequenceStore, SequenceStore],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Between a warm read's key-only get and its get of the values it lacks, a compaction
    replaces the user's chunks: the read falls back to one full get of the row."""
    rng = random.Random(3)
    name = make_table("swap", salt_buckets=1, chunk_events=8).name
    cached, plain = (s.table(name) for s in stores)
    next_item = [0]
    cached.write(_events(rng, ["a"], 30, next_item), on_invalid="raise")
    cached.compact_users(["a"])
    request = ([("a", NOW + 1)], {"max_len": 100})
    cached.read_sequences(request[0], **request[1])  # warm: the reader holds chunks of "a"
    # New events in the newest chunk's range: the next compaction rewrites it, and the
    # cache holds only the old one (its key-only get must ask for the new one's value).
    late = _events(rng, ["a"], 6, next_item)
    cached.write(late, on_invalid="raise")
    cached.compact_users(["a"])
    cached.write(_events(rng, ["a"], 6, next_item), on_invalid="raise")

    complete = chunk_runs.ChunkRuns._complete
    replaced = []

    def racing(self: chunk_runs.ChunkRuns, asks: Any, results: list[Any], keyed: Any) -> None:
        if not replaced:  # after the key-only get, before the value get: compact again
            plain.compact_users(["a"])
        before = list(results)
        complete(self, asks, results, keyed)
        replaced.append(any(a is not b for a, b in zip(before, results, strict=True)))

    monkeypatch.setattr(chunk_runs.ChunkRuns, "_complete", racing)
    got = cached.read_sequences(request[0], **request[1])
    assert replaced[0], "the race did not remove a chunk the read asked for"
    assert got.equals(plain.read_sequences(request[0], **request[1]))
    assert got.column("length")[0].as_py() == 42
