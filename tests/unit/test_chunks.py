"""Chunk cells round-trip every payload type, keep the raw tier's order and read across versions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.errors import SchemaError
from store.format import chunk
from store.format.chunk import chunk_schema, decode_chunk, decode_chunks, encode_chunk, is_chunk
from store.format.event_ids import coordinates
from store.format.keys import prefix_user, user_prefix
from store.format.payload import PayloadCodec, uvarint
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


# Format 3: times as gaps, repeated strings as dictionaries, content ids recomputed, not stored.

ROW = user_prefix("user-ü", 16)
WIDE_TS = st.one_of(st.integers(T, T + 50), st.integers(0, 2**62))  # gaps beyond 32 bits too


def _with_content_ids(rows: list[dict[str, Any]], row: bytes = ROW) -> list[dict[str, Any]]:
    """``rows`` with the ids the writer gives events without an explicit id (scheme 2)."""
    if not rows:
        return rows
    user = prefix_user(row).decode()
    batch = pa.Table.from_pylist([{"user_id": user, **{k: v for k, v in r.items() if k != "event_id"}} for r in rows],
                                 schema=pa.schema([pa.field("user_id", pa.string()), pa.field("event_ts", pa.int64()),
                                                   *SCHEMA.payload])).to_batches()[0]
    ids = coordinates(batch, np.ones(len(rows), bool), salt_buckets=16, scheme=2, payload=SCHEMA.payload).ids
    return [{**r, "event_id": int(i)} for r, i in zip(rows, ids.tolist(), strict=True)]


def _layout(value: bytes) -> int:
    assert value[0] == chunk.FORMAT
    return int.from_bytes(value[3:7], "little")  # format (1 byte), schema version (2), layout (4)


def _newest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda e: (e["event_ts"], e["event_id"]), reverse=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({**EVENT.wrapped_strategy.mapping, "event_ts": WIDE_TS,  # type: ignore[attr-defined]
                                       "event_type": st.one_of(st.sampled_from(["view", "click"]), st.text())}),
                max_size=60, unique_by=lambda e: e["event_ts"]),
       st.integers(-1, 59))
def test_a_chunk_of_content_ids_leaves_them_out_and_reads_them_back(rows: list[dict[str, Any]], foreign: int) -> None:
    rows = _with_content_ids(rows)
    if 0 <= foreign < len(rows):  # an explicit id among them: the chunk must store its ids
        rows[foreign]["event_id"] ^= 1
    value = encode_chunk(_table(rows), SCHEMA, ROW)
    assert is_chunk(value)
    assert bool(_layout(value) & chunk.STORED_IDS) == (0 <= foreign < len(rows) or not rows)
    assert decode_chunk(value, {1: SCHEMA}, SCHEMA, ROW).to_pylist() == _newest_first(rows)
    if rows and not _layout(value) & chunk.STORED_IDS:
        with pytest.raises(ValueError, match="decoded with their rows"):
            decode_chunk(value, {1: SCHEMA}, SCHEMA)
        other = user_prefix("someone else", 16)  # another user's ids: never the same events
        assert decode_chunk(value, {1: SCHEMA}, SCHEMA, other).column("event_id").to_pylist() != \
            [r["event_id"] for r in _newest_first(rows)]


def _format_2(rows: list[dict[str, Any]]) -> bytes:
    """A chunk as written before format 3."""
    batch = pa.RecordBatch.from_pylist(_newest_first(rows), schema=chunk_schema(SCHEMA))
    return bytes((chunk.FORMAT_2,)) + uvarint(SCHEMA.version) + batch.serialize().to_pybytes()


def test_chunks_of_both_formats_and_every_layout_decode_together_as_each_alone() -> None:
    v2 = SCHEMA.evolve_to(EventSchema.of([*SCHEMA.payload, pa.field("campaign", pa.string())]))
    base = {"dwell_ms": None, "raw": b"\x00", "emb": [1.5, 0.0, -2.0], "item_id": 3}
    repeated = [{**base, "event_ts": T - 7 * i, "event_type": "view" if i % 3 else "click"} for i in range(40)]
    unique = [{**base, "event_ts": T - 2**40 * i, "event_type": f"t{i}", "raw": bytes([i])}  # wide gaps, no dictionary
              for i in range(5)]
    rows = [user_prefix(u, 16) for u in ("a", "b", "c", "d")]
    old = _with_content_ids(repeated, rows[0])
    explicit = [{**r, "event_id": i} for i, r in enumerate(repeated)]
    values = [_format_2(old), encode_chunk(_table(_with_content_ids(repeated, rows[1])), SCHEMA, rows[1]),
              encode_chunk(_table(explicit), SCHEMA, rows[2]),
              encode_chunk(_table(_with_content_ids(unique, rows[3])), SCHEMA, rows[3])]
    layouts = [_layout(v) for v in values[1:]]
    both = chunk.DICTIONARY | chunk.DICTIONARY << 1  # event_type and raw
    assert layouts[0] == both and layouts[1] == both | chunk.STORED_IDS
    assert layouts[2] == chunk.WIDE_GAPS
    versions = {1: SCHEMA, 2: v2}
    events, counts = decode_chunks(values, versions, v2, rows)
    alone = [decode_chunk(v, versions, v2, r) for v, r in zip(values, rows, strict=True)]
    assert counts == [40, 40, 40, 5]
    assert events.to_pylist() == [e for t in alone for e in t.to_pylist()]
    assert alone[2].column("event_id").to_pylist() == list(range(40))  # newest (i = 0) first
    assert alone[0].drop_columns(["event_id"]).equals(alone[1].drop_columns(["event_id"]))
    assert len(values[1]) < 0.8 * len(values[0])  # no ids, 7 ms gaps in 32 bits, one-byte codes
