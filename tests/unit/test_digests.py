"""Content digests (store.format.digests) agree on the three forms an event's payload takes — the
writer's Arrow input, a raw cell decoded, a chunk decoded — on random payloads of every
type, survive a schema version that adds a field, and tell different payloads apart."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from store.format.chunk import decode_chunk, encode_chunk
from store.format.digests import content_digests
from store.format.payload import PayloadCodec, payload_array
from store.format.schema import EventSchema
from tests.unit.test_codec_schema import RICH  # every payload type

LATER = EventSchema.of([*RICH.payload, pa.field("added", pa.string())], version=2)

rows = st.fixed_dictionaries({
    "event_type": st.sampled_from(["view", "clïck", ""]),
    "item_id": st.integers(-(2**63), 2**63 - 1),
    "dwell_ms": st.none() | st.integers(-(2**31), 2**31 - 1),
    "score": st.none() | st.floats(width=32, allow_nan=False),
    "flag": st.none() | st.booleans(),
    "raw": st.none() | st.binary(max_size=6),
    "emb": st.none() | st.lists(st.floats(width=16, allow_nan=False), min_size=4, max_size=4),
    "q": st.none() | st.lists(st.integers(-128, 127), min_size=3, max_size=3),
})


@settings(max_examples=200, deadline=None)
@given(st.lists(rows, min_size=1, max_size=30))
def test_input_raw_cell_and_chunk_give_the_same_digests(data: list[dict[str, object]]) -> None:
    batch = pa.RecordBatch.from_pylist(data, schema=RICH.payload)
    want = content_digests(batch, RICH.payload)

    codec = PayloadCodec([RICH])
    decoded = [codec.decode(v) for v in codec.encode(batch)[0]]
    raw = pa.table([payload_array([d[j] for d in decoded], f.type) for j, f in enumerate(RICH.payload)],
                   schema=RICH.payload)
    assert content_digests(raw, RICH.payload).tolist() == want.tolist()

    n = batch.num_rows
    events = pa.table({"event_ts": pa.array(np.arange(n, 0, -1), pa.int64()),
                       "event_id": pa.array(np.arange(n), pa.uint64()), **{f.name: batch.column(f.name)
                                                                          for f in RICH.payload}})
    chunk = encode_chunk(events, RICH)
    assert content_digests(decode_chunk(chunk, {1: RICH}, RICH), RICH.payload).tolist() == want.tolist()
    # Read under a later version that added a field: null there, so the same digests.
    later = decode_chunk(chunk, {1: RICH, 2: LATER}, LATER)
    assert content_digests(later, LATER.payload).tolist() == want.tolist()

    distinct = {tuple(sorted((k, repr(v)) for k, v in row.items())) for row in data}
    assert len(set(want.tolist())) == len(distinct)
