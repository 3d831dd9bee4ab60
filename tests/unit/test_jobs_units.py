"""Units, part names and the checks that decide whether an output part can be trusted (no Ray, no HBase)."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.export import shard_name
from ray_jobs.parts import part_rows, run_into_parts, write_part
from ray_jobs.runner import BACKOFF_BASE_S, BACKOFF_MAX_S
from ray_jobs.score import ModelError, load_model, part_name
from ray_jobs.units import Unit, plan
from store.errors import SeqStoreError
from store.io.backoff import backoff_s


def _write(path: Path, rows: int, *, row_group_size: int = 4, letter: str = "u") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"user_id": [f"{letter}{i}" for i in range(rows)]}), path,
                   row_group_size=row_group_size)
    return path


def _no_spawn(_slot: int) -> Any:
    raise AssertionError("no actor should be started")


def test_same_file_name_in_two_partitions_gives_distinct_stable_part_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "req" / "date=1" / "part-0.parquet", 10)
    _write(tmp_path / "req" / "date=2" / "part-0.parquet", 10)
    _, units = plan(str(tmp_path / "req"))
    assert len(units) == 6
    names = [part_name(u) for u in units]
    assert len(set(names)) == 6 and len({shard_name(u) for u in units}) == 6
    assert all(n.startswith("part-part-0-") and n.endswith(".parquet") for n in names)
    # Stable: the same input planned again (even through a relative path) names the same parts.
    monkeypatch.chdir(tmp_path)
    _, again = plan("req")
    assert [part_name(u) for u in again] == names


def test_fingerprint_changes_when_the_file_is_rewritten_with_the_same_shape(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.parquet", 8)
    _, before = plan(str(path))
    assert [u.fingerprint for u in plan(str(path))[1]] == [u.fingerprint for u in before]
    _write(path, 8, letter="v")  # same size and row groups, other content
    assert before[0].mtime_ns is not None
    later = before[0].mtime_ns + 10**9  # a rewrite within the clock's resolution would keep the mtime
    os.utime(path, ns=(later, later))
    _, after = plan(str(path))
    assert [u.file_size for u in after] == [u.file_size for u in before]
    assert all(a.fingerprint != b.fingerprint for a, b in zip(after, before, strict=True))
    assert [part_name(u) for u in after] == [part_name(u) for u in before]  # same slot, redone


def test_a_part_is_trusted_only_for_its_own_unit_as_it_is_now(tmp_path: Path) -> None:
    path = _write(tmp_path / "in" / "r.parquet", 8)
    _, (unit, other) = plan(str(path))
    target = tmp_path / "p.parquet"
    assert part_rows(target, unit) is None  # missing
    write_part(pa.table({"x": list(range(4))}), target, unit)
    assert part_rows(target, unit) == 4
    assert part_rows(target, other) is None  # another unit's slot
    moved = Unit(unit.path, unit.row_group, unit.first_row, unit.num_rows, unit.file_size,
                 (unit.mtime_ns or 0) + 1, unit.location)
    assert part_rows(target, moved) is None  # the file was replaced since
    write_part(pa.table({"x": list(range(3))}), target, unit)
    assert part_rows(target, unit) is None  # a row missing
    pq.write_table(pa.table({"x": list(range(4))}), target)
    assert part_rows(target, unit) is None  # untagged: from an older version or elsewhere
    target.write_bytes(b"not parquet")
    assert part_rows(target, unit) is None


def test_run_into_parts_refuses_parts_of_another_input_in_out(tmp_path: Path) -> None:
    _, units = plan(str(_write(tmp_path / "a.parquet", 8)))
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-old-rg00000.parquet").write_bytes(b"")
    outcome = run_into_parts(units, out, "part", _no_spawn, workers=1)
    assert "no unit of this input produces" in outcome.error and "part-old-rg00000.parquet" in outcome.error
    assert outcome.rows == 0 and not outcome.ran


def test_run_into_parts_refuses_units_that_share_a_part(tmp_path: Path) -> None:
    _, units = plan(str(_write(tmp_path / "a.parquet", 8)))
    outcome = run_into_parts([units[0], units[0]], tmp_path / "out", "part", _no_spawn, workers=1)
    assert "same output part" in outcome.error and outcome.rows == 0


def test_run_into_parts_skips_trusted_parts_and_counts_each_once(tmp_path: Path) -> None:
    _, units = plan(str(_write(tmp_path / "a.parquet", 8)))
    out = tmp_path / "out"
    out.mkdir()
    for u in units:
        write_part(pa.table({"x": list(range(u.num_rows))}), out / part_name(u), u)
    outcome = run_into_parts(units, out, "part", _no_spawn, workers=1)
    assert not outcome.error and not outcome.ran
    assert (outcome.parts, outcome.rows) == (2, 8)


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 10])
def test_backoff_is_bounded_and_jittered(attempt: int) -> None:
    rng = random.Random(attempt)
    delays = [backoff_s(attempt, base_s=BACKOFF_BASE_S, max_s=BACKOFF_MAX_S, rng=rng) for _ in range(200)]
    ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt)
    assert all(ceiling / 2 <= d <= ceiling <= BACKOFF_MAX_S for d in delays)
    assert len(set(delays)) > 100


class _FakeRay:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


@pytest.mark.parametrize(("arg", "env", "expected", "sized"), [
    (None, None, "local", True),
    ("10.0.0.5:6379", None, "10.0.0.5:6379", False),
    (None, "ray://head:10001", "ray://head:10001", False),
    ("10.0.0.5:6379", "ray://head:10001", "10.0.0.5:6379", False),
    ("local", None, "local", True),
])
def test_init_ray_starts_local_unless_told_to_join(
    monkeypatch: pytest.MonkeyPatch, arg: str | None, env: str | None, expected: str, sized: bool
) -> None:
    import ray

    from ray_jobs.runner import init_ray

    fake = _FakeRay()
    monkeypatch.setattr(ray, "is_initialized", fake.is_initialized)
    monkeypatch.setattr(ray, "init", fake.init)
    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    init_ray(arg, workers=3)
    (call,) = fake.calls
    assert call["address"] == expected  # never None: that would attach to /tmp/ray's last cluster
    assert ("num_cpus" in call) is sized


def test_a_corrupt_file_that_is_not_first_is_named(tmp_path: Path) -> None:
    _write(tmp_path / "in" / "a.parquet", 8)
    (tmp_path / "in" / "b.parquet").write_bytes(b"PAR1 but not really" * 10)
    with pytest.raises(SeqStoreError) as info:
        plan(str(tmp_path / "in"))
    message = str(info.value)
    assert message.startswith(f"cannot read Parquet file '{tmp_path / 'in' / 'b.parquet'}': ")
    assert "magic bytes" in message and "\n" not in message


@pytest.mark.parametrize(("source", "raised"), [
    ("x = 1 / 0\n", "ZeroDivisionError: division by zero"),
    ("def f(:\n    pass\n", "SyntaxError: "),
    ("raise RuntimeError('no GPU\\nsecond line')\n", "RuntimeError: no GPU"),
])
def test_a_model_module_that_raises_on_import_is_a_model_error(
    source: str, raised: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_model_mod.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError) as info:
        load_model("broken_model_mod:score")
    message = str(info.value)
    assert message.startswith(
        f"cannot load model 'broken_model_mod:score': importing 'broken_model_mod' raised {raised}")
    assert "\n" not in message


class _UnreachableRay(_FakeRay):
    """Ray joining a cluster that is not there: C++ warnings on fd 2, then ConnectionError."""

    def init(self, **kwargs: Any) -> None:
        self.calls.append({**kwargs, "env": {k: os.environ.get(k) for k in JOIN_BOUNDS}})
        os.write(2, b"[W rpc_client.h:153] Failed to connect to GCS at address 10.0.0.5:6379 within 5 seconds.\n")
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379")


JOIN_BOUNDS = ("RAY_gcs_server_port_wait_time_s", "RAY_py_gcs_connect_timeout_s")


def test_init_ray_that_cannot_join_raises_one_line_and_keeps_rays_noise_off_stderr(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import ray

    from ray_jobs.runner import init_ray

    fake = _UnreachableRay()
    monkeypatch.setattr(ray, "is_initialized", fake.is_initialized)
    monkeypatch.setattr(ray, "init", fake.init)
    monkeypatch.delenv("RAY_gcs_server_port_wait_time_s", raising=False)
    monkeypatch.setenv("RAY_py_gcs_connect_timeout_s", "3")  # the user's own setting wins
    with pytest.raises(SeqStoreError) as info:
        init_ray("10.0.0.5:6379", workers=2)
    assert str(info.value).startswith(
        "cannot join the Ray cluster at '10.0.0.5:6379': Failed to connect to Ray cluster at 10.0.0.5:6379 (gave up")
    assert capfd.readouterr().err == ""
    (call,) = fake.calls
    assert call["env"] == {"RAY_gcs_server_port_wait_time_s": "1", "RAY_py_gcs_connect_timeout_s": "3"}
    assert "RAY_gcs_server_port_wait_time_s" not in os.environ  # ours, so removed again
    assert os.environ.get(JOIN_BOUNDS[1]) == "3"
