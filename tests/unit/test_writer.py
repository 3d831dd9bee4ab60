"""How the writers batch cells into putMultiple calls."""

from __future__ import annotations

from typing import Any

import pytest

from store.connection import idl
from store.writer import put_batches


def _cells(n: int) -> list[Any]:
    t = idl()
    return [t.TColumnValue(family=b"e", qualifier=i.to_bytes(4, "big"), value=b"v") for i in range(n)]


def test_put_batches_bound_the_cells_per_call_and_keep_every_cell_in_order() -> None:
    rows = {b"narrow": _cells(3), b"wide": _cells(25), b"last": _cells(4)}
    batches = list(put_batches(rows, max_cells=10))
    assert [sum(len(p.columnValues) for p in b) for b in batches] == [3, 10, 10, 9]
    sent = [(p.row, cv.qualifier) for b in batches for p in b for cv in p.columnValues]
    assert sent == [(row, cv.qualifier) for row, cells in rows.items() for cv in cells]


def test_put_batches_refuse_a_non_positive_bound() -> None:
    with pytest.raises(ValueError, match="'max_cells' must be > 0"):
        list(put_batches({b"r": _cells(1)}, max_cells=0))
