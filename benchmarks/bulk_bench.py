"""Bulk backfill straight into chunks (issue 22) against what it replaces, in one run.

    python -m benchmarks.bulk_bench [--events 1000000] [--users 10000] [--workers 2] [--reps 3]

Needs a running HBase (``seqstore hbase start``); starts (and stops) its own Ray head with
``ray start --head`` so the jobs run as a user runs them on a cluster: ``seqstore backfill
--ray-address``. Same generated log (``seqstore generate``'s realistic data) for every side:

* **plain**: one cell per event, precomputed (row keys, qualifiers, payloads), written with
  happybase ``batch(batch_size=1000)`` puts from ``--workers`` processes — only the put loops
  are timed.
* **bulk**: ``seqstore backfill`` (``--into chunks``, the default) against the running Ray;
  events/s over the command's wall time, and events per *machine* CPU-second from
  ``/proc/stat`` (HBase, Ray and the driver together). The whole command with its own local
  Ray (no ``--ray-address``) is measured beside it.
* **old path, Parquet to read-ready**: ``seqstore backfill --into raw`` then ``seqstore
  compact``, against the bulk command's wall time.
* **bytes per event** of both tables after a flush (store files of every family; for the old
  path also without the raw family, which a major compaction would leave empty), and the
  logical bytes (row + family + qualifier + value of every cell).
* **reads** of the bulk-written table against the compacted one: ``read_sequences`` as of now,
  max_len 100, a sample of users in one call, alternating.

Ratios come from one run on a shared machine. Writes ``benchmarks/results/bulk_<events>.{json,md}``
(``bulk_<events>_<users>u`` for other ``--users``). The bulk command's CPU is also broken down
by process (HBase's JVMs, Ray's workers and daemons, the driver).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import happybase
import numpy as np

from benchmarks.backfill_bench import plain_cells
from benchmarks.common import RESULTS, ProcessCpu, machine_cpu_s, measure, save
from benchmarks.tiers_bench import disk_bytes, find_data_dir, flush, hbase_root, logical_bytes
from ray_jobs.generate import generate
from store import SequenceStore, TableSpec

SEQSTORE = [sys.executable, "-m", "ray_jobs.cli"]
RAY = str(Path(sys.executable).with_name("ray"))  # the venv's ray CLI
_CELLS: list[tuple[bytes, bytes, bytes]] = []  # inherited by the forked put processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _put_slice(args: tuple[str, int, str, int, int]) -> int:
    host, port, name, k, n = args
    conn = happybase.Connection(host, port, timeout=120_000)
    try:
        with conn.table(name).batch(batch_size=1000) as batch:
            for row, column, value in _CELLS[k::n]:
                batch.put(row, {column: value})
    finally:
        conn.close()
    return len(_CELLS[k::n])


def plain_puts(store: SequenceStore, files: list[str], workers: int) -> dict[str, Any]:
    name = f"bulk_plain_{os.getpid()}"
    table = store.create_table(TableSpec(name, salt_buckets=8))
    try:
        _CELLS[:] = plain_cells(files, table.spec, table.handle.codec)
        ep = store.config.thrift[0]
        with mp.get_context("fork").Pool(workers) as pool:
            t0, c0 = time.perf_counter(), machine_cpu_s()
            n = sum(pool.map(_put_slice, [(ep.host, ep.port, name, k, workers) for k in range(workers)]))
            wall, cpu = time.perf_counter() - t0, machine_cpu_s() - c0
        _CELLS.clear()
        return {"events": n, "wall_s": round(wall, 2), "events_per_s": round(n / wall),
                "events_per_cpu_s": round(n / cpu)}
    finally:
        store.drop_table(name)


def command(args: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float, float]:
    """Run a ``seqstore`` command with ``--json``; its summary, wall seconds, machine CPU seconds."""
    t0, c0 = time.perf_counter(), machine_cpu_s()
    p = subprocess.run([*SEQSTORE, *args, "--json", "--no-progress"], env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, machine_cpu_s() - c0
    if p.returncode != 0:
        raise RuntimeError(f"seqstore {' '.join(args)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return json.loads(p.stdout), wall, cpu


def read_rate(store: SequenceStore, name: str, users: list[str], now: int) -> float:
    table = store.table(name)
    t0 = time.perf_counter()
    out = table.read_sequences([(u, now) for u in users], max_len=100)
    assert out.num_rows == len(users)
    return len(users) / (time.perf_counter() - t0)


def storage(store: SequenceStore, root: Path | None, name: str, events: int) -> dict[str, Any]:
    logical = logical_bytes(store.table(name))["total_bytes"]
    out: dict[str, Any] = {"logical_bytes_per_event": round(logical / events, 2)}
    if root is not None:
        flush(store, name)
        disk = disk_bytes(root / "data" / "default" / name)
        out["disk"] = disk
        out["disk_bytes_per_event_after_flush"] = round(disk["store_files_total"] / events, 2)
        out["disk_bytes_per_event_without_raw_family"] = round(
            (disk["store_files_total"] - disk.get("e", 0)) / events, 2)
    return out


def markdown(r: dict[str, Any]) -> str:
    b, p, o, w = r["bulk"], r["plain"], r["old_path"], r["bulk_whole_command"]
    rows = [
        ("plain batched happybase puts, 1 cell per event (events/s)", f"{p['events_per_s']:,}", "1.00"),
        ("`seqstore backfill` into chunks, `--ray-address` (events/s)", f"{b['events_per_s']:,}",
         f"{b['events_per_s'] / p['events_per_s']:.2f} x plain (goal >= 3)"),
        ("  events per machine CPU-second", f"{b['events_per_cpu_s']:,}",
         f"{b['events_per_cpu_s'] / p['events_per_cpu_s']:.2f} x plain's (goal >= 200,000)"),
        ("  machine CPU-s of it by process", f"{b['cpu_s']}",
         "; ".join(f"{k} {v}" for k, v in b["cpu_s_by_process"].items())),
        ("  the whole command with its own Ray (events/s; per CPU-s)",
         f"{w['events_per_s']:,}; {w['events_per_cpu_s']:,}", ""),
        ("old path: `backfill --into raw` + `compact` (s, Parquet to read-ready)", f"{o['wall_s']:.1f}", ""),
        ("new path: `backfill` (s, Parquet to read-ready)", f"{b['wall_s']:.1f}",
         f"{o['wall_s'] / b['wall_s']:.2f} x faster (goal >= 5)"),
    ]
    s_new, s_old = r["storage"]["bulk"], r["storage"]["old_path"]
    if "disk_bytes_per_event_after_flush" in s_new:
        rows.append(("bytes/event on disk after a flush: bulk (old path; old path without its raw family)",
                     f"{s_new['disk_bytes_per_event_after_flush']}",
                     f"({s_old['disk_bytes_per_event_after_flush']}; "
                     f"{s_old['disk_bytes_per_event_without_raw_family']}) (goal <= 10)"))
    rows.append(("logical bytes/event: bulk (old path)", f"{s_new['logical_bytes_per_event']}",
                 f"({s_old['logical_bytes_per_event']})"))
    rd = r["reads"]
    rows.append((f"reads as of now, {rd['users']:,} users, max_len 100 (seq/s): bulk (compacted)",
                 f"{rd['bulk']['median']:,.0f}",
                 f"({rd['compacted']['median']:,.0f}) {rd['bulk']['median'] / rd['compacted']['median']:.2f} x"))
    head = (f"## Bulk backfill into chunks (`python -m benchmarks.bulk_bench`)\n\nOne run ({r['wall_s']:.0f} s), "
            f"{r['cpus']} CPUs, {r['events']:,} generated events of {r['users']:,} users, {r['workers']} workers. "
            "Rates over each command's wall time; CPU from /proc/stat for the whole machine.\n\n"
            "| measure | value | ratio |\n|---|---|---|\n")
    return head + "\n".join(f"| {a} | {v} | {x} |" for a, v, x in rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--read-users", type=int, default=2_000)
    args = parser.parse_args()
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="seqstore-bulk-bench-"))
    log = generate(work / "in", users=args.users, events=args.events, seed=42, files=4, row_group_rows=50_000)
    r: dict[str, Any] = {"events": args.events, "users": args.users, "workers": args.workers, "cpus": os.cpu_count()}
    port = _free_port()
    ray_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus", str(args.workers + 1),
                    "--include-dashboard=false", "--disable-usage-stats"], env=ray_env, check=True,
                   capture_output=True)
    env = {**ray_env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    address = f"127.0.0.1:{port}"
    pid = os.getpid()
    new, old, whole = f"bulk_new_{pid}", f"bulk_old_{pid}", f"bulk_whole_{pid}"
    try:
        with SequenceStore(pool_size=4) as store:
            for name in (new, old, whole):
                store.create_table(TableSpec(name, salt_buckets=8))
            try:
                r["plain"] = plain_puts(store, log.files, args.workers)
                common = ["--workers", str(args.workers)]
                with ProcessCpu() as by_process:
                    summary, wall, cpu = command(["backfill", str(work / "in"), "--table", new, *common,
                                                  "--ray-address", address, "--report-dir", str(work / "r1")], env)
                n = summary["events_written"]
                r["bulk"] = {"events": n, "wall_s": round(wall, 2), "events_per_s": round(n / wall),
                             "events_per_cpu_s": round(n / cpu), "cpu_s": round(cpu, 2),
                             "cpu_s_by_process": by_process.by_kind, "summary": summary}
                s1, w1, _ = command(["backfill", str(work / "in"), "--table", old, *common, "--into", "raw",
                                     "--ray-address", address, "--report-dir", str(work / "r2")], env)
                _, w2, _ = command(["compact", "--table", old, *common, "--ray-address", address], env)
                r["old_path"] = {"backfill_s": round(w1, 2), "compact_s": round(w2, 2), "wall_s": round(w1 + w2, 2),
                                 "events": s1["events_written"]}
                summary, wall, cpu = command(["backfill", str(work / "in"), "--table", whole, *common,
                                              "--report-dir", str(work / "r3")], {**env, "RAY_ADDRESS": ""})
                n = summary["events_written"]
                r["bulk_whole_command"] = {"wall_s": round(wall, 2), "events_per_s": round(n / wall),
                                           "events_per_cpu_s": round(n / cpu)}
                data_dir = find_data_dir(store, None)
                root = hbase_root(data_dir) if data_dir is not None else None
                r["storage"] = {"bulk": storage(store, root, new, n), "old_path": storage(store, root, old, n)}
                rng = np.random.default_rng(7)
                sample = rng.choice(args.users, min(args.read_users, args.users), replace=False)
                users = [f"user{u:07d}" for u in sample]
                now = int(time.time() * 1000)
                rates: dict[str, list[float]] = {"bulk": [], "compacted": []}
                for _ in range(args.reps):
                    rates["bulk"].append(read_rate(store, new, users, now))
                    rates["compacted"].append(read_rate(store, old, users, now))
                r["reads"] = {"users": len(users), **{k: measure(len(v), iter(v).__next__) for k, v in rates.items()}}
                requests = [(u, now) for u in users]
                assert store.table(new).read_sequences(requests, max_len=100).equals(
                    store.table(old).read_sequences(requests, max_len=100)), "bulk and compacted reads differ"
                r["reads"]["identical"] = True
            finally:
                for name in (new, old, whole):
                    store.drop_table(name)
    finally:
        subprocess.run([RAY, "stop", "--force"], env=ray_env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    r["wall_s"] = round(time.perf_counter() - t_start, 1)
    name = f"bulk_{args.events}" if args.users == 10_000 else f"bulk_{args.events}_{args.users}u"
    save(name, r)
    md = markdown(r)
    (RESULTS / f"{name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
