"""Stateless paged scans (store.io.scanning) against real HBase: wide rows split across pages,
filters combined with the resume filter, and a Thrift2 restart between two pages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hbase import launcher
from store import SequenceTable
from store.io.connection import idl
from store.io.scanning import scan_results
from tests.conftest import HBaseServer

pytestmark = pytest.mark.integration

QUOTE_AND_BINARY = [bytes([b, 0x27, i]) for b in (0x00, 0x27, 0x28, 0x2C, 0xFF) for i in range(40)]


@pytest.fixture
def wide(make_table: Callable[..., SequenceTable], hbase_server: HBaseServer) -> Iterator[tuple[str, dict]]:
    """A raw table: rows a, b (200 binary qualifiers each, with quotes), c (3), d (0 in 'e')."""
    table = make_table()
    conn = hbase_server.connect()
    try:
        raw = conn.table(table.name)
        for row, quals in ((b"a", QUOTE_AND_BINARY), (b"b", QUOTE_AND_BINARY), (b"c", QUOTE_AND_BINARY[:3])):
            raw.put(row, {b"e:" + q: b"v" + q for q in quals})
        raw.put(b"d", {b"f:x": b"1"})
        expected = {row: cols for row, cols in raw.scan(columns=[b"e"])}
    finally:
        conn.close()
    yield table.name, expected


def _collect(results: Iterator[Any]) -> tuple[dict[bytes, dict[bytes, bytes]], int]:
    rows: dict[bytes, dict[bytes, bytes]] = {}
    n = 0
    for r in results:
        n += 1
        cells = rows.setdefault(r.row, {})
        for cv in r.columnValues:
            assert cv.family + b":" + cv.qualifier not in cells, "a cell came back twice"
            cells[cv.family + b":" + cv.qualifier] = cv.value
    return rows, n


@pytest.mark.parametrize(("batch", "page", "max_page"), [(None, 1, None), (7, 1, None), (7, 2, 64), (200, 1, 3)])
def test_pages_return_every_cell_once(make_table: Callable[..., SequenceTable], wide: tuple[str, dict],
                                      batch: int | None, page: int, max_page: int | None) -> None:
    name, expected = wide
    t = idl()
    table = make_table("reader")  # any table: only its pool is used
    scan = t.TScan(columns=[t.TColumn(family=b"e")], batchSize=batch)
    rows, results = _collect(scan_results(table.handle.pool, name.encode(), scan, page, max_page=max_page))
    assert rows == expected
    if batch == 7:
        assert results == 2 * -(-200 // 7) + 1  # wide rows arrive in batch-sized parts


def test_a_base_filter_is_kept_when_resuming_inside_a_row(
    make_table: Callable[..., SequenceTable], wide: tuple[str, dict]
) -> None:
    name, expected = wide
    t = idl()
    table = make_table("reader")
    scan = t.TScan(startRow=b"a", stopRow=b"c", columns=[t.TColumn(family=b"e")], batchSize=9,
                   filterString=b"KeyOnlyFilter()")
    rows, _ = _collect(scan_results(table.handle.pool, name.encode(), scan, 2))
    assert {r: sorted(c) for r, c in rows.items()} == {r: sorted(expected[r]) for r in (b"a", b"b")}
    assert {v for cells in rows.values() for v in cells.values()} == {b""}  # KeyOnlyFilter still applied


@pytest.mark.reliability
def test_a_scan_survives_a_thrift2_restart_between_pages(
    make_table: Callable[..., SequenceTable], wide: tuple[str, dict], hbase_server: HBaseServer
) -> None:
    # A server-side scanner (openScanner/getScannerRows) dies with the Thrift2 server; pages don't.
    if hbase_server.backend != "launcher":
        pytest.skip("restarting a Thrift server needs the launcher's own HBase")
    assert hbase_server.data_dir is not None
    name, expected = wide
    t = idl()
    table = make_table("reader")
    results = scan_results(table.handle.pool, name.encode(), t.TScan(columns=[t.TColumn(family=b"e")], batchSize=50), 1)
    first = next(results)
    launcher.restart_role(hbase_server.data_dir, "thrift2")  # kills the running one, starts a new one
    rows, _ = _collect(iter([first, *results]))
    assert rows == expected
