"""Chunks written before format 3 (format 2) stay readable, and merge exactly, on the real HBase.

Two tables get the same writes; in one, every chunk is then rewritten in format 2 at the same
coordinates (what a table written by an earlier version holds). Both read the same; after a
second bulk load over part of the users (overlapping and later events, content and explicit
ids), live writes and a compaction, both still read the same, and the second table holds both
formats: format 3 where a merge rewrote a chunk, format 2 where nothing touched it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest

from store import SequenceTable
from store.format.chunk import chunk_schema, decode_chunk
from store.format.keys import CHUNKS, user_prefix
from store.format.payload import uvarint
from store.io.connection import idl
from store.io.scanning import scan_results

pytestmark = pytest.mark.integration

T0 = int(time.time() * 1000) - 5 * 86_400_000
USERS = [f"user{i:02d}" for i in range(20)]


def _log(rng: np.random.Generator, users: list[str], n: int, *, explicit: bool = False) -> pa.Table:
    columns = {
        "user_id": pa.array(rng.choice(users, n), pa.string()),
        "event_ts": pa.array(T0 + rng.integers(0, 2_000, n) * 60_000, pa.int64()),  # ties and repeats
        "event_type": pa.array(rng.choice(["view", "click", "play"], n), pa.string()),
        "item_id": pa.array(rng.integers(0, 5, n), pa.int64()),
        "dwell_ms": pa.array(np.where(rng.random(n) < 0.3, None, rng.integers(0, 9_000, n)), pa.int32()),
    }
    if explicit:
        columns["event_id"] = pa.array([f"e{i}" for i in rng.integers(0, 50, n)], pa.string())
    return pa.table(columns)


def _chunk_cells(table: SequenceTable) -> list[tuple[bytes, object]]:
    t = idl()
    h = table.handle
    scan = t.TScan(columns=[t.TColumn(family=CHUNKS)], maxVersions=1)
    return [(r.row, cv) for r in scan_results(h.pool, h.name_bytes, scan, 100) for cv in r.columnValues or []]


def _rewrite_as_format_2(table: SequenceTable) -> int:
    """Every chunk of ``table`` rewritten in format 2 (``2 | schema version | record batch``)."""
    t = idl()
    h = table.handle
    versions = {s.version: s for s in h.versions}
    current = h.codec.current
    puts = []
    for row, cv in _chunk_cells(table):
        events = decode_chunk(cv.value, versions, current, row)
        batch = pa.Table.from_arrays(events.columns, schema=chunk_schema(current)).combine_chunks().to_batches()[0]
        value = bytes((2,)) + uvarint(current.version) + batch.serialize().to_pybytes()
        puts.append(t.TPut(row=row, columnValues=[t.TColumnValue(CHUNKS, cv.qualifier, value, timestamp=cv.timestamp)]))
    h.pool.call("putMultiple", h.name_bytes, puts)
    return len(puts)


def _formats(table: SequenceTable) -> Counter[int]:
    return Counter(cv.value[0] for _, cv in _chunk_cells(table))


def _reads(table: SequenceTable) -> list:
    requests = [(u, T0 + m * 60_000) for u in USERS for m in (0, 500, 1_000, 1_999, 2_000, 10_000)]
    return table.read_sequences(requests, max_len=500, allow_any_ts=True).column("sequence").to_pylist()


def test_format_2_chunks_read_and_merge_like_format_3(make_table: Callable[..., SequenceTable]) -> None:
    rng = np.random.default_rng(22)
    first = [_log(rng, USERS, 3_000), _log(rng, USERS, 400, explicit=True)]
    some = USERS[:10]
    second = [_log(rng, some, 1_500), _log(rng, some, 200, explicit=True)]
    live = _log(rng, some, 300)
    control, old = make_table("control", chunk_events=16), make_table("old", chunk_events=16)
    for table in (control, old):
        for batch in first:
            table.write_chunks(batch)
    converted = _rewrite_as_format_2(old)
    assert converted > 100 and _formats(old) == {2: converted}
    assert _reads(old) == _reads(control)

    for table in (control, old):
        for batch in second:
            table.write_chunks(batch)
        table.write(live)
        table.compact_users(USERS)
    assert _reads(old) == _reads(control)
    formats = _formats(old)
    assert formats[3] > 0 and formats[2] > 0, formats  # merged chunks rewritten, untouched ones kept
    spared = {user_prefix(u, old.spec.salt_buckets) for u in USERS[10:]}  # no second write reached them
    assert {cv.value[0] for row, cv in _chunk_cells(old) if row in spared} == {2}
