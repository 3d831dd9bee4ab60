"""Feature writes and reads key users exactly as events do; bad rows are refused, not mis-written.

A recording pool stands in for HBase: these tests check which rows the cells go to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pyarrow as pa
import pytest

from store import features
from store.errors import InvalidEventError, SchemaError
from store.format import keys
from store.format.schema import DEFAULT_SCHEMA
from store.io.connection import idl
from store.table.handle import TableHandle
from store.table.registry import Registration
from store.table.spec import TableSpec

T = 1_700_000_000_000
FEATURES = pa.schema([pa.field("clicks", pa.int64()), pa.field("emb", pa.list_(pa.float32(), 2))])


@dataclass
class RecordingPool:
    size: int = 1
    calls: list[tuple[str, Any]] = field(default_factory=list)
    executor: Any = None  # calls in the caller's thread

    def call(self, method: str, table: bytes, arg: Any) -> Any:
        self.calls.append((method, arg))
        if method == "getMultiple":
            return [idl().TResult(row=None, columnValues=[]) for _ in arg]
        if method == "get":
            return idl().TResult(row=None, columnValues=[])
        return None


def _table() -> Any:
    """A real handle on a pool that records its calls (and answers gets with nothing)."""
    return TableHandle.open(cast(Any, RecordingPool()),
                            Registration(TableSpec("t", features=FEATURES, salt_buckets=8), (DEFAULT_SCHEMA,)))


def _rows(table: Any, method: str) -> list[bytes]:
    return [p.row for m, arg in table.pool.calls if m == method for p in arg]


def test_integer_user_ids_are_written_to_the_row_of_their_string() -> None:
    table = _table()
    written = features.write_features(table, pa.table({"user_id": [5, 12], "valid_from_ts": [T, T],
                                                       "clicks": [1, 2]}))
    assert written == 2
    assert sorted(_rows(table, "putMultiple")) == sorted([keys.user_prefix("5", 8), keys.user_prefix("12", 8)])
    assert keys.user_prefix(b"\x00" * 5, 8) not in _rows(table, "putMultiple")


def test_integer_user_ids_are_read_from_the_row_of_their_string() -> None:
    table = _table()
    got = features.read_features(table, [(5, T), (12, T)], ["clicks"])
    features.read_features(table, [("5", T)], ["clicks"])
    assert _rows(table, "getMultiple") == [keys.user_prefix("5", 8), keys.user_prefix("12", 8),
                                           keys.user_prefix("5", 8)]
    assert got.column("user_id").to_pylist() == [5, 12]  # the ids come back with the caller's type
    features.feature_history(table, 5, "clicks")
    assert table.pool.calls[-1][1].row == keys.user_prefix("5", 8)


@pytest.mark.parametrize(("users", "reason", "position"), [
    (["a", None, "b"], "missing_user", 1),
    (["a", "b", ""], "missing_user", 2),
    (["x" * 2000, "a", "b"], "user_id_too_long", 0),
])
def test_a_bad_user_id_refuses_the_write_with_reason_field_and_position(
        users: list[Any], reason: str, position: int) -> None:
    table = _table()
    with pytest.raises(InvalidEventError) as info:
        features.write_features(table, pa.table({"user_id": users, "valid_from_ts": [T] * 3, "clicks": [1, 2, 3]}))
    assert (info.value.reason, info.value.field, info.value.position) == (reason, "user_id", position)
    assert table.pool.calls == []  # nothing of the call is written


def test_a_null_item_inside_a_vector_feature_refuses_the_write() -> None:
    table = _table()
    with pytest.raises(InvalidEventError) as info:
        features.write_features(table, pa.table({"user_id": ["a", "b", "c"], "valid_from_ts": [T] * 3,
                                                 "emb": [[1.0, 2.0], None, [None, 2.0]]}))
    assert (info.value.reason, info.value.field, info.value.position) == ("null_in_vector", "emb", 2)
    assert table.pool.calls == []
    # A whole null vector is simply not written.
    assert features.write_features(table, pa.table({"user_id": ["a", "b"], "valid_from_ts": [T] * 2,
                                                    "emb": [[1.0, 2.0], None]})) == 1


def test_bad_user_ids_on_reads_are_a_clear_error() -> None:
    table = _table()
    with pytest.raises(SchemaError, match="missing_user"):
        features.read_features(table, [("a", T), (None, T)], ["clicks"])
    with pytest.raises(SchemaError, match="missing_user"):
        features.feature_history(table, "", "clicks")
