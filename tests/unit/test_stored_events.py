"""What reads return of stored copies (store.tiers.stored_events.resolve), against a plain loop over
the read path's rules, on random copies: raw and chunk copies, flagged and unflagged users,
equal and different contents, events in several chunks."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from store.tiers.stored_events import CHUNK, COPIES, RAW, resolve

Copy = tuple[bytes, int, int, int]  # user, eid, digest, tier

copies_strategy = st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c"]), st.integers(0, 5) | st.just(2**64 - 1),
                                     st.integers(0, 2), st.sampled_from([RAW, CHUNK])), max_size=40)


def _plain(copies: list[Copy], flags: dict[bytes, bool]
           ) -> tuple[Counter[tuple[bytes, int, int]], int, int, set[bytes]]:
    events: dict[tuple[bytes, int], list[tuple[int, int]]] = defaultdict(list)
    for user, eid, digest, tier in copies:
        events[(user, eid)].append((digest, tier))
    returned: Counter[tuple[bytes, int, int]] = Counter()
    duplicated = unread = 0
    bad: set[bytes] = set()
    for (user, eid), found in events.items():
        raw = [d for d, tier in found if tier == RAW]
        chunks = [d for d, tier in found if tier == CHUNK]
        if flags[user] and raw:
            returned[(user, eid, raw[0])] += 1
        else:
            for d in chunks:
                returned[(user, eid, d)] += 1
        if len(chunks) > 1:
            duplicated += len(chunks) - 1
            bad.add(user)
        if raw and not flags[user] and raw[0] not in chunks:
            unread += 1
            bad.add(user)
    return returned, duplicated, unread, bad


@settings(max_examples=500, deadline=None)
@given(copies=copies_strategy, flag_a=st.booleans(), flag_b=st.booleans())
def test_resolve_follows_the_read_rules(copies: list[Copy], flag_a: bool, flag_b: bool) -> None:
    flags = {b"a": flag_a, b"b": flag_b, b"c": False}
    # A raw cell is one per event (VERSIONS=1): keep the first raw copy of each event.
    seen: set[tuple[bytes, int]] = set()
    unique = []
    for c in copies:
        if c[3] == RAW:
            if (c[0], c[1]) in seen:
                continue
            seen.add((c[0], c[1]))
        unique.append(c)
    table = pa.table([pa.array([c[0] for c in unique], pa.binary()), pa.array([c[1] for c in unique], pa.uint64()),
                      pa.array([c[2] for c in unique], pa.uint64()),
                      pa.array(np.array([c[3] for c in unique], dtype=np.uint8)),
                      pa.array([flags[c[0]] for c in unique], pa.bool_())], schema=COPIES)
    got = resolve(table)
    want, duplicated, unread, bad = _plain(unique, flags)
    rows = zip(*(got.returned.column(n).to_pylist() for n in ("user", "eid", "digest")), strict=True)
    assert Counter(rows) == want
    assert (got.events_duplicated, got.raw_unread) == (duplicated, unread)
    assert set(got.bad_users.to_pylist()) == bad
