"""Equivalence of the two tiers, proven by property: the same random events written to a
raw-only table (``chunk_events=None``) and to tables compacted at random points, with late
events written after each compaction (older than every chunk, inside a chunk's range, newer
than all, exact repeats of compacted events), read identically for random requests —
``as_of`` at, before and after events, windows, event types, ``inclusive``, ``oldest_first``,
``fields``, ties on ``event_ts``, unknown users, several requests per user in one call — and
with ``max_events_per_user`` and ``ttl_days`` on both tables, ``history_complete`` included.

The tables are created once per test and each example writes its own users (a fresh user-id
namespace), which isolates examples as well as new tables would at a fraction of the cost.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import SequenceStore, SequenceTable, TableSpec
from store.tiers.compaction import CompactionStats, compact_range, compact_users

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
MINUTE = 60_000
DAY = 86_400_000
STEP = 17 * MINUTE  # between time slots: a bucket (1 h) holds 3-4 slots
SLOTS = 48
TYPES = ["a", "b", "c"]
FIELDS = ["event_type", "item_id", "dwell_ms"]
SALTS = 4


@dataclass
class Tables:
    raw: SequenceTable
    tiered: list[SequenceTable]
    ts_of: Callable[[int], int]  # slot -> event_ts
    seen: dict[str, int] = field(default_factory=lambda: {"examples": 0, "chunks": 0, "events_read": 0})


def _plain_ts(slot: int) -> int:
    return NOW - 20 * DAY + slot * STEP


def _ttl_ts(slot: int) -> int:
    # ttl_days=30: the lower half of the slots is 40 days old (expired when written), the upper
    # half 10 days old; no event is within days of the TTL's edge while the test runs.
    return (NOW - 40 * DAY if slot < SLOTS // 2 else NOW - 10 * DAY) + slot * STEP


@pytest.fixture
def tables(store: SequenceStore, table_prefix: str) -> Iterator[Callable[..., Tables]]:
    created: list[str] = []

    def make(chunk_sizes: list[int], ts_of: Callable[[int], int], **spec: Any) -> Tables:
        def create(chunk_events: int | None) -> SequenceTable:
            name = f"{table_prefix}{'raw' if chunk_events is None else f'c{chunk_events}'}_{uuid.uuid4().hex[:4]}"
            created.append(name)
            return store.create_table(TableSpec(name, salt_buckets=SALTS, bucket_ms=3_600_000,
                                                chunk_events=chunk_events, **spec))

        return Tables(create(None), [create(c) for c in chunk_sizes], ts_of)

    yield make
    for name in created:
        store.drop_table(name)


def _payload(slot: int, eid: int) -> tuple[str, int, int | None]:
    """An event's payload follows from its identity, so equal coordinates are exact repeats."""
    return TYPES[(slot * 7 + eid) % 3], slot * 100 + eid, None if (slot + eid) % 4 == 0 else slot * 10 + eid


def _batch(t: Tables, events: list[tuple[str, int, int]]) -> pa.Table:
    payloads = [_payload(s, e) for _, s, e in events]
    return pa.table({
        "user_id": pa.array([u for u, _, _ in events], pa.string()),
        "event_ts": pa.array([t.ts_of(s) for _, s, _ in events], pa.int64()),
        "event_id": pa.array([e for _, _, e in events], pa.int64()),
        "event_type": pa.array([p[0] for p in payloads], pa.string()),
        "item_id": pa.array([p[1] for p in payloads], pa.int64()),
        "dwell_ms": pa.array([p[2] for p in payloads], pa.int32()),
    })


def _write(t: Tables, events: list[tuple[str, int, int]]) -> None:
    if not events:
        return
    batch = _batch(t, events)
    for table in [t.raw, *t.tiered]:
        result = table.write(batch, on_invalid="raise")
        assert result.written + result.merged == len(events)


def _compact(data: st.DataObject, t: Tables, users: list[str]) -> None:
    for table in t.tiered:
        how = data.draw(st.sampled_from(["none", "users", "ranges", "all", "older_than", "interrupted"]),
                        label="compaction")
        stats = CompactionStats()
        if how == "interrupted":
            _interrupted(table, users)
        elif how == "users":
            stats = compact_users(table.handle, data.draw(st.lists(st.sampled_from(users), min_size=1, unique=True)))
        elif how == "ranges":
            ranges = table.salt_ranges()
            for start, stop in data.draw(st.lists(st.sampled_from(ranges), min_size=1, unique=True)):
                stats.add(compact_range(table.handle, start, stop))
        elif how in ("all", "older_than"):
            older = t.ts_of(data.draw(st.integers(0, SLOTS))) if how == "older_than" else None
            for start, stop in table.salt_ranges():
                stats.add(compact_range(table.handle, start, stop, older_than_ms=older))
        t.seen["chunks"] += stats.chunks_written


class _Stop(Exception):
    """Injected: the compaction's process dies before it deletes the raw cells it merged."""


def _interrupted(table: SequenceTable, users: list[str]) -> None:
    """A compaction that stops after its chunks are written and before the raw cells are
    deleted: both tiers then hold the same events until a later compaction finishes the job."""
    pool = table.handle.pool
    real = pool.call

    def call(method: str, *args: Any) -> Any:
        if method == "deleteMultiple":
            raise _Stop
        return real(method, *args)

    pool.call = call  # type: ignore[method-assign]
    try:
        compact_users(table.handle, users)
    except _Stop:
        pass
    finally:
        del pool.call


def _as_of(data: st.DataObject, t: Tables, slots: list[int]) -> int:
    kind = data.draw(st.sampled_from(["at", "before", "after", "any", "now"]), label="as_of")
    if kind == "now" or (not slots and kind != "any"):
        return NOW
    if kind == "any":
        return t.ts_of(data.draw(st.integers(-1, SLOTS))) + data.draw(st.integers(-3, 3))
    ts = t.ts_of(data.draw(st.sampled_from(slots)))
    return ts + {"at": 0, "before": -1, "after": 1}[kind]


def _read_and_compare(data: st.DataObject, t: Tables, users: list[str], written: list[tuple[str, int, int]]) -> None:
    slots_of = {u: sorted({s for w, s, _ in written if w == u}) for u in users}
    candidates = [*users, f"{users[0]}-unknown"]
    requests = []
    for _ in range(data.draw(st.integers(1, 10), label="requests")):
        user = data.draw(st.sampled_from(candidates))
        requests.append((user, _as_of(data, t, slots_of.get(user, []))))
    types = data.draw(st.none() | st.lists(st.sampled_from(TYPES), unique=True), label="event_types")
    options: dict[str, Any] = {
        "max_len": data.draw(st.integers(1, 30), label="max_len"),
        # Whole slot spans and one ms either side: lo lands on, above and below events.
        "window_ms": data.draw(st.none() | st.builds(lambda k, d: k * STEP + d, st.integers(1, SLOTS),
                                                     st.integers(-1, 1)), label="window_ms"),
        "event_types": types,
        "fields": data.draw(st.none() | st.lists(st.sampled_from(FIELDS), unique=True), label="fields"),
        "inclusive": data.draw(st.booleans(), label="inclusive"),
        "oldest_first": data.draw(st.booleans(), label="oldest_first"),
    }
    expected = t.raw.read_sequences(requests, **options).to_pylist()
    t.seen["events_read"] += sum(r["length"] for r in expected)
    for table in t.tiered:
        got = table.read_sequences(requests, **options).to_pylist()
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            assert g == e, (f"request {i} {requests[i]} on {table.name} (chunk_events={table.spec.chunk_events}) "
                            f"with {options}:\nraw-only: {e}\ncompacted: {g}")


def _run_property(t: Tables, max_examples: int) -> None:
    @settings(max_examples=max_examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def run(data: st.DataObject) -> None:
        t.seen["examples"] += 1
        ns = uuid.uuid4().hex[:8]
        users = [f"{ns}-{k}" for k in range(data.draw(st.integers(1, 3), label="users"))]
        event = st.tuples(st.sampled_from(users), st.integers(0, SLOTS - 1), st.integers(0, 5))
        written: list[tuple[str, int, int]] = []
        for _ in range(data.draw(st.integers(1, 4), label="phases")):
            fresh = data.draw(st.lists(event, max_size=25), label="events")
            repeats = data.draw(st.lists(st.sampled_from(written), max_size=6), label="repeats") if written else []
            _write(t, fresh + repeats)
            written += fresh
            _compact(data, t, users)
            _read_and_compare(data, t, users, written)
        # Late events after the last compaction, then one more read.
        late = data.draw(st.lists(event, max_size=8), label="late")
        _write(t, late)
        written += late
        _read_and_compare(data, t, users, written)

    run()


def _assert_not_vacuous(t: Tables) -> None:
    assert t.seen["chunks"] > 0, t.seen  # compaction did produce chunks
    assert t.seen["events_read"] > 0, t.seen  # and reads returned events


def test_compacted_tables_read_like_raw_only_ones(tables: Callable[..., Tables]) -> None:
    t = tables([4, 7, 16], _plain_ts)
    _run_property(t, 25)
    _assert_not_vacuous(t)


def test_trimmed_tables_read_alike(tables: Callable[..., Tables]) -> None:
    t = tables([4, 9], _plain_ts, max_events_per_user=6)
    _run_property(t, 20)
    _assert_not_vacuous(t)


def test_expired_events_read_alike(tables: Callable[..., Tables]) -> None:
    t = tables([4, 9], _ttl_ts, ttl_days=30)
    _run_property(t, 20)
    _assert_not_vacuous(t)


def test_events_expiring_after_compaction_read_alike(tables: Callable[..., Tables]) -> None:
    """Events compacted into chunks while alive, then expired: a chunk wholly expired (HBase's
    TTL on its newest event) and one that straddles the TTL's edge (the reader's cut)."""
    ttl_s = 45
    now = int(time.time() * 1000)
    old = [now - (ttl_s - 12) * 1000 + i for i in range(6)]  # expire 12 s from now
    new = [now - 5_000 + i for i in range(6)]
    t = tables([4], lambda slot: slot, ttl_days=ttl_s / 86_400)
    rows = pa.table({"user_id": ["u"] * 12 + ["v"] * 6, "event_ts": pa.array(old + new + old, pa.int64()),
                     "event_type": ["a"] * 18, "item_id": list(range(18)), "dwell_ms": pa.array([1] * 18, pa.int32())})
    for table in [t.raw, *t.tiered]:
        table.write(rows, on_invalid="raise")
    tiered = t.tiered[0]
    stats = compact_users(tiered.handle, ["u", "v"])
    assert stats.chunks_written >= 3 and stats.raw_events == 18  # 12 events in chunks of 4, 6 in 3+3
    requests = [("u", now + 1), ("v", now + 1), ("u", old[3]), ("u", new[2]), ("u", new[2] + 1)]

    def read(table: SequenceTable, max_len: int) -> list[dict[str, Any]]:
        return table.read_sequences(requests, max_len=max_len).to_pylist()

    before = read(t.raw, 20)
    assert [r["length"] for r in before] == [12, 6, 3, 8, 9]
    assert read(tiered, 20) == before
    time.sleep(max(0.0, (old[-1] + ttl_s * 1000 + 2_000 - time.time() * 1000) / 1000))
    for max_len in (20, 6, 3):
        after = read(t.raw, max_len)
        assert [r["length"] for r in after][:2] == [min(6, max_len), 0]  # the old events are gone from both
        assert read(tiered, max_len) == after


def test_an_event_rewritten_after_compaction_reads_its_latest_payload(tables: Callable[..., Tables]) -> None:
    t = tables([4], _plain_ts)

    def rows(item: int) -> pa.Table:
        return pa.table({"user_id": ["u", "u"], "event_ts": pa.array([_plain_ts(1), _plain_ts(2)], pa.int64()),
                         "event_id": pa.array([7, 8], pa.int64()), "event_type": ["a", "a"],
                         "item_id": [item, item + 1], "dwell_ms": pa.array([None, None], pa.int32())})

    for table in [t.raw, *t.tiered]:
        table.write(rows(100), on_invalid="raise")
    assert compact_users(t.tiered[0].handle, ["u"]).raw_events == 2
    for table in [t.raw, *t.tiered]:
        table.write(rows(500), on_invalid="raise")  # the same two events, corrected

    def items(table: SequenceTable) -> list[int]:
        out = table.read_sequences([("u", NOW)], max_len=10)
        return [e["item_id"] for e in out.column("sequence")[0].as_py()]

    assert items(t.raw) == [501, 500]  # the raw tier: the last write wins
    assert items(t.tiered[0]) == items(t.raw)


def test_recent_reads_skip_the_filter_and_still_reach_older_events(tables: Callable[..., Tables]) -> None:
    """A read as of a recent time takes the user's newest chunks unfiltered in its first get
    (store.tiers.chunk_runs); when newer events fill them all, the next round must find the older ones."""
    now = int(time.time() * 1000)
    t = tables([4], _plain_ts)
    ts = [now - 40 * 60_000 - i * 1_000 for i in range(30)] + [now - 60_000 + i * 100 for i in range(200)]
    data = pa.table({"user_id": ["r"] * len(ts), "event_ts": pa.array(ts, pa.int64()), "event_type": ["a"] * len(ts),
                     "item_id": list(range(len(ts))), "dwell_ms": pa.array([None] * len(ts), pa.int32())})
    for table in [t.raw, *t.tiered]:
        table.write(data, on_invalid="raise")
    assert compact_users(t.tiered[0].handle, ["r"]).raw_events == len(ts)
    requests = [("r", now - 30 * 60_000), ("r", now - 30 * 60_000), ("r", now), ("r", now - 50 * 60_000)]
    for max_len in (5, 30, 100):
        expected = t.raw.read_sequences(requests, max_len=max_len).to_pylist()
        assert [r["length"] for r in expected] == [min(30, max_len)] * 2 + [max_len, 0]
        assert t.tiered[0].read_sequences(requests, max_len=max_len).to_pylist() == expected
