"""Event ids of scheme 2 (column-wise) and the payload sizes the writer judges without encoding."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from store.format import event_ids, keys
from store.format.payload import PayloadCodec
from store.format.schema import DEFAULT_SCHEMA, EventSchema
from store.inputs.rows import conform

NOW = 1_800_000_000_000
VECTOR_SCHEMA = EventSchema.of([pa.field("event_type", pa.string()), pa.field("emb", pa.list_(pa.float32(), 3)),
                                pa.field("score", pa.float64()), pa.field("raw", pa.binary())])


def _ids(cols: dict, schema: EventSchema = DEFAULT_SCHEMA, scheme: int = 2) -> np.ndarray:
    batch, verdicts = conform(pa.RecordBatch.from_pydict(cols), schema, now_ms=NOW)
    identities = PayloadCodec([schema]).encode(batch)[1]
    return event_ids.coordinates(batch, verdicts.valid, salt_buckets=4, scheme=scheme,
                                 payload=list(schema.payload), identities=identities).ids


def test_scheme_2_ids_depend_on_user_time_and_content_only() -> None:
    ids = _ids({"user_id": ["u", "u", "v", "u", "u", "u"],
                "event_ts": [NOW - 5, NOW - 5, NOW - 5, NOW - 6, NOW - 5, NOW - 5],
                "event_type": ["click", "click", "click", "click", "view", "click"], "item_id": [1, 1, 1, 1, 1, 2]})
    assert ids[0] == ids[1]  # the same event twice
    assert len(set(ids[1:].tolist())) == 5  # another user, time, type or item: another id
    again = _ids({"user_id": ["u"], "event_ts": [NOW - 5], "event_type": ["click"], "item_id": [1]})
    assert again[0] == ids[0]  # independent of the batch it is in


def test_a_field_added_later_and_null_leaves_ids_as_they_were() -> None:
    grown = EventSchema.of([*DEFAULT_SCHEMA.payload, pa.field("extra", pa.string())], version=2)
    old = _ids({"user_id": ["u"], "event_ts": [NOW - 5], "event_type": ["click"], "item_id": [1]})
    new = _ids({"user_id": ["u", "u"], "event_ts": [NOW - 5] * 2, "event_type": ["click"] * 2, "item_id": [1, 1],
                "extra": [None, "x"]}, grown)
    assert new[0] == old[0] and new[1] != old[0]


def test_vectors_floats_and_binary_are_part_of_the_content() -> None:
    ids = _ids({"user_id": ["u"] * 4, "event_ts": [NOW - 5] * 4, "event_type": ["a"] * 4,
                "emb": [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0]],
                "score": [0.5, 0.5, 0.5, 0.5], "raw": [b"x", b"x", b"x", b"y"]}, VECTOR_SCHEMA)
    assert ids[0] == ids[1] and len({int(ids[0]), int(ids[2]), int(ids[3])}) == 3


def test_scheme_1_keeps_the_blake2b_ids() -> None:
    ids = _ids({"user_id": ["u"], "event_ts": [NOW - 5], "event_type": ["click"], "item_id": [1]}, scheme=1)
    batch, _ = conform(pa.RecordBatch.from_pydict(
        {"user_id": ["u"], "event_ts": [NOW - 5], "event_type": ["click"], "item_id": [1]}), DEFAULT_SCHEMA, now_ms=NOW)
    identity = PayloadCodec([DEFAULT_SCHEMA]).encode(batch)[1][0]
    assert int(ids[0]) == keys.event_id(b"u", NOW - 5, identity)


@given(st.lists(st.tuples(st.one_of(st.none(), st.text(max_size=300)), st.one_of(st.none(), st.integers(-2**40, 2**40)),
                          st.one_of(st.none(), st.binary(max_size=20000))), min_size=1, max_size=30))
def test_payload_sizes_are_the_encoded_lengths(rows: list) -> None:
    fields = [pa.field("event_type", pa.string()), pa.field("n", pa.int64()), pa.field("raw", pa.binary()),
              pa.field("emb", pa.list_(pa.float32(), 2))]
    codec = PayloadCodec([EventSchema.of(fields)])
    batch = pa.RecordBatch.from_pydict({
        "event_type": [r[0] for r in rows], "n": [r[1] for r in rows], "raw": [r[2] for r in rows],
        "emb": [None if r[1] is None else [1.0, 2.0] for r in rows]},
        schema=pa.schema(fields))
    assert codec.sizes(batch).tolist() == [len(v) for v in codec.encode(batch)[0]]
