"""Re-running a backfill as users do, with real Ray and real HBase: ``--force`` on one input of a
table that holds several."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.backfill import BackfillReport, run_backfill
from store import SequenceTable
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
