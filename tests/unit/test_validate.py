"""Validation: every bad row gets a reason, field and position; good rows pass through."""

from __future__ import annotations

import pyarrow as pa
import pytest

from store.errors import SchemaError
from store.format.schema import DEFAULT_SCHEMA, EventSchema
from store.format.vectors import null_vector_items
from store.inputs.rows import Reason, conform

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


@pytest.mark.parametrize(("column", "bad_value", "good"), [
    ("dwell_ms", 2**40, lambda i: i % 1000),      # int64 column into int32: overflow
    ("item_id", "x7", lambda i: str(i)),           # string column into int64: unparsable
])
def test_exactly_the_uncastable_rows_among_many_are_rejected(column: str, bad_value: object,
                                                             good: object) -> None:
    n, bad_at = 10_000, [0, 4_999, 5_000, 9_999]
    values = [bad_value if i in bad_at else good(i) for i in range(n)]  # type: ignore[operator]
    base = {"user_id": ["u"] * n, "event_ts": [NOW - 1] * n, "event_type": ["view"] * n,
            "item_id": list(range(n)), "dwell_ms": [1] * n}
    batch, verdicts = conform(pa.RecordBatch.from_pydict({**base, column: values}), DEFAULT_SCHEMA, now_ms=NOW)
    assert [i for i, r in enumerate(verdicts.reason.tolist()) if r] == bad_at
    assert set(verdicts.reason[bad_at].tolist()) == {Reason.WRONG_TYPE.value}
    kept = batch.column(column).to_pylist()
    assert kept[1] == int(good(1)) and kept[0] is None  # type: ignore[operator]


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


EMB = EventSchema.of([pa.field("emb", pa.list_(pa.float32(), 3)),
                      pa.field("q", pa.list_(pa.int8(), 2), nullable=False)])


def test_a_null_item_inside_a_vector_is_quarantined_never_written() -> None:
    rows = pa.RecordBatch.from_pydict({
        "user_id": ["u"] * 5, "event_ts": [NOW - 1] * 5,
        "emb": [[1.0, 2.0, 3.0], [1.0, None, 3.0], None, [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]],
        "q": [[1, 2], [1, 2], [1, 2], [None, 2], None],
    }, schema=pa.schema([pa.field("user_id", pa.string()), pa.field("event_ts", pa.int64()), *EMB.payload]))
    batch, verdicts = conform(rows, EMB, now_ms=NOW)
    # A whole null vector in a nullable field is fine; in a non-nullable one it is missing_field.
    assert verdicts.reason.tolist() == ["", "null_in_vector", "", "null_in_vector", "missing_field"]
    assert verdicts.field.tolist()[1:4:2] == ["emb", "q"]
    assert "item 1 of emb is null" in verdicts.detail[1] and "item 0 of q" in verdicts.detail[3]
    q = verdicts.quarantine(pa.array([100, 101, 102, 103, 104]).to_numpy(), None)
    assert q.column("position").to_pylist() == [101, 103, 104]
    # The rejected vectors are nulled, so nothing can encode them as 0 or NaN.
    assert batch.column("emb").to_pylist()[:3] == [[1.0, 2.0, 3.0], None, None]


def test_null_vector_items_respects_a_sliced_array() -> None:
    col = pa.array([[1.0, None, 3.0], [1.0, 2.0, 3.0], None, [None, 2.0, 3.0]], pa.list_(pa.float32(), 3))
    assert null_vector_items(col).tolist() == [1, -1, -1, 0]
    assert null_vector_items(col.slice(1)).tolist() == [-1, -1, 0]


@pytest.mark.parametrize(("values", "expected"), [
    ([5, 7, 5], ["5", "7", "5"]),
    ([b"a", "ü".encode(), b"c"], ["a", "ü", "c"]),
])
def test_user_ids_are_cast_to_their_string(values: list[object], expected: list[str]) -> None:
    batch, verdicts = conform(_batch(user_id=values), DEFAULT_SCHEMA, now_ms=NOW)
    assert verdicts.valid.all() and batch.column("user_id").to_pylist() == expected


def test_a_user_id_that_is_not_utf8_is_wrong_type() -> None:
    _, verdicts = conform(_batch(user_id=[b"\xff", b"u", b"u"]), DEFAULT_SCHEMA, now_ms=NOW)
    assert verdicts.reason.tolist() == ["wrong_type", "", ""] and verdicts.field[0] == "user_id"


@pytest.mark.parametrize(("ids", "reason", "detail"), [
    (pa.array([b"\xff\xfe", b"1", b"2"], pa.binary()), Reason.INVALID_EVENT_ID, "not valid UTF-8"),
    (pa.array(["", "1", "2"]), Reason.INVALID_EVENT_ID, "empty"),
    (pa.array([None, "1", "2"], pa.string()), Reason.MISSING_EVENT_ID, "null"),
    (pa.array([None, 1, 2], pa.int64()), Reason.MISSING_EVENT_ID, "null"),
])
def test_each_bad_event_id_is_quarantined_with_its_reason(ids: pa.Array, reason: Reason, detail: str) -> None:
    batch, verdicts = conform(_batch(event_id=ids), DEFAULT_SCHEMA, now_ms=NOW)  # type: ignore[arg-type]
    assert verdicts.reason.tolist() == [reason.value, "", ""]
    assert verdicts.field[0] == "event_id" and detail in verdicts.detail[0]
    assert batch.column("event_id").type == pa.string() and batch.column("event_id").to_pylist()[1:] == ["1", "2"]


def test_exactly_the_non_utf8_event_ids_among_many_are_rejected() -> None:
    n, bad_at = 10_000, [0, 4_999, 5_000, 9_999]
    ids = [b"\xc3\x28" if i in bad_at else f"e{i}".encode() for i in range(n)]
    base = {"user_id": ["u"] * n, "event_ts": [NOW - 1] * n, "event_type": ["view"] * n,
            "item_id": list(range(n)), "dwell_ms": [1] * n, "event_id": pa.array(ids, pa.binary())}
    batch, verdicts = conform(pa.RecordBatch.from_pydict(base), DEFAULT_SCHEMA, now_ms=NOW)
    assert [i for i, r in enumerate(verdicts.reason.tolist()) if r] == bad_at
    assert set(verdicts.reason[bad_at].tolist()) == {Reason.INVALID_EVENT_ID.value}
    assert batch.column("event_id").to_pylist()[1] == "e1"


@pytest.mark.parametrize(("ids", "expected"), [
    (pa.array([5, 2**63 - 1, -7], pa.int64()), ["5", "9223372036854775807", "-7"]),
    (pa.array([2**64 - 1, 0, 1], pa.uint64()), ["18446744073709551615", "0", "1"]),
    (pa.array(["x", "ü", "x"]).dictionary_encode(), ["x", "ü", "x"]),
    (pa.array(["a", "b", "c"], pa.large_string()), ["a", "b", "c"]),
])
def test_event_ids_are_cast_to_their_string(ids: pa.Array, expected: list[str]) -> None:
    batch, verdicts = conform(_batch(event_id=ids), DEFAULT_SCHEMA, now_ms=NOW)  # type: ignore[arg-type]
    assert verdicts.valid.all() and batch.column("event_id").to_pylist() == expected


def test_a_float_event_id_column_is_refused_as_a_whole() -> None:
    # 2**53 + 1 already became 2**53 as a float: two events would share one id.
    with pytest.raises(SchemaError, match="'event_id' must be string, binary or integer, not double"):
        conform(_batch(event_id=[1.0, 2.0, 3.0]), DEFAULT_SCHEMA, now_ms=NOW)
