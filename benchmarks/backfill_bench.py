"""Backfill throughput: `seqstore backfill` vs plain batched happybase puts of the same cells.

    python -m benchmarks.backfill_bench [--events 1000000] [--users 10000] [--max-workers 4]

Needs a running HBase (``seqstore hbase start``). One run measures, on fresh tables:

* plain: one happybase connection, ``table.batch(batch_size=1000)`` puts of the very cells
  the store writes (row keys, qualifiers, values precomputed, so only the put loop is timed;
  Thrift1 cannot carry per-cell timestamps, so these cells get the server's time);
* ours: ``run_backfill`` from the Parquet files — read, validate, encode, write — with
  1..N Ray actors.

Events per CPU-second use the whole machine's CPU time (client, Ray and HBase), since all
of it is spent on the load. Writes ``benchmarks/results/backfill_<events>.json``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import happybase
import pyarrow.parquet as pq

from benchmarks.common import machine_cpu_s, save
from ray_jobs.backfill import run_backfill
from ray_jobs.generate import generate
from ray_jobs.runner import init_ray
from store import SequenceStore, TableSpec
from store.format import keys
from store.format.payload import PayloadCodec
from store.inputs.rows import conform
from store.writer import ValidatedCells


def plain_cells(files: list[str], spec: TableSpec, codec: PayloadCodec) -> list[tuple[bytes, bytes, bytes]]:
    cells = []
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=50_000):
            batch, verdicts = conform(batch, spec.schema)
            judged = ValidatedCells(spec, codec, batch, verdicts)
            values = judged.values
            for i, prefix, ts, eid in judged.coordinates():
                cells.append((keys.row_key(prefix, ts // spec.bucket_ms), b"e:" + keys.qualifier(ts, eid), values[i]))
    return cells


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--max-workers", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="seqstore-bench-"))
    log = generate(work / "in", users=args.users, events=args.events, seed=42, files=4, row_group_rows=50_000)
    report: dict[str, object] = {"events": args.events, "users": args.users, "cpus": os.cpu_count()}
    runs = []
    with SequenceStore(pool_size=4) as store:
        name = f"bench_plain_{os.getpid()}"
        table = store.create_table(TableSpec(name, salt_buckets=8))
        try:
            cells = plain_cells(log.files, table.spec, table.handle.codec)
            ep = store.config.thrift[0]
            conn = happybase.Connection(ep.host, ep.port, timeout=120_000)
            hb = conn.table(name)
            t0, c0 = time.perf_counter(), machine_cpu_s()
            with hb.batch(batch_size=1000) as batch:
                for row, column, value in cells:
                    batch.put(row, {column: value})
            wall, cpu = time.perf_counter() - t0, machine_cpu_s() - c0
            conn.close()
            plain = {"events_per_s": round(len(cells) / wall), "events_per_cpu_s": round(len(cells) / cpu),
                     "wall_s": round(wall, 2)}
        finally:
            store.drop_table(name)
        init_ray(None, args.max_workers)
        for workers in range(1, args.max_workers + 1):
            name = f"bench_backfill_{os.getpid()}_{workers}"
            store.create_table(TableSpec(name, salt_buckets=8))
            try:
                t0, c0 = time.perf_counter(), machine_cpu_s()
                r = run_backfill(str(work / "in"), name, workers=workers, config=store.config,
                                 report_dir=work / f"report{workers}")
                wall, cpu = time.perf_counter() - t0, machine_cpu_s() - c0
                assert r.completed, r.error
                runs.append({"workers": workers, "events_per_s": round(r.events_written / wall),
                             "events_per_cpu_s": round(r.events_written / cpu), "wall_s": round(wall, 2),
                             "ratio_vs_plain": round(r.events_written / wall / plain["events_per_s"], 2)})
            finally:
                store.drop_table(name)
    report["plain_happybase_batched_puts"] = plain
    report["seqstore_backfill"] = runs
    path = save(f"backfill_{args.events}", report)
    print("| workers | backfill events/s | ÷ plain | events/CPU-s |\n|---|---|---|---|")
    print(f"| plain happybase | {plain['events_per_s']} | 1.00 | {plain['events_per_cpu_s']} |")
    for r in runs:
        print(f"| {r['workers']} | {r['events_per_s']} | {r['ratio_vs_plain']} | {r['events_per_cpu_s']} |")
    print(f"\n{path}")



if __name__ == "__main__":
    main()
