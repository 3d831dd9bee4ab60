"""Online reads: one user at a time from many threads, against a Feast-style one-cell-per-user get.

    python -m benchmarks.online_bench [--users 5000] [--threads 1,8] [--seconds 10]

Needs a running HBase (``seqstore hbase start``). Writes ``--users`` users of 100 events each
with a bulk load (chunks, nothing raw), and a Feast-style table of the same users' latest 100
events packed in one cell per user (``benchmarks.score_bench.build_feast_table``). Then, for
each thread count, every thread reads random users one at a time for ``--seconds``:

* **ours**: ``table.read_sequences([(user, now)], max_len=100)`` on one shared
  ``SequenceStore`` (``pool_size`` = threads), every answer checked to hold 100 events;
* **Feast-style**: a happybase ``row()`` of the user's cell per read (a connection per
  thread: happybase connections are not thread-safe) and one ``np.frombuffer``.

Reports reads/s, latency p50/p99/p999 and this process's CPU per read (user + system), one run
each, the two sides alternating. Writes ``benchmarks/results/online.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import happybase
import numpy as np
import pyarrow as pa

from benchmarks.common import RESULTS, save
from benchmarks.score_bench import build_feast_table
from store import SequenceStore, SequenceTable, TableSpec

MAX_LEN = 100
DAY = 86_400_000


def events(users: int, per_user: int, now: int) -> pa.Table:
    rng = np.random.default_rng(1)
    n = users * per_user
    user = np.repeat(np.arange(users), per_user)
    return pa.table({
        "user_id": pa.array([f"user{u:07d}" for u in user]),
        "event_ts": pa.array(now - rng.integers(1, 30 * DAY, n), pa.int64()),
        "event_type": pa.array(rng.choice(["click", "view", "play", "buy"], n)),
        "item_id": pa.array(rng.integers(0, 1_000_000, n), pa.int64()),
        "dwell_ms": pa.array(rng.integers(0, 60_000, n).astype(np.int32), pa.int32()),
    })


def run_threads(threads: int, seconds: float, make_reader: Callable[[], Callable[[int], None]],
                users: int) -> dict[str, Any]:
    """``threads`` threads each reading random users one at a time for ``seconds``."""
    latencies: list[float] = []
    lock = threading.Lock()
    ready = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def loop(seed: int) -> None:
        read = make_reader()
        rng = np.random.default_rng(seed)
        mine: list[float] = []
        ready.wait()
        while time.perf_counter() < stop_at[0]:
            u = int(rng.integers(users))
            t0 = time.perf_counter()
            read(u)
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    cpu0, wall0 = os.times(), time.perf_counter()
    stop_at[0] = wall0 + seconds
    ready.wait()
    for w in workers:
        w.join()
    cpu1, wall = os.times(), time.perf_counter() - wall0
    ms = np.asarray(latencies) * 1000
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"reads": len(ms), "reads_per_s": round(len(ms) / wall), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "p999_ms": round(float(np.percentile(ms, 99.9)), 2),
            "client_cpu_us_per_read": round(cpu / len(ms) * 1e6)}


def ours(table: SequenceTable, now: int) -> Callable[[], Callable[[int], None]]:
    def make() -> Callable[[int], None]:
        def read(u: int) -> None:
            out = table.read_sequences([(f"user{u:07d}", now)], max_len=MAX_LEN)
            assert out.column("length")[0].as_py() == MAX_LEN
        return read
    return make


def feast(store: SequenceStore, name: str) -> Callable[[], Callable[[int], None]]:
    ep = store.config.thrift[0]

    def make() -> Callable[[int], None]:
        hb = happybase.Connection(ep.host, ep.port, timeout=60_000).table(name)

        def read(u: int) -> None:
            blob = hb.row(f"user{u:07d}".encode(), columns=[b"f:seq"]).get(b"f:seq", b"")
            assert len(np.frombuffer(blob[: 16 * MAX_LEN], dtype=">i8")) == 2 * MAX_LEN
        return read
    return make


def markdown(r: dict[str, Any]) -> str:
    lines = ["## Online reads (`python -m benchmarks.online_bench`)\n",
             f"One run, {r['cpus']} CPUs, {r['users']:,} users of 100 events (bulk-loaded chunks), max_len 100, "
             f"as of now, {r['seconds']} s per line; random users, one per call.\n",
             "| threads | reader | reads/s | p50 ms | p99 ms | p999 ms | client CPU µs/read | reads/s vs Feast |",
             "|---|---|---|---|---|---|---|---|"]
    for threads, sides in r["runs"].items():
        for side in ("ours", "feast"):
            s = sides[side]
            ratio = s["reads_per_s"] / sides["feast"]["reads_per_s"]
            lines.append(f"| {threads} | {side} | {s['reads_per_s']:,} | {s['p50_ms']} | {s['p99_ms']} | "
                         f"{s['p999_ms']} | {s['client_cpu_us_per_read']:,} | {ratio:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--threads", default="1,8")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    thread_counts = [int(x) for x in args.threads.split(",")]
    now = int(time.time() * 1000)
    name = f"online_{os.getpid()}"
    r: dict[str, Any] = {"users": args.users, "seconds": args.seconds, "cpus": os.cpu_count(), "runs": {}}
    with SequenceStore(pool_size=max(thread_counts)) as store:
        table = store.create_table(TableSpec(name, salt_buckets=8))
        feast_name = ""
        try:
            table.write_chunks(events(args.users, 100, now - 1))
            ids = [f"user{u:07d}" for u in range(args.users)]
            feast_name = build_feast_table(store, table, ids, now, MAX_LEN)
            for threads in thread_counts:
                run_threads(threads, 1.0, ours(table, now), args.users)  # warm-up
                r["runs"][str(threads)] = {
                    "ours": run_threads(threads, args.seconds, ours(table, now), args.users),
                    "feast": run_threads(threads, args.seconds, feast(store, feast_name), args.users),
                }
                print(threads, r["runs"][str(threads)], flush=True)
        finally:
            store.drop_table(name)
            if feast_name:
                ep = store.config.thrift[0]
                conn = happybase.Connection(ep.host, ep.port, timeout=60_000)
                conn.delete_table(feast_name, disable=True)
                conn.close()
    save("online", r)
    md = markdown(r)
    (RESULTS / "online.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
