"""``make bench``: every figure as a ratio against something measured in the same run.

    python -m benchmarks.run_all [--reps 3] [--quick]

Against the running HBase (``make bench`` starts the embedded one), measures:

* write: HBase PerformanceEvaluation ``randomWrite --autoFlush=true --multiPut=100`` (the
  server's ceiling), plain batched happybase puts of the store's cells, ``seqstore
  backfill`` of the same events (2 workers);
* read: PE ``scanRange100`` (rows/s), a plain per-user happybase scan loop, the store's
  reader, a Feast-style one-row-per-user multi-get — sequences of max_len 100;
* curves: read cost per sequence for 10 → 10k events of history per user, write and read
  rates for 1k → 100k users, backfill rate for 1 → 4 workers;
* the two tiers (:mod:`benchmarks.tiers_bench`): raw vs compacted reads as of now and
  historical against the Feast-style multi-get, history-length and dense/sparse curves,
  export with 20 labels per user, compaction throughput, storage per event.

Each figure is the median of ``--reps`` repetitions with min and max. Writes
``results/bench.json``, ``results/bench.md`` and ``results/bench.png``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import happybase
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import tiers_bench
from benchmarks.backfill_bench import plain_cells
from benchmarks.common import RESULTS, machine_cpu_s, measure, save
from benchmarks.pe import run_pe
from benchmarks.read_bench import make_events, plain_happybase
from benchmarks.score_bench import build_feast_table, feast_multiget
from ray_jobs.backfill import run_backfill
from ray_jobs.runner import init_ray
from store import SequenceStore, TableSpec

MAX_LEN = 100


class Bench:
    def __init__(self, store: SequenceStore, reps: int, work: Path) -> None:
        self.store, self.reps, self.work = store, reps, work
        self.now = int(time.time() * 1000)
        self.n = 0

    def fresh(self, prefix: str, **spec: Any) -> str:
        self.n += 1
        name = f"bench_{prefix}_{os.getpid()}_{self.n}"
        self.store.create_table(TableSpec(name, salt_buckets=8, **spec))
        return name

    def drop(self, name: str) -> None:
        self.store.drop_table(name)

    def hb(self) -> happybase.Connection:
        ep = self.store.config.thrift[0]
        return happybase.Connection(ep.host, ep.port, timeout=120_000)

    # ------------------------------------------------------------------ write

    def writes(self, events: int) -> dict[str, Any]:
        log_dir = self.work / f"log_{events}"
        data = make_events(max(1, events // 100), 100, self.now)
        log_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(data, log_dir / "events.parquet", row_group_size=50_000)

        def pe() -> float:
            return run_pe("randomWrite", 2, rows=events // 2, table="pe_write",
                          extra=("--autoFlush=true", "--multiPut=100", "--valueSize=40"))["rows_per_s"]

        def plain() -> float:
            name = self.fresh("plain")
            try:
                table = self.store.table(name)
                cells = plain_cells([str(log_dir / "events.parquet")], table.spec, table.handle.codec)
                conn = self.hb()
                t0 = time.perf_counter()
                with conn.table(name).batch(batch_size=1000) as b:
                    for row, column, value in cells:
                        b.put(row, {column: value})
                rate = len(cells) / (time.perf_counter() - t0)
                conn.close()
                return rate
            finally:
                self.drop(name)

        cpu: dict[str, float] = {}

        def backfill(workers: int = 2) -> float:
            name = self.fresh("backfill")
            try:
                t0, c0 = time.perf_counter(), machine_cpu_s()
                r = run_backfill(str(log_dir), name, workers=workers, config=self.store.config,
                                 report_dir=self.work / f"rep_{name}")
                wall, used = time.perf_counter() - t0, machine_cpu_s() - c0
                assert r.completed, r.error
                cpu[f"w{workers}"] = r.events_written / used
                return r.events_written / wall
            finally:
                self.drop(name)

        out = {"events": events, "pe_random_write": measure(self.reps, pe), "plain_puts": measure(self.reps, plain),
               "backfill": measure(self.reps, backfill)}
        out["backfill_events_per_cpu_s"] = round(cpu["w2"])
        out["workers"] = {w: measure(self.reps, lambda w=w: backfill(w)) for w in range(1, 5)}
        return out

    # ------------------------------------------------------------------ read

    def reads(self, users: int, per_user: int, sample: int) -> dict[str, Any]:
        name = self.fresh("read", bucket_ms=7 * 86_400_000)
        table = self.store.table(name)
        try:
            table.write(make_events(users, per_user, self.now), chunk_rows=50_000)
            ids = [f"user{u:07d}" for u in range(users)]
            rng = np.random.default_rng(1)
            feast = build_feast_table(self.store, table, ids, self.now, MAX_LEN)

            def ours() -> float:
                pick = [ids[i] for i in rng.integers(0, users, sample)]
                t0 = time.perf_counter()
                table.read_sequences((pick, [self.now] * sample), max_len=MAX_LEN)
                return sample / (time.perf_counter() - t0)

            def plain() -> float:
                pick = [ids[i] for i in rng.integers(0, users, max(50, sample // 8))]
                t0 = time.perf_counter()
                plain_happybase(self.store, name, pick, self.now, MAX_LEN)
                return len(pick) / (time.perf_counter() - t0)

            def feast_get() -> float:
                return feast_multiget(self.store, feast, [ids[i] for i in rng.integers(0, users, sample)], MAX_LEN)

            def pe() -> float:
                return run_pe("scanRange100", 2, rows=max(100, sample // 4), table="pe_write")["rows_per_s"] * 100

            return {"users": users, "events_per_user": per_user, "max_len": MAX_LEN,
                    "ours_seq_per_s": measure(self.reps, ours), "plain_scan_seq_per_s": measure(self.reps, plain),
                    "feast_multiget_seq_per_s": measure(self.reps, feast_get),
                    "pe_scan_range100_rows_per_s": measure(self.reps, pe)}
        finally:
            self.drop(name)
            conn = self.hb()
            conn.delete_table(f"{name}_feast", disable=True)
            conn.close()

    def history_curve(self, sizes: list[int], users: int, sample: int) -> list[dict[str, Any]]:
        """Read cost per sequence (max_len 100) for users with 10 .. 10k events of history."""
        name = self.fresh("hist", bucket_ms=86_400_000)
        table = self.store.table(name)
        rows = []
        try:
            for size in sizes:
                data = make_events(users, size, self.now)
                data = data.set_column(0, "user_id", pa.array([f"h{size}_{u}" for u in data.column(0).to_pylist()]))
                table.write(data, chunk_rows=50_000)
            for size in sizes:
                ids = [f"h{size}_user{u:07d}" for u in range(users)]

                def cost(max_len: int, ids: list[str] = ids) -> float:
                    pick = ids[:sample]
                    t0 = time.perf_counter()
                    table.read_sequences((pick, [self.now] * len(pick)), max_len=max_len)
                    return (time.perf_counter() - t0) / len(pick) * 1000

                rows.append({"events_per_user": size, "ms_per_sequence": measure(self.reps, lambda: cost(MAX_LEN)),
                             "ms_per_sequence_max_len_10": measure(self.reps, lambda: cost(10))})
        finally:
            self.drop(name)
        return rows

    def users_curve(self, user_counts: list[int], per_user: int, sample: int) -> list[dict[str, Any]]:
        rows = []
        for users in user_counts:
            name = self.fresh("users", bucket_ms=7 * 86_400_000)
            table = self.store.table(name)
            try:
                data = make_events(users, per_user, self.now)
                t0 = time.perf_counter()
                table.write(data, chunk_rows=50_000)
                write_rate = data.num_rows / (time.perf_counter() - t0)
                ids = [f"user{u:07d}" for u in range(users)]
                rng = np.random.default_rng(2)

                def read(ids: list[str] = ids, users: int = users, table: Any = table,
                         rng: np.random.Generator = rng) -> float:
                    pick = [ids[i] for i in rng.integers(0, users, sample)]
                    t0 = time.perf_counter()
                    table.read_sequences((pick, [self.now] * sample), max_len=MAX_LEN)
                    return sample / (time.perf_counter() - t0)

                rows.append({"users": users, "events": data.num_rows, "write_events_per_s": round(write_rate),
                             "read_seq_per_s": measure(self.reps, read)})
            finally:
                self.drop(name)
        return rows


def markdown(r: dict[str, Any]) -> str:
    w, rd = r["write"], r["read"]
    med = lambda m: m["median"]  # noqa: E731
    rng = lambda m: f"{m['median']:,.0f} ({m['min']:,.0f} to {m['max']:,.0f})"  # noqa: E731
    ms = lambda m: f"{m['median']:.2f} ({m['min']:.2f} to {m['max']:.2f})"  # noqa: E731
    lines = [
        f"Machine: {r['cpus']} CPUs; median of {r['reps']} (min to max). Write: {w['events']:,} events; read: "
        f"{rd['users']:,} users x {rd['events_per_user']} events, max_len {rd['max_len']}.",
        "",
        "| measure | value | ratio |",
        "|---|---|---|",
        f"| PE randomWrite ceiling (rows/s, 2 clients, multiPut=100) | {rng(w['pe_random_write'])} | 1.00 |",
        f"| plain batched happybase puts (events/s) | {rng(w['plain_puts'])} | "
        f"{med(w['plain_puts']) / med(w['pe_random_write']):.2f} x PE |",
        f"| seqstore backfill, 2 workers (events/s) | {rng(w['backfill'])} | "
        f"{med(w['backfill']) / med(w['plain_puts']):.2f} x plain, "
        f"{med(w['backfill']) / med(w['pe_random_write']):.2f} x PE |",
        f"| backfill events per CPU-second (whole machine) | {w['backfill_events_per_cpu_s']:,} | |",
        f"| PE scanRange100 (rows/s) | {rng(rd['pe_scan_range100_rows_per_s'])} | |",
        f"| plain per-user happybase scan loop (seq/s) | {rng(rd['plain_scan_seq_per_s'])} | 1.00 |",
        f"| seqstore reader (seq/s) | {rng(rd['ours_seq_per_s'])} | "
        f"{med(rd['ours_seq_per_s']) / med(rd['plain_scan_seq_per_s']):.2f} x plain |",
        f"| Feast-style one-row-per-user multi-get (seq/s, latest only) | {rng(rd['feast_multiget_seq_per_s'])} | "
        f"ours = {med(rd['ours_seq_per_s']) / med(rd['feast_multiget_seq_per_s']):.2f} x Feast |",
        f"| reader events/s vs PE scanRange100 rows/s | | "
        f"{med(rd['ours_seq_per_s']) * rd['max_len'] / med(rd['pe_scan_range100_rows_per_s']):.2f} x PE |",
        "",
        "| events of history per user | ms per sequence, max_len 100 | ms per sequence, max_len 10 |",
        "|---|---|---|",
        *[f"| {h['events_per_user']:,} | {ms(h['ms_per_sequence'])} | {ms(h['ms_per_sequence_max_len_10'])} |"
          for h in r["history"]],
        "",
        "| users | write events/s | read seq/s |",
        "|---|---|---|",
        *[f"| {u['users']:,} | {u['write_events_per_s']:,} | {rng(u['read_seq_per_s'])} |" for u in r["users"]],
        "",
        "| backfill workers | events/s |",
        "|---|---|",
        *[f"| {k} | {rng(v)} |" for k, v in w["workers"].items()],
    ]
    tiers = tiers_bench.markdown(r["tiers"]) if "tiers" in r else ""
    return "\n".join(lines) + "\n" + ("\n" + tiers if tiers else "")


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    h = r["history"]
    axes[0].errorbar([x["events_per_user"] for x in h], [x["ms_per_sequence"]["median"] for x in h],
                     yerr=[[x["ms_per_sequence"]["median"] - x["ms_per_sequence"]["min"] for x in h],
                           [x["ms_per_sequence"]["max"] - x["ms_per_sequence"]["median"] for x in h]], marker="o")
    axes[0].plot([x["events_per_user"] for x in h], [x["ms_per_sequence_max_len_10"]["median"] for x in h],
                 marker="s", label="max_len 10")
    axes[0].lines[0].set_label("max_len 100")
    axes[0].set(xscale="log", xlabel="events of history per user", ylabel="ms per sequence",
                title="read cost vs history length", ylim=(0, None))
    axes[0].legend()
    u = r["users"]
    axes[1].plot([x["users"] for x in u], [x["write_events_per_s"] for x in u], marker="o", label="write events/s")
    axes[1].set(xscale="log", xlabel="users (4 events each)", ylabel="write events/s", title="rates vs users",
                ylim=(0, None))
    reads = axes[1].twinx()
    reads.plot([x["users"] for x in u], [x["read_seq_per_s"]["median"] for x in u], marker="s", color="tab:orange",
               label="read sequences/s")
    reads.set(ylabel="read sequences/s", ylim=(0, None))
    axes[1].legend(loc="lower left")
    reads.legend(loc="lower right")
    w = r["write"]["workers"]
    axes[2].plot(list(map(int, w)), [v["median"] for v in w.values()], marker="o", label="backfill")
    axes[2].axhline(r["write"]["plain_puts"]["median"], color="gray", linestyle="--", label="plain happybase puts")
    axes[2].axhline(r["write"]["pe_random_write"]["median"], color="red", linestyle=":", label="PE ceiling")
    axes[2].set(xlabel="Ray workers", ylabel="events/s", title="backfill vs workers", ylim=(0, None))
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    q = args.quick
    work = Path(tempfile.mkdtemp(prefix="seqstore-bench-"))
    init_ray(None, 4)
    t0 = time.monotonic()
    with SequenceStore(pool_size=8) as store:
        b = Bench(store, args.reps, work)
        report: dict[str, Any] = {"cpus": os.cpu_count(), "reps": args.reps}
        report["write"] = b.writes(50_000 if q else 1_000_000)
        print("write done", flush=True)
        report["read"] = b.reads(1_000 if q else 5_000, 100, 300 if q else 2_000)
        print("read done", flush=True)
        report["history"] = b.history_curve([10, 100, 1_000] if q else [10, 100, 1_000, 10_000], 50 if q else 100,
                                            50 if q else 100)
        print("history done", flush=True)
        report["users"] = b.users_curve([1_000, 10_000] if q else [1_000, 10_000, 100_000, 1_000_000], 4,
                                        300 if q else 1_000)
        print("users done", flush=True)
        report["tiers"] = tiers_bench.run(store, args.reps, q, work)
    report["wall_s"] = round(time.monotonic() - t0, 1)
    save("bench", report)
    (RESULTS / "bench.md").write_text(markdown(report))
    plot(report, RESULTS / "bench.png")
    print(markdown(report))
    print(f"{RESULTS / 'bench.json'}, bench.md, bench.png in {report['wall_s']} s")


if __name__ == "__main__":
    main()
