"""The chunk tier's pure parts: the array cut, the piece cuts of a merge, and the qualifier
layout's ordering (what the reader's and the compaction's ColumnRangeFilters rely on)."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from store.format.chunk import QUALIFIER_LEN, chunk_key, chunk_qualifier, first_qualifier_before
from store.format.visibility import Columns, cut
from store.tiers.chunk_steps import STEP_EVENTS, cuts, territories

MAX_U64 = 2**64 - 1


def _columns(events: list[tuple[int, int]], types: list[bool] | None = None) -> Columns:
    """Columns over ``events`` sorted newest first, as a run of chunks is."""
    ts = np.array([e[0] for e in events], dtype=np.int64)
    eid = np.array([e[1] for e in events], dtype=np.uint64)
    return Columns(-ts, eid, np.array(types, dtype=bool) if types is not None else None)


def _sorted(events: set[tuple[int, int]]) -> list[tuple[int, int]]:
    return sorted(events, reverse=True)


def _expected(events: list[tuple[int, int]], types: list[bool] | None, start: int, end: int, hi: int, lo: int,
              mark: tuple[int, int] | None, max_len: int) -> list[int]:
    out = [i for i in range(start, end)
           if lo <= events[i][0] < hi and (types is None or types[i]) and (mark is None or events[i] >= mark)]
    return out[:max_len]


def test_hi_is_exclusive_and_lo_inclusive() -> None:
    events = [(30, 1), (20, 1), (10, 1)]
    cols = _columns(events)
    assert cut(cols, 0, 3, 30, 10, None, 10).tolist() == [1, 2]  # 30 excluded, 10 included
    assert cut(cols, 0, 3, 31, 10, None, 10).tolist() == [0, 1, 2]
    assert cut(cols, 0, 3, 30, 11, None, 10).tolist() == [1]
    assert cut(cols, 0, 3, 20, 20, None, 10).tolist() == []  # empty range
    assert cut(cols, 0, 3, 10, 20, None, 10).tolist() == []  # inverted range


def test_max_len_keeps_the_newest() -> None:
    events = [(50, 9), (40, 9), (30, 9), (20, 9)]
    assert cut(_columns(events), 0, 4, 45, 0, None, 2).tolist() == [1, 2]


def test_a_watermark_at_lo_keeps_only_ids_at_or_above_it() -> None:
    # Four events at ts 20 (ids descending, as chunks hold them), one above and one below.
    events = [(30, 1), (20, 90), (20, 70), (20, 50), (20, 10), (10, 5)]
    cols = _columns(events)
    assert cut(cols, 0, 6, 100, 20, (20, 70), 10).tolist() == [0, 1, 2]
    assert cut(cols, 0, 6, 100, 20, (20, 71), 10).tolist() == [0, 1]
    assert cut(cols, 0, 6, 100, 20, (20, 0), 10).tolist() == [0, 1, 2, 3, 4]
    assert cut(cols, 0, 6, 100, 20, (20, MAX_U64), 10).tolist() == [0]
    assert cut(cols, 0, 6, 21, 20, (20, 50), 10).tolist() == [1, 2, 3]  # hi right above the tie
    # A mark below lo changes nothing.
    assert cut(cols, 0, 6, 100, 20, (15, 0), 10).tolist() == [0, 1, 2, 3, 4]


def test_the_type_filter_applies_before_max_len() -> None:
    events = [(50, 1), (40, 1), (30, 1), (20, 1), (10, 1)]
    types = [False, True, False, True, True]
    assert cut(_columns(events, types), 0, 5, 100, 0, None, 2).tolist() == [1, 3]
    assert cut(_columns(events, types), 0, 5, 40, 0, None, 5).tolist() == [3, 4]


def test_a_cut_stays_inside_its_run() -> None:
    # Two runs in one table: [0, 3) and [3, 5).
    events = [(30, 1), (20, 1), (10, 1), (25, 1), (5, 1)]
    cols = _columns(events)
    assert cut(cols, 3, 5, 100, 0, None, 10).tolist() == [3, 4]
    assert cut(cols, 0, 3, 100, 0, None, 10).tolist() == [0, 1, 2]
    assert cut(cols, 3, 3, 100, 0, None, 10).tolist() == []


_EVENTS = st.sets(st.tuples(st.integers(0, 40), st.integers(0, 6)), max_size=40)


@given(_EVENTS, _EVENTS, st.data())
def test_cut_matches_a_brute_force_filter(run: set[tuple[int, int]], other: set[tuple[int, int]],
                                          data: st.DataObject) -> None:
    # A run between two others in one table, as ChunkRuns concatenates users' runs.
    first = _sorted(other)
    events = first + _sorted(run) + first
    start, end = len(first), len(first) + len(run)
    typed = data.draw(st.booleans())
    types = data.draw(st.lists(st.booleans(), min_size=len(events), max_size=len(events))) if typed else None
    hi = data.draw(st.integers(-1, 45))
    lo = data.draw(st.integers(0, 45))
    mark = None
    if data.draw(st.booleans()):
        # The reader's contract: lo already includes the watermark (lo >= mark[0]).
        mark = (data.draw(st.integers(0, lo)), data.draw(st.integers(0, 7)))
    max_len = data.draw(st.integers(1, 50))
    got = cut(_columns(events, types), start, end, hi, lo, mark, max_len).tolist()
    assert got == _expected(events, types, start, end, hi, lo, mark, max_len)


@given(st.integers(0, 600), st.integers(2, 80))
def test_pieces_are_half_to_full_chunks_in_order(n: int, chunk_events: int) -> None:
    bounds = cuts(n, -(-n // chunk_events)) if n else [0]
    assert bounds[0] == 0 and bounds[-1] == n  # consecutive, from the newest to the oldest
    sizes = [b - a for a, b in itertools.pairwise(bounds)]
    assert sum(sizes) == n
    assert all(0 < s <= chunk_events for s in sizes)
    if n >= chunk_events:
        assert all(2 * s >= chunk_events for s in sizes), sizes
    else:
        assert len(sizes) == (1 if n else 0)
    assert max(sizes, default=0) - min(sizes, default=0) <= 1  # near-equal


_TS = st.integers(0, 2**62)
_ID = st.integers(0, MAX_U64)
_COUNT = st.integers(1, 65_536)
_NONCE = st.binary(min_size=8, max_size=8)


@given(_TS, _ID, _COUNT, _NONCE)
def test_a_chunk_key_round_trips(ts: int, eid: int, count: int, nonce: bytes) -> None:
    q = chunk_qualifier((ts, eid), count, nonce)
    assert len(q) == QUALIFIER_LEN
    key = chunk_key(q, ts + 5)
    assert key == ((ts, eid), ts + 5, count, q)


@given(st.tuples(_TS, _ID), st.tuples(_TS, _ID), _COUNT, _COUNT, _NONCE, _NONCE)
def test_qualifiers_sort_newest_chunk_first(a: tuple[int, int], b: tuple[int, int], na: int, nb: int,
                                            xa: bytes, xb: bytes) -> None:
    qa, qb = chunk_qualifier(a, na, xa), chunk_qualifier(b, nb, xb)
    if a > b:
        assert qa < qb
    elif a < b:
        assert qa > qb


@given(st.tuples(_TS, _ID), _COUNT, _NONCE, st.integers(0, 2**62 + 10))
def test_first_qualifier_before_selects_chunks_older_than_hi(oldest: tuple[int, int], count: int, nonce: bytes,
                                                              hi: int) -> None:
    q = chunk_qualifier(oldest, count, nonce)
    assert (q >= first_qualifier_before(hi)) == (oldest[0] < hi)


@given(st.integers(0, 2**62), st.integers(0, 2**62))
def test_first_qualifier_before_is_monotone(h1: int, h2: int) -> None:
    if h1 < h2:
        assert first_qualifier_before(h1) > first_qualifier_before(h2)


def test_fresh_qualifiers_differ() -> None:
    assert chunk_qualifier((5, 5), 3) != chunk_qualifier((5, 5), 3)  # the nonce: a cell never written before


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 3), st.integers(1, 40_000)), max_size=8,
                unique_by=lambda c: c[:2]),
       st.lists(st.tuples(st.integers(0, 60), st.integers(0, 3)), min_size=1, max_size=60, unique=True))
def test_territories_are_the_greatest_chunk_not_above_each_event(chunks: list[tuple[int, int, int]],
                                                                 events: list[tuple[int, int]]) -> None:
    """The vectorised territories equal the definition, event by event: the chunk with the
    greatest oldest event not above the event, else the oldest chunk; a step stops before the
    first new territory that takes the chunks to rewrite past STEP_EVENTS."""
    events.sort(reverse=True)
    keys = [chunk_key(chunk_qualifier((ts, eid), n), ts + 1) for ts, eid, n in sorted(chunks, reverse=True)]
    keys = [k for k in keys if k.oldest[0] <= events[0][0]]  # what the key-only get returns
    ts = np.array([e[0] for e in events], dtype=np.int64)
    eid = np.array([e[1] for e in events], dtype=np.uint64)
    index, fit = territories(keys, ts, eid)
    want = []
    for event in events:
        below = [j for j, k in enumerate(keys) if k.oldest <= event]
        want.append(min(below) if below else len(keys) - 1)  # newest first: the first is the greatest
    assert index.tolist() == want
    rewritten, expected_fit = 0, len(events)
    seen: set[int] = set()
    for n, j in enumerate(want):
        if j >= 0 and j not in seen:
            if n and rewritten + keys[j].events > STEP_EVENTS:
                expected_fit = n
                break
            seen.add(j)
            rewritten += keys[j].events
    assert fit == expected_fit
