"""The suite's HBase is a real HBase: family options, versions, TTL, persistence, visibility."""

from __future__ import annotations

import time

import pytest

from tests.conftest import HBaseServer

pytestmark = pytest.mark.integration

FAMILY = {
    "max_versions": 5,
    "time_to_live": 7 * 24 * 3600,
    "bloom_filter_type": "ROWCOL",
    "block_cache_enabled": True,
    "compression": "ZSTD",
}


def test_family_options_are_applied(hbase_server: HBaseServer, table_prefix: str) -> None:
    conn = hbase_server.connect()
    name = f"{table_prefix}opts"
    conn.create_table(name, {"e": FAMILY, "s": {**FAMILY, "compression": "SNAPPY", "max_versions": 1}})
    families = conn.table(name).families()
    e, s = families[b"e"], families[b"s"]
    assert e["max_versions"] == 5
    assert e["time_to_live"] == 7 * 24 * 3600
    assert e["bloom_filter_type"] == b"ROWCOL"
    assert e["block_cache_enabled"] is True
    assert e["compression"] == b"ZSTD"
    assert s["compression"] == b"SNAPPY"
    # The region only opens if the pure-Java codec loads: a write and read prove it is online.
    conn.table(name).put(b"r", {b"e:q": b"v", b"s:q": b"w"})
    assert conn.table(name).row(b"r") == {b"e:q": b"v", b"s:q": b"w"}
    conn.close()


def test_put_get_scan_in_key_order(hbase_server: HBaseServer, table_prefix: str) -> None:
    conn = hbase_server.connect()
    name = f"{table_prefix}scan"
    conn.create_table(name, {"e": FAMILY})
    table = conn.table(name)
    rows = {f"user{i:03d}".encode(): {b"e:n": str(i).encode()} for i in (5, 1, 3, 2, 4)}
    with table.batch() as batch:
        for key, cells in rows.items():
            batch.put(key, cells)
    assert table.row(b"user003") == {b"e:n": b"3"}
    scanned = list(table.scan(row_start=b"user002", row_stop=b"user005"))
    assert [k for k, _ in scanned] == [b"user002", b"user003", b"user004"]
    assert next(iter(table.scan(row_prefix=b"user00", columns=[b"e:n"]))) == (b"user001", {b"e:n": b"1"})
    conn.close()


def test_versions_kept_and_returned_newest_first(hbase_server: HBaseServer, table_prefix: str) -> None:
    conn = hbase_server.connect()
    name = f"{table_prefix}ver"
    conn.create_table(name, {"f": {**FAMILY, "max_versions": 3}})
    table = conn.table(name)
    # TTL counts from the cell timestamp, so versions must be recent to be visible at all.
    now = int(time.time() * 1000)
    t1, t2, t3, t4 = now - 4000, now - 3000, now - 2000, now - 1000
    for ts, value in ((t1, b"a"), (t3, b"c"), (t2, b"b"), (t4, b"d")):
        table.put(b"row", {b"f:emb": value}, timestamp=ts)
    cells = table.cells(b"row", b"f:emb", versions=10, include_timestamp=True)
    # VERSIONS=3 keeps the three newest; they come back newest first.
    assert cells == [(b"d", t4), (b"c", t3), (b"b", t2)]
    # Thrift1's read timestamp is an exclusive upper bound: "as of t3" means [0, t3).
    assert table.row(b"row", timestamp=t3) == {b"f:emb": b"b"}
    conn.close()


def test_cell_with_short_ttl_disappears(hbase_server: HBaseServer, table_prefix: str) -> None:
    conn = hbase_server.connect()
    name = f"{table_prefix}ttl"
    conn.create_table(name, {"f": {**FAMILY, "time_to_live": 2}})
    table = conn.table(name)
    table.put(b"row", {b"f:q": b"short-lived"})
    assert table.row(b"row") == {b"f:q": b"short-lived"}
    deadline = time.monotonic() + 15
    while table.row(b"row") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert table.row(b"row") == {}
    conn.close()


def test_second_connection_sees_first_ones_writes(hbase_server: HBaseServer, table_prefix: str) -> None:
    writer, reader = hbase_server.connect(), hbase_server.connect()
    name = f"{table_prefix}vis"
    writer.create_table(name, {"f": FAMILY})
    writer.table(name).put(b"k", {b"f:q": b"from-writer"})
    assert name.encode() in reader.tables()
    assert reader.table(name).row(b"k") == {b"f:q": b"from-writer"}
    writer.close()
    reader.close()


@pytest.mark.slow
def test_data_survives_stop_and_start(hbase_server: HBaseServer, table_prefix: str) -> None:
    if hbase_server.backend not in ("launcher", "docker"):
        pytest.skip("restarting is only possible for the launcher's HBase or the Docker container")
    conn = hbase_server.connect()
    name = f"{table_prefix}persist"
    conn.create_table(name, {"f": FAMILY})
    ts = int(time.time() * 1000)
    conn.table(name).put(b"k", {b"f:q": b"before-restart"}, timestamp=ts)
    conn.close()

    hbase_server.restart()

    conn = hbase_server.connect()
    assert conn.table(name).cells(b"k", b"f:q", include_timestamp=True) == [(b"before-restart", ts)]
    assert conn.table(name).families()[b"f"]["compression"] == b"ZSTD"
    conn.close()
