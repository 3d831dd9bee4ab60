"""The ``seqstore`` command line.

Every option can also be set from the environment variable named in its help text.
Errors are printed as one clear message (no stack trace) with exit code 2; a job that
ran but did not complete exits with 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from hbase import launcher
from hbase.errors import HBaseRuntimeError
from store import DEFAULT_SCHEMA, EventSchema, SequenceStore, TableSpec
from store.errors import SchemaError, SeqStoreError
from store.schema import fields_from_json
from store.table import DAY_MS

EXIT_FAILED = 1
EXIT_ERROR = 2


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _emit(args: argparse.Namespace, payload: dict[str, object], human: Callable[[], None]) -> None:
    if args.json:
        print(json.dumps(payload, sort_keys=True))
    else:
        human()


def _progress(args: argparse.Namespace) -> Callable[[str], None]:
    def say(msg: str) -> None:
        if not args.json or sys.stderr.isatty():
            print(f"  {msg}", file=sys.stderr, flush=True)

    return say


# ---------------------------------------------------------------- hbase


def cmd_hbase_start(args: argparse.Namespace) -> int:
    rt, already = launcher.start(
        args.data_dir,
        bind=args.bind,
        thrift_port=args.thrift_port,
        thrift2_port=args.thrift2_port,
        timeout_s=args.timeout,
        on_progress=_progress(args),
    )
    payload = {**rt.to_json(), "already_running": already}

    def human() -> None:
        verb = "already running" if already else "started"
        print(f"HBase {rt.hbase_version} {verb}")
        print(f"  host          {rt.host}")
        print(f"  thrift_port   {rt.thrift_port}   (Thrift1, happybase)")
        print(f"  thrift2_port  {rt.thrift2_port}")
        print(f"  data_dir      {rt.data_dir}")
        print("  recorded as the default endpoint; stop with: seqstore hbase stop")

    _emit(args, payload, human)
    return 0


def cmd_hbase_stop(args: argparse.Namespace) -> int:
    stopped = launcher.stop(args.data_dir, timeout_s=args.timeout)
    print(f"stopped {len(stopped)} HBase process(es)" if stopped else "HBase was not running")
    return 0


def cmd_hbase_status(args: argparse.Namespace) -> int:
    report = launcher.status(args.data_dir)

    def human() -> None:
        if not report["running"]:
            print(f"HBase is not running (data dir {report['data_dir']})")
            if "error" in report:
                print(f"  {report['error']}")
            return
        print(f"HBase {report['hbase_version']} running, up {report['uptime_s']} s")
        for key in ("host", "thrift_port", "thrift2_port", "data_dir", "pids", "tables"):
            print(f"  {key:<13} {report[key]}")

    _emit(args, report, human)
    return 0 if report["running"] else EXIT_FAILED


def cmd_hbase_logs(args: argparse.Namespace) -> int:
    data_dir = launcher.resolve_data_dir(args.data_dir)
    path = launcher.log_path(data_dir, args.role)
    if not path.exists():
        print(f"no {args.role} log at {path}", file=sys.stderr)
        return EXIT_FAILED
    print(f"==> {path} <==", file=sys.stderr)
    print(launcher.log_tail(data_dir, args.role, args.lines))
    return 0


def cmd_hbase_fetch(args: argparse.Namespace) -> int:
    from hbase import jars

    lib = jars.fetch(quiet=args.json)
    _emit(args, {"lib": str(lib), "hbase_version": jars.hbase_version()}, lambda: print(lib))
    return 0


# ---------------------------------------------------------------- tables


def _load_schema_file(path: Path) -> tuple[EventSchema, pa.Schema]:
    """Event schema and feature schema from a JSON file (example: ``ray_jobs/examples/schema.json``)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SchemaError(f"cannot read schema file {path}: {exc}") from exc
    unknown = set(doc) - {"fields", "features"}
    if unknown:
        raise SchemaError(f"schema file {path}: unknown key(s) {sorted(unknown)}; expected 'fields', 'features'")
    schema = EventSchema.of(fields_from_json(doc.get("fields", []))) if "fields" in doc else DEFAULT_SCHEMA
    return schema, pa.schema(fields_from_json(doc.get("features", []), "features"))


def cmd_create_table(args: argparse.Namespace) -> int:
    schema, features = _load_schema_file(args.schema) if args.schema else (DEFAULT_SCHEMA, pa.schema([]))
    spec = TableSpec(args.name, schema=schema, features=features, salt_buckets=args.salt_buckets,
                     bucket_ms=args.bucket_ms, ttl_days=args.ttl_days, max_events_per_user=args.max_events_per_user)
    with SequenceStore() as store:
        store.create_table(spec)
        info = store.describe_table(args.name)
    _emit(args, info, lambda: _print_description(info, created=True))
    return 0


def cmd_describe_table(args: argparse.Namespace) -> int:
    with SequenceStore() as store:
        info = store.describe_table(args.name)
    _emit(args, info, lambda: _print_description(info, created=False))
    return 0


def cmd_drop_table(args: argparse.Namespace) -> int:
    with SequenceStore() as store:
        store.drop_table(args.name)
    print(f"dropped {args.name}")
    return 0


def _print_description(info: dict[str, Any], *, created: bool) -> None:
    print(f"{'created' if created else 'table'} {info['name']}  ({info['regions']} regions)")
    for key, value in info["settings"].items():
        if key != "name":
            print(f"  {key:<20} {value}")
    for version in info["schema_versions"]:
        print(f"  schema v{version['version']}:  event_ts: int64 ms, user_id: string, " + ", ".join(version["fields"]))
    if info["features"]:
        print(f"  features:    {', '.join(info['features'])}")
    for name, opts in info["families"].items():
        print(f"  family {name}: " + ", ".join(f"{k}={v}" for k, v in opts.items()))


# ---------------------------------------------------------------- generate / backfill / verify


def cmd_generate(args: argparse.Namespace) -> int:
    from ray_jobs.generate import generate

    t0 = time.monotonic()
    result = generate(args.out, users=args.users, events=args.events, seed=args.seed,
                      bad_fraction=args.bad_fraction, files=args.files, row_group_rows=args.row_group_rows)
    payload = {"out": str(args.out), "files": result.files, "events": result.events, "bad_rows": result.bad_rows,
               "users": result.users, "max_user_events": result.max_user_events,
               "wall_s": round(time.monotonic() - t0, 2)}
    _emit(args, payload, lambda: print(
        f"wrote {result.events} events ({result.bad_rows} malformed) of {result.users} users "
        f"(busiest: {result.max_user_events}) to {len(result.files)} files in {args.out}"))
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ray_jobs.backfill import run_backfill
    from ray_jobs.runner import init_ray
    from ray_jobs.units import plan

    _, units = plan(args.input)
    init_ray(args.ray_address, args.workers)
    show = sys.stderr.isatty() and not args.no_progress
    bar = tqdm(total=sum(u.num_rows for u in units), unit="ev", unit_scale=True, desc="backfill",
               disable=not show, file=sys.stderr)
    report = run_backfill(args.input, args.table, workers=args.workers, force=args.force,
                          report_dir=args.report_dir, on_progress=bar.update)
    bar.close()

    def human() -> None:
        state = "completed" if report.completed else "DID NOT COMPLETE"
        print(f"backfill {state}: {report.events_in} events in, {report.events_written} written, "
              f"{report.events_quarantined} quarantined {report.quarantine_by_reason}")
        print(f"  units: {report.units_done} done, {report.units_skipped} skipped (already done), "
              f"{report.units_retried} retried, of {report.units_total}")
        print(f"  {report.wall_s} s, {report.events_per_s:.0f} events/s with {report.workers} workers")
        print(f"  report: {report.report_path}\n  quarantine: {report.quarantine_path}")
        if report.error:
            print(f"  error: {report.error}")

    _emit(args, report.to_json(), human)
    if not report.completed:
        print(f"seqstore: backfill did not complete: {report.error}", file=sys.stderr)
    return 0 if report.completed else EXIT_FAILED


def cmd_verify(args: argparse.Namespace) -> int:
    from ray_jobs.verify import verify

    with SequenceStore() as store:
        report = verify(args.input, store.table(args.table), on_progress=_progress(args))

    def human() -> None:
        print(f"verify {'OK' if report.ok else 'MISMATCH'}: {report.users_checked} users, "
              f"{report.events_expected} events expected, {report.events_found} found")
        if not report.ok:
            print(f"  {report.users_mismatched} users differ: {report.events_missing} events missing, "
                  f"{report.events_extra} extra (e.g. {', '.join(report.mismatched_users[:5])})")

    _emit(args, report.to_json(), human)
    return 0 if report.ok else EXIT_FAILED


# ---------------------------------------------------------------- score / export


def _features_arg(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def _run_with_bar(args: argparse.Namespace, total_path: str, desc: str, job: Callable[[Callable[[int], None]], Any]
                  ) -> Any:
    from tqdm import tqdm

    from ray_jobs.runner import init_ray
    from ray_jobs.units import plan

    _, units = plan(total_path)
    init_ray(args.ray_address, args.workers)
    bar = tqdm(total=sum(u.num_rows for u in units), unit="rows", unit_scale=True, desc=desc, file=sys.stderr,
               disable=not sys.stderr.isatty())
    try:
        return job(bar.update)
    finally:
        bar.close()


def cmd_score(args: argparse.Namespace) -> int:
    from ray_jobs.score import run_score

    report = _run_with_bar(args, args.requests, "score", lambda progress: run_score(
        args.requests, args.model, args.out, args.table, max_len=args.max_len,
        features=_features_arg(args.features), workers=args.workers, on_progress=progress))

    def human() -> None:
        print(f"score {'completed' if report.completed else 'DID NOT COMPLETE'}: {report.scored} of "
              f"{report.requests} requests scored in {report.wall_s} s ({report.sequences_per_s:.0f} sequences/s); "
              f"{report.units_skipped} parts already there")
        print(f"  output: {report.out}")

    _emit(args, report.to_json(), human)
    if not report.completed:
        print(f"seqstore: score did not complete: {report.error}", file=sys.stderr)
    return 0 if report.completed else EXIT_FAILED


def cmd_export(args: argparse.Namespace) -> int:
    from ray_jobs.export import run_export

    report = _run_with_bar(args, args.labels, "export", lambda progress: run_export(
        args.labels, args.out, args.table, max_len=args.max_len, features=_features_arg(args.features),
        workers=args.workers, on_progress=progress))

    def human() -> None:
        print(f"export {'completed' if report.completed else 'DID NOT COMPLETE'}: {report.rows_written} training "
              f"rows for {report.labels} labels in {report.shards} shards, {report.wall_s} s")
        print(f"  output: {report.out}")

    _emit(args, report.to_json(), human)
    if not report.completed:
        print(f"seqstore: export did not complete: {report.error}", file=sys.stderr)
    return 0 if report.completed else EXIT_FAILED


# ---------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from ray_jobs import demo

    return demo.run(data_dir=args.data_dir, as_json=args.json, work_dir=args.work_dir, users=args.users,
                    events=args.events, workers=args.workers)


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqstore", description="User behaviour sequences in HBase.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", default=_env("SEQSTORE_JSON") == "1",
                       help="print one machine-readable JSON object [SEQSTORE_JSON=1]")

    def data_dir(p: argparse.ArgumentParser, default: str | None) -> None:
        p.add_argument("--data-dir", type=Path, default=default,
                       help="the instance's data directory [SEQSTORE_HBASE_DATA_DIR]")

    hb = sub.add_parser("hbase", help="run the embedded standalone HBase").add_subparsers(dest="action", required=True)

    p = hb.add_parser("start", help="start HBase + Thrift servers; returns when a real round trip works")
    data_dir(p, _env(launcher.DATA_DIR_ENV))
    p.add_argument("--bind", default=_env("SEQSTORE_HBASE_BIND", "127.0.0.1"),
                   help="address the Thrift servers listen on [SEQSTORE_HBASE_BIND]")
    p.add_argument("--thrift-port", type=int, default=_env("SEQSTORE_HBASE_THRIFT_PORT"),
                   help="Thrift1 port (default: a free one) [SEQSTORE_HBASE_THRIFT_PORT]")
    p.add_argument("--thrift2-port", type=int, default=_env("SEQSTORE_HBASE_THRIFT2_PORT"),
                   help="Thrift2 port (default: a free one) [SEQSTORE_HBASE_THRIFT2_PORT]")
    p.add_argument("--timeout", type=float, default=float(_env("SEQSTORE_HBASE_START_TIMEOUT", "180") or 180),
                   help="seconds to wait for HBase to become usable [SEQSTORE_HBASE_START_TIMEOUT]")
    common(p)
    p.set_defaults(func=cmd_hbase_start)

    p = hb.add_parser("stop", help="stop HBase; no JVM is left behind")
    data_dir(p, _env(launcher.DATA_DIR_ENV))
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a JVM is killed")
    p.set_defaults(func=cmd_hbase_stop)

    p = hb.add_parser("status", help="is HBase running, and where")
    data_dir(p, _env(launcher.DATA_DIR_ENV))
    common(p)
    p.set_defaults(func=cmd_hbase_status)

    p = hb.add_parser("logs", help="print the tail of an HBase log")
    data_dir(p, _env(launcher.DATA_DIR_ENV))
    p.add_argument("role", nargs="?", default="master", choices=["master", "thrift", "thrift2", "stop"])
    p.add_argument("-n", "--lines", type=int, default=100, help="number of lines")
    p.set_defaults(func=cmd_hbase_logs)

    p = hb.add_parser("fetch", help="fetch the pinned HBase jars with Maven (done by start if needed)")
    common(p)
    p.set_defaults(func=cmd_hbase_fetch)

    p = sub.add_parser("create-table", help="create a sequence table with explicit family options")
    p.add_argument("name")
    p.add_argument("--schema", type=Path, default=_env("SEQSTORE_SCHEMA"),
                   help="JSON file with 'fields' (and 'features'); default: the built-in schema [SEQSTORE_SCHEMA]")
    p.add_argument("--salt-buckets", type=int, default=int(_env("SEQSTORE_SALT_BUCKETS", "16") or 16),
                   help="salt values = regions pre-split [SEQSTORE_SALT_BUCKETS]")
    p.add_argument("--bucket-ms", type=int, default=int(_env("SEQSTORE_BUCKET_MS", str(DAY_MS)) or DAY_MS),
                   help="time span of one wide row [SEQSTORE_BUCKET_MS]")
    p.add_argument("--ttl-days", type=float, default=_env("SEQSTORE_TTL_DAYS"),
                   help="expire events older than this, by event time [SEQSTORE_TTL_DAYS]")
    p.add_argument("--max-events-per-user", type=int, default=_env("SEQSTORE_MAX_EVENTS_PER_USER"),
                   help="keep only each user's newest N events [SEQSTORE_MAX_EVENTS_PER_USER]")
    common(p)
    p.set_defaults(func=cmd_create_table)

    p = sub.add_parser("describe-table", help="show a table's settings, schema versions and family options")
    p.add_argument("name")
    common(p)
    p.set_defaults(func=cmd_describe_table)

    p = sub.add_parser("drop-table", help="disable and delete a table and its registration")
    p.add_argument("name")
    p.set_defaults(func=cmd_drop_table)

    p = sub.add_parser("generate", help="write a realistic, reproducible behaviour log as Parquet")
    p.add_argument("--users", type=int, default=int(_env("SEQSTORE_GEN_USERS", "10000") or 0),
                   help="number of users [SEQSTORE_GEN_USERS]")
    p.add_argument("--events", type=int, default=int(_env("SEQSTORE_GEN_EVENTS", "1000000") or 0),
                   help="number of events [SEQSTORE_GEN_EVENTS]")
    p.add_argument("--seed", type=int, default=int(_env("SEQSTORE_GEN_SEED", "0") or 0),
                   help="random seed: same seed, same bytes [SEQSTORE_GEN_SEED]")
    p.add_argument("--out", type=Path, required=_env("SEQSTORE_GEN_OUT") is None, default=_env("SEQSTORE_GEN_OUT"),
                   help="output directory [SEQSTORE_GEN_OUT]")
    p.add_argument("--bad-fraction", type=float, default=float(_env("SEQSTORE_GEN_BAD_FRACTION", "0") or 0),
                   help="fraction of malformed rows [SEQSTORE_GEN_BAD_FRACTION]")
    p.add_argument("--files", type=int, default=4, help="number of Parquet files")
    p.add_argument("--row-group-rows", type=int, default=50_000, help="rows per Parquet row group")
    common(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("backfill", help="load Parquet events into a table with Ray (idempotent, resumable)")
    p.add_argument("input", help="Parquet file, directory, glob or URI")
    p.add_argument("--table", required=_env("SEQSTORE_TABLE") is None, default=_env("SEQSTORE_TABLE"),
                   help="destination table [SEQSTORE_TABLE]")
    p.add_argument("--workers", type=int, default=int(_env("SEQSTORE_WORKERS", "2") or 2),
                   help="Ray actors writing in parallel [SEQSTORE_WORKERS]")
    p.add_argument("--ray-address", default=_env("RAY_ADDRESS"),
                   help="join this Ray cluster instead of starting a local one [RAY_ADDRESS]")
    p.add_argument("--force", action="store_true", help="re-run every unit, ignoring the manifest")
    p.add_argument("--report-dir", type=Path, default=_env("SEQSTORE_REPORT_DIR"),
                   help="where report.json and quarantine.parquet go [SEQSTORE_REPORT_DIR]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    common(p)
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("verify", help="check that a table holds exactly the valid events of an input")
    p.add_argument("input", help="Parquet file, directory, glob or URI")
    p.add_argument("--table", required=_env("SEQSTORE_TABLE") is None, default=_env("SEQSTORE_TABLE"),
                   help="table to check [SEQSTORE_TABLE]")
    common(p)
    p.set_defaults(func=cmd_verify)

    def read_job(p: argparse.ArgumentParser) -> None:
        p.add_argument("--table", required=_env("SEQSTORE_TABLE") is None, default=_env("SEQSTORE_TABLE"),
                       help="table to read [SEQSTORE_TABLE]")
        p.add_argument("--out", type=Path, required=True, help="output directory of Parquet parts")
        p.add_argument("--max-len", type=int, default=int(_env("SEQSTORE_MAX_LEN", "100") or 100),
                       help="events per sequence [SEQSTORE_MAX_LEN]")
        p.add_argument("--features", default=_env("SEQSTORE_FEATURES"),
                       help="comma-separated feature names, as of the same time [SEQSTORE_FEATURES]")
        p.add_argument("--workers", type=int, default=int(_env("SEQSTORE_WORKERS", "2") or 2),
                       help="Ray actors [SEQSTORE_WORKERS]")
        p.add_argument("--ray-address", default=_env("RAY_ADDRESS"), help="join this Ray cluster [RAY_ADDRESS]")
        common(p)

    p = sub.add_parser("score", help="score sequences as of a time with a model, into Parquet")
    p.add_argument("--requests", required=True, help="Parquet with user_id and optional as_of_ts")
    p.add_argument("--model", required=_env("SEQSTORE_MODEL") is None, default=_env("SEQSTORE_MODEL"),
                   help="MODULE:FUNCTION, e.g. ray_jobs.examples.models:recency_similarity [SEQSTORE_MODEL]")
    read_job(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("export", help="point-in-time training rows for labels, as Parquet shards")
    p.add_argument("--labels", required=True, help="Parquet with user_id, ts and label columns")
    read_job(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="run the main job on the embedded HBase")
    data_dir(p, _env(launcher.DATA_DIR_ENV))
    p.add_argument("--work-dir", type=Path, default=Path(_env("SEQSTORE_DEMO_DIR", "seqstore-demo") or "."),
                   help="where the demo's files go [SEQSTORE_DEMO_DIR]")
    p.add_argument("--users", type=int, default=10_000, help="users in the generated log")
    p.add_argument("--events", type=int, default=1_000_000, help="events in the generated log")
    p.add_argument("--workers", type=int, default=2, help="Ray actors per stage")
    common(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (HBaseRuntimeError, SeqStoreError) as exc:
        print(f"seqstore: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("seqstore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
