"""Features keyed by integer user ids, through a real HBase: the same user as their events."""

from __future__ import annotations

import time
from collections.abc import Callable

import pyarrow as pa
import pytest

from store import InvalidEventError, SequenceTable

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
T0 = NOW - 10 * 86_400_000


def test_integer_user_ids_are_keyed_as_their_string_and_read_back_with_their_type(
    make_table: Callable[..., SequenceTable],
) -> None:
    table = make_table(features=pa.schema([pa.field("clicks", pa.int64()), pa.field("emb", pa.list_(pa.float32(), 2))]))
    written = table.write_features(pa.table({
        "user_id": pa.array([5, 5, 12], pa.int64()), "valid_from_ts": [T0, T0 + 10, T0],
        "clicks": [1, 2, 3], "emb": [[0.5, 1.0], None, [2.0, 3.0]],
    }))
    assert written == 5
    got = table.read_features([(5, T0 + 5), (5, NOW), (12, NOW), (7, NOW)], ["clicks", "emb"]).to_pylist()
    assert [(g["user_id"], g["clicks"], g["emb"]) for g in got] == [
        (5, 1, [0.5, 1.0]), (5, 2, [0.5, 1.0]), (12, 3, [2.0, 3.0]), (7, None, None)]
    assert table.read_features([("5", NOW)], ["clicks"]).column("clicks").to_pylist() == [2]
    assert [v for _, v in table.feature_history(5, "clicks")] == [2, 1]
    assert table.feature_history(b"\x00" * 5, "clicks") == []  # not bytes(5), the old wrong row
    # Events of the same integer user land on the same user as the features.
    table.write(pa.table({"user_id": pa.array([5], pa.int64()), "event_ts": [NOW - 1_000],
                          "event_type": ["view"], "item_id": [42]}))
    assert table.read_sequences([("5", NOW)], max_len=5).column("length").to_pylist() == [1]


def test_bad_rows_refuse_the_whole_feature_write(make_table: Callable[..., SequenceTable]) -> None:
    table = make_table(features=pa.schema([pa.field("emb", pa.list_(pa.float32(), 2))]))
    with pytest.raises(InvalidEventError) as info:
        table.write_features(pa.table({"user_id": ["a", None], "valid_from_ts": [T0, T0], "emb": [[1.0, 2.0]] * 2}))
    assert (info.value.reason, info.value.position) == ("missing_user", 1)
    with pytest.raises(InvalidEventError) as info:
        table.write_features(pa.table({"user_id": ["a", "b"], "valid_from_ts": [T0, T0],
                                       "emb": [[1.0, 2.0], [None, 2.0]]}))
    assert (info.value.reason, info.value.field, info.value.position) == ("null_in_vector", "emb", 1)
    assert table.feature_history("a", "emb") == []  # nothing of either call was written
