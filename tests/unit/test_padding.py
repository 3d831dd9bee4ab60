"""store.arrays.padded against a plain loop, on random list columns (sliced, with nulls)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from store.arrays import padded

ROWS = st.lists(st.lists(st.one_of(st.none(), st.integers(-(2**40), 2**40)), max_size=12), max_size=9)


@settings(max_examples=200, deadline=None)
@given(rows=ROWS, skip=st.integers(0, 9), max_len=st.integers(1, 10), pad=st.sampled_from([0, -1]))
def test_padded_equals_a_plain_loop(rows: list[list[int | None]], skip: int, max_len: int, pad: int) -> None:
    lists = pa.array(rows, pa.list_(pa.int64())).slice(min(skip, len(rows)))  # offsets not from 0
    kept = [r for r in rows[min(skip, len(rows)):]]
    lengths = np.minimum(np.array([len(r) for r in kept], dtype=np.int64), max_len)
    got = padded(lists.values, lists.offsets.to_numpy()[:-1], lengths, max_len, pad)
    want = np.full((len(kept), max_len), pad, dtype=np.int64)
    for i, r in enumerate(kept):
        for j, v in enumerate(r[:max_len]):
            want[i, j] = pad if v is None else v
    assert got.shape == want.shape and np.array_equal(got, want)


def test_strings_pad_with_none_and_vectors_keep_their_width() -> None:
    words = pa.array(["a", None, "b"])
    assert padded(words, np.array([0, 2]), np.array([2, 1]), 3).tolist() == [["a", None, None], ["b", None, None]]
    vectors = pa.array([[1.0, 2.0], None, [3.0, 4.0]], pa.list_(pa.float32(), 2))
    got = padded(vectors, np.array([0]), np.array([3]), 4)
    assert got.shape == (1, 4, 2) and got[0].tolist() == [[1, 2], [0, 0], [3, 4], [0, 0]]
