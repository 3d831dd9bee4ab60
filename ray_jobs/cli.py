"""The ``seqstore`` command line.

Options whose help text ends in ``[VAR]`` can also be set from that environment variable
(an empty value counts as unset). A variable's value is checked exactly like the flag's: a
bad one is the same usage error, naming the variable. Output directories are created and
checked for writability before a job starts.
Errors are printed as one clear message (no stack trace) with exit code 2; a job that
ran but did not complete exits with 1.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hbase import datadir
from hbase.errors import HBaseRuntimeError
from ray_jobs.commands import (
    cmd_backfill,
    cmd_compact,
    cmd_create_table,
    cmd_demo,
    cmd_describe_table,
    cmd_drop_table,
    cmd_export,
    cmd_generate,
    cmd_hbase_fetch,
    cmd_hbase_logs,
    cmd_hbase_restart,
    cmd_hbase_start,
    cmd_hbase_status,
    cmd_hbase_stop,
    cmd_score,
    cmd_show,
    cmd_verify,
)
from ray_jobs.paths import check_writable_dir
from store.errors import SeqStoreError
from store.format import DAY_MS

EXIT_ERROR = 2


class _BadValue(argparse.ArgumentTypeError):
    """A value an option's type rejects; ``reason`` says why without repeating the value."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(f"{reason}, got {text!r}")
        self.reason = reason


def _integer(text: str) -> int:
    """An argparse type: an integer."""
    try:
        return int(text)
    except ValueError:
        raise _BadValue("expected an integer", text) from None


def _positive(text: str) -> int:
    """An argparse type: an integer > 0 (argparse turns the error into a usage message)."""
    value = _integer(text)
    if value <= 0:
        raise _BadValue("must be > 0", text)
    return value


def _counts(text: str) -> list[int]:
    """An argparse type: comma-separated integers > 0."""
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise _BadValue("expected comma-separated event counts, e.g. 10000,100000", text) from None
    if any(v <= 0 for v in values):
        raise _BadValue("every count must be > 0", text)
    return values


def _size(text: str) -> int:
    """An argparse type: a size in bytes (``256MiB``, ``2GB``, ``off``: 0)."""
    from store.config import parse_size
    from store.errors import ConfigError

    try:
        return parse_size(text, "size")
    except ConfigError:
        raise _BadValue("expected a size such as 256MiB, 2GB or off", text) from None


def _time(text: str) -> int:
    """An argparse type: milliseconds UTC, or an ISO 8601 time (UTC unless it says otherwise)."""
    from ray_jobs.show import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        raise _BadValue(str(exc), text) from None


def _port(text: str) -> int:
    """An argparse type: a TCP port, 1..65535."""
    value = _integer(text)
    if not 0 < value < 65536:
        raise _BadValue("must be a port in 1..65535", text)
    return value


def _number(text: str) -> float:
    """An argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise _BadValue("expected a number", text) from None
    if not math.isfinite(value):
        raise _BadValue("expected a finite number", text)
    return value


def _positive_number(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = _number(text)
    if value <= 0:
        raise _BadValue("must be > 0", text)
    return value


def _fraction(text: str) -> float:
    """An argparse type: a float in [0, 1)."""
    value = _number(text)
    if not 0.0 <= value < 1.0:
        raise _BadValue("must be in [0, 1)", text)
    return value


def _switch(text: str) -> bool:
    """The type of a flag's environment variable: 1 (on) or 0 (off)."""
    if text not in ("0", "1"):
        raise _BadValue("expected 1 or 0", text)
    return text == "1"


class _EnvText(str):
    """An option's default taken from environment variable ``var``.

    argparse converts a string default with the option's ``type`` only when the flag is not
    given, so a bad value is the same usage error as a bad flag (exit 2, no stack trace);
    this subclass lets the message name the variable instead of the flag's value.
    """

    var: str

    def __new__(cls, text: str, var: str) -> _EnvText:
        self = super().__new__(cls, text)
        self.var = var
        return self


def _env_aware(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return convert(str(text))
        except argparse.ArgumentTypeError as exc:
            if not isinstance(text, _EnvText):
                raise
            reason = exc.reason if isinstance(exc, _BadValue) else str(exc)
            raise argparse.ArgumentTypeError(f"invalid value from {text.var}={str(text)!r}: {reason}") from None

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names the type in some messages
    return parse


def _option(p: argparse.ArgumentParser, *flags: str, env: str, type: Callable[[str], Any] = str,
            default: Any = None, required: bool = False, help: str) -> None:
    """Add an option that environment variable ``env`` can also set (an empty value counts as
    unset). The variable's value goes through the same ``type`` as the flag's, so it gets the
    same checks and a usage error naming the variable; ``required`` holds only when it is unset."""
    raw = os.environ.get(env) or None
    p.add_argument(*flags, type=_env_aware(type), default=default if raw is None else _EnvText(raw, env),
                   required=required and raw is None, help=f"{help} [{env}]")


def _switch_option(p: argparse.ArgumentParser, flag: str, *, env: str, help: str) -> None:
    """Add an on/off flag that ``env=1`` also turns on (``0`` or empty: off; anything else is an error)."""
    raw = os.environ.get(env) or None
    p.add_argument(flag, action=_StoreTrue, type=_env_aware(_switch),
                   default=False if raw is None else _EnvText(raw, env), help=f"{help} [{env}=1]")


class _StoreTrue(argparse.Action):
    """``store_true`` whose default may be an :class:`_EnvText` (converted by argparse via ``type``)."""

    def __init__(self, option_strings: Sequence[str], dest: str, default: Any = False,
                 type: Callable[[str], Any] | None = None, required: bool = False, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, type=type, required=required, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, True)


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqstore", description="User behaviour sequences in HBase.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        _switch_option(p, "--json", env="SEQSTORE_JSON", help="print one machine-readable JSON object")

    def table_arg(p: argparse.ArgumentParser, role: str) -> None:
        _option(p, "--table", env="SEQSTORE_TABLE", required=True, help=role)

    def data_dir(p: argparse.ArgumentParser) -> None:
        _option(p, "--data-dir", env=datadir.DATA_DIR_ENV, type=Path, help="the instance's data directory")

    hb = sub.add_parser("hbase", help="run the embedded HBase (standalone, or a local cluster)").add_subparsers(
        dest="action", required=True)

    p = hb.add_parser("start", help="start HBase + Thrift servers; returns when a real round trip works")
    data_dir(p)
    _option(p, "--regionservers", env="SEQSTORE_HBASE_REGIONSERVERS", type=_positive,
            help="RegionServers to run: 1 (the default) is one standalone JVM; more run as a local "
                 "cluster, each with its own Thrift1 and Thrift2 server")
    _option(p, "--bind", env="SEQSTORE_HBASE_BIND", default="127.0.0.1",
            help="address the Thrift servers listen on")
    _option(p, "--thrift-port", env="SEQSTORE_HBASE_THRIFT_PORT", type=_port,
            help="Thrift1 port (default: a free one)")
    _option(p, "--thrift2-port", env="SEQSTORE_HBASE_THRIFT2_PORT", type=_port,
            help="Thrift2 port (default: a free one)")
    _option(p, "--timeout", env="SEQSTORE_HBASE_START_TIMEOUT", type=_positive_number, default=180.0,
            help="seconds to wait for HBase to become usable")
    common(p)
    p.set_defaults(func=cmd_hbase_start)

    p = hb.add_parser("stop", help="stop HBase; no JVM is left behind")
    data_dir(p)
    p.add_argument("--timeout", type=_positive_number, default=60.0, help="seconds before a JVM is killed")
    p.set_defaults(func=cmd_hbase_stop)

    p = hb.add_parser("restart", help="restart one Thrift server or RegionServer (a dead one, say) on its ports")
    data_dir(p)
    p.add_argument("role", help="thrift or thrift2; with several RegionServers also regionserver, regionserver_2, "
                                "thrift_2, thrift2_2... (see `seqstore hbase status`)")
    _option(p, "--timeout", env="SEQSTORE_HBASE_START_TIMEOUT", type=_positive_number, default=120.0,
            help="seconds to wait for it to serve again")
    common(p)
    p.set_defaults(func=cmd_hbase_restart)

    p = hb.add_parser("status", help="is HBase running, and where")
    data_dir(p)
    common(p)
    p.set_defaults(func=cmd_hbase_status)

    p = hb.add_parser("logs", help="print the tail of an HBase log")
    data_dir(p)
    p.add_argument("role", nargs="?", default="master",
                   help="master (default), thrift, thrift2, stop; with several RegionServers also zookeeper, "
                        "regionserver, regionserver_2, thrift_2, thrift2_2...")
    p.add_argument("-n", "--lines", type=_positive, default=100, help="number of lines")
    p.set_defaults(func=cmd_hbase_logs)

    p = hb.add_parser("fetch", help="fetch the pinned HBase jars with Maven (done by start if needed)")
    common(p)
    p.set_defaults(func=cmd_hbase_fetch)

    p = sub.add_parser("create-table", help="create a sequence table with explicit family options")
    p.add_argument("name")
    _option(p, "--schema", env="SEQSTORE_SCHEMA", type=Path,
            help="JSON file with 'fields' (and 'features'); default: the built-in schema")
    _option(p, "--salt-buckets", env="SEQSTORE_SALT_BUCKETS", type=_positive, default=16,
            help="salt values = regions pre-split")
    _option(p, "--bucket-ms", env="SEQSTORE_BUCKET_MS", type=_positive, default=DAY_MS,
            help="time span of one wide row")
    _option(p, "--ttl-days", env="SEQSTORE_TTL_DAYS", type=_positive_number,
            help="expire events older than this, by event time")
    _option(p, "--max-events-per-user", env="SEQSTORE_MAX_EVENTS_PER_USER", type=_positive,
            help="keep only each user's newest N events")
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
    _option(p, "--users", env="SEQSTORE_GEN_USERS", type=_positive, default=10_000, help="number of users")
    _option(p, "--events", env="SEQSTORE_GEN_EVENTS", type=_positive, default=1_000_000, help="number of events")
    _option(p, "--seed", env="SEQSTORE_GEN_SEED", type=_integer, default=0,
            help="random seed: same seed, same bytes")
    _option(p, "--out", env="SEQSTORE_GEN_OUT", type=Path, required=True, help="output directory")
    _option(p, "--bad-fraction", env="SEQSTORE_GEN_BAD_FRACTION", type=_fraction, default=0.0,
            help="fraction of malformed rows")
    p.add_argument("--files", type=_positive, default=4, help="number of Parquet files")
    p.add_argument("--row-group-rows", type=_positive, default=50_000, help="rows per Parquet row group")
    p.add_argument("--heavy-users", type=_counts, default=[],
                   help="comma-separated event counts: one more user (heavy0000000, ...) with each, "
                        "beyond --events (deep histories, e.g. 10000,100000,1000000)")
    common(p)
    p.set_defaults(func=cmd_generate, output_dirs=("out",))

    p = sub.add_parser("backfill", help="load Parquet events into a table with Ray (idempotent, resumable)")
    p.add_argument("input", help="Parquet file, directory, glob or URI")
    table_arg(p, "destination table")
    _option(p, "--workers", env="SEQSTORE_WORKERS", type=_positive, default=2,
            help="Ray actors writing in parallel")
    _option(p, "--ray-address", env="RAY_ADDRESS",
            help="join this Ray cluster instead of starting a local one")
    p.add_argument("--force", action="store_true",
                   help="re-run every unit of this input, ignoring (then replacing) its records in the manifest")
    p.add_argument("--into", choices=("auto", "chunks", "raw"), default="auto",
                   help="chunks: group by user and write straight into the chunk tier (read-ready, nothing to "
                        "compact); raw: one raw cell per event, for a later `seqstore compact`; auto (default): "
                        "chunks if the table has a chunk tier")
    _option(p, "--partition-events", env="SEQSTORE_PARTITION_EVENTS", type=_positive, default=1_000_000,
            help="into chunks: input rows per group of users, about (what one worker holds at once)")
    _option(p, "--report-dir", env="SEQSTORE_REPORT_DIR", type=Path,
            help="where the run's report-<time>-<id>.json and quarantine/ (one Parquet file per unit with bad "
                 "rows) go; re-runs may share one (default: seqstore-reports/backfill-<table>-<time>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.add_argument("--compact", action="store_true",
                   help="compact the table right after a completed backfill (see `seqstore compact`)")
    common(p)
    p.set_defaults(func=cmd_backfill, output_dirs=("report_dir",))

    p = sub.add_parser("compact", help="move raw events into columnar chunks with Ray (idempotent, resumable)")
    table_arg(p, "table to compact")
    _option(p, "--older-than", env="SEQSTORE_COMPACT_OLDER_THAN", type=_positive_number,
            help="compact only events older than this many days (by event time); default: all")
    _option(p, "--workers", env="SEQSTORE_WORKERS", type=_positive, default=2,
            help="Ray actors compacting in parallel (one salt range each at a time)")
    _option(p, "--ray-address", env="RAY_ADDRESS",
            help="join this Ray cluster instead of starting a local one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    common(p)
    p.set_defaults(func=cmd_compact)

    p = sub.add_parser("verify", help="check that a table holds exactly the valid events of an input")
    p.add_argument("input", help="Parquet file, directory, glob or URI")
    table_arg(p, "table to check")
    common(p)
    p.set_defaults(func=cmd_verify)

    def read_job(p: argparse.ArgumentParser) -> None:
        table_arg(p, "table to read")
        p.add_argument("--out", type=Path, required=True, help="output directory of Parquet parts")
        _option(p, "--max-len", env="SEQSTORE_MAX_LEN", type=_positive, default=100, help="events per sequence")
        _option(p, "--features", env="SEQSTORE_FEATURES",
                help="comma-separated feature names, as of the same time")
        _option(p, "--workers", env="SEQSTORE_WORKERS", type=_positive, default=2, help="Ray actors")
        _option(p, "--ray-address", env="RAY_ADDRESS", help="join this Ray cluster")
        p.add_argument("--overwrite", action="store_true",
                       help="replace parts in --out made with other settings or from other input")
        p.add_argument("--allow-any-ts", action="store_true",
                       help="accept timestamps that look like seconds or microseconds (a deliberate far "
                            "past/future read)")
        _option(p, "--now-ms", env="SEQSTORE_NOW_MS", type=_integer,
                help="the job's 'now' (ms UTC): for requests without as_of_ts and the future-time check "
                     "(default: the clock, or the stopped run's now on a resume)")
        p.add_argument("--chunk-cache", type=_size, metavar="SIZE",
                       help="each worker's memory for decoded chunks, e.g. 1GiB, or off (default 256MiB, "
                            "or SEQSTORE_CHUNK_CACHE_BYTES)")
        common(p)
        p.set_defaults(output_dirs=("out",))

    p = sub.add_parser("show", help="print one user's sequence as of a time, as a table")
    p.add_argument("user", help="the user id")
    table_arg(p, "table to read")
    p.add_argument("--as-of", type=_time, help="ms UTC or an ISO 8601 time, e.g. 2026-12-01T10:00:00Z (default: now)")
    p.add_argument("--max-len", type=_positive, default=20, help="at most this many events, the newest")
    p.add_argument("--fields", help="comma-separated payload fields to show (default: all)")
    p.add_argument("--oldest-first", action="store_true", help="list the events oldest first")
    p.add_argument("--allow-any-ts", action="store_true",
                   help="accept an --as-of that looks like seconds or microseconds (a deliberate far past/future read)")
    common(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("score", help="score sequences as of a time with a model, into Parquet")
    p.add_argument("--requests", required=True, help="Parquet with user_id and optional as_of_ts")
    _option(p, "--model", env="SEQSTORE_MODEL", required=True,
            help="MODULE:FUNCTION, e.g. ray_jobs.examples.models:recency_similarity")
    _option(p, "--model-version", env="SEQSTORE_MODEL_VERSION",
            help="what identifies the model beyond its source (e.g. its weights' version): parts made "
                 "with another are redone (default: the model's MODEL_VERSION attribute, if any)")
    read_job(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("export", help="point-in-time training rows for labels, as Parquet shards")
    p.add_argument("--labels", required=True, help="Parquet with user_id, ts and label columns")
    read_job(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="run the main job on the embedded HBase")
    data_dir(p)
    _option(p, "--work-dir", env="SEQSTORE_DEMO_DIR", type=Path, default=Path("seqstore-demo"),
            help="where the demo's files go")
    p.add_argument("--users", type=_positive, default=10_000, help="users in the generated log")
    p.add_argument("--events", type=_positive, default=1_000_000, help="events in the generated log")
    p.add_argument("--workers", type=_positive, default=2, help="Ray actors per stage")
    common(p)
    p.set_defaults(func=cmd_demo, output_dirs=("work_dir",))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stdout, ray_was_running = sys.stdout, _ray_running()
    if getattr(args, "json", False):
        # stdout carries the JSON object alone; whatever else is printed meanwhile goes to stderr
        # (Ray's driver prints cluster errors, such as a worker node's raylet dying, to stdout).
        args.json_out, sys.stdout = stdout, sys.stderr
    try:
        # Before any job starts (and Ray with it): an output directory that cannot be written
        # would otherwise fail late, or deep inside a worker.
        for dest in getattr(args, "output_dirs", ()):
            if getattr(args, dest) is not None:
                check_writable_dir(getattr(args, dest), what="--" + dest.replace("_", "-"))
        return int(args.func(args))
    except (HBaseRuntimeError, SeqStoreError) as exc:
        print(f"seqstore: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("seqstore: interrupted", file=sys.stderr)
        return 130
    finally:
        if _ray_running() and not ray_was_running:
            # Leave the cluster now: Ray's error printer stops with it, so nothing follows the JSON.
            sys.modules["ray"].shutdown()
        sys.stdout = stdout


def _ray_running() -> bool:
    ray = sys.modules.get("ray")  # not imported: not running (and no import just to ask)
    return bool(ray is not None and ray.is_initialized())


if __name__ == "__main__":
    sys.exit(main())
