"""Scale-out on one machine: 1 vs 3 RegionServers, 1 vs 2 Ray nodes, in one run.

    python -m benchmarks.scaleout_bench [--events 300000] [--users 3000] [--requests 20000]

For each HBase runtime the script starts its own instance (``launcher.start`` with 1 or 3
RegionServers, on a fresh data dir, the other one stopped), and on it, for each Ray layout —
one local node, or a head plus one worker node (``ray.cluster_utils.Cluster``), 4 CPU slots
either way — measures:

* backfill: ``run_backfill`` of the same Parquet log with 4 workers (events/s);
* compact: ``run_compact`` of the table with 4 workers (raw events/s), so that the reads below
  are the product's read path (the chunk tier);
* score: ``run_score`` of the same requests with 4 workers (sequences/s);
* and the store's reader alone, in this process (sequences/s).

Before the measured runs, each runtime gets a warm-up (a small backfill, compaction and read on
a throw-away table), so that no layout pays for a cold JVM.

Each rate comes with its cost: events (or sequences) per CPU-second of the whole machine
(client, Ray and every HBase JVM), since all of it is spent on the load. On a 2-core machine
more processes cannot add cores: what this shows is the cost curve of the distributed layout
and that nothing regresses, not a speed-up. Writes ``results/scaleout.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import RESULTS, machine_cpu_s, save
from hbase import launcher
from ray_jobs.backfill import run_backfill
from ray_jobs.compact import run_compact
from ray_jobs.generate import generate
from ray_jobs.score import run_score
from store import Config, Endpoint, SequenceStore, TableSpec

WORKERS = 4
MODEL = "ray_jobs.examples.models:recency_similarity"
MAX_LEN = 100


def timed(fn: Callable[[], int]) -> dict[str, float]:
    """Run ``fn`` (returns items done); its rate and items per machine CPU-second."""
    cpu0, t0 = machine_cpu_s(), time.monotonic()
    items = fn()
    wall, cpu = time.monotonic() - t0, machine_cpu_s() - cpu0
    return {"items": items, "wall_s": round(wall, 2), "per_s": round(items / wall), "per_cpu_s": round(items / cpu)}


@contextmanager
def ray_nodes(nodes: int) -> Iterator[None]:
    """Ray with ``WORKERS`` CPU slots on one local node, or split over a head and worker nodes."""
    import ray

    from ray_jobs.runner import init_ray

    cluster = None
    if nodes == 1:
        init_ray(None, workers=WORKERS)
    else:
        from ray.cluster_utils import Cluster

        per = WORKERS // nodes
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": per, "include_dashboard": False,
                                                               "object_store_memory": 200 * 2**20})
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=per, object_store_memory=200 * 2**20)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


def config_of(rt: Any) -> Config:
    return Config(thrift2=tuple(Endpoint(rt.host, p) for p in rt.thrift2_ports),
                  thrift=tuple(Endpoint(rt.host, p) for p in rt.thrift_ports))


def bench_runtime(regionservers: int, log: Path, requests: Path, work: Path, args: argparse.Namespace
                  ) -> list[dict[str, Any]]:
    data_dir = work / f"hbase-{regionservers}"
    t0 = time.monotonic()
    rt, _ = launcher.start(data_dir, regionservers=regionservers, timeout_s=600)
    start_s = round(time.monotonic() - t0, 1)
    rows: list[dict[str, Any]] = []
    try:
        config = config_of(rt)
        with SequenceStore(config, pool_size=4) as store:
            warm = f"scaleout_{regionservers}rs_warmup"
            store.create_table(TableSpec(warm, salt_buckets=12))
            with ray_nodes(1):
                _backfill(args.warmup_log, warm, config, work)
                _compact(warm, config)
                _score(requests, warm, config, work / f"out-{warm}")
            store.drop_table(warm)
            for nodes in (1, 2):
                name = f"scaleout_{regionservers}rs_{nodes}n"
                store.create_table(TableSpec(name, salt_buckets=12))
                with ray_nodes(nodes):
                    back = timed(lambda name=name: _backfill(log, name, config, work))
                    compact = timed(lambda name=name: _compact(name, config))
                    score = timed(lambda name=name: _score(requests, name, config, work / f"out-{name}"))
                reads = timed(lambda name=name: _read(store, name, requests))
                rows.append({"regionservers": regionservers, "ray_nodes": nodes, "hbase_start_s": start_s,
                             "backfill": back, "compact": compact, "score": score, "reader": reads})
                print(rows[-1], flush=True)
                store.drop_table(name)
    finally:
        launcher.stop(data_dir)
    return rows


def _backfill(log: Path, table: str, config: Config, work: Path) -> int:
    report = run_backfill(str(log), table, workers=WORKERS, config=config, report_dir=work / f"report-{table}")
    assert report.completed, report.error
    return report.events_written


def _compact(table: str, config: Config) -> int:
    report = run_compact(table, workers=WORKERS, config=config)
    assert report.completed, report.error
    return report.raw_events


def _score(requests: Path, table: str, config: Config, out: Path) -> int:
    report = run_score(str(requests), MODEL, out, table, max_len=MAX_LEN, workers=WORKERS, config=config)
    assert report.completed, report.error
    return report.scored


def _read(store: SequenceStore, table: str, requests: Path) -> int:
    req = pq.read_table(requests)
    t = store.table(table)
    done = 0
    for batch in req.to_batches(max_chunksize=2_000):
        done += t.read_sequences(pa.Table.from_batches([batch]), max_len=MAX_LEN).num_rows
    return done


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    base = rows[0]
    lines = [
        "# Scale-out on one machine: 1 vs 3 RegionServers, 1 vs 2 Ray nodes",
        "",
        f"{meta['events']:,} events of {meta['users']:,} users backfilled, {meta['requests']:,} score requests "
        f"(max_len {MAX_LEN}), {WORKERS} workers, {meta['cpus']} cores; one run "
        f"(`python -m benchmarks.scaleout_bench`). Ratios are against 1 RegionServer + 1 Ray node.",
        "On 2 cores more processes add no cores: the point is the cost of the distributed layout, not a speed-up.",
        "",
        "| RegionServers | Ray nodes | HBase start s | backfill ev/s | ev/CPU-s | ratio | compact ev/s | ev/CPU-s "
        "| score seq/s | seq/CPU-s | ratio | reader seq/s | seq/CPU-s | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['regionservers']} | {r['ray_nodes']} | {r['hbase_start_s']} | {r['backfill']['per_s']:,} "
            f"| {r['backfill']['per_cpu_s']:,} | {r['backfill']['per_s'] / base['backfill']['per_s']:.2f}x "
            f"| {r['compact']['per_s']:,} | {r['compact']['per_cpu_s']:,} "
            f"| {r['score']['per_s']:,} | {r['score']['per_cpu_s']:,} "
            f"| {r['score']['per_s'] / base['score']['per_s']:.2f}x "
            f"| {r['reader']['per_s']:,} | {r['reader']['per_cpu_s']:,} "
            f"| {r['reader']['per_s'] / base['reader']['per_s']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--users", type=int, default=3_000)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="seqstore-scaleout-"))
    os.environ["SEQSTORE_STATE_DIR"] = str(work / "state")  # never the user's endpoint record
    try:
        gen = generate(work / "log", users=args.users, events=args.events, seed=7, files=4, row_group_rows=25_000)
        generate(work / "warmup", users=args.users, events=max(1, args.events // 10), seed=8, files=2,
                 row_group_rows=10_000)
        args.warmup_log = work / "warmup"
        users = [f"user{i:07d}" for i in range(args.users)]  # the generated log's ids
        now = int(time.time() * 1000)
        pq.write_table(pa.table({"user_id": [users[i % len(users)] for i in range(args.requests)],
                                 "as_of_ts": pa.array([now - (i % 89) * 3_600_000 for i in range(args.requests)],
                                                      pa.int64())}),
                       work / "requests.parquet", row_group_size=2_000)
        rows = [row for n in (1, 3) for row in bench_runtime(n, work / "log", work / "requests.parquet", work, args)]
        meta = {"events": args.events, "users": args.users, "requests": args.requests, "cpus": os.cpu_count(),
                "log_files": len(gen.files)}
        save("scaleout", {"meta": meta, "rows": rows})
        (RESULTS / "scaleout.md").write_text(markdown(rows, meta))
        print(markdown(rows, meta))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
