"""``seqstore demo`` / ``make demo``: the main job, end to end, on the embedded HBase.

1. start the local HBase if needed (or use ``SEQSTORE_HBASE_THRIFT2``);
2. generate a realistic behaviour log (~1M events of 10k users, 0.1% malformed);
3. create the demo table and backfill the log into it with Ray, grouped by user and written
   straight into columnar chunks: read-ready as it lands, nothing to compact;
4. verify that HBase holds exactly the log's valid events (both tiers);
5. score every user as of now with the example numpy model (reading the chunks);
6. export point-in-time training rows for a sample of labelled events;

then print a table of rows, time and throughput per stage, and where the outputs are.
The demo's table is re-created on every run; its files go under ``--work-dir``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hbase import launcher
from store import DEFAULT_SCHEMA, SeqStoreError, SequenceStore, TableSpec
from store.config import HBASE_ENV, HBASE_THRIFT2_ENV
from store.inputs import conform

DEMO_TABLE = "seqstore_demo"
MODEL = "ray_jobs.examples.models:recency_similarity"


def _bar(total: int, desc: str, quiet: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="rows", unit_scale=True, desc=f"  {desc}", file=sys.stderr,
                disable=quiet or not sys.stderr.isatty())


def run(*, data_dir: Path | None, as_json: bool, work_dir: Path = Path("seqstore-demo"), users: int = 10_000,
        events: int = 1_000_000, workers: int = 2, json_out: TextIO | None = None) -> int:
    """Run the demo; returns the process exit code. With ``as_json`` the summary goes to
    ``json_out`` (default stdout)."""
    from ray_jobs.backfill import run_backfill
    from ray_jobs.export import run_export
    from ray_jobs.generate import generate
    from ray_jobs.runner import init_ray
    from ray_jobs.score import run_score
    from ray_jobs.verify import verify

    stages: list[dict[str, Any]] = []
    say: Callable[[str], None] = (lambda _m: None) if as_json else (lambda m: print(m, flush=True))

    def stage(name: str, t0: float, rows: int, **info: Any) -> None:
        seconds = time.monotonic() - t0
        stages.append({"stage": name, "rows": rows, "seconds": round(seconds, 2),
                       "rows_per_s": round(rows / seconds) if seconds > 0 and rows else 0, **info})
        say(f"  done: {name} ({seconds:.1f} s)")

    work_dir = work_dir.resolve()
    for previous in ("scores", "train", "backfill-report"):  # outputs of the last run of this table
        shutil.rmtree(work_dir / previous, ignore_errors=True)
    t0 = time.monotonic()
    external = bool(os.environ.get(HBASE_THRIFT2_ENV) or os.environ.get(HBASE_ENV))
    if external:
        say(f"[1/6] HBase: using {os.environ.get(HBASE_THRIFT2_ENV) or os.environ[HBASE_ENV]}")
        stage("hbase", t0, 0, state="external")
    else:
        say("[1/6] HBase: starting the embedded standalone HBase (if not running)")
        rt, already = launcher.start(data_dir, on_progress=lambda m: say(f"  {m}"))
        stage("hbase", t0, 0, state="already running" if already else "started", data_dir=rt.data_dir)

    say(f"[2/6] generate: {events:,} events of {users:,} users -> {work_dir / 'events'}")
    t0 = time.monotonic()
    log = generate(work_dir / "events", users=users, events=events, seed=7, bad_fraction=0.001)
    stage("generate", t0, log.events, files=len(log.files))

    init_ray(None, workers)
    with SequenceStore() as store:
        say(f"[3/6] backfill into table {DEMO_TABLE} with {workers} Ray workers: grouped by user, straight into "
            "columnar chunks")
        t0 = time.monotonic()
        store.drop_table(DEMO_TABLE)  # the demo's own table: every run starts from scratch
        table = store.create_table(TableSpec(DEMO_TABLE, salt_buckets=8))
        bar = _bar(log.events, "backfill", as_json)
        backfill = run_backfill(str(work_dir / "events"), DEMO_TABLE, workers=workers,
                                report_dir=work_dir / "backfill-report", on_progress=bar.update)
        bar.close()
        if not backfill.completed:
            raise SeqStoreError(f"backfill did not complete: {backfill.error}")
        stage("backfill", t0, backfill.events_in, written=backfill.events_written,
              quarantined=backfill.events_quarantined, into=backfill.into, units=backfill.units_total)

        say("[4/6] verify: recount every user's events from the log and from HBase (raw tier and chunks)")
        t0 = time.monotonic()
        check = verify(str(work_dir / "events"), table)
        stage("verify", t0, check.events_found, users=check.users_checked, mismatched=check.users_mismatched)
        if not check.ok:
            raise SeqStoreError(f"verify found {check.users_mismatched} mismatched users")

        say(f"[5/6] score: every user as of now with {MODEL}")
        t0 = time.monotonic()
        requests = work_dir / "requests" / "all-users.parquet"
        requests.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"user_id": [f"user{u:07d}" for u in range(users)]}), requests,
                       row_group_size=max(1, users // 8))
        bar = _bar(users, "score", as_json)
        scores_dir = work_dir / "scores"
        score = run_score(str(requests), MODEL, scores_dir, DEMO_TABLE, max_len=50, workers=workers,
                          on_progress=bar.update)
        bar.close()
        if not score.completed:
            raise SeqStoreError(f"score did not complete: {score.error}")
        stage("score", t0, score.scored, max_len=50)

        say("[6/6] export: training rows strictly before each label's time")
        t0 = time.monotonic()
        # Labels come from the log's valid events (the ones the backfill wrote), picked at random.
        batch, verdicts = conform(pq.read_table(log.files).combine_chunks().to_batches()[0], DEFAULT_SCHEMA)
        valid = np.flatnonzero(verdicts.valid)
        rng = np.random.default_rng(7)
        picks = np.sort(rng.choice(valid, size=min(5_000, len(valid)), replace=False))
        rows = pa.Table.from_batches([batch]).take(pa.array(picks))
        labels = pa.table({
            "user_id": rows.column("user_id"), "ts": rows.column("event_ts"),
            "label": pa.compute.is_in(rows.column("event_type"), pa.array(["play", "purchase"])),
        })
        labels_path = work_dir / "labels" / "labels.parquet"
        labels_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(labels, labels_path, row_group_size=1_000)
        train_dir = work_dir / "train"
        export = run_export(str(labels_path), train_dir, DEMO_TABLE, max_len=50, workers=workers)
        if not export.completed:
            raise SeqStoreError(f"export did not complete: {export.error}")
        stage("export", t0, export.rows_written, shards=export.shards)

    outputs = {"events": str(work_dir / "events"), "backfill_report": backfill.report_path,
               "quarantine": backfill.quarantine_path, "scores": score.out, "training_rows": export.out}
    if as_json:
        print(json.dumps({"ok": True, "stages": stages, "outputs": outputs}), file=json_out or sys.stdout)
        return 0
    print("\n| stage    |      rows |  time s |     rows/s |")
    print("|----------|-----------|---------|------------|")
    for s in stages:
        print(f"| {s['stage']:<8} | {s['rows']:>9,} | {s['seconds']:>7.1f} | {s['rows_per_s']:>10,} |")
    print()
    for name, path in outputs.items():
        print(f"{name:<16} {path}")
    print(f"\nbackfill: {backfill.events_written:,} events read-ready in chunks in {backfill.wall_s:.1f} s "
          f"({backfill.events_per_s:,.0f} events/s from Parquet, nothing to compact); score and export read them")
    scored = pq.read_table(score.out)
    print(f"scores: {scored.num_rows:,} users, mean {pa.compute.mean(scored['score']).as_py():.3f}; "
          f"training rows: {export.rows_written:,} in {export.shards} shards")
    if not external:  # an HBase the demo did not start is not the demo's to stop
        print("HBase keeps running; stop it with: seqstore hbase stop")
    return 0
