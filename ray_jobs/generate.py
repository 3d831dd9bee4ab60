"""``seqstore generate``: a realistic, reproducible behaviour log in Parquet.

What it contains, for ``--users N --events M --seed S``:

* Zipf-distributed activity (exponent 1.2): a few users carry a large share of the
  events (with 1M events the top user has 100k+), most users have a handful.
* Sessions: bursts of events seconds apart, separated by gaps of hours to days.
* Event types view / click / play / purchase, Zipf-popular items, nullable dwell times.
* Same-millisecond ties and locally out-of-order rows, as real logs have.
* ``--heavy-users 10000,100000`` adds users with exactly that many events each (``heavy0000000``,
  ``heavy0000001``, ...), made the same way: the deep histories long-sequence models read.
* ``--bad-fraction F`` of the rows malformed, cycling through every kind the writer
  quarantines (null/empty/oversized user, negative / seconds / far-future timestamps,
  a dwell time that overflows int32, a null item, an oversized payload).

Rows are written in time order (with the local disorder) to several files of several row
groups. The same arguments give the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BASE_TS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: fixed, so output does not depend on the clock
SPAN_MS = 90 * 86_400_000
EVENT_TYPES = np.array(["view", "click", "play", "purchase"])
TYPE_P = np.array([0.62, 0.25, 0.09, 0.04])
BAD_KINDS = ("null_user", "empty_user", "long_user", "negative_ts", "seconds_ts", "future_ts",
             "dwell_overflow", "null_item", "huge_payload")
SCHEMA = pa.schema([
    pa.field("user_id", pa.string()),
    pa.field("event_ts", pa.int64()),
    pa.field("event_type", pa.string()),
    pa.field("item_id", pa.int64()),
    pa.field("dwell_ms", pa.int64()),  # int64 on disk: an overflow is a wrong-type row for the int32 schema
])


@dataclass(frozen=True, slots=True)
class Generated:
    """What :func:`generate` wrote."""

    files: list[str]
    events: int
    bad_rows: int
    users: int
    max_user_events: int


def _user_events(users: int, events: int, rng: np.random.Generator) -> np.ndarray:
    """Per-event user index, Zipf(1.2) by user rank, every user at least once when possible."""
    weights = 1.0 / np.arange(1, users + 1) ** 1.2
    owners = rng.choice(users, size=events, p=weights / weights.sum())
    head = min(users, events)
    owners[:head] = rng.permutation(users)[:head]
    return np.sort(owners)


def generate(out: Path, *, users: int, events: int, seed: int, bad_fraction: float = 0.0,
             files: int = 4, row_group_rows: int = 50_000, heavy_users: Sequence[int] = ()) -> Generated:
    """Write the log to ``out`` (created); see the module docstring. Deterministic in its arguments.

    ``heavy_users``: one more user per entry, with exactly that many events (beyond ``events``).
    """
    if users <= 0 or events <= 0:
        raise ValueError("'users' and 'events' must be > 0")
    if any(n <= 0 for n in heavy_users):
        raise ValueError("'heavy_users' must be event counts > 0")
    if not 0.0 <= bad_fraction < 1.0:
        raise ValueError("'bad_fraction' must be in [0, 1)")
    if files <= 0 or row_group_rows <= 0:
        raise ValueError("'files' and 'row_group_rows' must be > 0")
    rng = np.random.default_rng(seed)
    owner = _user_events(users, events, rng)
    if heavy_users:  # indices after the Zipf users', so the owners stay sorted
        owner = np.concatenate([owner, np.repeat(np.arange(users, users + len(heavy_users)), list(heavy_users))])
    names = [f"user{u:07d}" for u in range(users)] + [f"heavy{k:07d}" for k in range(len(heavy_users))]
    users, events = len(names), len(owner)
    # Per user: a session-structured walk in time from a random start.
    new_session = rng.random(events) < 0.08
    gaps = np.where(new_session, rng.exponential(8 * 3_600_000, events), rng.exponential(20_000, events))
    gaps[rng.random(events) < 0.01] = 0  # same-millisecond ties
    first = np.r_[True, owner[1:] != owner[:-1]]
    starts = rng.integers(0, SPAN_MS // 2, users)
    gaps[first] = 0
    steps = gaps.astype(np.int64)
    csum = np.cumsum(steps)
    group_start = np.maximum.accumulate(np.where(first, np.arange(events), 0))
    offset = csum - csum[group_start]
    # Squeeze a user's history into what is left of the span (heavy users live faster),
    # rather than clipping it, which would pile their late events onto one millisecond.
    last = np.r_[first[1:], True]
    room = (SPAN_MS - starts).astype(np.float64)
    total = np.zeros(users)
    total[owner[last]] = offset[last]
    scale = np.minimum(1.0, room / np.maximum(total, 1.0))
    ts = BASE_TS + starts[owner] + (offset * scale[owner]).astype(np.int64)
    order = np.argsort(ts, kind="stable")
    # Local disorder: swap some neighbours, as logs merged from several collectors are.
    swap = np.flatnonzero(rng.random(events - 1) < 0.03) if events > 1 else np.array([], dtype=np.int64)
    swap = swap[np.r_[True, np.diff(swap) > 1]] if len(swap) else swap  # disjoint pairs: each row kept once
    order[swap], order[swap + 1] = order[swap + 1], order[swap].copy()
    owner, ts = owner[order], ts[order]

    user_ids = np.array(names, dtype=object)[owner]
    event_type = EVENT_TYPES[rng.choice(len(EVENT_TYPES), size=events, p=TYPE_P)].astype(object)
    item_w = 1.0 / np.arange(1, 100_001) ** 0.9
    item = rng.choice(100_000, size=events, p=item_w / item_w.sum()).astype(np.int64) + 1
    dwell = np.round(rng.lognormal(8.5, 1.2, events)).astype(np.int64)
    dwell_valid = rng.random(events) >= 0.2
    item_valid = np.ones(events, dtype=bool)

    n_bad = round(events * bad_fraction)
    bad_at = np.sort(rng.choice(events, size=n_bad, replace=False)) if n_bad else np.array([], dtype=np.int64)
    for k, i in enumerate(bad_at.tolist()):
        kind = BAD_KINDS[k % len(BAD_KINDS)]
        if kind == "null_user":
            user_ids[i] = None
        elif kind == "empty_user":
            user_ids[i] = ""
        elif kind == "long_user":
            user_ids[i] = "u" * 2_000
        elif kind == "negative_ts":
            ts[i] = -int(ts[i])
        elif kind == "seconds_ts":
            ts[i] = int(ts[i]) // 1000
        elif kind == "future_ts":
            ts[i] = int(ts[i]) + 200 * 365 * 86_400_000
        elif kind == "dwell_overflow":
            dwell[i], dwell_valid[i] = 2**40, True
        elif kind == "null_item":
            item_valid[i] = False
        else:
            event_type[i] = "x" * 70_000

    table = pa.table({
        "user_id": pa.array(user_ids, pa.string()),
        "event_ts": pa.array(ts, pa.int64()),
        "event_type": pa.array(event_type, pa.string()),
        "item_id": pa.array(item, pa.int64(), mask=~item_valid),
        "dwell_ms": pa.array(dwell, pa.int64(), mask=~dwell_valid),
    }, schema=SCHEMA)
    out.mkdir(parents=True, exist_ok=True)
    per_file = -(-events // files)
    written = []
    for f in range(files):
        part = table.slice(f * per_file, per_file)
        if part.num_rows == 0:
            break
        path = out / f"events-{f:04d}.parquet"
        pq.write_table(part, path, row_group_size=row_group_rows, compression="zstd")
        written.append(str(path))
    counts = np.bincount(owner, minlength=users)
    return Generated(written, events, n_bad, users, int(counts.max()))
