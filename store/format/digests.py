"""Content digests of events: 64 bits per event that say whether two copies hold the same payload. Pure.

:func:`content_digests` hashes the payload columns of Arrow events (the writer's conformed
input, a decoded chunk, decoded raw cells: the same values give the same digest) column by
column, without a Python call per event except for the distinct values of string and binary
columns. Like the writer's content identity it does not depend on the schema version: each
field's hash is mixed with its name and the fields are summed, so field order does not matter,
and a null field adds nothing — a field added later (null in old events) changes no digest.

Used by the audit (:mod:`store.tiers.stored_events`, ``seqstore verify``) to compare payloads; not an
identity (event ids stay the writer's), and not cryptographic.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.format.vectors import item_dtype

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def content_digests(events: pa.Table | pa.RecordBatch, payload: pa.Schema) -> np.ndarray:
    """One uint64 per row of ``events``: a digest of its ``payload`` fields (columns of
    ``events`` with those names and types)."""
    n = events.num_rows
    total = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):  # hashing: uint64 arithmetic wraps on purpose
        for f in payload:
            column = events.column(f.name)
            if isinstance(column, pa.ChunkedArray):
                column = column.combine_chunks()
            h = _mix(_values(column, f.type) ^ _name(f.name))
            if column.null_count:
                h[~np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)] = 0
            total += h
    return total


def _values(column: pa.Array, t: pa.DataType) -> np.ndarray:
    """A uint64 per row standing for its value (anything where null)."""
    if pa.types.is_fixed_size_list(t):
        width = t.list_size
        items = column.values.slice(column.offset * width, len(column) * width)
        flat = np.asarray(items.fill_null(0).to_numpy(zero_copy_only=False)).astype(item_dtype(t), copy=False)
        rows = _as_uint64(flat).reshape(len(column), width)
        h = np.full(len(column), np.uint64(width), dtype=np.uint64)
        for j in range(width):
            h = _mix(h ^ rows[:, j])
        return h
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        encoded = pc.dictionary_encode(column)
        words = np.fromiter((_bytes_hash(v.encode() if isinstance(v, str) else v)
                             for v in encoded.dictionary.to_pylist()), dtype=np.uint64, count=len(encoded.dictionary))
        codes = np.asarray(encoded.indices.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        return words[codes] if len(words) else np.zeros(len(column), dtype=np.uint64)
    filled = column.fill_null(False if t == pa.bool_() else 0) if column.null_count else column
    return _as_uint64(np.asarray(filled.to_numpy(zero_copy_only=False)))


def _as_uint64(values: np.ndarray) -> np.ndarray:
    """Values' bits as uint64 (bools and 8/16/32-bit types widened, floats by their bits)."""
    if values.dtype == np.bool_:
        return values.astype(np.uint64)
    unsigned = values.view(f"<u{values.dtype.itemsize}") if values.dtype.kind in "iuf" else values
    return unsigned.astype(np.uint64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, elementwise."""
    x = (x + _GOLDEN) & np.uint64(0xFFFFFFFFFFFFFFFF)
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))  # type: ignore[no-any-return]


def _bytes_hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _name(name: str) -> np.uint64:
    return np.uint64(_bytes_hash(b"field:" + name.encode()))
