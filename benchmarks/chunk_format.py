"""Chunk format 3 against format 2 on the same events, in one run (issue 22).

    python -m benchmarks.chunk_format [--events 300000] [--users 3000] [--read-users 1000] [--reps 6]

Needs a running HBase (``seqstore hbase start``). ``seqstore backfill`` (a local Ray) loads a
generated log into a table, which is then copied cell for cell into a second table whose chunk
values are re-encoded in format 2 (the layout written before format 3: ``event_ts``,
``event_id`` and the payload as one plain Arrow record batch; rebuilt here from its definition,
as the store itself no longer writes it). Same rows, qualifiers, timestamps and metadata, so the
two tables differ only in the chunk values. Measured on both:

* **bytes per event**: the chunk family's store files after a flush, and the values' logical bytes;
* **decode**: ``decode_chunks`` of all values, ns per event (in process, no HBase);
* **reads**: ``read_sequences`` as of now, ``max_len`` 100, ``--read-users`` users in one call,
  alternating tables; sequences per second and client CPU per sequence (checked identical).

Ratios come from one run on a shared machine. Writes ``benchmarks/results/chunk_format.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from benchmarks.bulk_bench import command
from benchmarks.common import RESULTS, save
from benchmarks.tiers_bench import disk_bytes, find_data_dir, flush, hbase_root
from ray_jobs.generate import generate
from store import SequenceStore, TableSpec
from store.format.chunk import chunk_schema, decode_chunk, decode_chunks
from store.format.keys import CHUNKS, META
from store.format.payload import uvarint
from store.io.connection import idl
from store.io.scanning import scan_results


def format_2(events: pa.Table, version: int, schema: pa.Schema) -> bytes:
    """A chunk value as format 2 wrote it: ``2 | schema version | record batch``."""
    batch = pa.Table.from_arrays(events.columns, schema=schema).combine_chunks().to_batches()[0]
    return bytes((2,)) + uvarint(version) + batch.serialize().to_pybytes()


def copy_as_format_2(store: SequenceStore, source: str, target: str) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Copy every chunk and metadata cell of ``source`` into ``target``, chunk values in format
    2; the chunk values of both, and their rows."""
    t = idl()
    table = store.table(source).handle
    versions = {s.version: s for s in table.versions}
    current = table.codec.current
    schema = chunk_schema(current)
    scan = t.TScan(columns=[t.TColumn(family=CHUNKS), t.TColumn(family=META)], maxVersions=1, batchSize=500)
    new, old, rows = [], [], []
    puts = []
    for result in scan_results(table.pool, table.name_bytes, scan, 200):
        cells = []
        for cv in result.columnValues or []:
            value = cv.value
            if cv.family == CHUNKS:
                value = format_2(decode_chunk(cv.value, versions, current, result.row), current.version, schema)
                new.append(cv.value)
                old.append(value)
                rows.append(result.row)
            cells.append(t.TColumnValue(cv.family, cv.qualifier, value, timestamp=cv.timestamp))
        puts.append(t.TPut(row=result.row, columnValues=cells))
        if len(puts) >= 200:
            store.pool.call("putMultiple", target.encode(), puts)
            puts = []
    if puts:
        store.pool.call("putMultiple", target.encode(), puts)
    return new, old, rows


def decode_ns(values: list[bytes], rows: list[bytes], store: SequenceStore, name: str, events: int) -> float:
    table = store.table(name).handle
    versions = {s.version: s for s in table.versions}
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for k in range(0, len(values), 2_000):  # a reader decodes a few thousand chunks per call
            decode_chunks(values[k : k + 2_000], versions, table.codec.current, rows[k : k + 2_000])
        best = min(best, time.perf_counter() - t0)
    return round(best / events * 1e9, 1)


def reads(store: SequenceStore, names: list[str], users: list[str], reps: int) -> dict[str, dict[str, float]]:
    now = int(time.time() * 1000)
    requests = [(u, now) for u in users]
    first = [store.table(n).read_sequences(requests, max_len=100) for n in names]
    assert first[0].equals(first[1]), "format 2 and format 3 reads differ"
    samples: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            c0, t0 = time.process_time(), time.perf_counter()
            store.table(name).read_sequences(requests, max_len=100)
            samples[name].append((len(users) / (time.perf_counter() - t0),
                                  (time.process_time() - c0) / len(users) * 1e6))
    out = {}
    for name, got in samples.items():
        rates, cpus = sorted(g[0] for g in got), sorted(g[1] for g in got)
        out[name] = {"seq_per_s": round(rates[len(rates) // 2]),
                     "client_cpu_us_per_seq": round(cpus[len(cpus) // 2], 1)}
    return out


def markdown(r: dict[str, Any]) -> str:
    f2, f3 = r["format_2"], r["format_3"]
    rows = [
        ("bytes/event on disk after a flush (chunk family)", f3["disk_bytes_per_event"], f2["disk_bytes_per_event"]),
        ("logical bytes/event (chunk values)", f3["logical_bytes_per_event"], f2["logical_bytes_per_event"]),
        ("decode_chunks, ns/event (in process)", f3["decode_ns_per_event"], f2["decode_ns_per_event"]),
        ("reads as of now, seq/s", f3["reads"]["seq_per_s"], f2["reads"]["seq_per_s"]),
        ("reads as of now, client CPU us/seq", f3["reads"]["client_cpu_us_per_seq"],
         f2["reads"]["client_cpu_us_per_seq"]),
    ]
    head = (f"## Chunk format 3 vs format 2 (`python -m benchmarks.chunk_format`)\n\nOne run ({r['wall_s']:.0f} s), "
            f"{r['cpus']} CPUs, {r['events']:,} generated events of {r['users']:,} users, the same cells but for the "
            f"chunk values; reads of {r['read_users']:,} users, max_len 100, identical results.\n\n"
            "| measure | format 3 | format 2 | ratio |\n|---|---|---|---|\n")
    return head + "\n".join(f"| {a} | {x} | {y} | {x / y:.2f} |" for a, x, y in rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--users", type=int, default=3_000)
    parser.add_argument("--read-users", type=int, default=1_000)
    parser.add_argument("--reps", type=int, default=6)
    args = parser.parse_args()
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="seqstore-format-bench-"))
    generate(work / "in", users=args.users, events=args.events, seed=42, files=2, row_group_rows=50_000)
    r: dict[str, Any] = {"events": args.events, "users": args.users, "read_users": args.read_users,
                         "cpus": os.cpu_count()}
    pid = os.getpid()
    f3, f2 = f"format3_{pid}", f"format2_{pid}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": "",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with SequenceStore(pool_size=4) as store:
        for name in (f3, f2):
            store.create_table(TableSpec(name, salt_buckets=8))
        try:
            summary, _, _ = command(["backfill", str(work / "in"), "--table", f3, "--workers", "2",
                                     "--report-dir", str(work / "r")], env)
            n = summary["events_written"]
            new, old, rows = copy_as_format_2(store, f3, f2)
            data_dir = find_data_dir(store, None)
            root = hbase_root(data_dir) if data_dir is not None else None
            for name, values, key in ((f3, new, "format_3"), (f2, old, "format_2")):
                flush(store, name)
                r[key] = {"chunks": len(values), "logical_bytes_per_event": round(sum(map(len, values)) / n, 2),
                          "decode_ns_per_event": decode_ns(values, rows, store, name, n)}
                if root is not None:
                    disk = disk_bytes(root / "data" / "default" / name)
                    r[key]["disk_bytes_per_event"] = round(disk[CHUNKS.decode()] / n, 2)
            random.seed(1)
            users = random.sample([f"user{u:07d}" for u in range(args.users)], min(args.read_users, args.users))
            got = reads(store, [f3, f2], users, args.reps)
            r["format_3"]["reads"], r["format_2"]["reads"] = got[f3], got[f2]
        finally:
            for name in (f3, f2):
                store.drop_table(name)
    r["events_written"] = n
    r["wall_s"] = round(time.perf_counter() - t_start, 1)
    save("chunk_format", r)
    md = markdown(r)
    (RESULTS / "chunk_format.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
