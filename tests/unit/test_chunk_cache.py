"""The chunk cache alone: bounded in bytes by whole blocks, least recently used first, with
what it holds per user row and its hit and miss counts."""

from __future__ import annotations

import pyarrow as pa
import pytest

from store.table.chunk_cache import ChunkCache


def _block(rows: list[bytes], per_chunk: int, first: int = 0) -> tuple[pa.Table, list]:
    n = per_chunk * len(rows)
    events = pa.table({"event_ts": pa.array(range(first, first + n), pa.int64())})
    chunks = [(row, (b"q%d" % (first + k), first + k), k * per_chunk, per_chunk) for k, row in enumerate(rows)]
    return events, chunks


def test_a_put_block_is_served_by_key_and_counted() -> None:
    cache = ChunkCache(10_000)
    events, chunks = _block([b"r1", b"r2"], 3)
    cache.put("t", 1, events, chunks)
    assert cache.holds("t", 1, b"r1") and cache.holds("t", 1, b"r2")
    assert not cache.holds("t", 2, b"r1") and not cache.holds("other", 1, b"r1")
    got = cache.get("t", 1, b"r2", [(b"q1", 1), (b"q9", 9), (b"q1", 2)])
    assert got[0] is not None and got[0].column("event_ts").to_pylist() == [3, 4, 5]
    assert got[1] is None and got[2] is None  # another timestamp is another cell
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.chunks) == (1, 2, 2) and stats.hit_ratio == pytest.approx(1 / 3)
    assert stats.bytes == events.nbytes + 2 * 160 <= stats.capacity


def test_least_recently_used_blocks_go_first_until_it_fits() -> None:
    first, chunks_a = _block([b"a"], 100, 0)
    one = first.nbytes + 160
    cache = ChunkCache(int(one * 2.5))
    cache.put("t", 1, first, chunks_a)
    cache.put("t", 1, *_block([b"b"], 100, 1000))
    assert cache.get("t", 1, b"a", [(b"q0", 0)])[0] is not None  # a is now the most recent
    cache.put("t", 1, *_block([b"c"], 100, 2000))
    assert cache.holds("t", 1, b"a") and cache.holds("t", 1, b"c") and not cache.holds("t", 1, b"b")
    stats = cache.stats()
    assert stats.evicted_blocks == 1 and stats.bytes <= stats.capacity and stats.chunks == 2


def test_a_row_is_held_while_any_of_its_chunks_is() -> None:
    cache = ChunkCache(10_000)
    events, chunks = _block([b"r", b"r"], 2)
    cache.put("t", 1, events, chunks)
    again = _block([b"r"], 2, 50)
    cache.put("t", 1, *again)
    cache.clear()
    assert not cache.holds("t", 1, b"r") and cache.stats().bytes == 0 and cache.stats().misses == 3


def test_a_block_larger_than_the_cache_is_not_kept_and_a_held_chunk_is_not_doubled() -> None:
    cache = ChunkCache(100)
    cache.put("t", 1, *_block([b"r"], 1000))
    assert not cache.holds("t", 1, b"r") and cache.stats().misses == 1
    big = ChunkCache(100_000)
    events, chunks = _block([b"r"], 10)
    big.put("t", 1, events, chunks)
    big.put("t", 1, events, chunks)  # two readers decoded the same chunk
    assert big.stats().chunks == 1 and big.stats().bytes == events.nbytes + 160


def test_a_cache_needs_a_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ChunkCache(0)
