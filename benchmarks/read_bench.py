"""Sequence reads: the store's reader vs a plain one-scan-per-user happybase loop.

    python -m benchmarks.read_bench [--users 10000] [--events 100] [--max-len 100]

Needs a running HBase (``seqstore hbase start`` or SEQSTORE_HBASE/SEQSTORE_HBASE_THRIFT2).
Both sides read the same table and decode the same events; each figure is sequences/s from
one run, and the ratio is what to compare across machines. Writes
``benchmarks/results/read_<users>x<events>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import happybase
import numpy as np
import pyarrow as pa

from store import SequenceStore, TableSpec
from store.format import keys

RESULTS = Path(__file__).resolve().parent / "results"
DAY = 86_400_000


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def make_events(users: int, per_user: int, now: int) -> pa.Table:
    rng = np.random.default_rng(1)
    n = users * per_user
    user = np.repeat(np.arange(users), per_user)
    ts = now - rng.integers(1, 60 * DAY, n)
    return pa.table({
        "user_id": pa.array([f"user{u:07d}" for u in user]),
        "event_ts": pa.array(ts, pa.int64()),
        "event_type": pa.array(rng.choice(["view", "click", "play", "buy"], n)),
        "item_id": pa.array(rng.integers(1, 1_000_000, n), pa.int64()),
        "dwell_ms": pa.array(rng.integers(0, 60_000, n), pa.int32()),
    })


def plain_happybase(store: SequenceStore, table_name: str, users: list[str], as_of: int, max_len: int) -> int:
    """What a user would write by hand: one happybase scan per user, newest first, decode, stop at max_len."""
    table = store.table(table_name)
    ep = store.config.thrift[0]
    conn = happybase.Connection(ep.host, ep.port, timeout=60_000)
    hb = conn.table(table_name)
    events = 0
    for user in users:
        prefix = keys.user_prefix(user, table.spec.salt_buckets)
        start = keys.scan_start(prefix, keys.bucket_of(as_of - 1, table.spec.bucket_ms))
        got = []
        for _, cols in hb.scan(row_start=start, row_stop=keys.prefix_end(prefix), columns=[b"e"],
                               timestamp=as_of, batch_size=4, scan_batching=max_len):
            for q in sorted(cols):
                ts, eid = keys.parse_qualifier(q[2:])
                got.append((ts, eid, table.handle.codec.decode(cols[q])))
                if len(got) == max_len:
                    break
            if len(got) == max_len:
                break
        events += len(got)
    conn.close()
    return events


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--max-len", type=int, default=100)
    parser.add_argument("--pool", type=int, default=8)
    args = parser.parse_args()
    now = int(time.time() * 1000)
    name = f"bench_read_{os.getpid()}"
    report: dict[str, object] = {"users": args.users, "events_per_user": args.events, "max_len": args.max_len}
    with SequenceStore(pool_size=args.pool) as store:
        table = store.create_table(TableSpec(name, salt_buckets=8))
        try:
            data = make_events(args.users, args.events, now)
            t0, c0 = time.perf_counter(), cpu_s()
            result = table.write(data, chunk_rows=20_000)
            wall = time.perf_counter() - t0
            report["write"] = {"events": result.written, "events_per_s": round(result.written / wall),
                               "events_per_cpu_s": round(result.written / (cpu_s() - c0))}
            users = [f"user{u:07d}" for u in range(args.users)]
            requests = pa.table({"user_id": users, "as_of_ts": [now] * len(users)})
            table.read_sequences(requests.slice(0, 200), max_len=args.max_len)  # warm-up
            t0, c0 = time.perf_counter(), cpu_s()
            out = table.read_sequences(requests, max_len=args.max_len)
            wall = time.perf_counter() - t0
            ours = {"sequences_per_s": round(len(users) / wall), "events": int(pa.compute.sum(out["length"]).as_py()),
                    "wall_s": round(wall, 2), "sequences_per_cpu_s": round(len(users) / (cpu_s() - c0))}
            t0, c0 = time.perf_counter(), cpu_s()
            events = plain_happybase(store, name, users, now, args.max_len)
            wall = time.perf_counter() - t0
            plain = {"sequences_per_s": round(len(users) / wall), "events": events, "wall_s": round(wall, 2),
                     "sequences_per_cpu_s": round(len(users) / (cpu_s() - c0))}
            report["read"] = {"store_reader": ours, "plain_happybase_scan_loop": plain,
                              "ratio": round(ours["sequences_per_s"] / plain["sequences_per_s"], 2)}
        finally:
            store.drop_table(name)
    RESULTS.mkdir(exist_ok=True)
    out_path = RESULTS / f"read_{args.users}x{args.events}.json"
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
