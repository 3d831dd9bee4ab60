"""A unit's key and the path actors open do not depend on how the input was spelled or where the
driver ran (no Ray, no HBase)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.backfill import recorded_entry
from ray_jobs.units import plan


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``<tmp>/work/d`` with two files of two row groups; the working directory is ``<tmp>/work``."""
    for f in range(2):
        path = tmp_path / "work" / "d" / f"x{f}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"user_id": ["u"] * 4}), path, row_group_size=2)
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path / "work"


def test_every_spelling_of_a_local_input_plans_the_same_keys_and_absolute_paths(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canonical = [(str(work / "d" / f"x{f}.parquet"), rg) for f in range(2) for rg in range(2)]
    expected_keys = [f"{path}#rg{rg}" for path, rg in canonical]
    for spelling in ("d", "./d", "d/", str(work / "d"), "d/../d", "d/*.parquet", f"file://{work / 'd'}"):
        _, units = plan(spelling)
        assert [u.key for u in units] == expected_keys, spelling
        assert [(u.path, u.row_group) for u in units] == canonical, spelling  # what the actors open
    monkeypatch.chdir(work.parent)
    assert [u.key for u in plan("work/d")[1]] == expected_keys


def test_records_under_the_spelled_key_are_found_and_the_canonical_key_wins(work: Path) -> None:
    unit = plan("./d")[1][0]
    assert unit.spelled_key == "./d/x0.parquet#rg0" and unit.key == f"{work / 'd' / 'x0.parquet'}#rg0"
    old = {"./d/x0.parquet#rg0": {"fingerprint": "old"}}
    assert recorded_entry(old, unit) == {"fingerprint": "old"}
    assert recorded_entry({**old, unit.key: {"fingerprint": "new"}}, unit) == {"fingerprint": "new"}
    assert recorded_entry({"d/x0.parquet#rg0": {"fingerprint": "other spelling"}}, unit) == {}
    assert plan(str(work / "d"))[1][0].spelled_key is None  # spelled canonically: one key
