"""Quarantine, schema evolution, features with history and retention against real HBase."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from store import (
    DEFAULT_SCHEMA,
    EventSchema,
    InvalidEventError,
    SchemaError,
    SeqStoreError,
    SequenceStore,
    SequenceTable,
)

pytestmark = pytest.mark.integration

DAY = 86_400_000
NOW = int(time.time() * 1000)
T0 = NOW - 10 * DAY


def items(table: SequenceTable, user: str, as_of: int = NOW, **kw: Any) -> list[Any]:
    out = table.read_sequences([(user, as_of)], max_len=1000, **kw)
    return [e["item_id"] for e in out.column("sequence")[0].as_py()]


def test_bad_rows_are_quarantined_and_good_rows_written(make_table: Callable[..., SequenceTable]) -> None:
    table = make_table(max_payload_bytes=200)
    data = pa.table({
        "user_id": ["good", None, "", "good", "good", "good", "good", "good", "good"],
        "event_ts": [T0, T0, T0, -1, T0 // 1000, NOW + 400 * DAY, T0 + 1, T0 + 2, T0 + 3],
        "event_type": ["view", "view", "view", "view", "view", "view", "x" * 500, "view", "view"],
        "item_id": ["1", "2", "3", "4", "5", "6", "7", "eight", None],
        "dwell_ms": [1] * 9,
    })
    result = table.write(data, source="in.parquet", start_position=100)
    assert result.rows_in == 9 and result.written == 1 and result.quarantined == 8
    assert result.rows_in == result.written + result.quarantined
    got = {(r["position"], r["reason"], r["field"], r["source"]) for r in result.quarantine.to_pylist()}
    assert got == {
        (101, "missing_user", "user_id", "in.parquet"), (102, "missing_user", "user_id", "in.parquet"),
        (103, "negative_timestamp", "event_ts", "in.parquet"), (104, "seconds_not_ms", "event_ts", "in.parquet"),
        (105, "future_timestamp", "event_ts", "in.parquet"), (106, "payload_too_large", "*", "in.parquet"),
        (107, "wrong_type", "item_id", "in.parquet"), (108, "missing_field", "item_id", "in.parquet"),
    }
    assert items(table, "good") == [1]
    with pytest.raises(InvalidEventError) as err:
        table.write(data.slice(1, 1), on_invalid="raise")
    assert (err.value.reason, err.value.field, err.value.position) == ("missing_user", "user_id", 0)


def test_input_of_many_batches_is_streamed_with_exact_conservation(make_table: Callable[..., SequenceTable]) -> None:
    table = make_table()

    def batches() -> Any:
        for b in range(7):
            users = [f"u{i % 13}" if i % 10 else None for i in range(1000)]
            yield pa.RecordBatch.from_pydict({
                "user_id": users, "event_ts": [T0 + b * 1000 + i for i in range(1000)],
                "event_type": ["view"] * 1000, "item_id": list(range(1000)), "dwell_ms": [None] * 1000})

    result = table.write(batches(), chunk_rows=300)
    assert result.rows_in == 7000 and result.quarantined == 700 and result.written == 6300
    expected = [b * 1000 + i for b in range(7) for i in range(0, 1000, 10)]
    assert result.quarantine.column("position").to_pylist() == expected
    total = table.read_sequences([(f"u{i}", NOW) for i in range(13)], max_len=10_000).column("length")
    assert sum(total.to_pylist()) == 6300


def test_schema_evolution_adds_nullable_fields_and_refuses_type_changes(
    store: SequenceStore, make_table: Callable[..., SequenceTable]
) -> None:
    table = make_table()
    table.write(pa.table({"user_id": ["u"], "event_ts": [T0], "event_type": ["view"], "item_id": [1]}))
    with pytest.raises(SchemaError, match=r"'campaign'.*not in the table's schema"):
        table.write(pa.table({"user_id": ["u"], "event_ts": [T0 + 1], "event_type": ["view"], "item_id": [2],
                              "campaign": ["spring"]}))
    v2 = store.evolve_schema(table.name, EventSchema.of([*DEFAULT_SCHEMA.payload, pa.field("campaign", pa.string())]))
    assert v2.version == 2
    table = store.table(table.name)
    table.write(pa.table({"user_id": ["u"], "event_ts": [T0 + 1], "event_type": ["view"], "item_id": [2],
                          "campaign": ["spring"]}))
    got = table.read_sequences([("u", NOW)], max_len=10).column("sequence")[0].as_py()
    assert [(e["item_id"], e["campaign"]) for e in got] == [(2, "spring"), (1, None)]
    with pytest.raises(SchemaError, match="cannot change type"):
        store.evolve_schema(table.name, EventSchema.of([pa.field("event_type", pa.string()),
                                                        pa.field("item_id", pa.string())]))
    assert store.describe_table(table.name)["schema_versions"][-1]["version"] == 2


def test_features_as_of_a_time_and_their_history(make_table: Callable[..., SequenceTable]) -> None:
    features = pa.schema([pa.field("emb", pa.list_(pa.float16(), 4)), pa.field("clicks", pa.int64()),
                          pa.field("segment", pa.string())])
    table = make_table(features=features, feature_versions=3)
    calls = 0
    real_call = table.handle.pool.call

    def counting(method: str, *args: Any) -> Any:
        nonlocal calls
        calls += method == "putMultiple"
        return real_call(method, *args)

    table.handle.pool.call = counting  # type: ignore[method-assign]
    n = 2_000
    written = table.write_features(pa.table({
        "user_id": [f"u{i % 50}" for i in range(n)],
        "valid_from_ts": [T0 + i * 1000 for i in range(n)],
        "clicks": list(range(n)),
    }))
    assert written == n and calls <= 2  # thousands of values, different timestamps, a couple of calls
    table.write_features(pa.table({
        "user_id": ["a", "a", "a", "a"], "valid_from_ts": [T0, T0 + 10, T0 + 20, T0 + 30],
        "emb": [[1, 2, 3, 4], [5, 6, 7, 8], None, [0.5, 0, 0, 1]], "segment": ["x", "y", "z", None],
    }))
    got = table.read_features([("a", T0 + 9), ("a", T0 + 10), ("a", T0 + 29), ("a", T0 - 1), ("nobody", NOW),
                               ("u7", NOW)], ["emb", "segment", "clicks"]).to_pylist()
    # As of T0 + 10 the version stamped at T0 + 10 is not seen yet: valid_from < as_of, as for events.
    assert [(g["emb"], g["segment"]) for g in got[:4]] == [
        ([1, 2, 3, 4], "x"), ([1, 2, 3, 4], "x"), ([5, 6, 7, 8], "z"), (None, None)]
    assert got[4]["clicks"] is None and got[5]["clicks"] == 1957
    history = table.feature_history("a", "segment")
    assert history == [(T0 + 20, "z"), (T0 + 10, "y"), (T0, "x")]
    assert len(table.feature_history("u7", "clicks")) == 3  # VERSIONS=3 keeps the newest three
    assert np.array_equal(table.feature_history("a", "emb")[0][1], np.array([0.5, 0, 0, 1], dtype=np.float16))


def test_ttl_hides_events_older_than_the_retention(make_table: Callable[..., SequenceTable]) -> None:
    table = make_table(ttl_days=1)
    table.write(pa.table({"user_id": ["u", "u", "u"], "event_ts": [NOW - 3 * DAY, NOW - DAY - 60_000, NOW - 60_000],
                          "event_type": ["view"] * 3, "item_id": [1, 2, 3]}))
    assert items(table, "u") == [3]
    assert items(table, "u", as_of=NOW - DAY) == []  # even as of a time when they were young


def test_max_events_per_user_trims_and_never_returns_trimmed(
    make_table: Callable[..., SequenceTable], hbase_server: Any
) -> None:
    table = make_table(max_events_per_user=5, bucket_ms=1_000)
    table.write(pa.table({"user_id": ["u"] * 8 + ["v"] * 3, "event_ts": [T0 + i * 700 for i in range(8)] + [T0] * 3,
                          "event_type": ["view"] * 11, "item_id": [*range(8), 10, 11, 12]}))
    assert items(table, "u") == [7, 6, 5, 4, 3]
    assert items(table, "u", as_of=T0 + 4 * 700) == [3]  # events 0..2 are trimmed, even in the past
    assert sorted(items(table, "v")) == [10, 11, 12]
    conn = hbase_server.connect()
    stored = sum(len(cols) for _, cols in conn.table(table.name).scan(columns=[b"e"]))
    conn.close()
    assert stored == 8  # 5 of u + 3 of v: the trimmed cells are deleted
    table.write(pa.table({"user_id": ["u"], "event_ts": [T0 + 9000], "event_type": ["view"], "item_id": [9]}))
    assert items(table, "u") == [9, 7, 6, 5, 4]


def test_a_recreated_table_inherits_nothing_from_an_interrupted_drop(
    make_table: Callable[..., SequenceTable], store: SequenceStore, hbase_server: Any
) -> None:
    from store.format.keys import META, META_TABLE
    from store.io.connection import idl

    t = idl()
    old = make_table(salt_buckets=2)
    store.evolve_schema(old.name, EventSchema.of([*DEFAULT_SCHEMA.payload, pa.field("extra", pa.int32())]))
    old.handle.pool.call("put", META_TABLE, t.TPut(row=f"{old.name}|backfill|unit-1".encode(),
                                            columnValues=[t.TColumnValue(META, b"done", b"{}")]))
    conn = hbase_server.connect()  # the HBase table goes, its registration stays: a drop cut short
    conn.delete_table(old.name, disable=True)
    conn.close()

    new = make_table(salt_buckets=2)  # same name
    assert new.spec.schema.version == 1 and "extra" not in new.spec.schema.payload.names
    assert store.table(new.name).spec.schema.version == 1
    scan = t.TScan(startRow=f"{old.name}|".encode(), stopRow=f"{old.name}}}".encode())
    assert new.handle.pool.call("getScannerResults", META_TABLE, scan, 10) == []


def test_a_row_lost_between_validation_and_hbase_fails_the_write(
    make_table: Callable[..., SequenceTable], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault-injection seam: put batching that silently loses one cell. Conservation counts the
    # cells HBase acknowledged, so the loss is an error, not a quietly smaller `written`.
    from store import writer

    real = writer.put_batches

    def lossy(rows: Any, **kw: Any) -> Any:
        for group in real(rows, **kw):
            group[0].columnValues = group[0].columnValues[1:]
            yield group

    monkeypatch.setattr(writer, "put_batches", lossy)
    table = make_table()
    with pytest.raises(SeqStoreError, match="conservation violated: 3 in, 2 written, 0 quarantined"):
        table.write(pa.table({"user_id": ["a"] * 3, "event_ts": [T0, T0 + 1, T0 + 2], "event_type": ["view"] * 3,
                              "item_id": [1, 2, 3]}))  # one wide row: one put of 3 cells
