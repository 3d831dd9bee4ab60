"""Re-running a backfill as users do, with real Ray and real HBase: resuming into the same report
directory, ``--force`` on one input of a table that holds several, the input spelled another way
or from another directory, a manifest written by an earlier version."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.backfill import JOB, BackfillReport, run_backfill, table_digest
from ray_jobs.verify import verify
from store import SequenceTable
from store.table import job_records
from tests.conftest import HBaseServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = int(time.time() * 1000) - 3 * 86_400_000
ROWS_PER_GROUP = 20


def _log(directory: Path, *, files: int = 2, groups: int = 2, bad_every: int = 7) -> Path:
    """``files`` Parquet files of ``groups`` row groups each in ``directory``; every
    ``bad_every``-th row has no user (quarantined as ``missing_user``)."""
    directory.mkdir(parents=True)
    n = groups * ROWS_PER_GROUP
    for f in range(files):
        users = [None if i % bad_every == 3 else f"{directory.name}-u{i % 5}" for i in range(n)]
        pq.write_table(pa.table({"user_id": users, "event_ts": [T0 + f * n + i for i in range(n)],
                                 "event_type": ["view"] * n, "item_id": list(range(n))}),
                       directory / f"part-{f}.parquet", row_group_size=ROWS_PER_GROUP)
    return directory


def _bad_rows(log: Path) -> set[tuple[str, int]]:
    """(file, row number) of every row of ``log`` without a user."""
    return {(str(path), i) for path in sorted(log.glob("*.parquet"))
            for i, user in enumerate(pq.read_table(path).column("user_id").to_pylist()) if user is None}


def _backfill(log: Path | str, table: SequenceTable, hbase_server: HBaseServer, report_dir: Path,
              **options: Any) -> BackfillReport:
    return run_backfill(str(log), table.name, workers=1, config=hbase_server.config(), report_dir=report_dir,
                        **options)


class _Stop(Exception):
    pass


def _stop_before_running(_units: Any) -> None:
    raise _Stop("the job stopped before running a unit (a bad --ray-address, say)")


def test_force_on_one_input_keeps_every_other_inputs_records(
    ray_local: None, make_table: Callable[..., SequenceTable], hbase_server: HBaseServer, tmp_path: Path
) -> None:
    table = make_table(salt_buckets=2)
    a, b = _log(tmp_path / "a"), _log(tmp_path / "b")
    for log in (a, b):
        assert _backfill(log, table, hbase_server, tmp_path / f"r-{log.name}").completed

    # A forced run that stops before anything ran forgets nothing.
    with pytest.raises(_Stop):
        _backfill(a, table, hbase_server, tmp_path / "r-forced-stop", force=True, on_plan=_stop_before_running)
    resumed = _backfill(a, table, hbase_server, tmp_path / "r-a-again")
    assert resumed.completed and resumed.units_done == 0 and resumed.units_skipped == 4

    forced = _backfill(a, table, hbase_server, tmp_path / "r-forced", force=True)
    assert forced.completed and forced.units_done == 4 and forced.units_skipped == 0, forced.error
    # The other input's units are still recorded as done: nothing of b is redone.
    other = _backfill(b, table, hbase_server, tmp_path / "r-b-again")
    assert other.completed and other.units_done == 0 and other.units_skipped == 4, other.error


def test_a_resumed_backfill_into_the_same_report_dir_keeps_every_quarantined_row_and_report(
    ray_local: None, make_table: Callable[..., SequenceTable], hbase_server: HBaseServer, tmp_path: Path
) -> None:
    table = make_table(salt_buckets=2)
    log, reports = _log(tmp_path / "log"), tmp_path / "reports"  # reports: what --report-dir gives every run
    bad = _bad_rows(log)
    finished: list[str] = []

    def stop_after_two(unit: Any, _actors: list[Any]) -> None:
        finished.append(unit.key)
        if len(finished) == 2:
            raise RuntimeError("injected: the driver lost Ray")

    def kept() -> list[tuple[str, int]]:
        rows = pq.read_table(first.quarantine_path).to_pylist()
        assert {r["reason"] for r in rows} == {"missing_user"}
        return sorted((r["source"], r["position"]) for r in rows)

    first = _backfill(log, table, hbase_server, reports, on_unit_done=stop_after_two)
    # Rows without a user all fall in one group of users (the first done): some or all of them.
    assert not first.completed and first.units_done == 2 and 0 < first.events_quarantined <= len(bad)
    resumed = _backfill(log, table, hbase_server, reports)
    assert resumed.completed and resumed.units_skipped == 2 and resumed.units_done == 2, resumed.error
    assert resumed.quarantine_path == first.quarantine_path
    assert kept() == sorted(bad)  # the rows of the units the first run did are still there
    assert first.events_quarantined + resumed.events_quarantined == len(bad)

    nothing_left = _backfill(log, table, hbase_server, reports)
    forced = _backfill(log, table, hbase_server, reports, force=True)
    assert nothing_left.completed and nothing_left.units_done == 0 and forced.completed and forced.units_done == 4
    assert kept() == sorted(bad)  # still every bad row, each once: a redone unit replaced its own file

    # Every run's report is there, as that run wrote it.
    paths = [first.report_path, resumed.report_path, nothing_left.report_path, forced.report_path]
    assert len(set(paths)) == 4
    saved = [json.loads(Path(path).read_text()) for path in paths]
    assert [(r["completed"], r["units_done"], r["units_skipped"]) for r in saved] == [
        (False, 2, 0), (True, 2, 2), (True, 0, 4), (True, 4, 0)]
    assert "injected: the driver lost Ray" in saved[0]["error"]


def test_an_input_spelled_another_way_or_from_another_directory_is_the_same_input(
    ray_local: None, make_table: Callable[..., SequenceTable], hbase_server: HBaseServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = make_table(salt_buckets=2)
    _log(tmp_path / "work" / "d")
    # Not the directory Ray (and its actors) started in: a relative input is the driver's.
    monkeypatch.chdir(tmp_path / "work")
    first = _backfill("d", table, hbase_server, tmp_path / "r0")
    assert first.completed and first.units_done == 4 and first.events_written > 0, first.error
    sources = {row["source"] for row in pq.read_table(first.quarantine_path).to_pylist()}
    assert sources == {str(tmp_path / "work" / "d" / f"part-{f}.parquet") for f in range(2)}

    for i, spelling in enumerate(["./d", str(tmp_path / "work" / "d"), "d/../d/", "d/*.parquet"]):
        again = _backfill(spelling, table, hbase_server, tmp_path / f"r{i + 1}")
        assert again.completed and again.units_skipped == 4 and again.units_done == 0, (spelling, again.error)
    monkeypatch.chdir(tmp_path)
    elsewhere = _backfill("work/d", table, hbase_server, tmp_path / "r-elsewhere")
    assert elsewhere.completed and elsewhere.units_skipped == 4 and elsewhere.units_done == 0
    # One record per unit (a group of users), and the input's own, not one per spelling.
    assert len(job_records.load(table.handle.pool, table.name, JOB)) == 4 + 1


def test_a_manifest_recorded_by_an_earlier_version_under_the_spelled_path_still_resumes(
    ray_local: None, make_table: Callable[..., SequenceTable], hbase_server: HBaseServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ray_jobs.units import plan

    table = make_table(salt_buckets=2)
    _log(tmp_path / "d")
    monkeypatch.chdir(tmp_path)
    digest = table_digest(table)
    for unit in plan("d")[1]:  # what 045efac recorded for `seqstore backfill d`: the key as spelled
        name = Path(unit.location).name
        job_records.record(table.handle.pool, table.name, JOB, f"d/{name}#rg{unit.row_group}", {
            "unit": f"d/{name}#rg{unit.row_group}", "fingerprint": unit.fingerprint, "table": digest,
            "now_ms": int(time.time() * 1000)})
    # Those were row groups written as raw cells: a raw backfill resumes from them.
    resumed = _backfill("d", table, hbase_server, tmp_path / "r", into="raw")
    assert resumed.completed and resumed.units_skipped == 4 and resumed.units_done == 0, resumed.error


def test_a_partition_over_the_hold_is_merged_in_several_goes_exactly(
    ray_local: None, make_table: Callable[..., SequenceTable], hbase_server: HBaseServer, tmp_path: Path
) -> None:
    """``partition_events`` bounds what an actor holds: a heavy user's partition, many times
    larger, is fetched piece by piece and merged whenever that many rows are held. Its events
    arrive out of time order, so later merges land inside earlier chunks; the table then reads
    exactly as a write + compaction of the same log, verify is clean, and a forced re-run
    doubles nothing."""
    rng = random.Random(5)
    heavy = [("heavy", T0 + k * 1_000) for k in range(3_000)]
    light = [(f"light{u}", T0 + k * 7_000) for u in range(40) for k in range(25)]
    events = heavy + light
    rng.shuffle(events)
    log = tmp_path / "log"
    log.mkdir()
    n = len(events)
    pq.write_table(pa.table({"user_id": [u for u, _ in events], "event_ts": [t for _, t in events],
                             "event_type": ["view"] * n, "item_id": list(range(n))}),
                   log / "part-0.parquet", row_group_size=250)
    bulk, live = make_table("hold", chunk_events=64), make_table("holdlive", chunk_events=64)
    report = _backfill(log, bulk, hbase_server, tmp_path / "r", partition_events=400)
    assert report.completed, report.error
    assert report.units_done == 10 and report.merges > report.units_done  # the heavy partition in several goes
    assert (report.events_in, report.events_written, report.events_quarantined) == (n, n, 0)
    live.write(pq.read_table(log))
    for start, stop in live.salt_ranges():
        live.compact_range(start, stop)
    users = ["heavy", *(f"light{u}" for u in range(40))]
    requests = pa.table({"user_id": users, "as_of_ts": [int(time.time() * 1000)] * len(users)})
    want = live.read_sequences(requests, max_len=5_000)
    assert bulk.read_sequences(requests, max_len=5_000).equals(want)
    checked = verify(str(log), bulk)
    assert checked.ok and checked.events_found == checked.events_expected == n and checked.events_extra == 0

    again = _backfill(log, bulk, hbase_server, tmp_path / "r", partition_events=400, force=True)
    assert again.completed and again.events_written == n
    assert bulk.read_sequences(requests, max_len=5_000).equals(want)
    assert verify(str(log), bulk).ok
