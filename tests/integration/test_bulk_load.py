"""The bulk path (``write_chunks``: straight into chunks) and the live path (``write`` + compaction)
store the same thing, proven by property on the real HBase.

Random logs — ties, repeats (the same event twice, and with an explicit ``event_id`` the same
event with another payload), bad rows, late events, several bulk loads of overlapping ranges,
live writes interleaved, compactions at random points — go through the bulk path into one
table and through ``write`` (then compaction) into another. After every step both give the
same reads (now and in the past, every field), the same quarantine; at the end the same
stored events (the audit's resolution of every copy in both tiers: none duplicated, none
unread) and no raw cell in a table only bulk-loaded.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import SequenceTable
from store.tiers import COPIES, RAW, resolve

pytestmark = pytest.mark.integration

T0 = int(time.time() * 1000) - 5 * 86_400_000
USERS = [f"u{i}" for i in range(4)]
TYPES = ["view", "click"]

_row = st.tuples(
    st.sampled_from([*USERS, None]),  # None: missing_user
    st.one_of(st.integers(0, 300).map(lambda m: T0 + m * 60_000), st.sampled_from([None, 1_700_000_000])),
    st.sampled_from(TYPES),
    st.integers(0, 3),  # few items: content repeats are common
    st.integers(0, 5),  # explicit ids: the same event re-sent, sometimes with another payload
)


def _batch(rows: list[tuple], explicit: bool) -> pa.Table:
    columns = {
        "user_id": pa.array([r[0] for r in rows], pa.string()),
        "event_ts": pa.array([r[1] for r in rows], pa.int64()),
        "event_type": [r[2] for r in rows],
        "item_id": pa.array([r[3] for r in rows], pa.int64()),
        "dwell_ms": pa.array([None] * len(rows), pa.int32()),
    }
    if explicit:
        columns["event_id"] = [f"e{r[4]}" for r in rows]
    return pa.table(columns)


def _reads(table: SequenceTable) -> list:
    requests = [(u, T0 + m * 60_000) for u in USERS for m in (0, 100, 200, 301, 10_000)]
    return table.read_sequences(requests, max_len=1000, allow_any_ts=True).column("sequence").to_pylist()


def _copies(table: SequenceTable) -> pa.Table:
    parts = [c.table() for c in table.stored_copies(b"", b"")]
    return pa.concat_tables(parts) if parts else COPIES.empty_table()


def _resolved(table: SequenceTable) -> tuple[set[tuple[bytes, int, int]], int, int]:
    """Every event reads return, as (user, event id, content digest), and the copies they get wrong."""
    out = resolve(_copies(table))
    returned = set(zip(*(out.returned.column(n).to_pylist() for n in ("user", "eid", "digest")), strict=True))
    return returned, out.events_duplicated, out.raw_unread


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_bulk_loads_store_what_writes_and_compaction_store(make_table: Callable[..., SequenceTable],
                                                          data: st.DataObject) -> None:
    suffix = uuid.uuid4().hex[:6]
    explicit = data.draw(st.booleans(), label="explicit ids")
    bulk = make_table(f"bulk{suffix}", chunk_events=4, salt_buckets=2)
    live = make_table(f"live{suffix}", chunk_events=4, salt_buckets=2)
    only_bulk = True
    for _ in range(data.draw(st.integers(1, 5), label="steps")):
        rows = data.draw(st.lists(_row, min_size=1, max_size=40), label="rows")
        batch = _batch(rows, explicit)
        if data.draw(st.booleans(), label="bulk step"):
            got, want = bulk.write_chunks(batch, source="s"), live.write(batch, source="s")
        else:
            only_bulk = False
            got, want = bulk.write(batch, source="s"), live.write(batch, source="s")
        assert got.quarantine.equals(want.quarantine)
        assert got.rows_in == want.rows_in
        assert got.rows_in == got.written + got.merged + got.quarantined
        for table in (bulk, live):
            if data.draw(st.booleans(), label=f"compact {table.name}"):
                table.compact_users(USERS)
        assert _reads(bulk) == _reads(live)
    if only_bulk:
        assert not _raw_cells(bulk), "a bulk-only table holds raw cells"
    for table in (bulk, live):
        table.compact_users(USERS)
    got_events, got_dup, got_unread = _resolved(bulk)
    want_events, _, _ = _resolved(live)
    assert (got_dup, got_unread) == (0, 0)
    assert got_events == want_events
    assert _reads(bulk) == _reads(live)


def _raw_cells(table: SequenceTable) -> int:
    return int(sum(1 for tier in _copies(table).column("tier").to_pylist() if tier == RAW))


def test_concurrent_bulk_loads_of_overlapping_logs_store_each_event_once(
        make_table: Callable[..., SequenceTable]) -> None:
    """Two loads of overlapping logs and a live writer at once, on the same users: every event
    once, none lost (each load retries users the others changed meanwhile)."""
    table = make_table("conc", chunk_events=8, salt_buckets=2)
    events = [(u, T0 + i * 1000) for u in USERS for i in range(600)]

    def rows(part: list[tuple[str, int]]) -> pa.Table:
        return pa.table({"user_id": [u for u, _ in part], "event_ts": pa.array([t for _, t in part], pa.int64()),
                         "event_type": ["view"] * len(part), "item_id": pa.array([t % 97 for _, t in part], pa.int64()),
                         "dwell_ms": pa.array([None] * len(part), pa.int32())})

    first, second, live = events[: 2 * len(events) // 3], events[len(events) // 3:], events[::7]
    errors: list[BaseException] = []

    def run(fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(lambda: table.write_chunks(rows(first)),)),
               threading.Thread(target=run, args=(lambda: table.write_chunks(rows(second)),)),
               threading.Thread(target=run, args=(lambda: [table.write(rows(live[i:i + 50]))
                                                          for i in range(0, len(live), 50)],))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    now = T0 + 4 * 86_400_000
    seqs = table.read_sequences([(u, now) for u in USERS], max_len=10_000).column("sequence").to_pylist()
    for user, seq in zip(USERS, seqs, strict=True):
        assert [e["event_ts"] for e in seq] == sorted((t for u, t in events if u == user), reverse=True)
    _, duplicated, unread = _resolved(table)
    assert (duplicated, unread) == (0, 0)


def test_a_bulk_load_that_stops_between_steps_leaves_every_event_readable_and_a_rerun_finishes(
        make_table: Callable[..., SequenceTable], monkeypatch: pytest.MonkeyPatch) -> None:
    """A heavy user merged in several steps (made small here): the load crashes after its first
    step. Reads and the audit then see exactly the events committed so far (the user is left
    flagged by our own token, with no raw cell); the same load again stores the rest, nothing twice."""
    from store.tiers import bulk, chunk_steps

    table = make_table("stop", chunk_events=4, salt_buckets=1)
    events = [("heavy", T0 + i * 1000) for i in range(40)]
    rows = pa.table({"user_id": [u for u, _ in events], "event_ts": pa.array([t for _, t in events], pa.int64()),
                     "event_type": ["view"] * 40, "item_id": pa.array(range(40), pa.int64()),
                     "dwell_ms": pa.array([None] * 40, pa.int32())})
    monkeypatch.setattr(bulk, "STEP_NEW_EVENTS", 10)
    real_commit = chunk_steps.commit
    commits: list[int] = []

    def crash_after_one(*args: object, **kwargs: object) -> tuple[bool, bytes]:
        if commits:
            raise RuntimeError("injected: the loader died between steps")
        commits.append(1)
        return real_commit(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(chunk_steps, "commit", crash_after_one)
    with pytest.raises(RuntimeError, match="between steps"):
        table.write_chunks(rows)
    monkeypatch.setattr(chunk_steps, "commit", real_commit)
    now = T0 + 4 * 86_400_000
    seq = table.read_sequences([("heavy", now)], max_len=100).column("sequence")[0].as_py()
    assert [e["event_ts"] for e in seq] == sorted((t for _, t in events), reverse=True)[:10]  # the newest step
    returned, duplicated, unread = _resolved(table)
    assert (len(returned), duplicated, unread) == (10, 0, 0)  # verify's side agrees with the read

    again = table.write_chunks(rows)
    assert again.written == 40
    seq = table.read_sequences([("heavy", now)], max_len=100).column("sequence")[0].as_py()
    assert [e["event_ts"] for e in seq] == sorted((t for _, t in events), reverse=True)
    returned, duplicated, unread = _resolved(table)
    assert (len(returned), duplicated, unread) == (40, 0, 0) and not _raw_cells(table)
