"""Every job's report is a JobReport: the same common fields in its JSON."""

from __future__ import annotations

import json
import time
from dataclasses import fields

import pytest

from ray_jobs.backfill import BackfillReport
from ray_jobs.compact import CompactReport
from ray_jobs.export import ExportReport
from ray_jobs.report import JobReport
from ray_jobs.runner import RunStats
from ray_jobs.score import ScoreReport

COMMON = [f.name for f in fields(JobReport)]


@pytest.mark.parametrize("report", [
    BackfillReport(table="t", input="in/"), CompactReport(table="t"), ScoreReport(), ExportReport(),
], ids=lambda r: type(r).__name__)
def test_each_job_report_has_the_common_fields(report: JobReport) -> None:
    report.ran(RunStats(units_done=3, units_retried=1, nodes={"n1", "n2"}))
    out = report.to_json()
    assert set(COMMON) < set(out)
    assert (out["units_done"], out["units_retried"], out["nodes"]) == (0, 1, 2)  # units done: the job's own count
    assert json.loads(json.dumps(out)) == out


def test_timed_gives_the_rate_and_fail_keeps_the_reason() -> None:
    report = ScoreReport(completed=True)
    rate = report.timed(time.monotonic() - 2.0, 1_000)
    assert report.wall_s >= 2.0 and 0 < rate <= 500
    report.fail("3 rows scored for 4 requests")
    assert not report.completed and report.to_json()["error"] == "3 rows scored for 4 requests"
