"""Scans as a series of stateless, retry-safe ``getScannerResults`` calls.

A Thrift2 server-side scanner (``openScanner`` + ``getScannerRows``) is neither safe to retry
(a retried ``getScannerRows`` after a lost reply silently skips a page) nor survives a Thrift
server restart ("invalid scanner id"). Every scan in the store therefore pages with
``getScannerResults``, which opens, reads and closes a scanner in one call, and resumes from
the last row it saw. With ``TScan.batchSize`` a wide row arrives in several results, as it
does from a server-side scanner; a page that stops inside such a row resumes after the last
column read, with a server-side ``ColumnRangeFilter``, so no cell is fetched twice.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from store.io.calls import columns_after

if TYPE_CHECKING:
    from store.io.connection import ClientPool


def scan_results(pool: ClientPool, table: bytes, scan: Any, page: int, *, max_page: int | None = None) -> Iterator[Any]:
    """Every ``TResult`` of ``scan`` on ``table``, fetched ``page`` results per call.

    Pages grow 4x per call up to ``max_page`` (default: ``page``, i.e. fixed pages). Stopping
    early is free: no scanner is left open on the server. A scan that resumes inside a wide
    row must read a single column family, since the column range filter compares qualifiers only.
    """
    if page <= 0:
        raise ValueError("'page' must be > 0")
    max_page = max(page, max_page or page)
    families = {c.family for c in scan.columns or []}
    start, stop, base_filter = scan.startRow, scan.stopRow, scan.filterString
    inside: bytes | None = None  # the wide row being resumed
    after = b""  # ... and the last qualifier already read from it
    while True:
        call = copy.copy(scan)
        call.caching = page
        if inside is None:
            call.startRow = start
        else:
            if len(families) != 1:
                raise ValueError("resuming inside a wide row needs a scan of exactly one column family")
            call.startRow, call.stopRow = inside, inside + b"\x00"
            call.filterString = columns_after(after, base_filter)
        results = pool.call("getScannerResults", table, call, page)
        yield from results
        if len(results) < page:  # this scan is exhausted
            if inside is None:
                return
            start, inside = inside + b"\x00", None  # go on with the rows after the resumed one
            if stop and start >= stop:
                return
            continue
        last = results[-1]
        if scan.batchSize and len(last.columnValues) >= scan.batchSize:  # the row may go on
            inside, after = last.row, last.columnValues[-1].qualifier
        else:
            start, inside = last.row + b"\x00", None
        page = min(page * 4, max_page)

