"""As-of feature reads on a real HBase: which versions count, and the time rule at ``as_of``."""

from __future__ import annotations

import time
from collections.abc import Callable

import happybase
import pyarrow as pa
import pytest

from store import SequenceTable
from store.features import read_features
from tests.conftest import HBaseServer

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
T0 = NOW - 10 * 86_400_000


def _clicks(table: SequenceTable, as_of: list[int]) -> list[int | None]:
    values: list[int | None] = table.read_features([("a", ts) for ts in as_of], ["clicks"]).column("clicks").to_pylist()
    return values


def test_a_version_past_feature_versions_is_never_read_before_or_after_hbase_compacts(
    make_table: Callable[..., SequenceTable], hbase_server: HBaseServer
) -> None:
    table = make_table(features=pa.schema([pa.field("clicks", pa.int64())]), feature_versions=2)
    table.write_features(pa.table({"user_id": ["a"] * 3, "valid_from_ts": [T0, T0 + 10, T0 + 20],
                                   "clicks": [1, 2, 3]}))
    assert table.feature_history("a", "clicks") == [(T0 + 20, 3), (T0 + 10, 2)]
    as_of = [T0 + 5, T0 + 15, T0 + 25, NOW]  # only the third-newest version (not kept) is before T0 + 5
    assert _clicks(table, as_of) == [None, 2, 3, 3]
    # HBase drops the version for good on a flush (closing the regions) and a major compaction.
    conn = happybase.Connection(hbase_server.host, hbase_server.thrift_port, timeout=60_000)
    try:
        conn.disable_table(table.name)
        conn.enable_table(table.name)
        conn.compact_table(table.name, major=True)
    finally:
        conn.close()
    assert table.feature_history("a", "clicks") == [(T0 + 20, 3), (T0 + 10, 2)]
    assert _clicks(table, as_of) == [None, 2, 3, 3]


def test_a_version_stamped_at_as_of_is_seen_only_when_inclusive(make_table: Callable[..., SequenceTable]) -> None:
    # A counter updated by the event at the label's time, stamped with that time: like the event, not seen.
    table = make_table(features=pa.schema([pa.field("clicks", pa.int64())]))
    table.write_features(pa.table({"user_id": ["a", "a"], "valid_from_ts": [T0, T0 + 10], "clicks": [1, 2]}))
    requests = [("a", T0), ("a", T0 + 10), ("a", T0 + 11)]
    assert table.read_features(requests, ["clicks"]).column("clicks").to_pylist() == [None, 1, 2]
    inclusive = read_features(table.handle, requests, ["clicks"], inclusive=True)
    assert inclusive.column("clicks").to_pylist() == [1, 2, 2]
