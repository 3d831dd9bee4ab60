"""Decoded chunks kept in memory between reads: an LRU bounded in bytes, shared by a store's threads.

A chunk cell is never rewritten: its qualifier ends in a nonce (:mod:`store.format.chunk`), so a
merge or a swap writes new cells and deletes old ones, and the events under one ``(row,
qualifier, timestamp)`` never change. A chunk decoded once (ids computed) is therefore valid for
as long as anyone asks for that key, and a cached read differs from an uncached one only in where
the bytes come from: which chunks a read uses is still decided by a fresh get of the user's row
(its chunk keys, without their values: the chunk tier's reads), so a replaced chunk is never
served once its swap is visible, and a chunk not yet replaced is served from memory.

Keys also hold the table's name and the schema version the chunk was decoded into (a handle
opened after the schema evolved decodes into other columns). Entries are *blocks*: the chunks
decoded by one call, one Arrow table, with each chunk a slice of it. A block is the unit of
eviction, so the bytes counted are the bytes held (a slice would otherwise keep its whole parent
alive); a hit on any of its chunks makes the block the most recently used.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

ChunkId = tuple[bytes, int]  # (qualifier, timestamp) of a chunk cell in a user's row
_KEY_BYTES = 160  # what a chunk's entry costs besides its events (the key tuple, the index entries)


@dataclass(slots=True)
class _Block:
    events: pa.Table
    keys: list[tuple[str, int, bytes, bytes, int]]
    pieces: list[pa.Table]  # each chunk's slice of ``events``
    nbytes: int


@dataclass(slots=True)
class CacheStats:
    """What a cache served: chunks found (``hits``) and decoded from their bytes (``misses``),
    and what it holds now."""

    hits: int = 0
    misses: int = 0
    chunks: int = 0
    bytes: int = 0
    capacity: int = 0
    evicted_blocks: int = 0

    @property
    def hit_ratio(self) -> float | None:
        asked = self.hits + self.misses
        return self.hits / asked if asked else None

    def as_dict(self) -> dict[str, int | float | None]:
        return {"hits": self.hits, "misses": self.misses, "hit_ratio": self.hit_ratio, "chunks": self.chunks,
                "bytes": self.bytes, "capacity_bytes": self.capacity, "evicted_blocks": self.evicted_blocks}


@dataclass(slots=True)
class ChunkCache:
    """Decoded chunks of any table by ``(table, schema version, row, qualifier, timestamp)``.

    Args:
        capacity: bytes of decoded events to hold at most (a block larger than that is not kept).
    """

    capacity: int
    _blocks: OrderedDict[int, _Block] = field(default_factory=OrderedDict)
    _index: dict[tuple[str, int, bytes, bytes, int], tuple[int, int]] = field(default_factory=dict)
    _rows: dict[tuple[str, int, bytes], int] = field(default_factory=dict)  # chunks held per user row
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = 0
    _stats: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self) -> None:
        if self.capacity <= 0:
            raise ValueError("a chunk cache needs a capacity > 0 bytes")
        self._stats.capacity = self.capacity

    def holds(self, table: str, version: int, row: bytes) -> bool:
        """Whether any chunk of this user row is held (then a read asks for chunk keys first)."""
        return (table, version, row) in self._rows

    def get(self, table: str, version: int, row: bytes, chunks: Sequence[ChunkId]) -> list[pa.Table | None]:
        """The decoded events of each chunk, None where not held; hits refresh their blocks."""
        out: list[pa.Table | None] = []
        with self._lock:
            for qualifier, ts in chunks:
                found = self._index.get((table, version, row, qualifier, ts))
                if found is None:
                    out.append(None)
                    continue
                number, k = found
                self._blocks.move_to_end(number)
                out.append(self._blocks[number].pieces[k])
            self._stats.hits += sum(p is not None for p in out)
        return out

    def put(self, table: str, version: int, events: pa.Table,
            chunks: Sequence[tuple[bytes, ChunkId, int, int]]) -> None:
        """Keep ``events`` (every id computed) as one block: ``chunks`` are ``(row, (qualifier,
        timestamp), start, length)``, each chunk's rows of ``events``. Chunks already held are
        left where they are; the least recently used blocks go until the cache fits. Each chunk
        put counts as a miss (it was decoded from its bytes)."""
        nbytes = events.nbytes + _KEY_BYTES * len(chunks)
        with self._lock:
            self._stats.misses += len(chunks)
            if not chunks or nbytes > self.capacity:
                return
            number = self._next
            self._next += 1
            block = _Block(events, [], [], nbytes)
            for row, (qualifier, ts), start, length in chunks:
                key = (table, version, row, qualifier, ts)
                if key in self._index:
                    continue
                self._index[key] = (number, len(block.keys))
                block.keys.append(key)
                block.pieces.append(events.slice(start, length))
                self._rows[key[:3]] = self._rows.get(key[:3], 0) + 1
            if not block.keys:
                return
            self._blocks[number] = block
            self._stats.bytes += nbytes
            self._stats.chunks += len(block.keys)
            while self._stats.bytes > self.capacity:
                self._evict()

    def _evict(self) -> None:
        _, block = self._blocks.popitem(last=False)
        for key in block.keys:
            del self._index[key]
            left = self._rows[key[:3]] - 1
            if left:
                self._rows[key[:3]] = left
            else:
                del self._rows[key[:3]]
        self._stats.bytes -= block.nbytes
        self._stats.chunks -= len(block.keys)
        self._stats.evicted_blocks += 1

    def stats(self) -> CacheStats:
        """A copy of the counters (they only grow, except what is held)."""
        with self._lock:
            s = self._stats
            return CacheStats(s.hits, s.misses, s.chunks, s.bytes, s.capacity, s.evicted_blocks)

    def clear(self) -> None:
        """Drop every block (the counters of hits and misses stay)."""
        with self._lock:
            self._blocks.clear()
            self._index.clear()
            self._rows.clear()
            self._stats.bytes = self._stats.chunks = 0
