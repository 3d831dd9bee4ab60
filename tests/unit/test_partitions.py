"""Grouping a backfill's input by user (ray_jobs.partitions): a user's rows always land in one
partition whatever the id's type, every row lands once with its position, and the partitions of
an input depend on the input and the setting only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from hypothesis import given
from hypothesis import strategies as st

from ray_jobs.partitions import MIN_PARTITIONS, POSITION, partition_of, partitions, split_unit
from ray_jobs.units import plan


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=50), st.integers(1, 64))
def test_a_user_is_in_one_partition_whatever_the_type_of_its_id(ids: list[int], count: int) -> None:
    as_int = partition_of(pa.array(ids, pa.int64()), count)
    as_str = partition_of(pa.array([str(i) for i in ids]), count)
    as_bin = partition_of(pa.array([str(i).encode() for i in ids], pa.binary()), count)
    assert as_int.tolist() == as_str.tolist() == as_bin.tolist()
    assert ((as_int >= 0) & (as_int < count)).all()


def test_ids_the_writer_refuses_go_to_partition_zero() -> None:
    assert partition_of(pa.array(["a", None, "b"]), 7)[1] == 0
    assert partition_of(pa.array([b"\xff", b"x"], pa.binary()), 7).shape == (2,)  # non-UTF-8: no error here


def test_split_puts_every_row_once_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    users = [f"u{i % 13}" if i % 9 else None for i in range(300)]
    pq.write_table(pa.table({"user_id": users, "event_ts": list(range(300))}), path, row_group_size=100)
    _, units = plan(str(path))
    seen: dict[str, set[int]] = {}
    positions = []
    for unit in units:
        rows, *pieces = split_unit(pafs.LocalFileSystem(), unit, 5, frozenset(range(5)))
        assert rows == unit.num_rows == sum(p.num_rows for p in pieces)
        for p, piece in enumerate(pieces):
            positions += piece.column(POSITION).to_pylist()
            for user, pos in zip(piece.column("user_id").to_pylist(), piece.column(POSITION).to_pylist(),
                                 strict=True):
                assert users[pos] == user
                seen.setdefault(str(user), set()).add(p)
    assert sorted(positions) == list(range(300))
    assert all(len(parts) == 1 for parts in seen.values())
    rows, *pieces = split_unit(pafs.LocalFileSystem(), units[0], 5, frozenset({2}))
    assert [p.num_rows > 0 for p in pieces].count(True) <= 1 and all(
        p.num_rows == 0 for i, p in enumerate(pieces) if i != 2)


def test_partitions_depend_on_the_input_and_the_setting_only(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"user_id": ["a"] * 1000, "event_ts": np.arange(1000)}), path, row_group_size=100)
    _, units = plan(str(path))
    small = partitions(units, 1_000_000)
    assert len(small) == MIN_PARTITIONS and small == partitions(units, 1_000_000)
    many = partitions(units, 50)
    assert len(many) == 20 and {p.key for p in many}.isdisjoint({p.key for p in small})
    assert sum(p.num_rows for p in many) == 1000
    assert partitions(units[:5], 50)[0].input_key != many[0].input_key
