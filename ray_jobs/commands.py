"""The ``seqstore`` subcommands: each takes the parsed arguments and returns an exit code.

Errors they raise (:class:`SeqStoreError`, :class:`HBaseRuntimeError`) are turned into one
clear message by :func:`ray_jobs.cli.main`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from hbase import datadir, launcher
from hbase.roles import role_key
from store import DEFAULT_SCHEMA, EventSchema, SequenceStore, TableSpec
from store.config import Config
from store.errors import SchemaError, SeqStoreError
from store.format import fields_from_json

if TYPE_CHECKING:
    from ray_jobs.report import ReadingReport

EXIT_FAILED = 1


def _emit(args: argparse.Namespace, payload: dict[str, object], human: Callable[[], None]) -> None:
    if args.json:
        print(json.dumps(payload, sort_keys=True), file=getattr(args, "json_out", sys.stdout))
    else:
        human()


def _finish(args: argparse.Namespace, job: str, report: Any, human: Callable[[], None]) -> int:
    """Print a job's report (JSON or human); exit 1 with the reason when it did not complete."""
    _emit(args, report.to_json(), human)
    if not report.completed:
        print(f"seqstore: {job} did not complete: {report.error}", file=sys.stderr)
    return 0 if report.completed else EXIT_FAILED


def _progress(args: argparse.Namespace) -> Callable[[str], None]:
    def say(msg: str) -> None:
        if not args.json or sys.stderr.isatty():
            print(f"  {msg}", file=sys.stderr, flush=True)

    return say


def _status_line(bar: Any, desc: str) -> Callable[[str], None]:
    """Shows a job's status changes ("HBase unreachable, retrying", then "" once it recovers) in
    its progress bar's description, or as lines on stderr when no bar is shown (not a tty)."""
    def show(status: str) -> None:
        if bar.disable:
            print(f"  {desc}: {status or 'running again'}", file=sys.stderr, flush=True)
        else:
            bar.set_description(f"{desc}: {status}" if status else desc)

    return show


# ---------------------------------------------------------------- hbase


def cmd_hbase_start(args: argparse.Namespace) -> int:
    rt, already = launcher.start(
        args.data_dir,
        regionservers=args.regionservers,
        bind=args.bind,
        thrift_port=args.thrift_port,
        thrift2_port=args.thrift2_port,
        timeout_s=args.timeout,
        on_progress=_progress(args),
    )
    payload = {**rt.to_json(), "already_running": already}

    def human() -> None:
        verb = "already running" if already else "started"
        print(f"HBase {rt.hbase_version} {verb} with {rt.regionservers} RegionServer(s)")
        print(f"  thrift2       {','.join(rt.thrift2_endpoints)}")
        print(f"  thrift        {','.join(rt.thrift_endpoints)}   (Thrift1, happybase)")
        print(f"  data_dir      {rt.data_dir}")
        print("  recorded as the default endpoint; stop with: seqstore hbase stop")

    _emit(args, payload, human)
    return 0


def cmd_hbase_stop(args: argparse.Namespace) -> int:
    stopped = launcher.stop(args.data_dir, timeout_s=args.timeout)
    print(f"stopped {len(stopped)} HBase process(es)" if stopped else "HBase was not running")
    return 0


def cmd_hbase_restart(args: argparse.Namespace) -> int:
    data_dir = launcher.resolve_data_dir(args.data_dir)
    alive = launcher.status(data_dir).get("alive")
    was_alive = isinstance(alive, dict) and bool(alive.get(args.role))
    try:
        rt = launcher.restart_role(data_dir, args.role, timeout_s=args.timeout)
    except ValueError as exc:
        raise SeqStoreError(str(exc)) from None
    payload = {"role": args.role, "pid": rt.pids[args.role], "was_alive": was_alive, "data_dir": rt.data_dir}
    _emit(args, payload, lambda: print(
        f"{args.role} {'restarted' if was_alive else 'was dead; started'} (pid {rt.pids[args.role]}) and serving"))
    return 0


def cmd_hbase_status(args: argparse.Namespace) -> int:
    report = launcher.status(args.data_dir)

    def human() -> None:
        if not report["running"]:
            print(f"HBase is not running (data dir {report['data_dir']})")
            if "error" in report:
                print(f"  {report['error']}")
            _print_processes(report)
            return
        print(f"HBase {report['hbase_version']} running, up {report['uptime_s']} s")
        for key in ("data_dir", "tables"):
            print(f"  {key:<15} {report[key]}")
        _print_processes(report)

    _emit(args, report, human)
    return 0 if report["running"] else EXIT_FAILED


def _print_processes(report: dict[str, Any]) -> None:
    """One line per JVM of the instance: role, pid, alive or not, and the port it serves."""
    ports: dict[str, object] = {"zookeeper": report.get("zk_port"), "master": report.get("master_port")}
    for kind, key in (("regionserver", "regionserver_ports"), ("thrift", "thrift_ports"),
                      ("thrift2", "thrift2_ports")):
        for i, port in enumerate(report.get(key) or [], start=1):
            ports[role_key(kind, i)] = port
    order = ["zookeeper", "master", "regionserver", "thrift", "thrift2"]
    pids: dict[str, int] = report.get("pids") or {}
    for role, pid in sorted(pids.items(), key=lambda kv: (order.index(kv[0].split("_")[0]), kv[0])):
        up = "alive" if report.get("alive", {}).get(role) else "DEAD"
        print(f"  {role:<15} pid {pid:<8} {up:<6} port {ports.get(role, '-')}")


def cmd_hbase_logs(args: argparse.Namespace) -> int:
    data_dir = launcher.resolve_data_dir(args.data_dir)
    path = datadir.log_path(data_dir, args.role)
    if not path.exists():
        print(f"no {args.role} log at {path}", file=sys.stderr)
        return EXIT_FAILED
    print(f"==> {path} <==", file=sys.stderr)
    print(datadir.log_tail(data_dir, args.role, args.lines))
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
                      bad_fraction=args.bad_fraction, files=args.files, row_group_rows=args.row_group_rows,
                      heavy_users=args.heavy_users)
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
    from ray_jobs.runner import reporting_status

    if args.compact:  # before any event is written: a table that cannot be compacted is an error now
        with SequenceStore(pool_size=1) as store:
            store.table(args.table).spec.check_tiered()
    show = sys.stderr.isatty() and not args.no_progress
    bar = tqdm(unit="ev", unit_scale=True, desc="backfill", disable=not show, file=sys.stderr)
    with reporting_status(_status_line(bar, "backfill")):
        report = run_backfill(args.input, args.table, workers=args.workers, force=args.force,
                              report_dir=args.report_dir, into=args.into, partition_events=args.partition_events,
                              ray_address=args.ray_address, on_plan=_sized(bar), on_progress=bar.update)
    bar.close()
    compaction = _compact_after_backfill(args, show) if args.compact and report.completed else None

    def human() -> None:
        state = "completed" if report.completed else "DID NOT COMPLETE"
        print(f"backfill {state}: {report.events_in} events in, {report.events_written} written, "
              f"{report.events_merged} merged, {report.events_quarantined} quarantined {report.quarantine_by_reason}")
        kind = "groups of users" if report.into == "chunks" else "row groups"
        print(f"  units ({kind}): {report.units_done} done, {report.units_skipped} skipped (already done), "
              f"{report.units_retried} retried, of {report.units_total}")
        ready = "read-ready (into chunks, nothing to compact)" if report.into == "chunks" else "into raw cells"
        print(f"  {report.wall_s} s, {report.events_per_s:.0f} events/s {ready} with {report.workers} workers "
              f"on {report.nodes} Ray node(s)")
        print(f"  report: {report.report_path}\n  quarantine: {report.quarantine_path}")
        if report.error:
            print(f"  error: {report.error}")
        if isinstance(compaction, _CompactionFailed):
            print(f"compact DID NOT COMPLETE: {compaction.error}")
        elif compaction is not None:
            _print_compaction(compaction)

    if compaction is None:
        return _finish(args, "backfill", report, human)
    _emit(args, {**report.to_json(), "compaction": compaction.to_json()}, human)
    if not compaction.completed:
        print(f"seqstore: compaction after the backfill did not complete: {compaction.error}", file=sys.stderr)
        return EXIT_FAILED
    return 0


@dataclass(frozen=True)
class _CompactionFailed:
    """``backfill --compact``: the compaction raised before it had a report of its own (its table
    gone, HBase unreachable...). Reported as the backfill report's ``compaction`` entry."""

    error: str
    completed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"completed": False, "error": self.error}


def _compact_after_backfill(args: argparse.Namespace, show: bool) -> Any:
    """The compaction's report, or :class:`_CompactionFailed` if it raised: the completed
    backfill's report is printed either way (exit 1 then)."""
    try:
        return _compact(args, show)
    except SeqStoreError as exc:
        return _CompactionFailed(str(exc))


def _compact(args: argparse.Namespace, show: bool, older_than_days: float | None = None) -> Any:
    """Run the compaction of ``args.table`` with a progress bar of salt ranges (when ``show``)."""
    from tqdm import tqdm

    from ray_jobs.compact import run_compact
    from ray_jobs.runner import reporting_status
    from store.tiers import CompactionStats

    bar = tqdm(unit="range", desc="compact", disable=not show, file=sys.stderr)
    events = 0

    def progress(stats: CompactionStats) -> None:
        nonlocal events
        events += stats.raw_events
        bar.update(1)
        bar.set_postfix(events=events)

    try:
        with reporting_status(_status_line(bar, "compact")):
            return run_compact(args.table, older_than_days=older_than_days, workers=args.workers,
                               ray_address=args.ray_address, on_plan=lambda units: _set_total(bar, len(units)),
                               on_progress=progress)
    finally:
        bar.close()


def _print_compaction(report: Any) -> None:
    state = "completed" if report.completed else "DID NOT COMPLETE"
    scope = f" older than {report.older_than_days:g} days" if report.older_than_days is not None else ""
    print(f"compact {state}: {report.raw_events} raw events{scope} of {report.users} users into "
          f"{report.chunks_written} chunks ({report.chunks_replaced} replaced)")
    print(f"  units: {report.units_done} of {report.units_total} done, {report.units_retried} retried; "
          f"{report.retries} users redone after concurrent changes; {report.flags_kept} users keep raw events")
    if report.users_skipped:
        print(f"  {report.users_skipped} users kept changing on every attempt and were skipped (still readable; "
              f"the next run compacts them): {', '.join(report.skipped[:5])}")
    print(f"  {report.wall_s} s, {report.events_per_s:.0f} events/s with {report.workers} workers")
    if report.error:
        print(f"  error: {report.error}")


def cmd_compact(args: argparse.Namespace) -> int:
    show = sys.stderr.isatty() and not args.no_progress
    report = _compact(args, show, args.older_than)
    return _finish(args, "compact", report, lambda: _print_compaction(report))


def cmd_verify(args: argparse.Namespace) -> int:
    from ray_jobs.verify import verify

    with SequenceStore() as store:
        report = verify(args.input, store.table(args.table), on_progress=_progress(args))

    def human() -> None:
        print(f"verify {'OK' if report.ok else 'MISMATCH'}: {report.users_checked} users, "
              f"{report.events_expected} events expected, {report.events_found} returned by reads "
              "(events, payloads, duplicates and unread raw cells checked)")
        if not report.ok:
            print(f"  {report.users_mismatched} users differ: {report.events_missing} events missing, "
                  f"{report.events_extra} extra, {report.payload_mismatched} with another payload, "
                  f"{report.events_duplicated} duplicated, {report.raw_unread} raw cells reads never return "
                  f"(e.g. {', '.join(report.mismatched_users[:5])})")

    _emit(args, report.to_json(), human)
    return 0 if report.ok else EXIT_FAILED


# ---------------------------------------------------------------- score / export


def _features_arg(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def _set_total(bar: Any, total: int) -> None:
    bar.total = total
    bar.refresh()


def _sized(bar: Any) -> Callable[[Sequence[Any]], None]:
    """An ``on_plan`` for a job's progress bar: its total is the rows of the units the job runs."""
    return lambda units: _set_total(bar, sum(u.num_rows for u in units))


def _run_with_bar(args: argparse.Namespace, desc: str,
                  job: Callable[[Callable[[Sequence[Any]], None], Callable[[int], None]], Any]) -> Any:
    """Run ``job(on_plan, on_progress)`` with a progress bar of rows, sized by the job's own plan."""
    from tqdm import tqdm

    from ray_jobs.runner import reporting_status

    bar = tqdm(unit="rows", unit_scale=True, desc=desc, file=sys.stderr, disable=not sys.stderr.isatty())
    try:
        with reporting_status(_status_line(bar, desc)):
            return job(_sized(bar), bar.update)
    finally:
        bar.close()


def cmd_show(args: argparse.Namespace) -> int:
    from ray_jobs import show

    as_of = args.as_of if args.as_of is not None else int(time.time() * 1000)
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    with SequenceStore(pool_size=1) as store:
        shown = show.sequence(store.table(args.table), args.user, as_of=as_of, max_len=args.max_len, fields=fields,
                              oldest_first=args.oldest_first, allow_any_ts=args.allow_any_ts)
    _emit(args, shown, lambda: print(show.render(shown, args.max_len), end=""))
    return 0


def _read_config(args: argparse.Namespace) -> Config | None:
    """The config of a read job: the environment's, with ``--chunk-cache`` if given."""
    return None if args.chunk_cache is None else replace(Config.from_env(), chunk_cache_bytes=args.chunk_cache)


def _cache_line(report: ReadingReport) -> None:
    cache = report.chunk_cache
    if cache.get("hit_ratio") is not None:
        print(f"  chunk cache: {cache['hits']:,} chunks from memory, {cache['misses']:,} decoded "
              f"({100 * cache['hit_ratio']:.0f}% hits)")


def cmd_score(args: argparse.Namespace) -> int:
    from ray_jobs.score import run_score

    report = _run_with_bar(args, "score", lambda on_plan, progress: run_score(
        args.requests, args.model, args.out, args.table, max_len=args.max_len, config=_read_config(args),
        features=_features_arg(args.features), workers=args.workers, overwrite=args.overwrite,
        allow_any_ts=args.allow_any_ts, ray_address=args.ray_address, now_ms=args.now_ms,
        model_version=args.model_version, on_plan=on_plan, on_progress=progress))

    def human() -> None:
        print(f"score {'completed' if report.completed else 'DID NOT COMPLETE'}: {report.scored} of "
              f"{report.requests} requests scored in {report.wall_s} s ({report.sequences_per_s:.0f} sequences/s) "
              f"on {report.nodes} Ray node(s); {report.units_skipped} parts already there")
        _cache_line(report)
        print(f"  output: {report.out}")

    return _finish(args, "score", report, human)


def cmd_export(args: argparse.Namespace) -> int:
    from ray_jobs.export import run_export

    report = _run_with_bar(args, "export", lambda on_plan, progress: run_export(
        args.labels, args.out, args.table, max_len=args.max_len, features=_features_arg(args.features),
        config=_read_config(args),
        workers=args.workers, overwrite=args.overwrite, allow_any_ts=args.allow_any_ts, now_ms=args.now_ms,
        ray_address=args.ray_address, on_plan=on_plan, on_progress=progress))

    def human() -> None:
        print(f"export {'completed' if report.completed else 'DID NOT COMPLETE'}: {report.rows_written} training "
              f"rows for {report.labels} labels in {report.shards} shards, {report.wall_s} s "
              f"on {report.nodes} Ray node(s)")
        if report.rows_history_incomplete:
            print(f"  {report.rows_history_incomplete} rows have history_complete=False: retention (TTL or "
                  "max_events_per_user) deleted events that were in their time range")
        _cache_line(report)
        print(f"  output: {report.out}")

    return _finish(args, "export", report, human)


# ---------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from ray_jobs import demo

    return demo.run(data_dir=args.data_dir, as_json=args.json, work_dir=args.work_dir, users=args.users,
                    events=args.events, workers=args.workers, json_out=getattr(args, "json_out", None))
