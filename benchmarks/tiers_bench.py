"""The two-tier read path (raw cells + compacted chunks): ratios measured in one run.

    python -m benchmarks.tiers_bench [--quick] [--reps 3] [--hbase-data-dir DIR] [--no-profile]

Needs a running HBase (``seqstore hbase start``, or SEQSTORE_HBASE/SEQSTORE_HBASE_THRIFT2).
Every figure below comes from the same server in the same run, and each is read as a ratio:

* **as of now**: reader sequences/s (max_len 100, 5,000 users x 100 events, all requests in
  one ``read_sequences`` call) on the table as written (raw tier only) and after compaction
  (``compact_range`` over every salt range), against the Feast-style one-cell-per-user
  happybase multi-get of the same users' latest events (:func:`build_feast_table`,
  :func:`feast_multiget`: 100 rows per multi-get, one ``np.frombuffer`` per user);
* **historical as_of**: one request per user, ``as_of`` drawn uniformly inside the user's
  history, raw and compacted, against the same Feast figure (which cannot answer it at all);
* **flat cost**: ms per sequence for users with 10 .. 10,000 events of history, and for dense
  users (100 events in one day) vs sparse ones (100 events over a year), raw and compacted;
* **training export**: 20 labels per user (label times inside the user's history), labels/s
  through ``read_sequences`` with every label in one call (request-level batching), and
  through ``ray_jobs.export.run_export`` (2 workers, labels sorted by user), raw vs compacted;
* **compaction**: raw events merged per second, and per CPU-second of the whole machine;
* **storage**: bytes per event on disk (the table's directory under the HBase root, after a
  flush, i.e. ``disableTable``/``enableTable``) before compaction, after it, and after an HBase
  major compaction (which drops the deleted raw cells and their tombstones); and the logical
  bytes (row + family + qualifier + value of every cell, uncompressed) per event.

The compacted reads are checked against the raw ones: the same requests must give identical
sequences (``identical`` in the results). Writes ``results/tiers.json`` and ``results/tiers.md``
and puts the section into ``results/bench.md`` (``--quick``: ``tiers_quick.*`` only). When the
compacted as-of-now read is below the Feast figure, one such read is profiled (cProfile, with the
reader's thread pool run inline so every call is seen) into ``results/tiers_profile.txt``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import happybase
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import RESULTS, machine_cpu_s, measure, save
from benchmarks.read_bench import make_events
from benchmarks.score_bench import build_feast_table, feast_multiget
from hbase import datadir, state
from store import SequenceStore, SequenceTable, TableSpec
from store.format.keys import CHUNKS, EVENTS, FEATURES, META
from store.io.connection import idl
from store.io.scanning import scan_results
from store.tiers.compaction import CompactionStats, compact_range

MAX_LEN = 100
LABELS_PER_USER = 20
DAY = 86_400_000
SECTION_START, SECTION_END = "<!-- tiers_bench -->", "<!-- /tiers_bench -->"


@dataclass(frozen=True)
class Sizes:
    users: int  # the main table: users x 100 events
    export_users: int  # users whose 20 labels are exported
    history: tuple[int, ...]  # events of history per user
    history_users: int  # users per history length
    shape_users: int  # dense users, and as many sparse ones

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(users=500, export_users=100, history=(10, 100, 1_000), history_users=30, shape_users=200)
        return cls(users=5_000, export_users=500, history=(10, 100, 1_000, 10_000), history_users=100,
                   shape_users=1_000)


# ---------------------------------------------------------------------------- data


def spread_events(prefix: str, users: int, per_user: int, now: int, span_ms: int, seed: int) -> pa.Table:
    """``per_user`` events for each of ``users`` users (ids ``<prefix><n>``), uniform over the last ``span_ms``."""
    rng = np.random.default_rng(seed)
    n = users * per_user
    user = np.repeat(np.arange(users), per_user)
    return pa.table({
        "user_id": pa.array([f"{prefix}{u:07d}" for u in user]),
        "event_ts": pa.array(now - rng.integers(1, span_ms, n), pa.int64()),
        "event_type": pa.array(rng.choice(["view", "click", "play", "buy"], n)),
        "item_id": pa.array(rng.integers(1, 1_000_000, n), pa.int64()),
        "dwell_ms": pa.array(rng.integers(0, 60_000, n), pa.int32()),
    })


def history_bounds(data: pa.Table, users: int) -> tuple[np.ndarray, np.ndarray]:
    """Oldest and newest ``event_ts`` of each user of a table built user by user (equal counts)."""
    ts = np.asarray(data.column("event_ts").to_numpy()).reshape(users, -1)
    return ts.min(axis=1), ts.max(axis=1)


def inside(lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator, per_user: int = 1) -> np.ndarray:
    """Times uniform in ``(lo, hi]`` per user (so some but not all events are visible): shape ``(users, per_user)``."""
    return rng.integers(lo[:, None] + 1, hi[:, None] + 1, (len(lo), per_user))


# ---------------------------------------------------------------------------- reads


def read_timed(table: SequenceTable, users: list[str], as_of: list[int]) -> tuple[float, pa.Table]:
    """One ``read_sequences`` call with every request: (seconds, result)."""
    t0 = time.perf_counter()
    out = table.read_sequences((users, as_of), max_len=MAX_LEN)
    return time.perf_counter() - t0, out


def same(a: pa.Table, b: pa.Table) -> bool:
    return a.column("length").equals(b.column("length")) and a.column("sequence").equals(b.column("sequence"))


class _Inline:
    """A stand-in for the reader's ThreadPoolExecutor that runs every task in the calling thread,
    so a profile of the calling thread sees all of a read's work (timing differs: no overlap)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> Iterator[Any]:
        return iter([fn(*args) for args in zip(*iterables, strict=True)])

    def shutdown(self, wait: bool = True) -> None:
        pass


def profile_read(table: SequenceTable, users: list[str], as_of: list[int], top: int = 15) -> dict[str, Any]:
    """cProfile of one read (thread pool inline): the top ``top`` functions by cumulative time."""
    prof = cProfile.Profile()
    with mock.patch("store.reader.ThreadPoolExecutor", _Inline):
        t0 = time.perf_counter()
        prof.enable()
        table.read_sequences((users, as_of), max_len=MAX_LEN)
        prof.disable()
        wall = time.perf_counter() - t0
    text = io.StringIO()
    pstats.Stats(prof, stream=text).strip_dirs().sort_stats("cumulative").print_stats(top)
    tottime = io.StringIO()
    pstats.Stats(prof, stream=tottime).strip_dirs().sort_stats("tottime").print_stats(top)
    return {"requests": len(users), "wall_s_inline": round(wall, 3), "seq_per_s_inline": round(len(users) / wall),
            "top_cumulative": text.getvalue(), "top_tottime": tottime.getvalue()}


# ---------------------------------------------------------------------------- storage


def find_data_dir(store: SequenceStore, given: Path | None) -> Path | None:
    """The data directory of the HBase this store talks to: ``given``, else the first of
    ``$SEQSTORE_HBASE_DATA_DIR`` (else the default one) and the endpoint file's whose recorded
    Thrift address is one of the store's (None if none is: a remote HBase)."""
    if given is not None:
        return given
    ports = {(e.host, e.port) for e in (*store.config.thrift, *store.config.thrift2)}
    candidates = [datadir.default_data_dir()]
    endpoint = state.read_endpoint()
    if endpoint is not None:
        candidates.append(Path(endpoint.data_dir))
    for d in candidates:
        rt = state.read_runtime(d)
        if rt is not None and {(rt.host, rt.thrift_port), (rt.host, rt.thrift2_port)} & ports:
            return d
    return None


def hbase_root(data_dir: Path) -> Path:
    """``hbase.rootdir`` of the instance (a ``file://`` URL in its hbase-site.xml), else ``<data_dir>/hbase``."""
    site = data_dir / "conf" / "hbase-site.xml"
    if site.exists():
        m = re.search(r"<name>hbase\.rootdir</name>\s*<value>file://([^<]+)</value>", site.read_text())
        if m:
            return Path(m.group(1))
    return data_dir / "hbase"


FAMILIES = tuple(f.decode() for f in (EVENTS, CHUNKS, META, FEATURES))


def store_files(table_dir: Path) -> dict[str, dict[str, int]]:
    """``{region/family: {file: bytes}}`` of the table's store files (the column families' directories
    only: not ``recovered.edits`` nor dot-entries)."""
    out: dict[str, dict[str, int]] = {}
    for region in sorted(p for p in table_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for fam in sorted(p for p in region.iterdir() if p.is_dir() and p.name in FAMILIES):
            out[f"{region.name}/{fam.name}"] = {f.name: f.stat().st_size for f in fam.iterdir()
                                                if f.is_file() and not f.name.startswith(".")}
    return out


def disk_bytes(table_dir: Path) -> dict[str, int]:
    """Store-file bytes per column family and in all (the whole table directory as ``dir_total``)."""
    per: dict[str, int] = {}
    for key, files in store_files(table_dir).items():
        fam = key.split("/", 1)[1]
        per[fam] = per.get(fam, 0) + sum(files.values())
    per["store_files_total"] = sum(per.values())
    per["dir_total"] = sum(f.stat().st_size for f in table_dir.rglob("*") if f.is_file())
    return per


def flush(store: SequenceStore, name: str) -> None:
    """Flush every memstore of the table to store files: closing a region (disable) flushes it."""
    tname = idl().TTableName(ns=b"default", qualifier=name.encode())
    store.pool.call("disableTable", tname)
    store.pool.call("enableTable", tname)


def major_compact(store: SequenceStore, name: str, table_dir: Path, timeout_s: float = 30.0) -> float | None:
    """Ask HBase for a major compaction of the table (Thrift1) and wait for it; seconds taken.

    Done when every store has at most one file, no ``.tmp`` output is pending, and either every
    store's files changed or nothing changed for 5 s (HBase skips a store whose one file is
    already major-compacted). None if that was not seen within ``timeout_s`` (the request is
    asynchronous, and a server may queue or ignore it).
    """
    before = {k: set(v) for k, v in store_files(table_dir).items()}
    ep = store.config.thrift[0]
    conn = happybase.Connection(ep.host, ep.port, timeout=120_000)
    try:
        conn.compact_table(name, major=True)
    finally:
        conn.close()
    t0 = time.monotonic()
    last, stable_since = None, time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        time.sleep(0.5)
        now = {k: set(v) for k, v in store_files(table_dir).items()}
        if now != last:
            last, stable_since = now, time.monotonic()
        pending = any(f.is_file() for f in table_dir.rglob(".tmp/**/*"))
        single = all(len(v) <= 1 for v in now.values())
        changed = all(now.get(k) != v for k, v in before.items() if v)
        if single and not pending and (changed or time.monotonic() - stable_since >= 5.0):
            return time.monotonic() - t0
    return None


def logical_bytes(table: SequenceTable) -> dict[str, int]:
    """Cells and their uncompressed bytes (row + family + qualifier + value) per family."""
    t = idl()
    out: dict[str, int] = {}
    for fam in (EVENTS, CHUNKS, META, FEATURES):
        scan = t.TScan(columns=[t.TColumn(family=fam)], maxVersions=1, batchSize=1_000)
        cells = size = 0
        for r in scan_results(table.handle.pool, table.handle.name_bytes, scan, 1_000):
            for cv in r.columnValues or []:
                cells += 1
                size += len(r.row) + len(fam) + len(cv.qualifier) + len(cv.value)
        out[f"{fam.decode()}_cells"], out[f"{fam.decode()}_bytes"] = cells, size
    out["total_bytes"] = sum(v for k, v in out.items() if k.endswith("_bytes"))
    return out


@dataclass
class Storage:
    """Where a table's storage is measured (``table_dir`` None: logical bytes only)."""

    store: SequenceStore
    root: Path | None
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def measure(self, table: SequenceTable, events: int, *, major: bool) -> dict[str, Any]:
        t0 = time.perf_counter()
        out: dict[str, Any] = {"events": events}
        logical = logical_bytes(table)
        out["logical"] = logical
        out["logical_bytes_per_event"] = round(logical["total_bytes"] / events, 1)
        if self.root is not None:
            tdir = self.root / "data" / "default" / table.name
            flush(self.store, table.name)
            disk = disk_bytes(tdir)
            out["disk_after_flush"] = disk
            out["disk_bytes_per_event_after_flush"] = round(disk["store_files_total"] / events, 1)
            # What an HBase major compaction would leave of a fully compacted table: its raw family
            # then holds no cell (every raw cell was deleted), the other families are unchanged.
            out["disk_bytes_per_event_without_raw_family"] = round(
                (disk["store_files_total"] - disk.get(EVENTS.decode(), 0)) / events, 1)
            if major:
                took = major_compact(self.store, table.name, tdir)
                if took is None:
                    self.notes.append(f"An HBase major compaction of {table.name} was requested but not seen done "
                                      "within 30 s: no on-disk size after major compaction "
                                      "(see the row without the raw family).")
                else:
                    out["major_compaction_s"] = round(took, 1)
                    disk = disk_bytes(tdir)
                    out["disk_after_major_compaction"] = disk
                    out["disk_bytes_per_event_after_major_compaction"] = round(disk["store_files_total"] / events, 1)
        self.wall_s += time.perf_counter() - t0
        return out


# ---------------------------------------------------------------------------- the run


def compact_all(table: SequenceTable) -> dict[str, Any]:
    """Compact the whole table, one salt range after another; rates over wall and machine CPU time."""
    stats = CompactionStats()
    t0, c0 = time.perf_counter(), machine_cpu_s()
    for start, stop in table.salt_ranges():
        stats.add(compact_range(table.handle, start, stop))
    wall, cpu = time.perf_counter() - t0, machine_cpu_s() - c0
    return {**asdict(stats), "wall_s": round(wall, 2), "machine_cpu_s": round(cpu, 2),
            "raw_events_per_s": round(stats.raw_events / wall), "raw_events_per_cpu_s": round(stats.raw_events / cpu)}


class TiersBench:
    def __init__(self, store: SequenceStore, reps: int, sizes: Sizes, work: Path, data_dir: Path | None,
                 profile: bool = True) -> None:
        self.store, self.reps, self.sizes, self.work, self.profile = store, reps, sizes, work, profile
        self.now = int(time.time() * 1000)
        self.storage = Storage(store, hbase_root(data_dir) if data_dir is not None else None)
        if data_dir is None:
            self.storage.notes.append("HBase data directory not found (remote HBase?): no on-disk sizes")
        self.made: list[str] = []

    def table(self, kind: str, **spec: Any) -> SequenceTable:
        name = f"bench_tiers_{kind}_{os.getpid()}"
        self.made.append(name)
        return self.store.create_table(TableSpec(name, salt_buckets=8, **spec))

    def cleanup(self) -> None:
        ep = self.store.config.thrift[0]
        conn = happybase.Connection(ep.host, ep.port, timeout=120_000)
        try:
            existing = {t.decode() for t in conn.tables()}
            for name in self.made:
                self.store.drop_table(name)
                if f"{name}_feast" in existing:
                    conn.delete_table(f"{name}_feast", disable=True)
        finally:
            conn.close()

    def reads(self, table: SequenceTable, users: list[str], as_of: list[int]) -> tuple[dict[str, float], pa.Table]:
        """Sequences/s over ``reps`` runs of one call with every request (after one warm-up call)."""
        _, first = read_timed(table, users, as_of)
        return measure(self.reps, lambda: len(users) / read_timed(table, users, as_of)[0]), first

    def ms_per_seq(self, table: SequenceTable, users: list[str]) -> tuple[dict[str, float], pa.Table]:
        as_of = [self.now] * len(users)
        _, first = read_timed(table, users, as_of)
        return measure(self.reps, lambda: read_timed(table, users, as_of)[0] / len(users) * 1000), first

    def export_job(self, table: SequenceTable, labels: Path, n: int, tag: str) -> dict[str, Any]:
        from ray_jobs.export import run_export

        out = self.work / f"export_{tag}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        report = run_export(str(labels), out, table.name, max_len=MAX_LEN, workers=2, config=self.store.config)
        wall = time.perf_counter() - t0
        assert report.completed, report.error
        return {"labels": n, "wall_s": round(wall, 2), "labels_per_s": round(n / wall),
                "job_rows_per_s": report.rows_per_s}

    # ------------------------------------------------------------------ main table

    def main_table(self) -> dict[str, Any]:
        s = self.sizes
        table = self.table("main", bucket_ms=7 * DAY)
        data = make_events(s.users, 100, self.now)
        t0 = time.perf_counter()
        table.write(data, chunk_rows=50_000)
        out: dict[str, Any] = {"users": s.users, "events_per_user": 100, "events": data.num_rows, "max_len": MAX_LEN,
                               "write_events_per_s": round(data.num_rows / (time.perf_counter() - t0))}
        rng = np.random.default_rng(7)
        order = rng.permutation(s.users)
        ids = [f"user{u:07d}" for u in order]
        lo, hi = history_bounds(data, s.users)
        hist_as_of = inside(lo[order], hi[order], rng)[:, 0].tolist()
        now_as_of = [self.now] * s.users
        ex = order[: s.export_users]
        label_ts = np.sort(inside(lo[ex], hi[ex], rng, LABELS_PER_USER), axis=1)
        label_users = [f"user{u:07d}" for u in np.repeat(ex, LABELS_PER_USER)]
        label_ts_list = label_ts.ravel().tolist()
        labels = self.work / "labels.parquet"
        pq.write_table(pa.table({"user_id": label_users, "ts": pa.array(label_ts_list, pa.int64())}), labels,
                       row_group_size=len(label_users) // 2 + 1)
        n_labels = len(label_users)
        del data

        feast = build_feast_table(self.store, table, ids, self.now, MAX_LEN)
        print("main: written, Feast table built", flush=True)
        out["storage_raw"] = self.storage.measure(table, out["events"], major=False)
        print(f"main: raw storage {out['storage_raw'].get('disk_bytes_per_event_after_flush')} B/event", flush=True)

        raw: dict[str, Any] = {}
        raw["now_seq_per_s"], raw_now = self.reads(table, ids, now_as_of)
        raw["historical_seq_per_s"], raw_hist = self.reads(table, ids, hist_as_of)
        raw["export_labels_per_s"], raw_export = self.reads(table, label_users, label_ts_list)
        raw["export_job"] = self.export_job(table, labels, n_labels, "raw")
        out["feast_multiget_seq_per_s"] = measure(self.reps, lambda: feast_multiget(self.store, feast, ids, MAX_LEN))
        out["raw"] = raw
        print(f"main: raw reads {raw['now_seq_per_s']['median']:.0f} seq/s now", flush=True)

        out["compaction"] = compact_all(table)
        print(f"main: compacted {out['compaction']['raw_events_per_s']} events/s", flush=True)
        out["storage_compacted"] = self.storage.measure(table, out["events"], major=True)

        comp: dict[str, Any] = {}
        comp["now_seq_per_s"], comp_now = self.reads(table, ids, now_as_of)
        comp["historical_seq_per_s"], comp_hist = self.reads(table, ids, hist_as_of)
        comp["export_labels_per_s"], comp_export = self.reads(table, label_users, label_ts_list)
        comp["export_job"] = self.export_job(table, labels, n_labels, "compacted")
        out["feast_multiget_seq_per_s_after"] = measure(self.reps,
                                                        lambda: feast_multiget(self.store, feast, ids, MAX_LEN))
        out["compacted"] = comp
        out["identical"] = {"now": same(raw_now, comp_now), "historical": same(raw_hist, comp_hist),
                            "export": same(raw_export, comp_export)}
        out["export_labels"] = n_labels
        out["export_users"] = s.export_users
        out["events_returned"] = {"now": int(np.sum(comp_now.column("length"))),
                                  "historical": int(np.sum(comp_hist.column("length"))),
                                  "export": int(np.sum(comp_export.column("length")))}
        print(f"main: compacted reads {comp['now_seq_per_s']['median']:.0f} seq/s now", flush=True)
        feast_rate = statistics_median(out["feast_multiget_seq_per_s"], out["feast_multiget_seq_per_s_after"])
        if self.profile and comp["now_seq_per_s"]["median"] < feast_rate:
            out["profile_compacted_now"] = profile_read(table, ids, now_as_of)
        return out

    # ------------------------------------------------------------------ history lengths, dense vs sparse

    def shapes(self) -> dict[str, Any]:
        s = self.sizes
        table = self.table("shape", bucket_ms=DAY)
        groups: dict[str, list[str]] = {}
        events = 0
        for size in s.history:
            data = spread_events(f"h{size}_", s.history_users, size, self.now, 60 * DAY, seed=size)
            table.write(data, chunk_rows=50_000)
            events += data.num_rows
            groups[f"history_{size}"] = [f"h{size}_{u:07d}" for u in range(s.history_users)]
        for kind, span in (("dense", DAY), ("sparse", 365 * DAY)):
            data = spread_events(f"{kind}_", s.shape_users, 100, self.now, span, seed=len(kind))
            table.write(data, chunk_rows=50_000)
            events += data.num_rows
            groups[kind] = [f"{kind}_{u:07d}" for u in range(s.shape_users)]
        print(f"shapes: {events} events written", flush=True)
        before = {g: self.ms_per_seq(table, users) for g, users in groups.items()}
        compaction = compact_all(table)
        print(f"shapes: compacted {compaction['raw_events_per_s']} events/s", flush=True)
        after = {g: self.ms_per_seq(table, users) for g, users in groups.items()}
        rows = {g: {"users": len(groups[g]), "raw_ms_per_seq": before[g][0], "compacted_ms_per_seq": after[g][0],
                    "identical": same(before[g][1], after[g][1])} for g in groups}
        return {"events": events, "compaction": compaction, "groups": rows}

    def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        report: dict[str, Any] = {"cpus": os.cpu_count(), "reps": self.reps, "sizes": asdict(self.sizes)}
        try:
            report["main"] = self.main_table()
            save("tiers_partial", report)  # kept if a later phase fails (e.g. the server goes away)
            report["shapes"] = self.shapes()
            (RESULTS / "tiers_partial.json").unlink(missing_ok=True)  # the whole report is saved instead
        finally:
            self.cleanup()
        report["storage_measurement_s"] = round(self.storage.wall_s, 1)
        report["notes"] = self.storage.notes
        report["ratios"] = ratios(report)
        report["wall_s"] = round(time.monotonic() - t0, 1)
        return report


def statistics_median(*ms: dict[str, float]) -> float:
    """The Feast figure the ratios divide by: the mean of its medians measured before and after compaction."""
    return sum(m["median"] for m in ms) / len(ms)


def _spread(values: list[float]) -> float:
    """Largest over smallest, minus one: 0.25 means within +-25% of each other at worst."""
    return round(max(values) / min(values) - 1, 3)


def ratios(r: dict[str, Any]) -> dict[str, Any]:
    m, g = r["main"], r["shapes"]["groups"]
    feast = statistics_median(m["feast_multiget_seq_per_s"], m["feast_multiget_seq_per_s_after"])
    med = lambda x: x["median"]  # noqa: E731
    hist = [k for k in g if k.startswith("history_")]
    out = {
        "now_compacted_vs_feast": round(med(m["compacted"]["now_seq_per_s"]) / feast, 3),
        "now_raw_vs_feast": round(med(m["raw"]["now_seq_per_s"]) / feast, 3),
        "now_compacted_vs_raw": round(med(m["compacted"]["now_seq_per_s"]) / med(m["raw"]["now_seq_per_s"]), 2),
        "historical_compacted_vs_feast": round(med(m["compacted"]["historical_seq_per_s"]) / feast, 3),
        "historical_raw_vs_feast": round(med(m["raw"]["historical_seq_per_s"]) / feast, 3),
        "export_compacted_vs_raw": round(med(m["compacted"]["export_labels_per_s"])
                                         / med(m["raw"]["export_labels_per_s"]), 2),
        "export_job_compacted_vs_raw": round(m["compacted"]["export_job"]["labels_per_s"]
                                             / m["raw"]["export_job"]["labels_per_s"], 2),
        "history_spread_compacted": _spread([med(g[k]["compacted_ms_per_seq"]) for k in hist]),
        "history_spread_raw": _spread([med(g[k]["raw_ms_per_seq"]) for k in hist]),
        "sparse_vs_dense_compacted": round(med(g["sparse"]["compacted_ms_per_seq"])
                                           / med(g["dense"]["compacted_ms_per_seq"]), 2),
        "sparse_vs_dense_raw": round(med(g["sparse"]["raw_ms_per_seq"]) / med(g["dense"]["raw_ms_per_seq"]), 2),
        "logical_bytes_compacted_vs_raw": round(m["storage_compacted"]["logical_bytes_per_event"]
                                                / m["storage_raw"]["logical_bytes_per_event"], 3),
    }
    sr, sc = m["storage_raw"], m["storage_compacted"]
    if "disk_bytes_per_event_after_flush" in sc:
        out["disk_after_flush_compacted_vs_raw"] = round(sc["disk_bytes_per_event_after_flush"]
                                                         / sr["disk_bytes_per_event_after_flush"], 3)
        out["disk_chunk_tier_vs_raw"] = round(sc["disk_bytes_per_event_without_raw_family"]
                                              / sr["disk_bytes_per_event_after_flush"], 3)
    if "disk_bytes_per_event_after_major_compaction" in sc:
        out["disk_compacted_vs_raw"] = round(sc["disk_bytes_per_event_after_major_compaction"]
                                             / sr["disk_bytes_per_event_after_flush"], 3)
    return out


# ---------------------------------------------------------------------------- report


def markdown(r: dict[str, Any]) -> str:
    """The section of ``bench.md`` for this run (between markers, so a later run can replace it)."""
    m, sh, q = r["main"], r["shapes"], r["ratios"]
    feast = statistics_median(m["feast_multiget_seq_per_s"], m["feast_multiget_seq_per_s_after"])
    rng = lambda x: f"{x['median']:,.0f} ({x['min']:,.0f} to {x['max']:,.0f})"  # noqa: E731
    ms = lambda x: f"{x['median']:.3f} ({x['min']:.3f} to {x['max']:.3f})"  # noqa: E731
    yes = lambda ok: "yes" if ok else "**NO**"  # noqa: E731
    raw, comp = m["raw"], m["compacted"]
    sr, sc = m["storage_raw"], m["storage_compacted"]
    ident = m["identical"]
    lines = [
        SECTION_START,
        "## Two tiers: raw cells vs compacted chunks (`benchmarks.tiers_bench`)",
        "",
        f"One run ({r['wall_s']:.0f} s), {r['cpus']} CPUs, median of {r['reps']} (min to max). Main table: "
        f"{m['users']:,} users x {m['events_per_user']} events, max_len {m['max_len']}, every request in one "
        "`read_sequences` call. The Feast figure is the mean of its medians before and after compaction "
        f"({feast:,.0f} seq/s). Compacted results identical to raw: as of now {yes(ident['now'])}, historical "
        f"{yes(ident['historical'])}, export {yes(ident['export'])}.",
        "",
        "| measure | raw tier (as written) | compacted | compacted ÷ raw | ÷ Feast (compacted) | goal |",
        "|---|---|---|---|---|---|",
        f"| Feast-style one-cell-per-user multi-get (seq/s, latest only) | {rng(m['feast_multiget_seq_per_s'])} | "
        f"{rng(m['feast_multiget_seq_per_s_after'])} | | 1.00 | |",
        f"| reader as of now (seq/s) | {rng(raw['now_seq_per_s'])} | {rng(comp['now_seq_per_s'])} | "
        f"{q['now_compacted_vs_raw']:.2f} | {q['now_compacted_vs_feast']:.2f} (raw {q['now_raw_vs_feast']:.2f}) "
        "| >= 1.0 |",
        f"| reader, historical as_of inside each user's history (seq/s) | {rng(raw['historical_seq_per_s'])} | "
        f"{rng(comp['historical_seq_per_s'])} | "
        f"{comp['historical_seq_per_s']['median'] / raw['historical_seq_per_s']['median']:.2f} | "
        f"{q['historical_compacted_vs_feast']:.2f} (raw {q['historical_raw_vs_feast']:.2f}) | >= 0.5 |",
        f"| export, {LABELS_PER_USER} labels per user, {m['export_labels']:,} labels in one call (labels/s) | "
        f"{rng(raw['export_labels_per_s'])} | {rng(comp['export_labels_per_s'])} | "
        f"{q['export_compacted_vs_raw']:.2f} | | >= 10 x raw |",
        f"| `run_export`, 2 workers, same labels (labels/s, job wall time) | {raw['export_job']['labels_per_s']:,} | "
        f"{comp['export_job']['labels_per_s']:,} | {q['export_job_compacted_vs_raw']:.2f} | | |",
        "",
        "| events of history per user (users) | raw ms per sequence | compacted ms per sequence |",
        "|---|---|---|",
    ]
    groups = sh["groups"]
    for k, g in groups.items():
        label = f"{int(k.split('_')[1]):,}" if k.startswith("history_") else \
            {"dense": "100 in one day (dense)", "sparse": "100 over a year (sparse)"}[k]
        lines.append(f"| {label} ({g['users']:,}) | {ms(g['raw_ms_per_seq'])} | {ms(g['compacted_ms_per_seq'])} |")
    lines += [
        f"| spread over history lengths (max ÷ min - 1; goal <= 0.25) | {q['history_spread_raw']:.2f} | "
        f"{q['history_spread_compacted']:.2f} |",
        f"| sparse ÷ dense (goal 0.75 to 1.25) | {q['sparse_vs_dense_raw']:.2f} | "
        f"{q['sparse_vs_dense_compacted']:.2f} |",
        "",
        "| compaction | raw events | wall s | events/s | events per machine CPU-second | chunks written |",
        "|---|---|---|---|---|---|",
    ]
    for label, c in (("main table", m["compaction"]), ("history + dense/sparse table", sh["compaction"])):
        lines.append(f"| {label} | {c['raw_events']:,} | {c['wall_s']:.1f} | {c['raw_events_per_s']:,} | "
                     f"{c['raw_events_per_cpu_s']:,} | {c['chunks_written']:,} |")
    lines += ["", "| storage per event (main table) | raw tier | compacted | compacted ÷ raw |", "|---|---|---|---|"]
    lines.append(f"| logical bytes (row + family + qualifier + value, uncompressed) | "
                 f"{sr['logical_bytes_per_event']:.1f} | {sc['logical_bytes_per_event']:.1f} | "
                 f"{q['logical_bytes_compacted_vs_raw']:.2f} |")
    if "disk_bytes_per_event_after_flush" in sr:
        lines.append(f"| on disk after a flush (store files) | {sr['disk_bytes_per_event_after_flush']:.1f} | "
                     f"{sc['disk_bytes_per_event_after_flush']:.1f} (deleted raw cells and tombstones still there) | "
                     f"{sc['disk_bytes_per_event_after_flush'] / sr['disk_bytes_per_event_after_flush']:.2f} |")
        lines.append(f"| on disk, compacted table without its raw family `e` (what a major compaction leaves) | "
                     f"{sr['disk_bytes_per_event_after_flush']:.1f} | "
                     f"{sc['disk_bytes_per_event_without_raw_family']:.1f} | "
                     f"{q['disk_chunk_tier_vs_raw']:.2f} |")
    if "disk_compacted_vs_raw" in q:
        lines.append(f"| on disk after an HBase major compaction of the compacted table | "
                     f"{sr['disk_bytes_per_event_after_flush']:.1f} | "
                     f"{sc['disk_bytes_per_event_after_major_compaction']:.1f} | {q['disk_compacted_vs_raw']:.2f} |")
    for note in r.get("notes", []):
        lines.append(f"\n{note}")
    prof = m.get("profile_compacted_now")
    if prof:
        lines += ["", f"Profile of one compacted as-of-now read of {prof['requests']:,} users (thread pool run inline, "
                  f"{prof['seq_per_s_inline']:,} seq/s so), top 15 by cumulative time:", "", "```",
                  prof["top_cumulative"].strip(), "```"]
    lines.append(SECTION_END)
    return "\n".join(lines) + "\n"


def splice(md: str, section: str) -> str:
    """``md`` with its tiers section replaced by ``section`` (appended if it has none)."""
    start, end = md.find(SECTION_START), md.find(SECTION_END)
    if start >= 0 and end > start:
        return md[:start] + section + md[end + len(SECTION_END) + 1:]
    return md.rstrip("\n") + "\n\n" + section


def run(store: SequenceStore, reps: int, quick: bool, work: Path, data_dir: Path | None = None,
        profile: bool = True) -> dict[str, Any]:
    """The whole measurement (Ray must be initialised, for ``run_export``)."""
    return TiersBench(store, reps, Sizes.of(quick), work, find_data_dir(store, data_dir), profile).run()


def main() -> None:
    from ray_jobs.runner import init_ray

    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--hbase-data-dir", type=Path, help="the HBase instance's data directory (for on-disk sizes)")
    parser.add_argument("--no-profile", action="store_true", help="do not profile the compacted read")
    args = parser.parse_args()
    init_ray(None, 2)
    work = Path(tempfile.mkdtemp(prefix="seqstore-tiers-bench-"))
    with SequenceStore(pool_size=8) as store:
        report = run(store, args.reps, args.quick, work, args.hbase_data_dir, not args.no_profile)
    stem = "tiers_quick" if args.quick else "tiers"
    path = save(stem, report)
    section = markdown(report)
    (RESULTS / f"{stem}.md").write_text(section)
    prof = report["main"].get("profile_compacted_now")
    if prof:
        (RESULTS / f"{stem}_profile.txt").write_text(prof["top_cumulative"] + "\n" + prof["top_tottime"])
    if not args.quick and (RESULTS / "bench.md").exists():
        (RESULTS / "bench.md").write_text(splice((RESULTS / "bench.md").read_text(), section))
    shutil.rmtree(work, ignore_errors=True)
    print(section)
    print(f"{path} in {report['wall_s']} s")


if __name__ == "__main__":
    main()
