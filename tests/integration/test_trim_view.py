"""Trimming removes exactly what reads would otherwise return, proven by property: random
writes of random users' events to a raw-only and a compacted table with
``max_events_per_user``, compactions at random points, and after every step each user's read
equals a brute-force model of the rule — the newest ``keep`` events ever written, never one
below a watermark recorded earlier — and the watermark is the oldest event the read returns.

Trim finds the ``keep``-th newest event through the tier view (:class:`store.tiers.view.TierView`),
the same code that serves reads; this test is what says the two agree.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import SequenceTable

pytestmark = pytest.mark.integration

T0 = int(time.time() * 1000) - 10 * 86_400_000
KEEP = 5
USERS = 3


def _write(table: SequenceTable, events: list[tuple[str, int]]) -> None:
    table.write(pa.table({
        "user_id": [u for u, _ in events],
        "event_ts": pa.array([ts for _, ts in events], pa.int64()),
        "event_type": ["view"] * len(events),
        "item_id": pa.array([ts % 1_000_003 for _, ts in events], pa.int64()),  # distinct content per event
        "dwell_ms": pa.array([None] * len(events), pa.int64()),
    }))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_trim_keeps_exactly_the_newest_events_reads_return(make_table: Callable[..., SequenceTable],
                                                           data: st.DataObject) -> None:
    suffix = uuid.uuid4().hex[:6]
    raw = make_table(f"raw{suffix}", chunk_events=None, max_events_per_user=KEEP, salt_buckets=2)
    tiered = make_table(f"tier{suffix}", chunk_events=4, max_events_per_user=KEEP, salt_buckets=2)
    users = [f"u{i}" for i in range(USERS)]
    kept: dict[str, set[int]] = {u: set() for u in users}  # the model: what reads return
    mark: dict[str, int] = {}  # the model's watermark time per user
    used: set[int] = set()
    for _step in range(data.draw(st.integers(2, 5), label="steps")):
        if data.draw(st.booleans(), label="compact first"):
            tiered.compact_users(data.draw(st.lists(st.sampled_from(users), min_size=1, unique=True)))
        offsets = data.draw(st.lists(st.tuples(st.sampled_from(users), st.integers(0, 400)), min_size=1,
                                     max_size=12), label="events")
        batch = []
        for user, offset in offsets:
            ts = T0 + offset * 60_000 + users.index(user)  # distinct times per user: no ties to model
            if ts not in used:
                used.add(ts)
                batch.append((user, ts))
        for table in (raw, tiered):
            _write(table, batch)
        for user, ts in batch:
            if user not in mark or ts >= mark[user]:
                kept[user].add(ts)
        for user in users:
            if len(kept[user]) > KEEP:
                kept[user] = set(sorted(kept[user])[-KEEP:])
                mark[user] = min(kept[user])
        for table in (raw, tiered):
            seqs = table.read_sequences([(u, T0 + 86_400_000) for u in users], max_len=50)
            got = {u: [e["event_ts"] for e in s] for u, s in zip(users, seqs.column("sequence").to_pylist(),
                                                                     strict=True)}
            assert got == {u: sorted(kept[u], reverse=True) for u in users}, table.name
            marks = table.watermarks(users)
            assert {u: m[0] for u, m in marks.items()} == mark, table.name
