"""Deep histories: users with 10^4, 10^5 and 10^6 events read at max_len 1,000 and 10,000.

    python -m benchmarks.deep_bench [--heavy 10000,100000,1000000] [--reps 5]

Needs a running HBase (``seqstore hbase start``). Generates the heavy users with ``seqstore
generate --heavy-users`` (beside 1,000 ordinary users), bulk-loads them (chunks, nothing raw)
and, per user and ``max_len``, measures:

* **ours**: one ``read_sequences`` of the user as of now and as of the middle of its history
  (the median of ``--reps`` calls), as µs per returned event;
* **Feast-style**: one happybase ``row()`` of a cell holding the same user's newest ``max_len``
  events (event time and item id, 16 bytes an event) and one ``np.frombuffer``: what reading
  that many events costs at the least. It can answer only "as of now".
* **memory**: the peak RSS of a fresh process that opens the store and makes the read, less
  that of one that only opens the store (``VmHWM``), for the heaviest user at the largest
  ``max_len``.

Writes ``benchmarks/results/deep.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import happybase
import numpy as np
import pyarrow.parquet as pq

from benchmarks.common import RESULTS, save
from ray_jobs.generate import generate
from store import SequenceStore, SequenceTable, TableSpec

MAX_LENS = (1_000, 10_000)
_RSS_PROBE = """
import json, sys
from store import SequenceStore
name, user, as_of, max_len = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with SequenceStore(pool_size=4) as store:
    table = store.table(name)
    table.read_sequences([("nobody", as_of)], max_len=1)
    if max_len:
        out = table.read_sequences([(user, as_of)], max_len=max_len)
        assert out.column("length")[0].as_py() == max_len
# VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps(int(hwm.split()[1])))
"""


def timed(fn: Any, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_kib(name: str, user: str, as_of: int, max_len: int) -> int:
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, name, user, str(as_of), str(max_len)],
                         capture_output=True, text=True, check=True, env=dict(os.environ))
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


def feast_cell(hb: Any, table: SequenceTable, user: str, now: int, max_len: int) -> bytes:
    key = f"{user}:{max_len}".encode()
    seq = table.read_sequences([(user, now)], max_len=max_len).column("sequence")[0].as_py()
    hb.put(key, {b"f:seq": b"".join(struct.pack(">qq", e["event_ts"], e["item_id"]) for e in seq)})
    return key


def markdown(r: dict[str, Any]) -> str:
    lines = ["## Deep histories (`python -m benchmarks.deep_bench`)\n",
             f"One run, {r['cpus']} CPUs; median of {r['reps']} reads per line; one user per call.\n",
             "| user's events | max_len | ours as of now (µs/event) | ours, mid-history as_of (µs/event) | "
             "Feast-style cell (µs/event) | ours / Feast |",
             "|---|---|---|---|---|---|"]
    for row in r["reads"]:
        lines.append(f"| {row['events']:,} | {row['max_len']:,} | {row['now_us_per_event']} | "
                     f"{row['mid_us_per_event']} | {row['feast_us_per_event']} | "
                     f"{row['now_us_per_event'] / row['feast_us_per_event']:.2f} |")
    m = r["memory"]
    lines.append(f"\nPeak RSS of one read of the {m['events']:,}-event user at max_len {m['max_len']:,}: "
                 f"{m['read_kib'] / 1024:.0f} MiB against {m['baseline_kib'] / 1024:.0f} MiB for a process that "
                 f"only opens the store: **+{(m['read_kib'] - m['baseline_kib']) / 1024:.0f} MiB**.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heavy", default="10000,100000,1000000")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    heavy = [int(x) for x in args.heavy.split(",")]
    work = Path(tempfile.mkdtemp(prefix="seqstore-deep-"))
    name = f"deep_{os.getpid()}"
    feast_name = f"{name}_feast"
    r: dict[str, Any] = {"cpus": os.cpu_count(), "reps": args.reps, "heavy": heavy, "reads": []}
    now = int(time.time() * 1000)
    with SequenceStore(pool_size=4) as store:
        ep = store.config.thrift[0]
        conn = happybase.Connection(ep.host, ep.port, timeout=120_000)
        table = store.create_table(TableSpec(name, salt_buckets=8))
        conn.create_table(feast_name, {"f": {"max_versions": 1, "block_cache_enabled": True}})
        hb = conn.table(feast_name)
        try:
            log = generate(work / "in", users=1_000, events=20_000, seed=1, heavy_users=heavy)
            t0 = time.perf_counter()
            for f in log.files:
                table.write_chunks(pq.read_table(f))
            r["load_s"] = round(time.perf_counter() - t0, 1)
            data = pq.read_table(log.files, columns=["user_id", "event_ts"])
            for k, events in enumerate(heavy):
                user = f"heavy{k:07d}"
                ts = np.sort(data.filter(data.column("user_id").to_numpy(zero_copy_only=False) == user)
                             .column("event_ts").to_numpy())
                mid = int(ts[len(ts) // 2]) + 1
                for max_len in MAX_LENS:
                    if max_len > events // 2:
                        continue
                    now_s = timed(lambda u=user, m=max_len: table.read_sequences([(u, now)], max_len=m), args.reps)
                    mid_s = timed(lambda u=user, m=max_len, t=mid: table.read_sequences([(u, t)], max_len=m),
                                  args.reps)
                    key = feast_cell(hb, table, user, now, max_len)
                    feast_s = timed(lambda k=key: np.frombuffer(hb.row(k, columns=[b"f:seq"])[b"f:seq"], dtype=">i8"),
                                    args.reps)
                    row = {"events": events, "max_len": max_len,
                           "now_us_per_event": round(now_s / max_len * 1e6, 2),
                           "mid_us_per_event": round(mid_s / max_len * 1e6, 2),
                           "feast_us_per_event": round(feast_s / max_len * 1e6, 2)}
                    r["reads"].append(row)
                    print(row, flush=True)
            user, max_len = f"heavy{len(heavy) - 1:07d}", min(MAX_LENS[-1], heavy[-1] // 2)
            r["memory"] = {"events": heavy[-1], "max_len": max_len,
                           "baseline_kib": peak_rss_kib(name, user, now, 0),
                           "read_kib": peak_rss_kib(name, user, now, max_len)}
        finally:
            store.drop_table(name)
            conn.delete_table(feast_name, disable=True)
            conn.close()
            shutil.rmtree(work, ignore_errors=True)
    save("deep", r)
    md = markdown(r)
    (RESULTS / "deep.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
