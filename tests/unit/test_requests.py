"""Request normalisation: every documented shape, nothing read two ways, user ids as on writes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from store.errors import SchemaError
from store.requests import normalize, user_ids
from store.schema import DEFAULT_SCHEMA
from store.validate import conform

T = 1_800_000_000_000
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
    assert normalize(requests) == EXPECTED


def test_a_long_pair_of_columns_and_integral_float_timestamps() -> None:
    users, ts = normalize(([f"u{i}" for i in range(5)], np.full(5, float(T))))
    assert users == ["u0", "u1", "u2", "u3", "u4"] and ts == [T] * 5


def test_a_tuple_that_reads_two_ways_is_refused() -> None:
    with pytest.raises(SchemaError, match=r"ambiguous.*list of pairs"):
        normalize(((1, T), (2, T + 1)))
    # The same requests, unambiguous:
    assert normalize([(1, T), (2, T + 1)]) == (["1", "2"], [T, T + 1])
    assert normalize({"user_id": [1, T], "as_of_ts": [2, T + 1]}) == ([str(1), str(T)], [2, T + 1])


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
    ([("u1", T), (5, T)], "must all be strings, all bytes or all integers"),
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
        assert user_ids(ids) == batch.column("user_id").to_pylist() == normalize((ids, [T] * 3))[0]
