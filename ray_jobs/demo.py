"""``seqstore demo`` / ``make demo``: the main job on the embedded HBase.

Today: start the local HBase if needed (or use ``SEQSTORE_HBASE``), create a sequence
table, write a small generated behaviour log through the store's writer (with a few bad
rows, quarantined), and read sequences back as of a point in time. It grows into the full
flow (generate → backfill → score → export).
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pyarrow as pa

from hbase import launcher
from store import SequenceStore, TableSpec
from store.config import HBASE_ENV

DEMO_TABLE = "seqstore_demo"
EVENT_TYPES = ("view", "click", "play", "purchase")


def _events(users: int, per_user: int, now_ms: int, seed: int = 7) -> pa.Table:
    rng = random.Random(seed)
    rows: dict[str, list[object]] = {"user_id": [], "event_ts": [], "event_type": [], "item_id": [], "dwell_ms": []}
    for u in range(users):
        ts = now_ms - 30 * 86_400_000
        for _ in range(per_user):
            ts += rng.randint(1_000, 3 * 86_400_000 // per_user * 10)
            rows["user_id"].append(f"user-{u}")
            rows["event_ts"].append(min(ts, now_ms - 1))
            rows["event_type"].append(rng.choice(EVENT_TYPES))
            rows["item_id"].append(rng.randint(1, 500))
            rows["dwell_ms"].append(rng.choice([None, rng.randint(100, 60_000)]))
    # Rows a real log has: no user, a timestamp in seconds.
    rows["user_id"] += [None, "user-0"]
    rows["event_ts"] += [now_ms - 5, (now_ms - 5) // 1000]
    rows["event_type"] += ["view", "view"]
    rows["item_id"] += [1, 2]
    rows["dwell_ms"] += [None, None]
    return pa.table(rows)


def run(*, data_dir: Path | None, as_json: bool) -> int:
    """Run the demo; returns the process exit code."""
    steps: list[dict[str, object]] = []

    def step(name: str, t0: float, **info: object) -> None:
        entry = {"step": name, "seconds": round(time.monotonic() - t0, 2), **info}
        steps.append(entry)
        if not as_json:
            details = ", ".join(f"{k}={v}" for k, v in info.items())
            print(f"[{entry['seconds']:>6.2f}s] {name}: {details}", flush=True)

    t0 = time.monotonic()
    if os.environ.get(HBASE_ENV):
        step("hbase", t0, state="external", thrift=os.environ[HBASE_ENV])
    else:
        rt, already = launcher.start(
            data_dir, on_progress=None if as_json else (lambda m: print(f"  {m}", flush=True)))
        step("hbase", t0, state="already running" if already else "started",
             thrift=f"{rt.host}:{rt.thrift_port}", thrift2=f"{rt.host}:{rt.thrift2_port}", data_dir=rt.data_dir)

    with SequenceStore() as store:
        t0 = time.monotonic()
        store.drop_table(DEMO_TABLE)  # the demo's own table: every run starts from scratch
        table = store.create_table(TableSpec(DEMO_TABLE, salt_buckets=4))
        step("table", t0, table=DEMO_TABLE, salt_buckets=table.spec.salt_buckets)

        now = int(time.time() * 1000)
        events = _events(users=20, per_user=200, now_ms=now)
        t0 = time.monotonic()
        result = table.write(events, source="demo")
        step("write", t0, rows_in=result.rows_in, written=result.written, quarantined=result.by_reason())

        t0 = time.monotonic()
        requests = [(f"user-{u}", now) for u in range(20)] + [("nobody", now)]
        seqs = table.read_sequences(requests, max_len=50)
        lengths = seqs.column("length").to_pylist()
        step("read", t0, sequences=len(lengths), max_len=50, lengths=f"{min(lengths)}..{max(lengths)}")
        first = seqs.column("sequence")[0].as_py()[:3]

    if as_json:
        print(json.dumps({"ok": True, "steps": steps}))
    else:
        print("\nuser-0, newest first:")
        for e in first:
            print(f"  {e['event_ts']}  {e['event_type']:<8} item={e['item_id']:<4} dwell_ms={e['dwell_ms']}")
        print("\nHBase keeps running; stop it with: seqstore hbase stop")
    return 0
