"""How the writers batch cells into putMultiple calls, and merge rows that are one cell."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from thriftpy2.utils import serialize

from store.format import keys
from store.format.payload import PayloadCodec
from store.format.schema import DEFAULT_SCHEMA
from store.inputs.rows import conform
from store.io.calls import put_batches
from store.io.connection import idl
from store.table.spec import TableSpec
from store.writer import ValidatedCells, _group_puts

NOW = 1_800_000_000_000


def _cells(n: int, value: bytes = b"v") -> list[Any]:
    t = idl()
    return [t.TColumnValue(family=b"e", qualifier=i.to_bytes(4, "big"), value=value, timestamp=NOW) for i in range(n)]


def test_put_batches_bound_the_cells_per_call_and_keep_every_cell_in_order() -> None:
    rows = {b"narrow": _cells(3), b"wide": _cells(25), b"last": _cells(4)}
    batches = list(put_batches(rows, max_cells=10))
    assert [sum(len(p.columnValues) for p in b) for b in batches] == [3, 10, 10, 9]
    sent = [(p.row, cv.qualifier) for b in batches for p in b for cv in p.columnValues]
    assert sent == [(row, cv.qualifier) for row, cells in rows.items() for cv in cells]


def test_put_batches_bound_the_bytes_per_call_on_the_wire() -> None:
    # 64 KiB values (the default payload limit): 4000 of them would be a 256 MiB request.
    big = 64 * 1024
    rows = {b"a": _cells(3, b"x" * big), b"wide": _cells(40, b"y" * big), b"small": _cells(5),
            b"huge": _cells(1, b"z" * (3 * big)), b"tail": _cells(2, b"w" * big)}
    max_bytes = 4 * big + 1000
    batches = list(put_batches(rows, max_bytes=max_bytes))
    for group in batches:
        wire = sum(len(serialize(p)) for p in group)  # the estimate is an upper bound of the real size
        assert wire <= max_bytes
    # Rows that fit stay whole (one atomic mutation); the wide one is split; order is kept.
    assert [[(p.row, len(p.columnValues)) for p in b] for b in batches][:2] == [[(b"a", 3)], [(b"wide", 4)]]
    sent = [(p.row, cv.qualifier) for b in batches for p in b for cv in p.columnValues]
    assert sent == [(row, cv.qualifier) for row, cells in rows.items() for cv in cells]


def test_a_cell_larger_than_the_byte_bound_goes_alone() -> None:
    rows = {b"r": [*_cells(1), *_cells(1, b"z" * 5000), *_cells(1)]}
    batches = list(put_batches(rows, max_bytes=1000))
    assert [[len(cv.value) for p in b for cv in p.columnValues] for b in batches] == [[1], [5000], [1]]


@pytest.mark.parametrize("bound", ["max_cells", "max_bytes"])
def test_put_batches_refuse_a_non_positive_bound(bound: str) -> None:
    with pytest.raises(ValueError, match=f"'{bound}' must be > 0"):
        list(put_batches({b"r": _cells(1)}, **{bound: 0}))


def _grouped(cols: dict[str, list[Any]]) -> tuple[dict[bytes, list[Any]], int]:
    batch, verdicts = conform(pa.RecordBatch.from_pydict(cols), DEFAULT_SCHEMA, now_ms=NOW)
    cells = ValidatedCells(TableSpec("t", salt_buckets=4), PayloadCodec([DEFAULT_SCHEMA]), batch, verdicts)
    return _group_puts(cells, 86_400_000)


def test_rows_with_the_same_cell_are_one_cell_and_counted_as_merged() -> None:
    # A double click (same user, ms and content) twice, among distinct events and a bad row.
    rows, merged = _grouped({
        "user_id": ["u", "v", "u", None, "u", "u"], "event_ts": [NOW - 1, NOW - 1, NOW - 1, NOW - 1, NOW - 1, NOW - 2],
        "event_type": ["click"] * 6, "item_id": [7, 7, 7, 7, 7, 7],
    })
    cells = [cv for columns in rows.values() for cv in columns]
    assert merged == 2 and len(cells) == 3
    assert len({(row, cv.qualifier) for row, columns in rows.items() for cv in columns}) == 3


def test_a_repeated_explicit_id_keeps_the_last_row_and_distinct_ids_keep_both() -> None:
    rows, merged = _grouped({
        "user_id": ["u"] * 4, "event_ts": [NOW - 1] * 4, "event_type": ["click"] * 4,
        "item_id": [1, 2, 3, 3], "event_id": ["a", "b", "a", "c"],
    })
    assert merged == 1
    (columns,) = rows.values()
    codec = PayloadCodec([DEFAULT_SCHEMA])
    by_id = {keys.parse_qualifier(cv.qualifier)[1]: codec.decode(cv.value)[1] for cv in columns}
    assert sorted(by_id.values()) == [2, 3, 3]  # "a" holds the later row's item 3; "b" and "c" distinct
