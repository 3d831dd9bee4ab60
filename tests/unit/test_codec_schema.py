"""Payload codec round trips and schema evolution rules."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from store.errors import SchemaError
from store.format.payload import PayloadCodec
from store.format.schema import DEFAULT_SCHEMA, EventSchema

RICH = EventSchema.of([
    pa.field("event_type", pa.string(), nullable=False),
    pa.field("item_id", pa.int64(), nullable=False),
    pa.field("dwell_ms", pa.int32()),
    pa.field("score", pa.float32()),
    pa.field("flag", pa.bool_()),
    pa.field("raw", pa.binary()),
    pa.field("emb", pa.list_(pa.float16(), 4)),
    pa.field("q", pa.list_(pa.int8(), 3)),
])


def test_round_trip_every_type_with_nulls() -> None:
    batch = pa.RecordBatch.from_pydict({
        "event_type": ["view", "clïck"],
        "item_id": [2**40, -1],
        "dwell_ms": [None, 7],
        "score": [0.5, None],
        "flag": [True, None],
        "raw": [b"\x00\xff", None],
        "emb": [[1.0, 2.0, 0.5, -3.0], None],
        "q": [[1, -2, 3], [-128, 127, 0]],
    }, schema=RICH.payload)
    codec = PayloadCodec([RICH])
    values, _ = codec.encode(batch)
    first, second = (codec.decode(v) for v in values)
    assert first[:6] == ["view", 2**40, None, 0.5, True, b"\x00\xff"]
    assert np.frombuffer(first[6], "<f2").tolist() == [1.0, 2.0, 0.5, -3.0]
    assert np.frombuffer(first[7], "i1").tolist() == [1, -2, 3]
    assert second[:6] == ["clïck", -1, 7, None, None, None]
    assert second[6] is None


def test_old_values_decode_under_a_newer_schema_with_nulls() -> None:
    v1 = DEFAULT_SCHEMA
    v2 = v1.evolve_to(EventSchema.of([*v1.payload, pa.field("campaign", pa.string())]))
    assert v2.version == 2
    old = PayloadCodec([v1]).encode(pa.RecordBatch.from_pydict(
        {"event_type": ["view"], "item_id": [1], "dwell_ms": [5]}, schema=v1.payload))
    new = PayloadCodec([v1, v2])
    assert new.decode(old[0][0]) == ["view", 1, 5, None]
    # An old event re-written under v2 (campaign null) keeps its identity: no duplicate.
    rewritten = new.encode(pa.RecordBatch.from_pydict(
        {"event_type": ["view"], "item_id": [1], "dwell_ms": [5], "campaign": [None]}, schema=v2.payload))
    assert rewritten[1] == old[1]


def test_schema_changes_that_are_refused() -> None:
    base = DEFAULT_SCHEMA
    with pytest.raises(SchemaError, match="cannot change type from int64 to string"):
        base.evolve_to(EventSchema.of([pa.field("event_type", pa.string()), pa.field("item_id", pa.string()),
                                       pa.field("dwell_ms", pa.int32())]))
    with pytest.raises(SchemaError, match="must be nullable"):
        base.evolve_to(EventSchema.of([*base.payload, pa.field("x", pa.int8(), nullable=False)]))
    with pytest.raises(SchemaError, match="cannot be dropped"):
        base.evolve_to(EventSchema.of(list(base.payload)[:2]))
    with pytest.raises(SchemaError, match="unsupported type"):
        EventSchema.of([pa.field("m", pa.map_(pa.string(), pa.int8()))])
    with pytest.raises(SchemaError, match="int64 milliseconds"):
        EventSchema.of([pa.field("event_ts", pa.int32())])


def test_schema_serializes_through_arrow_ipc() -> None:
    assert EventSchema.from_bytes(RICH.to_bytes(), 3).payload.equals(RICH.payload)


def test_the_encoder_refuses_a_null_item_inside_a_vector() -> None:
    schema = EventSchema.of([pa.field("emb", pa.list_(pa.float32(), 3))])
    batch = pa.RecordBatch.from_pydict({"emb": [[1.0, 2.0, 3.0], None, [1.0, None, 3.0]]}, schema=schema.payload)
    with pytest.raises(ValueError, match=r"'emb', row 2: item 1 of the vector is null"):
        PayloadCodec([schema]).encode(batch)
    values, _ = PayloadCodec([schema]).encode(batch.slice(0, 2))  # a whole null vector is fine
    assert PayloadCodec([schema]).decode(values[1]) == [None]


def test_a_value_of_a_newer_schema_version_is_a_clear_error() -> None:
    v2 = DEFAULT_SCHEMA.evolve_to(EventSchema.of([*DEFAULT_SCHEMA.payload, pa.field("campaign", pa.string())]))
    newer = PayloadCodec([DEFAULT_SCHEMA, v2]).encode(pa.RecordBatch.from_pydict(
        {"event_type": ["view"], "item_id": [1], "dwell_ms": [5], "campaign": ["x"]}, schema=v2.payload))[0][0]
    stale = PayloadCodec([DEFAULT_SCHEMA], table="clicks")
    with pytest.raises(SchemaError, match=r"table 'clicks' was written with schema version 2.*\[1\].*open it again"):
        stale.decode(newer)
    with pytest.raises(SchemaError, match="not in a payload format seqstore knows"):
        stale.decode(b"")
