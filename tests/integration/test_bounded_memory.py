"""verify, export and compaction stream: their peak memory does not grow with the size of their input.

Each measurement runs in a fresh Python process (peak RSS is per process), against the real
HBase: verify over inputs of 500k and 2M events, export of one row group of 1k and 10k labels
(100 events each), compaction of one user's backlog of 2M raw events (F5 of the tier review:
it held them all, twice, ~1.3 GB). Memory that grows with the input — every event held in the driver (the 1.5M
more events' coordinates alone are over 40 MB), a whole row group's output held before writing —
shows as tens of MB between the two sizes.

What is measured is the working set: the peak minus the RSS once the imports are done and the
connection made (that part alone varied by 30 MB between runs), the least of three runs (the
allocator's retained pages vary by about 10 MB between identical runs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.generate import generate
from store import SequenceTable
from tests.conftest import REPO, HBaseServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOW = int(time.time() * 1000)
GROWTH_LIMIT_MB = 25

# VmHWM is this process's own peak: ru_maxrss would count the parent's memory at fork time,
# which survives exec.
PEAK = """
def status_kb(name):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(name + ":"))

def peak_kb():
    return status_kb("VmHWM")
"""

VERIFY = PEAK + """
import json, sys
from ray_jobs.verify import verify
from store import SequenceStore
with SequenceStore() as store:
    table = store.table(sys.argv[2])
    before = status_kb("VmRSS")  # imports and the connection: their size varies run to run by ~20 MB
    report = verify(sys.argv[1], table, partition_events=100_000)
print(json.dumps({"rss_kb": peak_kb() - before, "expected": report.events_expected,
                  "missing": report.events_missing}))
"""

EXPORT = PEAK + """
import json, sys, time
from pathlib import Path
from ray_jobs.export import ExportWorker
from ray_jobs.units import plan
from store import Config
fs, (unit,) = plan(sys.argv[1])
Path(sys.argv[3]).mkdir(parents=True, exist_ok=True)
worker = ExportWorker(Config.from_env(), sys.argv[2], fs, sys.argv[3], max_len=100, features=[], batch_rows=500,
                      settings={}, now_ms=int(time.time() * 1000))
before = status_kb("VmRSS")
rows = worker.run(unit)["rows"]
print(json.dumps({"rss_kb": peak_kb() - before, "rows": rows}))
"""

COMPACT = PEAK + """
import json, sys
from store import SequenceStore
from store.tiers.compaction import compact_range
with SequenceStore(pool_size=4) as store:
    table = store.table(sys.argv[1])
    before = status_kb("VmRSS")
    (start, stop), = table.salt_ranges()
    stats = compact_range(table.handle, start, stop)
print(json.dumps({"rss_kb": peak_kb() - before, "raw_events": stats.raw_events, "users": stats.users}))
"""
COMPACT_LIMIT_MB = 300


def _peak(script: str, *args: str, runs: int = 3) -> dict[str, int]:
    """The run of ``script`` with the smallest working set, of ``runs``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    results = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                              cwd=REPO, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    best: dict[str, int] = min(results, key=lambda r: r["rss_kb"])
    return best


def test_verify_memory_does_not_grow_with_the_input(
    make_table: Callable[..., SequenceTable], hbase_server: HBaseServer, tmp_path: Path
) -> None:
    table = make_table(salt_buckets=2)  # empty: every input event is missing, the costliest report
    runs = {}
    for events in (500_000, 2_000_000):
        generate(tmp_path / str(events), users=events // 50, events=events, seed=3, files=2, row_group_rows=50_000)
        runs[events] = _peak(VERIFY, str(tmp_path / str(events)), table.name)
        assert runs[events]["missing"] == runs[events]["expected"] > 0.9 * events
    growth_mb = (runs[2_000_000]["rss_kb"] - runs[500_000]["rss_kb"]) / 1024
    assert growth_mb < GROWTH_LIMIT_MB, runs


def test_export_memory_does_not_grow_with_a_row_group(
    make_table: Callable[..., SequenceTable], hbase_server: HBaseServer, tmp_path: Path
) -> None:
    table = make_table(salt_buckets=2)
    users = [f"u{u}" for u in range(100)]
    table.write(pa.table({"user_id": [u for u in users for _ in range(100)],
                          "event_ts": [NOW - 1_000_000 + i * 1_000 for _ in users for i in range(100)],
                          "event_type": ["view"] * 10_000, "item_id": list(range(10_000))}))
    runs = {}
    for labels in (1_000, 10_000):
        path = tmp_path / f"labels-{labels}.parquet"
        pq.write_table(pa.table({"user_id": [users[i % 100] for i in range(labels)], "ts": [NOW] * labels}),
                       path, row_group_size=labels)
        runs[labels] = _peak(EXPORT, str(path), table.name, str(tmp_path / f"out-{labels}"))
        assert runs[labels]["rows"] == labels
        assert pq.read_table(tmp_path / f"out-{labels}").column("length").to_pylist() == [100] * labels
    growth_mb = (runs[10_000]["rss_kb"] - runs[1_000]["rss_kb"]) / 1024
    assert growth_mb < GROWTH_LIMIT_MB, runs


def test_compaction_memory_is_bounded_by_a_window_not_a_users_backlog(
    make_table: Callable[..., SequenceTable], hbase_server: HBaseServer
) -> None:
    """F5: one user with 2M raw events (10k per daily row) is compacted window by window."""
    table = make_table(salt_buckets=1)
    n = 2_000_000
    start = NOW - 200 * 86_400_000
    for offset in range(0, n, 500_000):
        i = pa.array(range(offset, offset + 500_000), pa.int64())
        table.write(pa.table({"user_id": pa.array(["heavy"] * 500_000), "event_ts": pa.compute.add(i, start),
                              "event_type": pa.array(["view"] * 500_000), "item_id": i}), chunk_rows=50_000)
    run = _peak(COMPACT, table.name, runs=1)
    assert run["raw_events"] == n and run["users"] == 1
    assert run["rss_kb"] / 1024 < COMPACT_LIMIT_MB, run
    probe = table.read_sequences(pa.table({"user_id": ["heavy"] * 3, "as_of_ts": [NOW, start + n // 2, start + 10]}),
                                 max_len=1_000, fields=["item_id"])
    assert probe.column("length").to_pylist() == [1_000, 1_000, 10]
    assert [s[0]["item_id"] for s in probe.column("sequence").to_pylist()] == [n - 1, n // 2 - 1, 9]
