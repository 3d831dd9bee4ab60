"""``seqstore demo`` / ``make demo``: the main job on the embedded HBase.

Today it starts the local HBase if needed and does a small, real write/read round trip,
printing each step. It grows into the full flow (generate → backfill → score → export).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hbase import launcher
from store.config import Config
from store.connection import connection

DEMO_TABLE = "seqstore_demo"
FAMILY_OPTIONS = {
    "max_versions": 3,
    "compression": "ZSTD",
    "bloom_filter_type": "ROW",
    "block_cache_enabled": True,
    "time_to_live": 365 * 24 * 3600,
}


def run(*, data_dir: Path | None, as_json: bool) -> int:
    """Run the demo; returns the process exit code."""
    steps: list[dict[str, object]] = []

    def step(name: str, t0: float, **info: object) -> None:
        entry = {"step": name, "seconds": round(time.monotonic() - t0, 2), **info}
        steps.append(entry)
        if not as_json:
            details = ", ".join(f"{k}={v}" for k, v in info.items())
            print(f"[{entry['seconds']:>6.2f}s] {name}: {details}", flush=True)

    t0 = time.monotonic()
    rt, already = launcher.start(data_dir, on_progress=None if as_json else (lambda m: print(f"  {m}", flush=True)))
    step("hbase", t0, state="already running" if already else "started",
         thrift=f"{rt.host}:{rt.thrift_port}", data_dir=rt.data_dir)

    config = Config.from_env()
    with connection(config) as conn:
        t0 = time.monotonic()
        if DEMO_TABLE.encode() not in conn.tables():
            conn.create_table(DEMO_TABLE, {"e": FAMILY_OPTIONS})
        step("create-table", t0, table=DEMO_TABLE, family_options=FAMILY_OPTIONS)

        t0 = time.monotonic()
        table = conn.table(DEMO_TABLE)
        events = {
            f"user-{u}".encode(): {f"e:{i:04d}".encode(): f"click item={u * 100 + i}".encode() for i in range(5)}
            for u in range(3)
        }
        with table.batch(batch_size=100) as batch:
            for row, cells in events.items():
                batch.put(row, cells)
        step("write", t0, rows=len(events), cells=sum(len(c) for c in events.values()))

        t0 = time.monotonic()
        back = dict(table.rows(list(events)))
        ok = back == events
        step("read-back", t0, rows=len(back), identical=ok)

    if as_json:
        print(json.dumps({"ok": ok, "steps": steps}))
    else:
        print(f"\nHBase keeps running at {rt.host}:{rt.thrift_port}; stop it with: seqstore hbase stop")
    return 0 if ok else 1
