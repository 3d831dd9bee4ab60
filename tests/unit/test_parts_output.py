"""Output parts on disk: private temporary files, one job per output directory, durable renames
(no Ray, no HBase)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.parts import PartWriter, part_rows, run_into_parts, write_part
from ray_jobs.score import part_name
from ray_jobs.units import plan

REPO = Path(__file__).resolve().parents[2]


def _units(tmp_path: Path, rows: int = 8) -> list[Any]:
    path = tmp_path / "in" / "a.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"user_id": [f"u{i}" for i in range(rows)]}), path, row_group_size=4)
    return plan(str(path))[1]


def _no_spawn(_slot: int) -> Any:
    raise AssertionError("no actor should be started")


def test_two_writers_of_one_part_each_publish_a_whole_file(tmp_path: Path) -> None:
    # Two jobs on one --out (or a re-run unit beside a zombie actor) write the same part at once.
    unit = _units(tmp_path, rows=4)[0]
    target = tmp_path / "out" / part_name(unit)
    target.parent.mkdir()
    ids = pa.array(np.arange(4, dtype=np.int64))
    a = PartWriter(target, unit, {"model": "m:v1"})
    b = PartWriter(target, unit, {"model": "m:v2"})
    a.write(pa.table({"user_id": ids, "score": pa.array(np.full(4, 1.0))}))
    b.write(pa.table({"user_id": ids[:1], "score": pa.array(np.full(1, 2.0))}))
    a.close()
    assert part_rows(target, unit, settings={"model": "m:v1"}) == 4
    assert pq.read_table(target).column("score").to_pylist() == [1.0] * 4
    b.write(pa.table({"user_id": ids[1:], "score": pa.array(np.full(3, 2.0))}))
    b.close()  # B's own file replaces A's whole part: never a mix of the two
    assert part_rows(target, unit, settings={"model": "m:v1"}) is None
    assert part_rows(target, unit, settings={"model": "m:v2"}) == 4
    assert pq.read_table(target).column("score").to_pylist() == [2.0] * 4
    assert [p.name for p in target.parent.iterdir()] == [target.name]


HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ray_jobs.outputs import OutputLock
    with OutputLock(Path(sys.argv[1])):
        print("locked", flush=True)
        sys.stdin.read()
""")


def test_a_second_job_on_the_same_output_is_refused_until_the_first_is_gone(tmp_path: Path) -> None:
    from ray_jobs.outputs import LOCK_NAME, OutputInUseError

    units = _units(tmp_path)
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(OutputInUseError) as info:
            run_into_parts(units, out, "part", _no_spawn, workers=1)
        message = str(info.value)
        assert f"pid {holder.pid} on " in message and str(out / LOCK_NAME) in message and "\n" not in message
        assert not list(out.glob("*.parquet"))
    finally:
        holder.kill()  # a crash: the lock file stays, naming a process that no longer exists
        holder.wait()
    assert (out / LOCK_NAME).exists()
    for u in units:
        write_part(pa.table({"x": list(range(u.num_rows))}), out / part_name(u), u)
    outcome = run_into_parts(units, out, "part", _no_spawn, workers=1)  # the stale lock is taken over
    assert not outcome.error and (outcome.parts, outcome.rows) == (2, 8)
    assert not (out / LOCK_NAME).exists()  # released when the job ends


def test_temporary_files_of_stopped_writers_are_removed_and_never_break_reading_out(tmp_path: Path) -> None:
    units = _units(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    for u in units:
        write_part(pa.table({"x": list(range(u.num_rows))}), out / part_name(u), u)
    # What killed actors leave: an older version's visible name, and this version's hidden one.
    (out / f"{part_name(units[0])[:-len('.parquet')]}.tmp").write_bytes(b"PAR1 half a part")
    PartWriter(out / part_name(units[1]), units[1]).write(pa.table({"x": [1]}))  # never closed
    outcome = run_into_parts(units, out, "part", _no_spawn, workers=1)
    assert not outcome.error and outcome.rows == 8
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert pq.read_table(out).num_rows == 8


def test_a_part_is_on_disk_before_its_name_and_its_name_before_close_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A node crash must not leave a trusted name over lost blocks: data fsynced, renamed, directory fsynced.
    import os

    unit = _units(tmp_path, rows=4)[0]
    out = tmp_path / "out"
    out.mkdir()
    target = out / part_name(unit)
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_part(pa.table({"x": list(range(4))}), target, unit)
    temp = events[0][1]
    assert Path(temp).name.startswith(f".{target.name}.") and temp.endswith(".tmp")
    assert events == [("fsync", temp), ("replace", str(target)), ("fsync", str(out))]
    assert part_rows(target, unit) == 4


def test_a_part_left_half_written_by_an_actor_lost_during_the_run_is_removed_when_the_run_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray_jobs.parts as parts

    units = _units(tmp_path)
    out = tmp_path / "out"

    class LosesANode:
        """The runner as on a cluster that loses a node: the first attempt at units[0] dies with
        its part half written; the retry and the other unit complete."""

        def __init__(self, *_args: Any, **_kwargs: Any) -> None:
            self.stats = parts.RunStats()

        def run(self, todo: list[Any], on_done: Any) -> None:
            PartWriter(out / part_name(todo[0]), todo[0]).write(pa.table({"x": [1]}))  # the lost node's
            for u in todo:
                write_part(pa.table({"x": list(range(u.num_rows))}), out / part_name(u), u)
                on_done(u, {"rows": u.num_rows}, [])

    monkeypatch.setattr(parts, "UnitRunner", LosesANode)
    outcome = run_into_parts(units, out, "part", _no_spawn, workers=1)
    assert not outcome.error and (outcome.parts, outcome.rows) == (2, 8)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert pq.read_table(out).num_rows == 8
