"""verify applies exactly the writer's rules: the writer and verify agree on random inputs, and
verify judges future timestamps with the "now" the writer used, not its own clock."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ray_jobs.backfill import JOB
from ray_jobs.units import plan
from ray_jobs.verify import verify
from store import SequenceStore, TableSpec
from store.inputs.rows import DEFAULT_MAX_FUTURE_MS
from store.table import job_records

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOW = int(time.time() * 1000)
DAY = 86_400_000
_names = itertools.count()


def _write_and_record(store: SequenceStore, name: str, rows: pa.Table, path: Path, now_ms: int) -> tuple[int, int]:
    """Write ``rows`` (one chunk) as a backfill would at ``now_ms`` and record its unit."""
    pq.write_table(rows, path)
    table = store.table(name)
    result = table.write(rows, now_ms=now_ms)
    (unit,) = plan(str(path))[1]
    job_records.record(store.pool, name, JOB, unit.key,
                       {"unit": unit.key, "fingerprint": unit.fingerprint, "now_ms": now_ms})
    return result.written, result.merged


def test_verify_judges_future_events_with_the_writers_now(store: SequenceStore, table_prefix: str,
                                                          tmp_path: Path) -> None:
    name = f"{table_prefix}clock"
    store.create_table(TableSpec(name, salt_buckets=2))
    then = NOW - 2 * DAY  # the backfill ran two days ago: an event 12 h ago was over a day in its future
    rows = pa.table({"user_id": ["u", "u"], "event_ts": [then - 1_000, NOW - DAY // 2], "event_type": ["v", "v"],
                     "item_id": [1, 2]})
    written, _ = _write_and_record(store, name, rows, tmp_path / "in.parquet", then)
    assert written == 1  # the second event was quarantined as future_timestamp, then
    report = verify(str(tmp_path / "in.parquet"), store.table(name))
    assert report.ok and report.events_expected == report.events_found == 1, report


TIMES = [NOW - DAY, NOW - 5, NOW, NOW + DEFAULT_MAX_FUTURE_MS + 1, 1_700_000, -3, None]
EVENTS = st.tuples(st.sampled_from(["a", "b", "7", "ü"]), st.sampled_from(TIMES), st.sampled_from(["view", "click"]),
                   st.integers(0, 3), st.one_of(st.none(), st.integers(0, 9)))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(EVENTS, min_size=1, max_size=40))
def test_writer_and_verify_agree_on_random_input(
    store: SequenceStore, table_prefix: str, tmp_path_factory: pytest.TempPathFactory,
    events: list[tuple[str, int | None, str, int, int | None]],
) -> None:
    name = f"{table_prefix}prop{next(_names)}"
    store.create_table(TableSpec(name, salt_buckets=2))
    rows = pa.table({"user_id": [e[0] for e in events], "event_ts": pa.array([e[1] for e in events], pa.int64()),
                     "event_type": [e[2] for e in events], "item_id": [e[3] for e in events],
                     "dwell_ms": pa.array([e[4] for e in events], pa.int32())})
    path = tmp_path_factory.mktemp("prop") / "in.parquet"
    written, merged = _write_and_record(store, name, rows, path, NOW)
    report = verify(str(path), store.table(name))
    assert report.ok, report
    assert report.events_expected == report.events_found == written  # distinct cells, as HBase holds them
    assert report.repeated_rows_in_input == merged
    store.drop_table(name)
