"""Scoring throughput: `seqstore score` vs a plain per-user scan loop vs a Feast-style multi-get.

    python -m benchmarks.score_bench [--users 10000] [--events 500] [--requests 10000,100000]
                                     [--max-lens 20,100,500] [--max-events-read 5000000]

Needs a running HBase (``seqstore hbase start``). In one run, against the same data:

* ours: ``run_score`` (Ray actors, the store's reader, the example numpy model);
* plain: one happybase scan per request, newest first, decoding the same cells, stopping
  at max_len (on a sample of requests: it is slow);
* Feast-style: one row per user holding the user's latest events in one cell, fetched with
  happybase multi-gets of 100 rows. This is how online feature stores keep sequences; it
  cannot answer "as of" a past time at all, so it is a ceiling for latest-only reads.

Each figure is sequences/s; ``n`` is how many requests were timed (capped so that at most
``--max-events-read`` events are read per measurement). Writes ``results/score.json``.
"""

from __future__ import annotations

import argparse
import os
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import happybase
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import save
from benchmarks.read_bench import make_events
from ray_jobs.runner import init_ray
from ray_jobs.score import run_score
from store import SequenceStore, SequenceTable, TableSpec
from store.format import keys

MODEL = "ray_jobs.examples.models:recency_similarity"


def plain_loop(store: SequenceStore, table: SequenceTable, users: list[str], as_of: list[int], max_len: int) -> float:
    ep = store.config.thrift[0]
    conn = happybase.Connection(ep.host, ep.port, timeout=60_000)
    hb = conn.table(table.name)
    t0 = time.perf_counter()
    for user, ts in zip(users, as_of, strict=True):
        prefix = keys.user_prefix(user, table.spec.salt_buckets)
        got = 0
        for _, cols in hb.scan(row_start=keys.scan_start(prefix, keys.bucket_of(ts - 1, table.spec.bucket_ms)),
                               row_stop=keys.prefix_end(prefix), columns=[b"e"], timestamp=ts, batch_size=4,
                               scan_batching=max_len):
            for q in sorted(cols):
                table.handle.codec.decode(cols[q])
                got += 1
                if got == max_len:
                    break
            if got == max_len:
                break
    wall = time.perf_counter() - t0
    conn.close()
    return len(users) / wall


def build_feast_table(store: SequenceStore, table: SequenceTable, users: list[str], now: int, depth: int) -> str:
    """One row per user, one cell with the latest ``depth`` events (length-prefixed values)."""
    name = f"{table.name}_feast"
    ep = store.config.thrift[0]
    conn = happybase.Connection(ep.host, ep.port, timeout=120_000)
    conn.create_table(name, {"f": {"max_versions": 1, "block_cache_enabled": True, "bloom_filter_type": "ROW"}})
    hb = conn.table(name)
    out = table.read_sequences((users, [now] * len(users)), max_len=depth)
    with hb.batch(batch_size=200) as batch:
        for user, seq in zip(users, out.column("sequence").to_pylist(), strict=True):
            blob = b"".join(struct.pack(">qq", e["event_ts"], e["item_id"]) for e in seq)
            batch.put(user.encode(), {b"f:seq": blob})
    conn.close()
    return name


def feast_multiget(store: SequenceStore, name: str, users: list[str], max_len: int) -> float:
    ep = store.config.thrift[0]
    conn = happybase.Connection(ep.host, ep.port, timeout=60_000)
    hb = conn.table(name)
    t0 = time.perf_counter()
    for start in range(0, len(users), 100):
        keys_ = [u.encode() for u in users[start : start + 100]]
        found = dict(hb.rows(keys_, columns=[b"f:seq"]))  # re-keyed by row: missing rows are omitted
        for k in keys_:
            blob = found.get(k, {}).get(b"f:seq", b"")
            np.frombuffer(blob[: 16 * max_len], dtype=">i8")
    wall = time.perf_counter() - t0
    conn.close()
    return len(users) / wall


def ours(requests: Path, out: Path, table: str, max_len: int, workers: int, n: int) -> float:
    t0 = time.perf_counter()
    report = run_score(str(requests), MODEL, out, table, max_len=max_len, workers=workers)
    assert report.completed, report.error
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=500, help="events per user")
    parser.add_argument("--requests", default="10000,100000")
    parser.add_argument("--max-lens", default="20,100,500")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--max-events-read", type=int, default=5_000_000)
    parser.add_argument("--plain-sample", type=int, default=500)
    args = parser.parse_args()
    now = int(time.time() * 1000)
    work = Path(tempfile.mkdtemp(prefix="seqstore-score-bench-"))
    rng = np.random.default_rng(3)
    results: list[dict[str, Any]] = []
    init_ray(None, 4)
    with SequenceStore(pool_size=8) as store:
        name = f"bench_score_{os.getpid()}"
        table = store.create_table(TableSpec(name, salt_buckets=8, bucket_ms=7 * 86_400_000))
        try:
            t0 = time.perf_counter()
            table.write(make_events(args.users, args.events, now), chunk_rows=50_000)
            setup = {"events": args.users * args.events, "write_s": round(time.perf_counter() - t0, 1)}
            all_users = [f"user{u:07d}" for u in range(args.users)]
            feast = build_feast_table(store, table, all_users, now, max(int(x) for x in args.max_lens.split(",")))
            for n_req in (int(x) for x in args.requests.split(",")):
                for max_len in (int(x) for x in args.max_lens.split(",")):
                    n = min(n_req, max(1_000, args.max_events_read // max_len))
                    users = [all_users[i] for i in rng.integers(0, args.users, n)]
                    as_of = (now - rng.integers(0, 7 * 86_400_000, n)).tolist()
                    req = work / f"req_{n_req}_{max_len}.parquet"
                    pq.write_table(pa.table({"user_id": users, "as_of_ts": as_of}), req, row_group_size=2_000)
                    row: dict[str, Any] = {"requests": n_req, "timed": n, "max_len": max_len}
                    row["ours_seq_per_s"] = round(ours(req, work / f"out_{n_req}_{max_len}", name, max_len, 2, n))
                    k = min(args.plain_sample, n)
                    row["plain_scan_seq_per_s"] = round(plain_loop(store, table, users[:k], as_of[:k], max_len))
                    row["feast_multiget_seq_per_s"] = round(feast_multiget(store, feast, users, max_len))
                    row["ours_vs_plain"] = round(row["ours_seq_per_s"] / row["plain_scan_seq_per_s"], 2)
                    row["ours_vs_feast"] = round(row["ours_seq_per_s"] / row["feast_multiget_seq_per_s"], 2)
                    results.append(row)
                    print(row, flush=True)
            scaling = []
            req = work / "req_10000_100.parquet"
            if req.exists():
                n = pq.ParquetFile(req).metadata.num_rows
                for workers in (int(x) for x in args.workers.split(",")):
                    rate = ours(req, work / f"scale_{workers}", name, 100, workers, n)
                    scaling.append({"workers": workers, "max_len": 100, "seq_per_s": round(rate)})
                    print(scaling[-1], flush=True)
        finally:
            store.drop_table(name)
            try:
                ep = store.config.thrift[0]
                conn = happybase.Connection(ep.host, ep.port, timeout=60_000)
                conn.delete_table(f"{name}_feast", disable=True)
                conn.close()
            except Exception as exc:  # noqa: BLE001 - cleanup only
                print(f"cleanup: {exc!r}")
    path = save("score", {"setup": setup, "results": results, "workers": scaling, "cpus": os.cpu_count()})
    print("\n| requests | timed | max_len | ours seq/s | plain scan | ÷ plain | Feast multi-get | ÷ Feast |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['requests']} | {r['timed']} | {r['max_len']} | {r['ours_seq_per_s']} | "
              f"{r['plain_scan_seq_per_s']} | {r['ours_vs_plain']} | {r['feast_multiget_seq_per_s']} | "
              f"{r['ours_vs_feast']} |")
    print(f"\n{path}")


if __name__ == "__main__":
    main()
