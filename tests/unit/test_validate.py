"""Validation: every bad row gets a reason, field and position; good rows pass through."""

from __future__ import annotations

import pyarrow as pa
import pytest

from store.errors import SchemaError
from store.schema import DEFAULT_SCHEMA
from store.validate import Reason, conform

NOW = 1_800_000_000_000


def _batch(**overrides: list[object]) -> pa.RecordBatch:
    cols: dict[str, list[object]] = {
        "user_id": ["u", "u", "u"], "event_ts": [NOW - 1, NOW - 2, NOW - 3],
        "event_type": ["view"] * 3, "item_id": [1, 2, 3], "dwell_ms": [1, None, 3],
    }
    cols.update(overrides)
    return pa.RecordBatch.from_pydict(cols)


@pytest.mark.parametrize(("column", "values", "reason"), [
    ("user_id", [None, "u", "u"], Reason.MISSING_USER),
    ("user_id", ["", "u", "u"], Reason.MISSING_USER),
    ("user_id", ["x" * 2000, "u", "u"], Reason.USER_ID_TOO_LONG),
    ("event_ts", [None, NOW, NOW], Reason.MISSING_TIMESTAMP),
    ("event_ts", [-5, NOW, NOW], Reason.NEGATIVE_TIMESTAMP),
    ("event_ts", [NOW // 1000, NOW, NOW], Reason.SECONDS_NOT_MS),
    ("event_ts", [NOW * 1000, NOW, NOW], Reason.FUTURE_TIMESTAMP),
    ("item_id", ["abc", "2", "3"], Reason.WRONG_TYPE),
    ("item_id", [None, 2, 3], Reason.MISSING_FIELD),
    ("dwell_ms", [2**40, 1, 1], Reason.WRONG_TYPE),
])
def test_each_bad_row_gets_its_reason_and_field(column: str, values: list[object], reason: Reason) -> None:
    batch, verdicts = conform(_batch(**{column: values}), DEFAULT_SCHEMA, now_ms=NOW)
    assert verdicts.reason.tolist() == [reason.value, "", ""]
    assert verdicts.field[0] == column
    q = verdicts.quarantine(pa.array([10, 11, 12]).to_numpy(), "file.parquet")
    assert q.to_pylist()[0] | {"detail": None} == {"position": 10, "reason": reason.value, "field": column,
                                                   "detail": None, "source": "file.parquet"}
    assert batch.num_rows == 3 and batch.column("item_id").type == pa.int64()


def test_castable_values_are_accepted() -> None:
    batch, verdicts = conform(_batch(item_id=["1", "2", "3"]), DEFAULT_SCHEMA, now_ms=NOW)
    assert verdicts.valid.all()
    assert batch.column("item_id").to_pylist() == [1, 2, 3]


def test_columns_that_do_not_fit_are_a_clear_error() -> None:
    with pytest.raises(SchemaError, match=r"'extra'.*not in the table's schema"):
        conform(_batch(extra=[1, 2, 3]), DEFAULT_SCHEMA, now_ms=NOW)
    cols = _batch().to_pydict()
    del cols["item_id"]
    with pytest.raises(SchemaError, match=r"no column.*'item_id'"):
        conform(pa.RecordBatch.from_pydict(cols), DEFAULT_SCHEMA, now_ms=NOW)


def test_a_missing_nullable_column_reads_as_null() -> None:
    cols = _batch().to_pydict()
    del cols["dwell_ms"]
    batch, verdicts = conform(pa.RecordBatch.from_pydict(cols), DEFAULT_SCHEMA, now_ms=NOW)
    assert verdicts.valid.all() and batch.column("dwell_ms").null_count == 3
