"""The ``seqstore`` command line.

Options whose help text ends in ``[VAR]`` can also be set from that environment variable.
Errors are printed as one clear message (no stack trace) with exit code 2; a job that
ran but did not complete exits with 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hbase import datadir
from hbase.errors import HBaseRuntimeError
from ray_jobs.commands import (
    cmd_backfill,
    cmd_create_table,
    cmd_demo,
    cmd_describe_table,
    cmd_drop_table,
    cmd_export,
    cmd_generate,
    cmd_hbase_fetch,
    cmd_hbase_logs,
    cmd_hbase_start,
    cmd_hbase_status,
    cmd_hbase_stop,
    cmd_score,
    cmd_verify,
)
from store.errors import SeqStoreError
from store.table import DAY_MS

EXIT_ERROR = 2


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _positive(text: str) -> int:
    """An argparse type: an integer > 0 (argparse turns the error into a usage message)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _fraction(text: str) -> float:
    """An argparse type: a float in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqstore", description="User behaviour sequences in HBase.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", default=_env("SEQSTORE_JSON") == "1",
                       help="print one machine-readable JSON object [SEQSTORE_JSON=1]")

    def table_arg(p: argparse.ArgumentParser, role: str) -> None:
        p.add_argument("--table", required=_env("SEQSTORE_TABLE") is None, default=_env("SEQSTORE_TABLE"),
                       help=f"{role} [SEQSTORE_TABLE]")

    def data_dir(p: argparse.ArgumentParser, default: str | None) -> None:
        p.add_argument("--data-dir", type=Path, default=default,
                       help="the instance's data directory [SEQSTORE_HBASE_DATA_DIR]")

    hb = sub.add_parser("hbase", help="run the embedded standalone HBase").add_subparsers(dest="action", required=True)

    p = hb.add_parser("start", help="start HBase + Thrift servers; returns when a real round trip works")
    data_dir(p, _env(datadir.DATA_DIR_ENV))
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
    data_dir(p, _env(datadir.DATA_DIR_ENV))
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a JVM is killed")
    p.set_defaults(func=cmd_hbase_stop)

    p = hb.add_parser("status", help="is HBase running, and where")
    data_dir(p, _env(datadir.DATA_DIR_ENV))
    common(p)
    p.set_defaults(func=cmd_hbase_status)

    p = hb.add_parser("logs", help="print the tail of an HBase log")
    data_dir(p, _env(datadir.DATA_DIR_ENV))
    p.add_argument("role", nargs="?", default="master", choices=["master", "thrift", "thrift2", "stop"])
    p.add_argument("-n", "--lines", type=_positive, default=100, help="number of lines")
    p.set_defaults(func=cmd_hbase_logs)

    p = hb.add_parser("fetch", help="fetch the pinned HBase jars with Maven (done by start if needed)")
    common(p)
    p.set_defaults(func=cmd_hbase_fetch)

    p = sub.add_parser("create-table", help="create a sequence table with explicit family options")
    p.add_argument("name")
    p.add_argument("--schema", type=Path, default=_env("SEQSTORE_SCHEMA"),
                   help="JSON file with 'fields' (and 'features'); default: the built-in schema [SEQSTORE_SCHEMA]")
    p.add_argument("--salt-buckets", type=_positive, default=int(_env("SEQSTORE_SALT_BUCKETS", "16") or 16),
                   help="salt values = regions pre-split [SEQSTORE_SALT_BUCKETS]")
    p.add_argument("--bucket-ms", type=_positive, default=int(_env("SEQSTORE_BUCKET_MS", str(DAY_MS)) or DAY_MS),
                   help="time span of one wide row [SEQSTORE_BUCKET_MS]")
    p.add_argument("--ttl-days", type=float, default=_env("SEQSTORE_TTL_DAYS"),
                   help="expire events older than this, by event time [SEQSTORE_TTL_DAYS]")
    p.add_argument("--max-events-per-user", type=_positive, default=_env("SEQSTORE_MAX_EVENTS_PER_USER"),
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
    p.add_argument("--users", type=_positive, default=int(_env("SEQSTORE_GEN_USERS", "10000") or 0),
                   help="number of users [SEQSTORE_GEN_USERS]")
    p.add_argument("--events", type=_positive, default=int(_env("SEQSTORE_GEN_EVENTS", "1000000") or 0),
                   help="number of events [SEQSTORE_GEN_EVENTS]")
    p.add_argument("--seed", type=int, default=int(_env("SEQSTORE_GEN_SEED", "0") or 0),
                   help="random seed: same seed, same bytes [SEQSTORE_GEN_SEED]")
    p.add_argument("--out", type=Path, required=_env("SEQSTORE_GEN_OUT") is None, default=_env("SEQSTORE_GEN_OUT"),
                   help="output directory [SEQSTORE_GEN_OUT]")
    p.add_argument("--bad-fraction", type=_fraction, default=float(_env("SEQSTORE_GEN_BAD_FRACTION", "0") or 0),
                   help="fraction of malformed rows [SEQSTORE_GEN_BAD_FRACTION]")
    p.add_argument("--files", type=_positive, default=4, help="number of Parquet files")
    p.add_argument("--row-group-rows", type=_positive, default=50_000, help="rows per Parquet row group")
    common(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("backfill", help="load Parquet events into a table with Ray (idempotent, resumable)")
    p.add_argument("input", help="Parquet file, directory, glob or URI")
    table_arg(p, "destination table")
    p.add_argument("--workers", type=_positive, default=int(_env("SEQSTORE_WORKERS", "2") or 2),
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
    table_arg(p, "table to check")
    common(p)
    p.set_defaults(func=cmd_verify)

    def read_job(p: argparse.ArgumentParser) -> None:
        table_arg(p, "table to read")
        p.add_argument("--out", type=Path, required=True, help="output directory of Parquet parts")
        p.add_argument("--max-len", type=_positive, default=int(_env("SEQSTORE_MAX_LEN", "100") or 100),
                       help="events per sequence [SEQSTORE_MAX_LEN]")
        p.add_argument("--features", default=_env("SEQSTORE_FEATURES"),
                       help="comma-separated feature names, as of the same time [SEQSTORE_FEATURES]")
        p.add_argument("--workers", type=_positive, default=int(_env("SEQSTORE_WORKERS", "2") or 2),
                       help="Ray actors [SEQSTORE_WORKERS]")
        p.add_argument("--ray-address", default=_env("RAY_ADDRESS"), help="join this Ray cluster [RAY_ADDRESS]")
        p.add_argument("--overwrite", action="store_true",
                       help="replace parts in --out made with other settings or from other input")
        p.add_argument("--allow-any-ts", action="store_true",
                       help="accept timestamps that look like seconds or microseconds (a deliberate far "
                            "past/future read)")
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
    data_dir(p, _env(datadir.DATA_DIR_ENV))
    p.add_argument("--work-dir", type=Path, default=Path(_env("SEQSTORE_DEMO_DIR", "seqstore-demo") or "."),
                   help="where the demo's files go [SEQSTORE_DEMO_DIR]")
    p.add_argument("--users", type=_positive, default=10_000, help="users in the generated log")
    p.add_argument("--events", type=_positive, default=1_000_000, help="events in the generated log")
    p.add_argument("--workers", type=_positive, default=2, help="Ray actors per stage")
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
