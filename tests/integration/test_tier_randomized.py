"""Randomized concurrency on the real HBase: writers (new events, re-deliveries, corrections of
explicit ids, late events), two compactions and a trimmer run at once, with a reader checking
every sequence it gets; then every read equals brute force over what was acknowledged, and
``verify`` is clean.

Each writer owns its explicit ids, so the last acknowledged version of each is known; the
trim watermark read at the end says which acknowledged events retention removed. ``ROUNDS``
write rounds per writer (``SEQSTORE_RANDOM_ROUNDS``, default 60: about 2,500 writes, 150+
compaction passes and 100+ trims in CI).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.verify import verify
from store import SequenceStore, SequenceTable
from store.tiers.compaction import CompactionStats, compact_range
from store.writer import validated_cells

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUNDS = int(os.environ.get("SEQSTORE_RANDOM_ROUNDS", "200"))
NOW = int(time.time() * 1000)
HOUR = 3_600_000
USERS = [f"user{i}" for i in range(6)]
KEEP = 30


class Acknowledged:
    """What writers were told was written: the last version of each event, by (user, event_id)."""

    def __init__(self, table: SequenceTable) -> None:
        self.table = table
        # (user, event_id) -> (event_ts, item_id, explicit id or None)
        self.events: dict[tuple[str, int], tuple[int, int, str | None]] = {}
        self.lock = threading.Lock()

    def write(self, table: SequenceTable, rows: list[tuple[str, int, int, str | None]]) -> None:
        """Write ``rows`` ``(user, ts, item, explicit id)`` (distinct coordinates): the explicitly
        identified ones and the others in two calls. Recorded once acknowledged."""
        for explicit in (False, True):
            mine = [r for r in rows if (r[3] is not None) == explicit]
            if not mine:
                continue
            part = _rows(mine, explicit=explicit)
            result = table.write(part)
            assert result.quarantined == 0 and result.merged == 0, result
            cells = validated_cells(self.table.handle, part.to_batches()[0])
            with self.lock:
                for i, _, ts, eid in cells.coordinates():
                    self.events[(mine[i][0], eid)] = (ts, mine[i][2], mine[i][3])

    def input_table(self, explicit: bool) -> pa.Table:
        """The last acknowledged version of each event (of one kind): what verify expects."""
        return _rows([(u, ts, item, ident) for (u, _), (ts, item, ident) in self.events.items()
                      if (ident is not None) == explicit], explicit=explicit)


def _rows(rows: list[tuple[str, int, int, str | None]], *, explicit: bool) -> pa.Table:
    columns: dict[str, Any] = {"user_id": pa.array([r[0] for r in rows], pa.string()),
                               "event_ts": pa.array([r[1] for r in rows], pa.int64()),
                               "event_type": pa.array(["view"] * len(rows), pa.string()),
                               "item_id": pa.array([r[2] for r in rows], pa.int64())}
    if explicit:
        columns["event_id"] = pa.array([r[3] for r in rows], pa.string())
    return pa.table(columns)


def _writer(name: str, table: SequenceTable, ack: Acknowledged, seed: int, rounds: int) -> None:
    """New events, re-deliveries, corrections of this writer's explicit ids, late events."""
    rng = random.Random(seed)
    sent: list[tuple[str, int, int, str | None]] = []  # rows written, as (user, ts, item, id)
    latest: dict[str, tuple[str, int, int]] = {}  # explicit id -> (user, ts, item) last written
    item = seed * 1_000_000
    for _ in range(rounds):
        batch: dict[tuple[str, int, str | None], tuple[str, int, int, str | None]] = {}
        for _ in range(rng.randint(1, 12)):
            kind = rng.random()
            item += 1
            if kind < 0.45 or not sent:  # a new event, recent or late
                user = rng.choice(USERS)
                ts = NOW - rng.randint(0, 2 * HOUR) if rng.random() < 0.8 else NOW - rng.randint(5, 30) * HOUR
                eid = f"{name}-{item}" if rng.random() < 0.3 else None
                row = (user, ts, item, eid)
            elif kind < 0.7 and latest:  # a correction of an explicit id: same coordinates, new payload
                eid = rng.choice(sorted(latest))
                user, ts, _ = latest[eid]
                row = (user, ts, item, eid)
            else:  # a re-delivery of a content-identified row, or of an id's latest version
                user, ts, old, eid = rng.choice(sent)
                row = (user, ts, latest[eid][2] if eid is not None else old, eid)
            key = (row[0], row[1], row[3] if row[3] is not None else f"item{row[2]}")
            batch[key] = row
        rows = list(batch.values())
        ack.write(table, rows)
        for r in rows:
            sent.append(r)
            if r[3] is not None:
                latest[r[3]] = (r[0], r[1], r[2])


def _check_sequence(seq: list[dict[str, Any]], as_of: int) -> None:
    keys = [(e["event_ts"], e["event_id"]) for e in seq]
    assert keys == sorted(set(keys), reverse=True), "a sequence out of order or with a duplicate"
    assert all(ts < as_of for ts, _ in keys), "an event at or after as_of"


@pytest.mark.parametrize("keep", [None, KEEP], ids=["no-retention", f"max-{KEEP}-events"])
def test_concurrent_writers_compactions_and_trims_match_brute_force(
        store: SequenceStore, make_table: Callable[..., SequenceTable], tmp_path: Path, keep: int | None) -> None:
    table = make_table(salt_buckets=2, chunk_events=4, bucket_ms=HOUR, max_events_per_user=keep)
    ack = Acknowledged(table)
    stop = threading.Event()
    errors: list[BaseException] = []
    stats = CompactionStats()
    counts = {"trims": 0, "reads": 0}
    clients = [SequenceStore(store.config, pool_size=4) for _ in range(5)]

    def loop(body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                while not stop.is_set():
                    body()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
                stop.set()
        return run

    def compact(client: SequenceStore) -> Callable[[], None]:
        mine = client.table(table.name)

        def once() -> None:
            for start, end in mine.salt_ranges():
                stats.add(compact_range(mine.handle, start, end))
        return once

    def trim() -> None:
        if keep is not None:
            clients[2].table(table.name).trim(USERS)
        counts["trims"] += 1
        time.sleep(0.05)

    def read() -> None:
        as_of = NOW - random.randint(0, 3 * HOUR)
        seqs = clients[3].table(table.name).read_sequences(
            pa.table({"user_id": USERS, "as_of_ts": pa.array([as_of] * len(USERS), pa.int64())}), max_len=1000)
        for seq in seqs.column("sequence").to_pylist():
            _check_sequence(seq, as_of)
        counts["reads"] += 1

    background = [threading.Thread(target=loop(f)) for f in (compact(clients[0]), compact(clients[1]), trim, read)]
    writers = [threading.Thread(target=lambda n=n: _guard(errors, stop, lambda: _writer(
        f"w{n}", clients[4].table(table.name) if n else table, ack, seed=n + 1, rounds=ROUNDS))) for n in range(2)]
    try:
        for th in background + writers:
            th.start()
        for th in writers:
            th.join()
    finally:
        stop.set()
        for th in background:
            th.join()
        for c in clients:
            c.close()
    assert not errors, errors[0]
    assert stats.users > 0 and counts["reads"] > 0 and counts["trims"] > 0

    for start, end in table.salt_ranges():  # and once more at rest
        compact_range(table.handle, start, end)
    marks = table.watermarks(USERS) if keep is not None else {}
    kept = {k: v for k, v in ack.events.items() if k[0] not in marks or (v[0], k[1]) >= marks[k[0]]}
    rng = np.random.default_rng(7)
    probes = [(u, int(t)) for u in USERS for t in [NOW + 1, *rng.integers(NOW - 31 * HOUR, NOW, 5)]]
    got = table.read_sequences(pa.table({"user_id": [p[0] for p in probes],
                                         "as_of_ts": pa.array([p[1] for p in probes], pa.int64())}),
                               max_len=10_000, fields=["item_id"]).column("sequence").to_pylist()
    for (user, as_of), seq in zip(probes, got, strict=True):
        want = sorted(((ts, eid, item) for (u, eid), (ts, item, _) in kept.items() if u == user and ts < as_of),
                      reverse=True)
        assert [(e["event_ts"], e["event_id"], e["item_id"]) for e in seq] == want, (user, as_of)

    for explicit in (False, True):
        pq.write_table(ack.input_table(explicit), tmp_path / f"acknowledged-{explicit}.parquet")
    report = verify(str(tmp_path), table)
    assert (report.events_duplicated, report.raw_unread, report.payload_mismatched, report.events_extra) == \
        (0, 0, 0, 0), report
    assert report.events_missing == len(ack.events) - len(kept), report
    if keep is None:
        assert report.ok, report


def _guard(errors: list[BaseException], stop: threading.Event, body: Callable[[], None]) -> None:
    try:
        body()
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)
        stop.set()
