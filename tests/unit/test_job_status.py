"""A job's status ("HBase unreachable, retrying") reaches the progress line, or stderr when no
bar is shown; the runner's listener is scoped to the block that set it."""

from __future__ import annotations

import pytest
from tqdm import tqdm

from ray_jobs import runner
from ray_jobs.commands import _status_line
from ray_jobs.runner import UNREACHABLE_STATUS, reporting_status


def test_the_status_replaces_the_bar_description_until_it_clears() -> None:
    bar = tqdm(total=10, desc="backfill", disable=False)
    try:
        show = _status_line(bar, "backfill")
        show(UNREACHABLE_STATUS)
        assert str(bar).startswith("backfill: HBase unreachable, retrying: ")  # the line as drawn
        show("")
        assert str(bar).startswith("backfill: ") and "unreachable" not in str(bar)
    finally:
        bar.close()


def test_without_a_bar_each_status_is_a_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    show = _status_line(tqdm(total=10, disable=True), "score")
    show(UNREACHABLE_STATUS)
    show("")
    assert capsys.readouterr().err.splitlines() == ["  score: HBase unreachable, retrying", "  score: running again"]


def test_the_listener_is_heard_only_inside_its_block() -> None:
    heard: list[str] = []
    with reporting_status(heard.append):
        runner._say(UNREACHABLE_STATUS)
    runner._say("")
    assert heard == [UNREACHABLE_STATUS]
