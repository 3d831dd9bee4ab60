"""The one padding helper: variable-length runs of an Arrow array as a ``[rows, max_len]`` array.

Used by :func:`store.reader.to_numpy` (sequences from the reader, hence by scoring, export
and Ray Data) and by the PyTorch dataset over export shards.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from store.vectors import vector_rows


def padded(values: pa.Array, starts: np.ndarray, lengths: np.ndarray, max_len: int,
           pad: int | float = 0) -> np.ndarray:
    """Row ``i`` holds ``values[starts[i] : starts[i] + lengths[i]]`` (``lengths`` at most
    ``max_len``) from position 0, then ``pad``: ``[rows, max_len]``, plus the vector width for
    fixed-size-list values. Nulls become ``pad`` (a null vector too); strings and binaries give
    an object array padded with None."""
    rows_n = len(lengths)
    lengths = np.asarray(lengths, dtype=np.int64)
    row = np.repeat(np.arange(rows_n), lengths)
    col = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    src = np.repeat(np.asarray(starts, dtype=np.int64), lengths) + col
    if pa.types.is_fixed_size_list(values.type):
        vectors, valid = vector_rows(values)
        out = np.full((rows_n, max_len, values.type.list_size), pad, dtype=vectors.dtype)
        keep = valid[src]  # a null vector stays pad, as a null scalar does
        out[row[keep], col[keep]] = vectors[src[keep]]
        return out
    if pa.types.is_string(values.type) or pa.types.is_binary(values.type):
        objects = np.asarray(values.to_pylist(), dtype=object)
        out = np.full((rows_n, max_len), None, dtype=object)
        out[row, col] = objects[src]
        return out
    flat = (values.fill_null(pad) if values.null_count else values).to_numpy(zero_copy_only=False)
    out = np.full((rows_n, max_len), pad, dtype=flat.dtype)
    out[row, col] = flat[src]
    return out
