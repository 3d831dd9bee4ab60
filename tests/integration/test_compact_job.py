"""The compaction job with real Ray on real HBase: reads unchanged, verify clean, re-runs, the CLI.

Reads are compared with a raw-only twin (``chunk_events=None``) holding the same events: the
compacted table must answer every request exactly as the table that was never compacted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.backfill import run_backfill
from ray_jobs.cli import main
from ray_jobs.compact import run_compact
from ray_jobs.generate import generate
from ray_jobs.verify import verify
from store import SequenceStore, SequenceTable, TableSpec
from store.format import keys
from store.format.chunk import chunk_qualifier, chunk_schema, encode_chunk
from store.format.keys import CHUNKS, EVENTS, META
from store.io.connection import idl
from store.io.scanning import scan_results
from store.tiers.user_meta import RAW_FLAG, flagged
from tests.conftest import HBaseServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY = 86_400_000
LATER = int(time.time() * 1000) + DAY  # "as of now" for every read of the module, after every event written


def _reads(table: SequenceTable, users: list[str], times: list[int]) -> list[Any]:
    """A fixed set of requests with several options, as plain Python values."""
    now = LATER
    unknown = ["nobody", "user9999999"]
    historical = list(zip(users, times, strict=True))
    out = [
        table.read_sequences([(u, now) for u in users + unknown], max_len=50),
        table.read_sequences(historical, max_len=20),
        table.read_sequences(historical, max_len=20, inclusive=True, oldest_first=True),
        table.read_sequences(historical, max_len=1000, window_ms=3 * DAY),
        table.read_sequences([(u, now) for u in users], max_len=30, event_types=["click", "play"]),
    ]
    return [t.to_pylist() for t in out]


def _requests(input_dir: Path, n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` (user, as_of) pairs at, just before and just after events of the log."""
    log = pq.read_table(input_dir, columns=["user_id", "event_ts"])  # a log without malformed rows
    rng = np.random.default_rng(seed)
    picks = rng.choice(log.num_rows, size=n, replace=False)
    rows = log.take(pa.array(picks)).to_pylist()
    shift = rng.choice([-1, 0, 1], size=n)
    return [r["user_id"] for r in rows], [int(r["event_ts"] + s) for r, s in zip(rows, shift, strict=True)]


def _raw_cells(table: SequenceTable) -> set[tuple[bytes, int, int]]:
    t = idl()
    scan = t.TScan(columns=[t.TColumn(family=EVENTS)], filterString=b"KeyOnlyFilter()", batchSize=1000)
    return {(keys.parse_row_key(r.row)[1], *keys.parse_qualifier(cv.qualifier))
            for r in scan_results(table.handle.pool, table.handle.name_bytes, scan, 100) for cv in r.columnValues}


def _flagged(table: SequenceTable, users: list[str]) -> set[str]:
    t = idl()
    gets = [t.TGet(row=keys.user_prefix(u, table.spec.salt_buckets), columns=[t.TColumn(META, RAW_FLAG)])
            for u in users]
    results = table.handle.pool.call("getMultiple", table.handle.name_bytes, gets)
    return {u for u, r in zip(users, results, strict=True) if r.columnValues and flagged(r.columnValues[0].value)}


def _chunks_without_raw_deletes(table: SequenceTable, ref: SequenceTable, users: list[str]) -> int:
    """Do for ``users`` what a compaction does up to its atomic chunk write (chunks of 32 events
    in the user's row, its flag left set), without deleting the raw cells; returns chunks put."""
    t = idl()
    seqs = ref.read_sequences([(u, LATER) for u in users], max_len=100_000)
    puts = 0
    for user, seq in zip(users, seqs.column("sequence").to_pylist(), strict=True):
        events = pa.Table.from_pylist(seq, schema=chunk_schema(table.handle.codec.current))
        cells = []
        for start in range(0, events.num_rows, 32):
            piece = events.slice(start, 32)
            oldest = (piece["event_ts"][-1].as_py(), piece["event_id"][-1].as_py())
            value = encode_chunk(piece, table.handle.codec.current)
            cells.append(t.TColumnValue(CHUNKS, chunk_qualifier(oldest, piece.num_rows), value,
                                        timestamp=piece["event_ts"][0].as_py()))
        row = keys.user_prefix(user, table.spec.salt_buckets)
        table.handle.pool.call("put", table.handle.name_bytes, t.TPut(row=row, columnValues=cells))
        puts += len(cells)
    return puts


def _backfill(input_dir: Path, *tables: SequenceTable, config: Any, report_dir: Path, force: bool = False) -> int:
    written = []
    for i, table in enumerate(tables):
        report = run_backfill(str(input_dir), table.name, workers=2, config=config, force=force, into="raw",
                              report_dir=report_dir / f"{table.name}-{i}-{time.monotonic_ns()}")
        assert report.completed, report.error
        written.append(report.events_written)
    assert len(set(written)) == 1
    return written[0]


def test_compact_job_end_to_end(ray_local: None, make_table: Callable[..., SequenceTable], hbase_server: HBaseServer,
                                tmp_path: Path) -> None:
    config = hbase_server.config()
    src = tmp_path / "in"
    generate(src, users=60, events=6_000, seed=5, bad_fraction=0.0, files=1, row_group_rows=3_000)
    table = make_table("tiered", salt_buckets=4, chunk_events=32)
    ref = make_table("raw", salt_buckets=4, chunk_events=None)
    written = _backfill(src, table, ref, config=config, report_dir=tmp_path / "r")
    users, times = _requests(src, 80, seed=1)
    expected = _reads(ref, users, times)
    assert _reads(table, users, times) == expected

    # A compaction that stopped after writing some users' chunks, before deleting their raw cells:
    # those events are in both tiers, and verify and reads count them once.
    stopped = sorted(set(users))[:10]
    fake_chunks = _chunks_without_raw_deletes(table, ref, stopped)
    assert len(_raw_cells(table)) == written and fake_chunks >= 10
    assert _reads(table, users, times) == expected
    check = verify(str(src), table)
    assert check.ok and check.events_found == check.events_expected == written and check.events_extra == 0

    report = run_compact(table.name, workers=2, config=config)
    assert report.completed, report.error
    assert report.units_total == report.units_done == 4 and report.units_retried == 0
    assert report.raw_events == written and report.users == 60 and report.flags_kept == 0
    assert report.chunks_written >= written // 32 and report.chunks_replaced == fake_chunks
    assert report.events_per_s > 0 and report.to_json()["raw_events"] == written
    assert _raw_cells(table) == set() and not _flagged(table, users)
    assert _reads(table, users, times) == expected
    check = verify(str(src), table)
    assert check.ok and check.events_found == check.events_expected == written and check.events_extra == 0

    again = run_compact(table.name, workers=2, config=config)
    assert again.completed, again.error
    assert (again.users, again.raw_events, again.chunks_written, again.chunks_replaced) == (0, 0, 0, 0)

    # Late events, inside users' compacted history and newer than all of it, into both tables.
    rows = pq.read_table(src).slice(0, 200)
    late = rows.set_column(rows.schema.get_field_index("event_ts"), "event_ts",
                           pa.compute.add(rows.column("event_ts"), pa.scalar(7, pa.int64())))
    late = late.set_column(late.schema.get_field_index("item_id"), "item_id",
                           pa.compute.add(late.column("item_id"), pa.scalar(1, pa.int64())))
    newest = rows.slice(0, 20).set_column(rows.schema.get_field_index("event_ts"), "event_ts",
                                          pa.array([int(time.time() * 1000) - 60_000 + i for i in range(20)],
                                                   pa.int64()))
    pq.write_table(pa.concat_tables([late, newest]), src / "late.parquet")
    _backfill(src, table, ref, config=config, report_dir=tmp_path / "r")
    expected = _reads(ref, users, times)
    assert _reads(table, users, times) == expected
    check = verify(str(src), table)
    assert check.ok and check.events_found == written + 220 and check.events_extra == 0

    final = run_compact(table.name, workers=2, config=config)
    assert final.completed, final.error
    late_users = len(set(rows.column("user_id").to_pylist()))
    assert final.raw_events == 220 and final.users == late_users and final.flags_kept == 0
    assert final.chunks_replaced >= late_users  # late events rewrite the chunks they fall into
    assert _raw_cells(table) == set()
    assert _reads(table, users, times) == expected
    check = verify(str(src), table)
    assert check.ok and check.events_found == written + 220


def test_older_than_leaves_newer_events_raw_and_flagged(ray_local: None, make_table: Callable[..., SequenceTable],
                                                       hbase_server: HBaseServer) -> None:
    config = hbase_server.config()
    table = make_table(salt_buckets=2, chunk_events=16)
    ref = make_table("raw", salt_buckets=2, chunk_events=None)
    now = int(time.time() * 1000)
    users = [f"u{i}" for i in range(10)]
    old = [(u, now - 10 * DAY + j * 60_000) for u in users for j in range(30)]
    new = [(u, now - 3_600_000 + j) for u in users[:5] for j in range(5)]
    rows = old + new
    data = pa.table({"user_id": [r[0] for r in rows], "event_ts": pa.array([r[1] for r in rows], pa.int64()),
                     "event_type": ["view", "click", "play"] * (len(rows) // 3) + ["view"] * (len(rows) % 3),
                     "item_id": pa.array(range(len(rows)), pa.int64()),
                     "dwell_ms": pa.array([None] * len(rows), pa.int32())})
    for t in (table, ref):
        assert t.write(data).written == len(rows)
    times = [ts + 1 for _, ts in rows[::7]]
    probe = [u for u, _ in rows[::7]]
    expected = _reads(ref, probe, times)

    report = run_compact(table.name, older_than_days=2, workers=2, config=config)
    assert report.completed, report.error
    assert report.older_than_ms is not None and abs(report.older_than_ms - (now - 2 * DAY)) < 60_000
    assert report.raw_events == 300 and report.users == 10 and report.flags_kept == 5
    assert {(u, ts) for u, ts, _ in _raw_cells(table)} == {(u.encode(), ts) for u, ts in new}
    assert _flagged(table, users) == set(users[:5])
    assert _reads(table, probe, times) == expected

    again = run_compact(table.name, older_than_days=2, workers=2, config=config)
    assert again.completed and again.raw_events == 0 and again.users == 0 and again.flags_kept == 5

    rest = run_compact(table.name, workers=2, config=config)
    assert rest.completed and rest.raw_events == 25 and rest.users == 5 and rest.flags_kept == 0
    assert _raw_cells(table) == set() and not _flagged(table, users)
    assert _reads(table, probe, times) == expected


def test_cli_compact_backfill_compact_and_old_table(ray_local: None, hbase_server: HBaseServer, table_prefix: str,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = dict(os.environ)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ray_jobs.cli", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)

    generate(tmp_path / "in", users=40, events=2_000, seed=3, files=1, row_group_rows=1_000)
    name, old = f"{table_prefix}cli", f"{table_prefix}old"
    assert run("create-table", name, "--salt-buckets", "2").returncode == 0
    back = run("backfill", str(tmp_path / "in"), "--table", name, "--workers", "2", "--into", "raw", "--compact",
               "--json")
    assert back.returncode == 0, back.stderr
    summary = json.loads(back.stdout)
    assert summary["completed"] and summary["events_written"] == 2_000
    compaction = summary["compaction"]
    assert compaction["completed"] and compaction["table"] == name and compaction["units_total"] == 2
    assert compaction["raw_events"] == 2_000 and compaction["users"] == 40 and compaction["chunks_written"] >= 40
    for key in ("chunks_replaced", "retries", "flags_kept", "wall_s", "events_per_s"):
        assert key in compaction

    again = run("compact", "--table", name, "--workers", "2", "--json")
    assert again.returncode == 0, again.stderr
    rerun = json.loads(again.stdout)
    assert rerun["completed"] and rerun["units_done"] == 2 and rerun["raw_events"] == rerun["users"] == 0
    checked = run("verify", str(tmp_path / "in"), "--table", name, "--json")
    assert checked.returncode == 0 and json.loads(checked.stdout)["events_found"] == 2_000

    # The human summary, in this process (its Ray is already up).
    assert main(["compact", "--table", name, "--older-than", "1.5"]) == 0
    assert "compact completed: 0 raw events older than 1.5 days of 0 users into 0 chunks" in capsys.readouterr().out

    bad = run("compact", "--table", name, "--older-than", "-1")
    assert bad.returncode == 2 and "must be > 0" in bad.stderr

    with SequenceStore(hbase_server.config(), pool_size=1) as store:
        legacy = store.create_table(TableSpec(old, salt_buckets=2, chunk_events=None))
        for args in (("compact", "--table", old), ("backfill", str(tmp_path / "in"), "--table", old, "--compact")):
            failed = run(*args)
            assert failed.returncode == 2, failed.stdout + failed.stderr
            lines = failed.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in failed.stderr
            assert lines[0].startswith("seqstore: error: ") and "has no chunk tier" in lines[0]
        # backfill --compact refused before writing anything.
        assert legacy.read_sequences([("user0000000", 2**62)], max_len=5, allow_any_ts=True)["length"][0].as_py() == 0
    missing = run("compact", "--table", f"{table_prefix}nope")
    assert missing.returncode == 2 and missing.stderr.startswith("seqstore: error")
    assert "Traceback" not in missing.stderr


def test_seqstore_compact_completes_and_names_a_user_written_every_few_ms(
        ray_local: None, make_table: Callable[..., SequenceTable], hbase_server: HBaseServer,
        store: SequenceStore, capsys: pytest.CaptureFixture[str]) -> None:
    """F4: a bot written continuously while ``seqstore compact`` runs; the job completes, every
    other user is compacted, and the bot is reported skipped (045efac: the unit failed on every
    attempt and the job stopped)."""
    table = make_table(salt_buckets=2, chunk_events=8)
    now = int(time.time() * 1000)
    users = [f"quiet{i}" for i in range(30)]
    rows = [(u, now - 3_600_000 + k) for u in users for k in range(10)] + [("bot", now - 7_200_000 + k)
                                                                           for k in range(2_000)]
    table.write(pa.table({"user_id": [r[0] for r in rows], "event_ts": pa.array([r[1] for r in rows], pa.int64()),
                          "event_type": ["view"] * len(rows), "item_id": pa.array(range(len(rows)), pa.int64())}))
    stop = threading.Event()
    written = [0]

    def bot() -> None:
        with SequenceStore(hbase_server.config(), pool_size=2) as other:
            mine = other.table(table.name)
            while not stop.is_set():
                i = written[0]
                mine.write(pa.table({"user_id": ["bot"], "event_ts": pa.array([now - 60_000 + i], pa.int64()),
                                     "event_type": ["view"], "item_id": pa.array([10**6 + i], pa.int64())}))
                written[0] = i + 1

    thread = threading.Thread(target=bot)
    thread.start()
    try:
        time.sleep(0.3)
        code = main(["compact", "--table", table.name, "--workers", "2", "--json"])
    finally:
        stop.set()
        thread.join()
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["completed"], summary
    assert summary["users_skipped"] == 1 and summary["skipped"] == ["bot"], summary
    assert summary["users"] == len(users) and not _flagged(table, users)
    got = table.read_sequences(pa.table({"user_id": ["bot"], "as_of_ts": [now]}), max_len=10_000)
    assert got.column("length")[0].as_py() == 2_000 + written[0]
