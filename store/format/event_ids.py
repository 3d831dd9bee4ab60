"""Event ids: the 64-bit hash that gives an event its cell coordinates ``(user, event_ts, id)``.

An id hashes the user, the time and the event's identity: its explicit ``event_id`` column if
the table's schema has one, else its content (every non-null payload field, by name, so a
field added later — null for old events — leaves old identities as they were). Re-writing an
event hits the same coordinates, which is what makes every write path idempotent.

A table's ids follow one **scheme** for its whole life (``TableSpec.id_scheme``), since other
ids for the same events would store them twice:

* **1** — ``blake2b-64(len(user) | user | event_ts | identity bytes)`` per event, the identity
  bytes built by :meth:`~store.format.payload.PayloadCodec.encode` (:func:`keys.event_id`):
  tables registered before scheme 2.
* **2** — the same inputs, hashed column-wise: each string (user, explicit id, string or binary
  field) is ``blake2b-64`` of its bytes once per distinct value; numbers and vector items are
  their bit patterns; everything is folded together with murmur3's 64-bit finalizer
  (:func:`_fmix`) on numpy arrays. About 0.1-0.3 µs per event where scheme 1 spends 2-4 µs in
  Python; the default for new tables.

The functions here are pure (no I/O); the scheme 2 constants below are part of the stored
format and never change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.format import keys
from store.format.schema import EVENT_ID, EVENT_TS, USER_ID
from store.format.vectors import item_dtype

SCHEMES = (1, 2)
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_TS = np.uint64(0x5EC5_70AE_0000_0001)  # folded into the time, so ts and a field equal to it differ
_EXPLICIT = np.uint64(0x1D5_0000_0000_0001)  # marks an explicit id (content ids never fold it alone)
_S33 = np.uint64(33)


def _fmix(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finalizer, element-wise (uint64, wrapping)."""
    x = x ^ (x >> _S33)
    x = x * _M1
    x = x ^ (x >> _S33)
    x = x * _M2
    out: np.ndarray = x ^ (x >> _S33)
    return out


def _fold(h: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _fmix(h + _fmix(v ^ _GOLDEN))


def _blake64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def bytes_hashes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per row, ``blake2b-64`` of a string or binary value (0 where null), hashed once per distinct value."""
    encoded = pc.dictionary_encode(column)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    dictionary = encoded.dictionary
    if pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type):
        dictionary = dictionary.cast(pa.binary())
    hashes = np.fromiter((_blake64(v) for v in dictionary.to_pylist()), dtype=np.uint64, count=len(dictionary))
    codes = np.asarray(encoded.indices.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    out = hashes[codes] if len(hashes) else np.zeros(len(codes), dtype=np.uint64)
    return np.where(_valid(encoded), out, np.uint64(0))


def _valid(column: pa.Array) -> np.ndarray:
    if column.null_count == 0:
        return np.ones(len(column), dtype=bool)
    return np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _bits(values: np.ndarray) -> np.ndarray:
    """Each number's bit pattern as uint64 (signed ints sign-extended, floats their own width)."""
    if values.dtype.kind == "f" or values.dtype == np.bool_:
        unsigned = np.dtype(f"u{values.dtype.itemsize}")
        return values.view(unsigned).astype(np.uint64)
    return values.astype(np.int64 if values.dtype.kind == "i" else np.uint64).view(np.uint64)


def value_hashes(column: pa.Array, field: pa.Field) -> np.ndarray:
    """Per row, a 64-bit hash of one payload value (meaningless where null: callers skip nulls)."""
    t = field.type
    if pa.types.is_string(t) or pa.types.is_binary(t):
        return bytes_hashes(column)
    if pa.types.is_fixed_size_list(t):
        width = t.list_size
        filled = column.fill_null([0] * width) if column.null_count else column
        items = np.asarray(filled.flatten().to_numpy(zero_copy_only=False)).astype(item_dtype(t), copy=False)
        grid = _bits(items.reshape(len(column), width)) if width else np.zeros((len(column), 0), np.uint64)
        positions = (np.arange(width, dtype=np.uint64) + np.uint64(1)) * _GOLDEN
        return _fmix(_fmix(grid ^ positions).sum(axis=1, dtype=np.uint64) + np.uint64(width))
    filled = column.fill_null(False if t == pa.bool_() else 0) if column.null_count else column
    return _bits(np.asarray(filled.to_numpy(zero_copy_only=False)))


def content_ids(batch: pa.RecordBatch, user_hashes: np.ndarray, payload: Sequence[pa.Field],
                explicit: str | None) -> np.ndarray:
    """Scheme 2 ids of every row of a conformed ``batch`` (meaningless for invalid rows).

    ``user_hashes``: :func:`bytes_hashes` of the user column. ``explicit``: the explicit id
    column's name, or None for content ids over ``payload``'s fields.
    """
    ts = np.asarray(batch.column(EVENT_TS).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    h = _fold(_fmix(user_hashes ^ _GOLDEN), ts.view(np.uint64) ^ _TS)
    if explicit is not None:
        return _fold(h, bytes_hashes(batch.column(explicit)) ^ _EXPLICIT)
    for f in sorted(payload, key=lambda f: f.name):
        column = batch.column(f.name)
        contribution = _fmix(value_hashes(column, f) ^ np.uint64(_blake64(f.name.encode())))
        folded = _fold(h, contribution)
        h = folded if column.null_count == 0 else np.where(_valid(column), folded, h)
    return h


@dataclass(frozen=True)
class Coordinates:
    """Where the valid rows of a batch go, column-wise: the rows' indices in the batch, each
    one's user row prefix (:func:`keys.user_prefix`), ``event_ts`` and event id."""

    rows: np.ndarray  # int64
    prefixes: pa.Array  # binary
    ts: np.ndarray  # int64
    ids: np.ndarray  # uint64

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[tuple[int, bytes, int, int]]:
        """``(row index, user prefix, event_ts, event_id)`` per valid row, in row order."""
        return zip(self.rows.tolist(), self.prefixes.to_pylist(), self.ts.tolist(), self.ids.tolist(), strict=True)


def coordinates(batch: pa.RecordBatch, valid: np.ndarray, *, salt_buckets: int, scheme: int,
                payload: Sequence[pa.Field], identities: Sequence[bytes] | None = None) -> Coordinates:
    """The :class:`Coordinates` of the valid rows of a conformed ``batch`` (valid rows have a
    user, a time and, with an explicit ``event_id`` column, an id) under id ``scheme``.

    ``identities``: per row of ``batch``, the content identity bytes of
    :meth:`~store.format.payload.PayloadCodec.encode`; scheme 1 with content ids needs them.
    """
    rows = np.flatnonzero(valid).astype(np.int64)
    valid_rows = batch.take(pa.array(rows, pa.int64()))
    users = pc.dictionary_encode(valid_rows.column(USER_ID))
    names = users.dictionary.to_pylist()
    codes = np.asarray(users.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    prefixes = pa.array([keys.user_prefix(u, salt_buckets) for u in names], pa.binary()).take(users.indices)
    ts = np.asarray(valid_rows.column(EVENT_TS).to_numpy(zero_copy_only=False), dtype=np.int64)
    explicit = EVENT_ID if EVENT_ID in batch.schema.names else None
    if scheme == 1:
        if explicit is not None:
            identity: Sequence[bytes] = [b"id:" + v.encode() for v in valid_rows.column(explicit).to_pylist()]
        elif identities is None:
            raise ValueError("id scheme 1 with content ids needs the rows' identity bytes")
        else:
            identity = [identities[i] for i in rows.tolist()]
        ids = blake_ids(prefixes.to_pylist(), ts.tolist(), identity)
    else:
        hashes = np.fromiter((_blake64(keys.user_bytes(u)) for u in names), dtype=np.uint64, count=len(names))
        user_hashes = hashes[codes]
        ids = content_ids(valid_rows, user_hashes, payload, explicit)
    return Coordinates(rows, prefixes, ts, ids)


def blake_ids(prefixes: Sequence[bytes], ts: Sequence[int], identities: Sequence[bytes]) -> np.ndarray:
    """Scheme 1 ids: :func:`keys.event_id` per event (``prefixes`` are row prefixes)."""
    return np.fromiter((keys.event_id(p[3:], w, i) for p, w, i in zip(prefixes, ts, identities, strict=True)),
                       dtype=np.uint64, count=len(ts))

