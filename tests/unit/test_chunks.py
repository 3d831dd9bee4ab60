"""Chunk cells round-trip every payload type, keep the raw tier's order and read across versions."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.errors import SchemaError
from store.format.chunk import decode_chunk, encode_chunk, is_chunk
from store.format.payload import PayloadCodec
from store.format.schema import EventSchema

SCHEMA = EventSchema.of([
    pa.field("event_type", pa.string(), nullable=False),
    pa.field("item_id", pa.int64(), nullable=False),
    pa.field("dwell_ms", pa.int32()),
    pa.field("raw", pa.binary()),
    pa.field("emb", pa.list_(pa.float16(), 3)),
])
T = 1_700_000_000_000

EVENT = st.fixed_dictionaries({
    "event_ts": st.integers(T, T + 50), "event_id": st.integers(0, 2**64 - 1),
    "event_type": st.sampled_from(["view", "click", "ü"]), "item_id": st.integers(-2**63, 2**63 - 1),
    "dwell_ms": st.one_of(st.none(), st.integers(-2**31, 2**31 - 1)),
    "raw": st.one_of(st.none(), st.binary(max_size=8)),
    "emb": st.one_of(st.none(), st.lists(st.sampled_from([0.0, 1.5, -2.0]), min_size=3, max_size=3)),
})


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    schema = pa.schema([pa.field("event_ts", pa.int64()), pa.field("event_id", pa.uint64()), *SCHEMA.payload])
    return pa.Table.from_pylist(rows, schema=schema)


@settings(max_examples=200, deadline=None)
@given(st.lists(EVENT, max_size=60, unique_by=lambda e: (e["event_ts"], e["event_id"])))
def test_a_chunk_round_trips_its_events_newest_first(rows: list[dict[str, Any]]) -> None:
    value = encode_chunk(_table(rows), SCHEMA)
    assert is_chunk(value)
    back = decode_chunk(value, {1: SCHEMA}, SCHEMA).to_pylist()
    assert back == sorted(rows, key=lambda e: (e["event_ts"], e["event_id"]), reverse=True)


def test_raw_payloads_are_not_chunks() -> None:
    batch = _table([{"event_ts": T, "event_id": 1, "event_type": "v", "item_id": 1, "dwell_ms": None, "raw": None,
                     "emb": None}]).to_batches()[0]
    (raw,), _ = PayloadCodec([SCHEMA]).encode(batch)
    assert not is_chunk(raw) and not is_chunk(b"")


def test_a_chunk_of_an_older_version_reads_new_fields_as_null() -> None:
    v2 = SCHEMA.evolve_to(EventSchema.of([*SCHEMA.payload, pa.field("campaign", pa.string())]))
    rows = [{"event_ts": T, "event_id": 1, "event_type": "view", "item_id": 7, "dwell_ms": None, "raw": None,
             "emb": [1.5, 0.0, 0.0]}]
    back = decode_chunk(encode_chunk(_table(rows), SCHEMA), {1: SCHEMA, 2: v2}, v2)
    assert back.schema.names[-1] == "campaign" and back.to_pylist() == [{**rows[0], "campaign": None}]


@pytest.mark.parametrize(("rows", "match"), [
    ([{"event_ts": T, "event_id": 1}, {"event_ts": T, "event_id": 1}], "same \\(event_ts, event_id\\)"),
    ([{"event_ts": None, "event_id": 1}], "event_ts column holds a null"),
])
def test_a_chunk_refuses_what_it_cannot_hold(rows: list[dict[str, Any]], match: str) -> None:
    full = [{"event_type": "v", "item_id": 1, "dwell_ms": None, "raw": None, "emb": None, **r} for r in rows]
    with pytest.raises(SchemaError, match=match):
        encode_chunk(_table(full), SCHEMA)


def test_unknown_versions_and_corrupt_values_are_schema_errors() -> None:
    value = encode_chunk(_table([]), SCHEMA)
    with pytest.raises(SchemaError, match="version 1, which this table handle does not know"):
        decode_chunk(value, {}, SCHEMA)
    with pytest.raises(SchemaError, match="corrupt chunk"):
        decode_chunk(value[:3] + b"\x00" * 4, {1: SCHEMA}, SCHEMA)
    with pytest.raises(SchemaError, match="not a chunk"):
        decode_chunk(b"\x01\x01", {1: SCHEMA}, SCHEMA)
