"""A/B: the same workload on two revisions of the code, alternating on one HBase, as ratios.

    python -m benchmarks.ab_bench --before REV [--after DIR] [--rounds 2] [--events 300000]

For a change that must not cost speed (a refactor): each round runs the workload once on
``REV`` (a git worktree made for the run) and once on ``--after`` (default: this working
tree), in a fresh process each, so the machine's drift falls on both sides alike. The
workload uses only the public API (``SequenceStore``, ``SequenceTable``, ``run_backfill``,
``run_compact``), which both sides share:

* write: ``run_backfill`` of a generated log with 2 actors (events/s), and one process's
  ``table.write`` of the same events into a raw-only table (live writes, events/s);
* compaction: ``run_compact`` with 2 actors (events/s);
* reads, one ``read_sequences`` call of every user, max_len 100, median of 3: the raw tier
  (before compaction) and the compacted tier as of now, and the compacted tier as of a time
  inside the histories;
* online: 8 threads, each reading one user at a time as of now, for 3 s (p50 ms, reads/s).

Writes ``results/ab.json`` and ``results/ab.md``: per measure, each side's median over the
rounds and after ÷ before.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
# (measure, unit, higher is better)
MEASURES = [
    ("backfill_events_per_s", "events/s", True),
    ("live_write_events_per_s", "events/s", True),
    ("compact_events_per_s", "events/s", True),
    ("raw_read_seq_per_s", "seq/s", True),
    ("compacted_read_seq_per_s", "seq/s", True),
    ("historical_read_seq_per_s", "seq/s", True),
    ("online_p50_ms", "ms", False),
    ("online_reads_per_s", "reads/s", True),
]


def _median_of(fn: Any, n: int = 3) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(events: int, users: int) -> dict[str, Any]:
    """One side's workload, in this process (``store`` and ``ray_jobs`` from ``PYTHONPATH``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    import store
    from ray_jobs.backfill import run_backfill
    from ray_jobs.compact import run_compact
    from ray_jobs.generate import generate
    from ray_jobs.runner import init_ray
    from store import SequenceStore, TableSpec

    init_ray(None, 2)
    actor_store = ray.get(ray.remote(lambda: __import__("store").__file__).remote())
    if Path(actor_store).resolve() != Path(store.__file__).resolve():
        raise RuntimeError(f"Ray workers import {actor_store}, the driver {store.__file__}")
    work = Path(tempfile.mkdtemp(prefix="seqstore-ab-"))
    log = generate(work / "in", users=users, events=events, seed=11, files=4, row_group_rows=50_000)
    data = pa.concat_tables([pq.read_table(f) for f in log.files])
    ids = sorted(set(data.column("user_id").to_pylist()))
    ts = data.column("event_ts").to_numpy()
    mid = int(ts.min() + (ts.max() - ts.min()) // 2)
    now = int(time.time() * 1000)
    out: dict[str, Any] = {"store": store.__file__}
    name, live = f"ab_{os.getpid()}", f"ab_live_{os.getpid()}"
    with SequenceStore(pool_size=8) as s:
        table = s.create_table(TableSpec(name, salt_buckets=8, chunk_events=128))
        raw_only = s.create_table(TableSpec(live, salt_buckets=8, chunk_events=None))
        try:
            t0 = time.perf_counter()
            report = run_backfill(str(work / "in"), name, workers=2)
            out["backfill_events_per_s"] = report.events_written / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            written = raw_only.write(data).written
            out["live_write_events_per_s"] = written / (time.perf_counter() - t0)
            as_now = [(u, now) for u in ids]
            out["raw_read_seq_per_s"] = len(ids) / _median_of(lambda: table.read_sequences(as_now, max_len=100))
            t0 = time.perf_counter()
            run_compact(name, workers=2)
            out["compact_events_per_s"] = report.events_written / (time.perf_counter() - t0)
            out["compacted_read_seq_per_s"] = len(ids) / _median_of(lambda: table.read_sequences(as_now, max_len=100))
            past = [(u, mid) for u in ids]
            out["historical_read_seq_per_s"] = len(ids) / _median_of(lambda: table.read_sequences(past, max_len=100))
            out.update(_online(table, ids, now))
        finally:
            s.drop_table(name)
            s.drop_table(live)
    return out


def _online(table: Any, ids: list[str], now: int, threads: int = 8, seconds: float = 3.0) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def caller(k: int) -> None:
        mine = []
        i = k
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            table.read_sequences([(ids[i % len(ids)], now)], max_len=100)
            mine.append(time.perf_counter() - t0)
            i += threads * 7919
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=caller, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {"online_p50_ms": 1000 * statistics.median(latencies), "online_reads_per_s": len(latencies) / seconds}


def _side(tree: Path, events: int, users: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--measure", str(events), str(users)],
                          cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the workload failed on {tree}:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(result["store"]).resolve().parent.parent != tree.resolve():
        raise SystemExit(f"{tree}'s run imported {result['store']}")
    return result


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--measure":
        print(json.dumps(measure(int(sys.argv[2]), int(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", required=True, help="a git revision")
    parser.add_argument("--after", type=Path, default=REPO, help="a source tree (default: this one)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--users", type=int, default=3_000)
    args = parser.parse_args()
    before = Path(tempfile.mkdtemp(prefix="seqstore-ab-before-")) / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before],
                   check=True, capture_output=True)
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    t0 = time.perf_counter()
    try:
        for r in range(args.rounds):
            order = [("before", before), ("after", args.after)]
            for side, tree in order if r % 2 == 0 else order[::-1]:
                runs[side].append(_side(tree, args.events, args.users))
                print(f"round {r + 1} {side} done", file=sys.stderr)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], check=False)
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.before], capture_output=True,
                         text=True, check=True).stdout.strip()
    table = {m: {side: statistics.median(run[m] for run in runs[side]) for side in runs} for m, _, _ in MEASURES}
    report = {"before": rev, "after": str(args.after), "rounds": args.rounds, "events": args.events,
              "users": args.users, "wall_s": round(time.perf_counter() - t0), "runs": runs, "medians": table}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ab.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"A/B on one HBase, {args.rounds} alternating rounds ({report['wall_s']} s): before = {rev}, "
             f"after = {args.after.name or args.after}; {args.events:,} events of {args.users:,} users.", "",
             "| measure | before | after | after ÷ before |", "|---|---|---|---|"]
    for m, unit, _ in MEASURES:
        b, a = table[m]["before"], table[m]["after"]
        lines.append(f"| {m} ({unit}) | {b:,.1f} | {a:,.1f} | {a / b:.2f} |")
    (RESULTS / "ab.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
