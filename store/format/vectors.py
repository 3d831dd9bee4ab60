"""Fixed-size vectors (embeddings): from cell bytes to Arrow, and from Arrow to numpy.

A vector field has type ``fixed_size_list<item, width>``; its cell bytes are the ``width``
items, little-endian, back to back (see :mod:`store.format.payload`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from store.errors import SchemaError


def item_dtype(vector_type: pa.DataType) -> np.dtype[Any]:
    """The numpy dtype a vector's items are stored as: the item type, little-endian."""
    native: np.dtype[Any] = np.dtype(vector_type.value_type.to_pandas_dtype())
    return native.newbyteorder("<")


def vector_array(values: Sequence[bytes | None], vector_type: pa.DataType) -> pa.FixedSizeListArray:
    """An Arrow array of ``vector_type`` from each vector's stored bytes (None for a null vector).

    One buffer for all items; no Python object per item.

    Raises:
        SchemaError: a value is not exactly ``width`` items long.
    """
    dtype = item_dtype(vector_type)
    size = dtype.itemsize * vector_type.list_size
    if any(v is not None and len(v) != size for v in values):
        raise SchemaError(f"a {vector_type} value must be {size} bytes")
    nulls = [v is None for v in values]
    zero = bytes(size)  # a null vector's slots are zeros
    flat = np.frombuffer(b"".join(zero if v is None else v for v in values), dtype=dtype)
    items = pa.array(flat.astype(dtype.newbyteorder("="), copy=False), vector_type.value_type)
    mask = pa.array(nulls, pa.bool_()) if any(nulls) else None
    return pa.FixedSizeListArray.from_arrays(items, type=vector_type, mask=mask)


def vector_rows(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A vector column as numpy: ``(rows, valid)``, ``rows`` of shape ``[len(column), width]``.

    Row ``i`` is always vector ``i`` (``flatten()`` would drop null vectors and shift the
    rest); a null vector's row holds the slots behind it (zeros in arrays from
    :func:`vector_array`) and ``valid[i]`` is False. ``rows`` has the item type (a null
    item reads as 0; the store never holds one) and may be read-only.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    width = column.type.list_size
    items = column.values.slice(column.offset * width, len(column) * width)
    if items.null_count:
        items = items.fill_null(0)
    rows = items.to_numpy(zero_copy_only=False).reshape(-1, width)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    return rows, valid


def null_vector_items(col: pa.Array) -> np.ndarray:
    """Per row of a fixed-size-list column: the index of the first null item of a non-null
    vector, else -1. (A null *vector* is fine in a nullable field; a null *item* has no
    encoding: it would be written as 0 or NaN.)"""
    n, width = len(col), col.type.list_size
    first = np.full(n, -1, dtype=np.int64)
    items = col.values.slice(col.offset * width, n * width)  # .values ignores the slice offset
    if n == 0 or width == 0 or items.null_count == 0:
        return first
    nulls = np.asarray(items.is_null().to_numpy(zero_copy_only=False), dtype=bool).reshape(n, width)
    nulls &= np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)[:, None]
    bad = nulls.any(axis=1)
    first[bad] = nulls[bad].argmax(axis=1)
    return first
