"""What one Thrift2 call costs the machine, by side: client, RegionServer, Thrift2 server.

    python -m benchmarks.rpc_cost [--calls 2000]

Needs the project's HBase (``seqstore hbase start``; it finds the RegionServer and Thrift2
processes by their command lines). Writes ``--calls`` new users' rows four ways — the bulk
load's commit (``checkAndMutate`` of two chunk cells and the flag), a plain ``put`` of the
two cells, and the same puts batched 500 rows to a ``putMultiple`` (what batching rows would save:
Thrift2 has no batched ``checkAndMutate``), each with 10-byte and 4,000-byte values — from one
thread, and reports CPU microseconds per row of this process (user + system) and of each server process
(``/proc/<pid>/stat``). Prints a Markdown table; the machine is shared, so read the ratios.
"""

from __future__ import annotations

import argparse
import os
import time

from store import SequenceStore, TableSpec
from store.format import keys
from store.io.connection import idl
from store.tiers import chunk_steps
from store.tiers.user_meta import UNFLAGGED

_SERVERS = {"RegionServer": "-Dproc_master", "Thrift2": "-Dproc_thrift2"}  # standalone: the master hosts the RS


def server_cpu_s() -> dict[str, float]:
    """CPU seconds (user + system) so far of each server process of the project's HBase."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        for name, marker in _SERVERS.items():
            if marker in cmd:
                out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    missing = set(_SERVERS) - set(out)
    if missing:
        raise SystemExit(f"rpc_cost: no {', '.join(sorted(missing))} process found; run `seqstore hbase start`")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    t = idl()
    rows = ["| call | value bytes | client µs/row | RegionServer µs/row | Thrift2 µs/row | wall µs/row |",
            "|---|---|---|---|---|---|"]
    with SequenceStore(pool_size=1) as store:
        name = f"rpc_cost_{os.getpid()}"
        handle = store.create_table(TableSpec(name, salt_buckets=8)).handle
        try:
            for call in ("checkAndMutate", "put", "putMultiple of 500 rows"):
                for size in (10, 4000):
                    values = [os.urandom(size) for _ in range(2)]
                    before, cpu, wall = server_cpu_s(), os.times(), time.perf_counter()
                    batch: list[object] = []
                    for i in range(args.calls):
                        prefix = keys.user_prefix(f"{call}-{size}-{i}", 8)
                        cells = [(os.urandom(28), v, 1_000 + j) for j, v in enumerate(values)]
                        if call == "checkAndMutate":
                            chunk_steps.commit(handle, prefix, UNFLAGGED, [], cells, keep_flag=False)
                            continue
                        put = t.TPut(row=prefix, columnValues=[
                            t.TColumnValue(keys.CHUNKS, q, v, timestamp=ts) for q, v, ts in cells])
                        if call == "put":
                            handle.pool.call("put", handle.name_bytes, put)
                            continue
                        batch.append(put)
                        if len(batch) == 500 or i == args.calls - 1:
                            handle.pool.call("putMultiple", handle.name_bytes, batch)
                            batch = []
                    after, cpu_end, wall_end = server_cpu_s(), os.times(), time.perf_counter()
                    client = (cpu_end.user - cpu.user) + (cpu_end.system - cpu.system)
                    per = [client, *(after[s] - before[s] for s in _SERVERS), wall_end - wall]
                    rows.append(f"| {call} | {size:,} | " + " | ".join(f"{x / args.calls * 1e6:,.0f}" for x in per)
                                + " |")
        finally:
            store.drop_table(name)
    print(f"## One Thrift2 call's CPU by side (`python -m benchmarks.rpc_cost --calls {args.calls}`)\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
