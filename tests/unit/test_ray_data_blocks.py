"""What the Datasink undoes of Ray's numpy conversions before the writer judges a block (no server)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from ray.data.extensions import ArrowTensorArray

from ray_jobs.data.sink import _events
from store import EventSchema
from store.inputs.rows import conform

SCHEMA = EventSchema.of([pa.field("item_id", pa.int64(), nullable=False), pa.field("dwell_ms", pa.int32()),
                         pa.field("score", pa.float32()), pa.field("emb", pa.list_(pa.float16(), 2))])
NOW = 1_767_225_600_000


def _reasons(block: pa.Table) -> list[str]:
    _, verdicts = conform(pa.RecordBatch.from_pydict(block.to_pydict()), SCHEMA, now_ms=NOW)
    return list(verdicts.reason)


def test_nan_in_an_integer_field_is_the_null_it_was_and_a_float_field_keeps_its_nan() -> None:
    # What a numpy batch makes of nullable int64 columns: float64 with NaN.
    block = pa.table({"user_id": ["u1", "u2", "u3", "u4"], "event_ts": [NOW, NOW, NOW, float("nan")],
                      "item_id": [1.0, float("nan"), 3.0, 4.0], "dwell_ms": [float("nan"), 20.0, 2.0**40, 1.0],
                      "score": pa.array([float("nan"), 0.5, 1.0, 1.0], pa.float32())})
    events = _events(block, SCHEMA.payload)
    assert events.column("dwell_ms").to_pylist()[:2] == [None, 20.0]
    assert np.isnan(events.column("score").to_pylist()[0])
    # Judged as the Parquet rows would be: a null dwell time is fine, a null item is missing, an
    # overflowing dwell time is the wrong type, a null time is missing. Left as NaN, the first would
    # have been refused.
    assert _reasons(events) == ["", "missing_field", "wrong_type", "missing_timestamp"]
    assert _reasons(block)[0] == "wrong_type"


def test_a_ray_tensor_column_becomes_a_vector_field() -> None:
    emb = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    block = pa.table({"user_id": ["u1", "u2"], "event_ts": [NOW, NOW], "item_id": [1, 2],
                      "emb": ArrowTensorArray.from_numpy(emb)})
    batch, verdicts = conform(pa.RecordBatch.from_pydict(_events(block, SCHEMA.payload).to_pydict()), SCHEMA,
                              now_ms=NOW)
    assert verdicts.valid.all()
    assert batch.column("emb").to_pylist() == [[1.0, 2.0], [3.0, 4.0]]
