"""The compact binary encoding of an event's payload (the cell value).

Layout::

    format (1 byte, = 1) | schema version (uvarint) | null bitmap (ceil(n/8) bytes) | fields

Fields follow in schema order, absent when null: fixed-width scalars little-endian,
strings/binary as ``uvarint length | bytes``, fixed-size lists as their raw items.
A value names its schema version, so a table's schema can grow: a reader decodes each
value with the version it was written with and fills fields added later with nulls.

Encoding is column-wise over a record batch; decoding is per value.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.errors import SchemaError
from store.format.schema import EventSchema
from store.format.vectors import item_dtype, null_vector_items, vector_array

FORMAT = 1
_FIXED = {
    pa.bool_(): "?", pa.int8(): "b", pa.int16(): "h", pa.int32(): "i", pa.int64(): "q",
    pa.uint8(): "B", pa.uint16(): "H", pa.uint32(): "I", pa.uint64(): "Q",
    pa.float16(): "e", pa.float32(): "f", pa.float64(): "d",
}


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def uvarint_lengths(n: np.ndarray) -> np.ndarray:
    """Element-wise ``len(uvarint(n))`` of non-negative int64s."""
    out = np.ones(len(n), dtype=np.int64)
    for bits in range(7, 64, 7):
        out += n >= (1 << bits)
    return out


def read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


@dataclass(frozen=True, slots=True)
class _FieldPlan:
    name: str
    kind: str  # "fixed" | "var" | "vector"
    size: int  # bytes of a fixed value or of a whole vector
    unpack: struct.Struct | None
    is_string: bool


def _plan(field: pa.Field) -> _FieldPlan:
    t = field.type
    if t in _FIXED:
        s = struct.Struct("<" + _FIXED[t])
        return _FieldPlan(field.name, "fixed", s.size, s, False)
    if pa.types.is_fixed_size_list(t):
        return _FieldPlan(field.name, "vector", item_dtype(t).itemsize * t.list_size, None, False)
    return _FieldPlan(field.name, "var", 0, None, pa.types.is_string(t))


def _pieces(column: pa.Array, field: pa.Field) -> list[bytes]:
    """Per-row encoded bytes of one column (b"" where null)."""
    n = len(column)
    t = field.type
    valid = np.ones(n, dtype=bool) if column.null_count == 0 else column.is_valid().to_numpy(zero_copy_only=False)
    if t in _FIXED:
        filled = column.fill_null(False if t == pa.bool_() else 0) if column.null_count else column
        raw = np.asarray(filled.to_numpy(zero_copy_only=False), dtype="<" + _FIXED[t]).tobytes()
        size = struct.calcsize(_FIXED[t])
        out = [raw[i * size : (i + 1) * size] for i in range(n)]
    elif pa.types.is_fixed_size_list(t):
        first_null = null_vector_items(column)
        if (first_null >= 0).any():
            row = int(np.argmax(first_null >= 0))
            raise SchemaError(f"field {field.name!r}, row {row}: item {int(first_null[row])} of the vector is null "
                             "and has no encoding; validate rows first (store.inputs.rows.conform)")
        size = item_dtype(t).itemsize * t.list_size
        flat = column.fill_null([0] * t.list_size) if column.null_count else column
        raw = np.asarray(flat.flatten().to_numpy(zero_copy_only=False)).astype(item_dtype(t), copy=False).tobytes()
        out = [raw[i * size : (i + 1) * size] for i in range(n)]
    else:
        values = column.to_pylist()
        out = []
        for v in values:
            if v is None:
                out.append(b"")
            else:
                data = v.encode("utf-8") if isinstance(v, str) else bytes(v)
                out.append(uvarint(len(data)) + data)
    if column.null_count:
        out = [p if ok else b"" for p, ok in zip(out, valid, strict=True)]
    return out


class PayloadCodec:
    """Encodes payloads with a table's current schema; decodes any of its versions.

    Args:
        versions: the table's registered schema versions.
        table: the table's name, for error messages.
    """

    def __init__(self, versions: Sequence[EventSchema], *, table: str = "") -> None:
        if not versions:
            raise SchemaError("'versions' must not be empty")
        self.table = table
        self.versions = {s.version: s for s in versions}
        self.current = max(versions, key=lambda s: s.version)
        self._header = bytes((FORMAT,)) + uvarint(self.current.version)
        self._plans = {v: [_plan(f) for f in s.payload] for v, s in self.versions.items()}
        self._target = list(self.current.payload.names)
        # Per version: (bit index, plan, position in the current schema's field order).
        self._layouts = {v: [(i, p, self._target.index(p.name)) for i, p in enumerate(plans)]
                         for v, plans in self._plans.items()}

    @property
    def field_names(self) -> list[str]:
        return list(self._target)

    def sizes(self, batch: pa.RecordBatch) -> np.ndarray:
        """Per row, the length of the value :meth:`encode` would give it, without encoding (int64)."""
        n = batch.num_rows
        fields = list(self.current.payload)
        out = np.full(n, len(self._header) + (len(fields) + 7) // 8, dtype=np.int64)
        for f in fields:
            column = batch.column(f.name)
            if f.type in _FIXED or pa.types.is_fixed_size_list(f.type):
                size = np.full(n, _plan(f).size, dtype=np.int64)
            else:
                length = np.asarray(pc.binary_length(column).fill_null(0).to_numpy(zero_copy_only=False), np.int64)
                size = length + uvarint_lengths(length)
            if column.null_count:
                size[~np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)] = 0
            out += size
        return out

    def encode(self, batch: pa.RecordBatch) -> tuple[list[bytes], list[bytes]]:
        """Encode the payload columns of ``batch`` (already validated and cast).

        Returns ``(values, identities)``: the cell values, and per row the bytes an event's
        content identity is hashed from — independent of the schema version, so a field
        added later (null for old events) does not change an old event's identity.
        """
        n = batch.num_rows
        fields = list(self.current.payload)
        pieces = {f.name: _pieces(batch.column(f.name), f) for f in fields}
        bitmap_len = (len(fields) + 7) // 8
        bits = np.zeros((n, max(bitmap_len, 1)), dtype=np.uint8)
        for i, f in enumerate(fields):
            col = batch.column(f.name)
            if col.null_count:
                nulls = pc.is_null(col).to_numpy(zero_copy_only=False)
                bits[nulls, i // 8] |= np.uint8(1 << (i % 8))
        bitmaps = [row.tobytes()[:bitmap_len] for row in bits]
        header = self._header
        values = [header + b"".join(parts) for parts in zip(bitmaps, *(pieces[f.name] for f in fields), strict=True)]
        tagged = []
        for name in sorted(pieces):
            tag = name.encode() + b"="
            tagged.append([tag + p if p else b"" for p in pieces[name]])
        # Null fields contribute nothing, so a field added later (null) leaves identities as they were.
        if not tagged:
            return values, [b""] * n
        identities = [b"\x00".join(p for p in parts if p) for parts in zip(*tagged, strict=True)]
        return values, identities

    def decode(self, value: bytes) -> list[Any]:
        """Payload values in the current schema's field order (None where null or absent).

        Strings come back as ``str``, binary and fixed-size lists as ``bytes``.

        Raises:
            SchemaError: the value names a schema version this codec does not know, e.g. one
                registered by another process after this table was opened (open it again).
            SchemaError: the value is not in a payload format this codec knows (corrupt, or
                written by something other than seqstore).
        """
        if not value or value[0] != FORMAT:
            raise SchemaError(f"a value of {self.table or 'the table'!r} is not in a payload format seqstore "
                              f"knows (format byte {value[:1]!r})")
        version, pos = read_uvarint(value, 1)
        layout = self._layouts.get(version)
        if layout is None:
            raise SchemaError(self._unknown_version(version))
        bitmap_len = (len(layout) + 7) // 8
        bitmap = value[pos : pos + bitmap_len]
        pos += bitmap_len
        out: list[Any] = [None] * len(self._target)
        for i, plan, target in layout:
            if bitmap and bitmap[i >> 3] & (1 << (i & 7)):
                continue
            if plan.kind == "fixed":
                out[target] = plan.unpack.unpack_from(value, pos)[0]  # type: ignore[union-attr]
                pos += plan.size
            elif plan.kind == "vector":
                out[target] = value[pos : pos + plan.size]
                pos += plan.size
            else:
                length, pos = read_uvarint(value, pos)
                data = value[pos : pos + length]
                out[target] = data.decode("utf-8") if plan.is_string else data
                pos += length
        return out

    def _unknown_version(self, version: int) -> str:
        known = sorted(self._layouts)
        table = f"table {self.table!r}" if self.table else "the table"
        if version > known[-1]:
            return (f"a value of {table} was written with schema version {version}, newer than the versions "
                    f"this handle knows ({known}); the schema evolved after the table was opened: open it again "
                    "(SequenceStore.table) to read it")
        return f"a value of {table} names schema version {version}, which is not registered (known: {known})"


def payload_array(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
    """One field's decoded values (as :meth:`PayloadCodec.decode` returns them) as an Arrow array.

    None is null. Vectors, decoded as their stored bytes, become a ``fixed_size_list``
    array without a Python object per item (:func:`store.format.vectors.vector_array`).
    """
    if pa.types.is_fixed_size_list(arrow_type):
        return vector_array(values, arrow_type)
    return pa.array(values, arrow_type)


def feature_codecs(features: pa.Schema) -> dict[str, PayloadCodec]:
    """One single-field codec per feature (a value carries its own null bit and version)."""
    return {f.name: PayloadCodec([EventSchema(pa.schema([f]))]) for f in features}
