"""Vectors (embeddings) from stored bytes to Arrow and from Arrow to numpy, nulls in place."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from store.arrays import to_numpy
from store.format.payload import PayloadCodec, payload_array
from store.format.schema import EventSchema
from store.format.vectors import vector_array, vector_rows

EMB = pa.list_(pa.float16(), 3)
Q = pa.list_(pa.int8(), 2)


@pytest.mark.parametrize(("vector_type", "values"), [
    (EMB, [[1.0, -2.0, 0.5], None, [0.0, 3.0, 65504.0]]),
    (Q, [[-128, 127], [0, 1], None]),
])
def test_decoded_vectors_come_back_as_the_arrow_array_that_was_encoded(vector_type: pa.DataType,
                                                                        values: list[list[float] | None]) -> None:
    schema = EventSchema.of([pa.field("v", vector_type)])
    column = pa.array(values, vector_type)
    codec = PayloadCodec([schema])
    encoded, _ = codec.encode(pa.RecordBatch.from_arrays([column], names=["v"]))
    got = payload_array([codec.decode(e)[0] for e in encoded], vector_type)
    assert got.type == vector_type
    assert got.to_pylist() == values


def test_scalars_and_empty_vector_columns_are_plain_arrays() -> None:
    assert payload_array([1, None], pa.int32()).to_pylist() == [1, None]
    assert payload_array([], EMB).type == EMB and len(payload_array([], EMB)) == 0


def test_a_value_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="must be 6 bytes"):
        vector_array([b"\x00" * 4], EMB)


def test_vector_rows_keep_null_vectors_in_place_in_sliced_and_chunked_columns() -> None:
    column = pa.array([[1, 2], None, [5, 6], [7, 8]], Q)
    rows, valid = vector_rows(pa.chunked_array([column.slice(1, 2), column.slice(3)]))
    assert valid.tolist() == [False, True, True]
    assert rows[1:].tolist() == [[5, 6], [7, 8]]
    assert rows.shape == (3, 2) and rows.dtype == np.int8


def test_to_numpy_pads_a_null_vector_and_keeps_the_events_after_it_aligned() -> None:
    events = pa.array([{"event_ts": 3, "event_id": 1, "v": [1, 2]},
                       {"event_ts": 2, "event_id": 2, "v": None},
                       {"event_ts": 1, "event_id": 3, "v": [5, 6]}],
                      pa.struct([("event_ts", pa.int64()), ("event_id", pa.uint64()), ("v", Q)]))
    sequences = pa.table({"length": pa.array([1, 2], pa.int32()),
                          "sequence": pa.ListArray.from_arrays(pa.array([0, 1, 3], pa.int32()), events)})
    arrays, lengths = to_numpy(sequences, max_len=3, pad=9)
    assert lengths.tolist() == [1, 2]
    assert arrays["v"].tolist() == [[[1, 2], [9, 9], [9, 9]],
                                    [[9, 9], [5, 6], [9, 9]]]
