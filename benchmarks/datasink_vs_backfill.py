"""Loading the same Parquet log two ways: `seqstore backfill` vs Ray Data's `write_datasink(SequenceDatasink)`.

    python -m benchmarks.datasink_vs_backfill [--events 1000000] [--users 10000] [--workers 2]

Needs a running HBase (``seqstore hbase start``). One run, on fresh tables of the same HBase:

* backfill: the CLI as a subprocess, ``seqstore backfill IN --table A --workers N --json``;
  its rate is the job's own ``wall_s`` (from the plan to the report, Ray's start-up excluded);
  the subprocess's whole wall time is recorded too;
* datasink: ``ray.data.read_parquet(IN).write_datasink(SequenceDatasink(B), concurrency=N)`` in
  this process, on a local Ray of the same size as the CLI's (``init_ray(None, N)``); timed from
  the call to its return (Ray Data's planning and start-up of the job included, ``ray.init`` not).
  ``read_parquet(IN).repartition(<backfill's units>)``: Ray Data's write parallelism is its blocks,
  and Ray 2.60 reads this log as one block (one write task; ``override_num_blocks`` is ignored by
  its Parquet reader), so the repartition (timed with the rest) makes one block per backfill unit.
  The default read (one write task) is run too.

Both write through the same writer with the same pool size and chunk rows. Each path first
loads a small log (a warm-up: neither pays for a cold JVM or a cold Ray); backfill runs first,
before this process starts its own Ray, so no idle Ray runs beside the CLI's. Events per machine
CPU-second use ``/proc/stat`` (client, Ray and HBase alike). Writes
``benchmarks/results/datasink_vs_backfill.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from benchmarks.common import machine_cpu_s, save
from ray_jobs.data import SequenceDatasink
from ray_jobs.generate import generate
from ray_jobs.runner import init_ray
from ray_jobs.units import plan
from store import SequenceStore, TableSpec


def backfill(store: SequenceStore, path: Path, table: str, workers: int, report_dir: Path) -> dict[str, Any]:
    store.create_table(TableSpec(table, salt_buckets=8))
    t0, c0 = time.perf_counter(), machine_cpu_s()
    done = subprocess.run([sys.executable, "-m", "ray_jobs.cli", "backfill", str(path), "--table", table,
                           "--workers", str(workers), "--json", "--no-progress", "--report-dir", str(report_dir)],
                          capture_output=True, text=True, timeout=3600, env=dict(os.environ))
    wall, cpu = time.perf_counter() - t0, machine_cpu_s() - c0
    if done.returncode != 0:
        raise SystemExit(f"backfill failed: {done.stderr.strip()}")
    report = json.loads(done.stdout)
    return {"events_in": report["events_in"], "events_written": report["events_written"],
            "events_merged": report["events_merged"], "events_quarantined": report["events_quarantined"],
            "wall_s": report["wall_s"], "events_per_s": round(report["events_in"] / report["wall_s"]),
            "subprocess_wall_s": round(wall, 2), "events_per_cpu_s": round(report["events_in"] / cpu)}


def datasink(store: SequenceStore, path: Path, table: str, workers: int, blocks: int | None) -> dict[str, Any]:
    store.create_table(TableSpec(table, salt_buckets=8))
    sink = SequenceDatasink(table, config=store.config)
    t0, c0 = time.perf_counter(), machine_cpu_s()
    dataset = ray.data.read_parquet(str(path))
    (dataset.repartition(blocks) if blocks else dataset).write_datasink(sink, concurrency=workers)
    wall, cpu = time.perf_counter() - t0, machine_cpu_s() - c0
    r = sink.result
    assert r is not None
    return {"events_in": r.rows_in, "events_written": r.written, "events_merged": r.merged,
            "events_quarantined": r.quarantined, "write_tasks": r.write_tasks, "wall_s": round(wall, 2),
            "events_per_s": round(r.rows_in / wall), "events_per_cpu_s": round(r.rows_in / cpu)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bad-fraction", type=float, default=0.001)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="seqstore-bench-sink-"))
    generate(work / "warm", users=1_000, events=50_000, seed=7, bad_fraction=args.bad_fraction, files=2,
             row_group_rows=25_000)
    generate(work / "in", users=args.users, events=args.events, seed=42, bad_fraction=args.bad_fraction, files=4,
             row_group_rows=50_000)
    tag = os.getpid()
    tables = [f"bench_{kind}_{tag}" for kind in ("warm_bf", "backfill", "warm_ds", "datasink", "datasink_default")]
    units = len(plan(str(work / "in"))[1])  # backfill's units (row groups): the Datasink gets as many blocks
    with SequenceStore(pool_size=2) as store:
        try:
            backfill(store, work / "warm", tables[0], args.workers, work / "warm-report")
            by_backfill = backfill(store, work / "in", tables[1], args.workers, work / "report")
            # Only now this process's own Ray: none runs beside the CLI's. The same size as the CLI's.
            init_ray(None, args.workers)
            ray.data.DataContext.get_current().enable_progress_bars = False
            datasink(store, work / "warm", tables[2], args.workers, units)
            by_sink = datasink(store, work / "in", tables[3], args.workers, units)
            # What read_parquet gives by default: Ray reads these files as one block, so one write task.
            one_block = datasink(store, work / "in", tables[4], args.workers, None)
        finally:
            for name in tables:
                store.drop_table(name)
    for key in ("events_in", "events_quarantined"):
        assert by_sink[key] == by_backfill[key], (key, by_sink[key], by_backfill[key])
    assert (by_sink["events_written"] + by_sink["events_merged"]
            == by_backfill["events_written"] + by_backfill["events_merged"])
    report = {"events": args.events, "users": args.users, "bad_fraction": args.bad_fraction,
              "workers": args.workers, "cpus": os.cpu_count(), "units": units, "backfill_cli": by_backfill,
              "datasink": {**by_sink, "repartition": units}, "datasink_default_read": one_block,
              "ratio_datasink_vs_backfill": round(by_sink["events_per_s"] / by_backfill["events_per_s"], 2),
              "ratio_per_cpu_s": round(by_sink["events_per_cpu_s"] / by_backfill["events_per_cpu_s"], 2)}
    path = save("datasink_vs_backfill", report)
    print("| path | events/s | wall s | events/CPU-s |\n|---|---|---|---|")
    for name, r in (("seqstore backfill (CLI)", by_backfill),
                    (f"write_datasink(SequenceDatasink), repartition({units})", by_sink),
                    ("write_datasink(SequenceDatasink), default read", one_block)):
        print(f"| {name} | {r['events_per_s']} | {r['wall_s']} | {r['events_per_cpu_s']} |")
    print(f"\ndatasink / backfill: {report['ratio_datasink_vs_backfill']}x events/s, "
          f"{report['ratio_per_cpu_s']}x per CPU-second\n{path}")


if __name__ == "__main__":
    main()
