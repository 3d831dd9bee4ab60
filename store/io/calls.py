"""Batched Thrift2 calls and the filter strings the store sends: the one place they are spelled.

Every multi-row call of the store goes through here, so a batch limit is chosen once, with
its reason, and a filter's quoting is written once:

* :func:`get_multiple`: ``getMultiple`` in calls of at most ``per_call`` gets (on an executor
  when given), results in the order of the gets, checked to be one per get;
* :func:`put_batches` / :func:`put_multiple` / :func:`put_rows`: ``putMultiple`` calls bounded
  in cells and bytes;
* :func:`delete_multiple`: ``deleteMultiple`` calls bounded in cells;
* the filters: :func:`columns_from` / :func:`columns_after` (``ColumnRangeFilter``, qualifiers
  quoted), :data:`KEY_ONLY`, :data:`NOT_EMPTY`, :func:`all_of`, :func:`family_is`,
  :func:`family_or`.

Scans page through :func:`store.io.scanning.scan_results`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from store.errors import HBaseError
from store.io.connection import idl

if TYPE_CHECKING:
    from store.io.connection import ClientPool

# Gets per getMultiple of small rows (metadata cells, key-only chunk lists). Callers reading
# many cells per get pass a smaller ``per_call`` that bounds the reply's size instead.
GETS_PER_CALL = 1_000
# Cells per putMultiple call: bounds the size of one Thrift request.
PUT_CELLS_PER_CALL = 4_000
# Estimated bytes per putMultiple call. The Thrift2 servers use unframed transport (no 2 MB
# frame cap; our client does not frame), where libthrift caps a message at 100 MB; what binds
# is the server's heap, which holds every in-flight request decoded (512 MB in our runtime,
# with pool_size calls per worker in flight). 4 MiB is 64 cells at the default payload limit
# and costs nothing in throughput: a call's fixed overhead is well under its transfer time.
PUT_BYTES_PER_CALL = 4 * 1024 * 1024
# Cells per deleteMultiple call (a delete names its cells: small, whatever the values' sizes).
DELETE_CELLS_PER_CALL = 4_000
# Binary-protocol bytes around a cell's family/qualifier/value (field headers, lengths, the
# timestamp: 33 measured) and around a put's row key (headers, list header: 16 measured),
# with room for the optional fields: an upper bound.
_CELL_OVERHEAD = 40
_PUT_OVERHEAD = 40

KEY_ONLY = b"KeyOnlyFilter()"  # cells without their values
NOT_EMPTY = b"ValueFilter(!=, 'binary:')"  # only cells with a non-empty value


def get_multiple(pool: ClientPool, table: bytes, gets: Sequence[Any], *, per_call: int = GETS_PER_CALL,
                 executor: Executor | None = None) -> list[Any]:
    """One ``TResult`` per get, in the order of ``gets`` (an empty one for a missing row).

    Raises:
        HBaseError: HBase answered a call with another number of results than gets.
        StoreUnavailableError, HBaseError: as raised by the connection.
    """
    calls = [list(gets[i : i + per_call]) for i in range(0, len(gets), per_call)]

    def one(call: list[Any]) -> list[Any]:
        results = list(pool.call("getMultiple", table, call))
        if len(results) != len(call):
            raise HBaseError(f"getMultiple returned {len(results)} results for {len(call)} gets")
        return results

    parts = executor.map(one, calls) if executor is not None and len(calls) > 1 else map(one, calls)
    return [r for part in parts for r in part]


def put_multiple(pool: ClientPool, table: bytes, group: list[Any]) -> None:
    """Send one :func:`put_batches` group in one ``putMultiple`` call."""
    pool.call("putMultiple", table, group)


def put_rows(pool: ClientPool, table: bytes, rows: Mapping[bytes, list[Any]]) -> int:
    """Put ``TColumnValue`` lists by row key in :func:`put_batches` calls; returns the calls."""
    calls = 0
    for group in put_batches(rows):
        put_multiple(pool, table, group)
        calls += 1
    return calls


def put_batches(rows: Mapping[bytes, list[Any]], *, max_cells: int = PUT_CELLS_PER_CALL,
                max_bytes: int = PUT_BYTES_PER_CALL) -> Iterator[list[Any]]:
    """The ``TPut`` lists of one ``putMultiple`` call each: at most ``max_cells`` cells and
    about ``max_bytes`` bytes per list.

    Args:
        rows: ``TColumnValue`` lists by row key. Rows keep their order and stay whole in one
            call (one atomic mutation) unless they alone exceed a bound; then they are split
            over several calls. A single cell larger than ``max_bytes`` goes alone.
        max_cells: cells per call.
        max_bytes: bytes per call, estimated from above: row keys, families, qualifiers,
            values and the Thrift encoding around them.

    Raises:
        ValueError: a bound is not positive.
    """
    if max_cells <= 0:
        raise ValueError("'max_cells' must be > 0")
    if max_bytes <= 0:
        raise ValueError("'max_bytes' must be > 0")
    t = idl()
    group: list[Any] = []
    cells = size = 0
    for row, columns in rows.items():
        for part, part_size in _row_parts(row, columns, max_cells, max_bytes):
            if group and (cells + len(part) > max_cells or size + part_size > max_bytes):
                yield group
                group, cells, size = [], 0, 0
            group.append(t.TPut(row=row, columnValues=part))
            cells += len(part)
            size += part_size
    if group:
        yield group


def _row_parts(row: bytes, columns: list[Any], max_cells: int, max_bytes: int) -> Iterator[tuple[list[Any], int]]:
    """One row's cells in consecutive parts within both bounds, with each part's size."""
    if not columns:
        return
    head = len(row) + _PUT_OVERHEAD
    sizes = [len(cv.family) + len(cv.qualifier) + len(cv.value) + _CELL_OVERHEAD for cv in columns]
    total = head + sum(sizes)
    if len(columns) <= max_cells and total <= max_bytes:
        yield columns, total  # the common case: the whole row at once
        return
    start, size = 0, head
    for j, cell in enumerate(sizes):
        if j > start and (j - start >= max_cells or size + cell > max_bytes):
            yield columns[start:j], size
            start, size = j, head
        size += cell
    yield columns[start:], size


def delete_multiple(pool: ClientPool, table: bytes, deletes: Sequence[Any], *,
                    per_call: int = DELETE_CELLS_PER_CALL) -> None:
    """Send ``TDelete`` s in ``deleteMultiple`` calls of about ``per_call`` cells (a delete of a
    whole row counts as one)."""
    group: list[Any] = []
    cells = 0
    for d in deletes:
        group.append(d)
        cells += max(1, len(d.columns or []))
        if cells >= per_call:
            pool.call("deleteMultiple", table, group)
            group, cells = [], 0
    if group:
        pool.call("deleteMultiple", table, group)


def _quoted(value: bytes) -> bytes:
    """A binary filter argument in quotes: inside one only ``'`` needs escaping (doubled)."""
    return b"'" + value.replace(b"'", b"''") + b"'"


def columns_from(qualifier: bytes) -> bytes:
    """A filter for the columns from ``qualifier`` on (inclusive)."""
    return b"ColumnRangeFilter(" + _quoted(qualifier) + b", true, '', false)"


def columns_after(qualifier: bytes, base_filter: bytes | None = None) -> bytes:
    """A filter for the columns after ``qualifier`` (exclusive), and ``base_filter``."""
    after = b"ColumnRangeFilter(" + _quoted(qualifier) + b", false, '', false)"
    return all_of(base_filter, after) if base_filter else after


def all_of(*filters: bytes | None) -> bytes:
    """The conjunction of the given filters (None ones skipped)."""
    present = [f for f in filters if f]
    return present[0] if len(present) == 1 else b" AND ".join(b"(" + f + b")" for f in present)


def family_is(family: bytes) -> bytes:
    """A filter for the cells of ``family`` only."""
    return b"FamilyFilter(=, 'binary:" + family + b"')"


def family_or(family: bytes, other: bytes) -> bytes:
    """Every cell of ``family``, and the cells of other families ``other`` lets through (a
    filter applies to every family of a get; a transforming filter such as :data:`KEY_ONLY`
    in ``other`` changes only the cells ``other`` lets through if it names their family with
    :func:`family_is`)."""
    return b"(" + family_is(family) + b") OR (" + other + b")"
