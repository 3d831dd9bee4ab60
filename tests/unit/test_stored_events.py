"""Merging the two tiers' sorted event streams (store.stored_events): each event once, newest first."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from store.stored_events import _union

Event = tuple[int, int]


def _blocks(events: list[Event], sizes: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``events`` in blocks of ``sizes`` (some empty), the rest in one last block."""
    bounds = np.cumsum([0, *sizes]).tolist()
    parts = [events[a:b] for a, b in itertools.pairwise(bounds)] + [events[bounds[-1]:]]
    for part in parts:
        yield np.array([e[0] for e in part], np.int64), np.array([e[1] for e in part], np.uint64)


@settings(max_examples=400, deadline=None)
@given(pool=st.sets(st.tuples(st.integers(0, 12), st.integers(0, 2**64 - 1) | st.integers(0, 3)), max_size=40),
       data=st.data())
def test_union_is_the_sorted_set_union(pool: set[Event], data: st.DataObject) -> None:
    events = sorted(pool, reverse=True)  # newest first, ties by event_id descending
    a = [e for e in events if data.draw(st.booleans())]
    b = [e for e in events if data.draw(st.booleans())]
    sizes = st.lists(st.integers(0, 6), max_size=12)  # empty blocks too
    got: list[Event] = []
    for ts, eid in _union(_blocks(a, data.draw(sizes)), _blocks(b, data.draw(sizes))):
        assert ts.dtype == np.int64 and eid.dtype == np.uint64
        got += list(zip(ts.tolist(), eid.tolist(), strict=True))
    assert got == sorted(set(a) | set(b), reverse=True)


def test_union_of_identical_streams_holds_one_block_per_side() -> None:
    events = [(1000 - i, i) for i in range(1000)]
    out = list(_union(_blocks(events, [10] * 100), _blocks(events, [7] * 143)))
    assert sum(len(ts) for ts, _ in out) == 1000
    assert max(len(ts) for ts, _ in out) <= 10  # never more than one block of either side at a time
