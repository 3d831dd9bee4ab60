"""Sequences as padded numpy arrays: :func:`to_numpy` for the reader's output, and the one
padding helper under it, :func:`padded` (also used by the PyTorch dataset over export shards).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from store.format.vectors import vector_rows

__all__ = ["padded", "to_numpy"]


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


def to_numpy(sequences: pa.Table, *, max_len: int, fields: Sequence[str] | None = None,
             pad: int | float = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Padded numpy arrays from :func:`store.reader.read_sequences` output.

    Returns ``(arrays, lengths)``: ``arrays[name]`` has shape ``[batch, max_len]`` (plus the
    vector width for fixed-size-list fields), position 0 holding the first event of the
    sequence's order; slots past ``lengths[i]`` hold ``pad`` (None for strings).
    ``event_ts`` and ``event_id`` are always included.
    """
    seq = sequences.column("sequence").combine_chunks()
    events = seq.flatten()
    lengths = np.minimum(np.asarray(sequences.column("length").to_numpy(), dtype=np.int64), max_len)
    starts = np.asarray(seq.offsets.to_numpy()[:-1], dtype=np.int64)
    names = ["event_ts", "event_id", *(fields if fields is not None else
                                       [f.name for f in events.type if f.name not in ("event_ts", "event_id")])]
    out = {name: padded(events.field(name), starts, lengths, max_len, pad) for name in names}
    return out, lengths.astype(np.int32)
