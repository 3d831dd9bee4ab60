"""Request normalisation: every documented shape, nothing read two ways, user ids as on writes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from store.errors import InvalidRequestError, SchemaError
from store.format.schema import DEFAULT_SCHEMA
from store.inputs.requests import check_times, normalize, request_table, user_ids
from store.inputs.rows import DEFAULT_MAX_FUTURE_MS, MIN_PLAUSIBLE_MS, conform

T = 1_700_000_000_000
EXPECTED = (["u1", "u2"], [T, T + 1])


@pytest.mark.parametrize("requests", [
    [("u1", T), ("u2", T + 1)],
    (("u1", T), ("u2", T + 1)),  # a tuple of pairs is pairs, not two columns
    [["u1", T], ["u2", T + 1]],
    iter([("u1", T), ("u2", T + 1)]),
    (["u1", "u2"], [T, T + 1]),
    (("u1", "u2"), (T, T + 1)),
    (np.array(["u1", "u2"]), np.array([T, T + 1])),
    (pa.array(["u1", "u2"]), pa.chunked_array([[T], [T + 1]])),
    {"user_id": ["u1", "u2"], "as_of_ts": [T, T + 1]},
    pa.table({"user_id": ["u1", "u2"], "as_of_ts": [T, T + 1]}),
    pa.RecordBatch.from_pydict({"user_id": ["u1", "u2"], "as_of_ts": [T, T + 1], "label": [1, 0]}),
])
def test_every_documented_shape(requests: Any) -> None:
    batch = normalize(requests)
    assert (batch.users, batch.ts) == EXPECTED
    assert batch.ids.to_pylist() == ["u1", "u2"]


def test_a_long_pair_of_columns_and_integral_float_timestamps() -> None:
    batch = normalize(([f"u{i}" for i in range(5)], np.full(5, float(T))))
    assert batch.users == ["u0", "u1", "u2", "u3", "u4"] and batch.ts == [T] * 5


def test_a_tuple_that_reads_two_ways_is_refused() -> None:
    with pytest.raises(SchemaError, match=r"ambiguous.*list of pairs"):
        normalize(((1, T), (2, T + 1)))
    # The same requests, unambiguous:
    assert normalize([(1, T), (2, T + 1)]).users == ["1", "2"]
    columns = normalize({"user_id": [1, T], "as_of_ts": [T + 2, T + 1]}, now_ms=T)
    assert (columns.users, columns.ts) == ([str(1), str(T)], [T + 2, T + 1])


@pytest.mark.parametrize(("requests", "match"), [
    (("u1", T), "one .* pair; pass a list of pairs"),
    ([("u1", T, 0)], "request 0 is .* not a .* pair"),
    (["u1"], "request 0 is 'u1', not a"),
    (5, "not int"),
    (pa.table({"user_id": ["u"]}), r"need column\(s\) \['as_of_ts'\]"),
    ((["u1", "u2"], [T]), "2 user ids but 1 timestamps"),
    ([("u1", None)], "request 0 has a null as_of_ts"),
    ([("u1", T), ("u2", 1.5)], "int64 milliseconds"),
    ([("u1", "1800000000000")], "int64 milliseconds UTC, not string"),
    ([("u1", T), (None, T)], "user_id at position 1: missing_user: user_id is null"),
    ([("", T)], "user_id at position 0: missing_user: user_id is empty"),
    ([("x" * 2000, T)], "user_id_too_long"),
    ([(b"\xff", T)], "wrong_type"),
    ([("u1", T), (1.5, T)], "must be strings, integers .* or bytes"),
])
def test_bad_requests_are_a_clear_error(requests: Any, match: str) -> None:
    with pytest.raises(SchemaError, match=match):
        normalize(requests)


def test_user_ids_are_keyed_exactly_as_the_event_writer_keys_them() -> None:
    for ids in ([5, 70, 5], [b"a", "ü".encode(), b"c"], ["a", "b", "c"], np.array([1, 2, 3], dtype=np.int32)):
        rows = pa.RecordBatch.from_pydict({"user_id": pa.array(ids), "event_ts": [T] * 3,
                                           "event_type": ["v"] * 3, "item_id": [1] * 3})
        batch, verdicts = conform(rows, DEFAULT_SCHEMA, now_ms=T)
        assert verdicts.valid.all()
        assert user_ids(ids) == batch.column("user_id").to_pylist() == normalize((ids, [T] * 3)).users


@pytest.mark.parametrize("ids", [
    pa.array([7, 8], pa.int64()),
    pa.array(["7", "8"]),
    [7, 8],
    np.array([7, 8], dtype=np.int64),
    [7, "8"],  # a Python mix of integers and strings is keyed as the writer keys each
])
def test_two_numeric_ids_in_a_table_are_never_ambiguous_and_keep_their_type(ids: Any) -> None:
    """A unit of exactly two requests used to be refused as ambiguous; a table never is."""
    batch = normalize(request_table(ids, [T, T + 1]))
    assert batch.users == ["7", "8"] and batch.ts == [T, T + 1]
    expected = pa.array(ids) if not isinstance(ids, list) or ids != [7, "8"] else pa.array(["7", "8"])
    assert batch.ids.equals(expected)


@pytest.mark.parametrize(("ts", "unit"), [
    (T * 1000, "microseconds"),
    (T // 1000, "seconds"),
    (-5, "negative"),
])
def test_implausible_request_times_are_refused_naming_column_row_and_unit(ts: int, unit: str) -> None:
    with pytest.raises(InvalidRequestError, match=rf"as_of_ts of request 1 is {ts}: .*{unit}.*allow_any_ts"):
        normalize([("u1", T), ("u2", ts)], now_ms=T)
    with pytest.raises(InvalidRequestError, match=r"label ts of row 11 of labels.parquet is .*allow_any_ts"):
        check_times(pa.array([T, ts]), "label ts", now_ms=T, source="labels.parquet", first_row=10)
    # The escape hatch, for deliberate far-past or far-future reads:
    assert normalize([("u1", T), ("u2", ts)], now_ms=T, allow_any_ts=True).ts == [T, ts]


def test_request_times_use_the_writers_rule() -> None:
    """The boundary is exactly the writer's: what conform accepts as an event time, reads accept."""
    edge = [MIN_PLAUSIBLE_MS - 1, MIN_PLAUSIBLE_MS, T + DEFAULT_MAX_FUTURE_MS, T + DEFAULT_MAX_FUTURE_MS + 1]
    rows = pa.RecordBatch.from_pydict({"user_id": ["u"] * 4, "event_ts": edge, "event_type": ["v"] * 4,
                                       "item_id": [1] * 4})
    _, verdicts = conform(rows, DEFAULT_SCHEMA, now_ms=T)
    for ts, ok in zip(edge, verdicts.valid.tolist(), strict=True):
        if ok:
            assert normalize([("u", ts)], now_ms=T).ts == [ts]
        else:
            with pytest.raises(InvalidRequestError):
                normalize([("u", ts)], now_ms=T)
