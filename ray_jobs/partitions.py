"""Grouping a backfill's input by user: the shuffle in front of the bulk load.

A bulk load (:class:`store.ChunkLoad`) wants each user's events together. The input's row
groups (:class:`~ray_jobs.units.Unit`) are split by a hash of the user id into ``count``
*partitions* (:func:`split_unit`, a Ray task per row group, whose pieces Ray's object store
holds and spills); each partition — a fixed group of users, about ``partition_events``
events — is then one unit of the load, done by one actor, recorded in the manifest once done.

The partition of a row depends only on its user id (as the writer keys it: ``5`` is ``"5"``)
and ``count``, and ``count`` only on the input's size and the setting (never on ``--workers``),
so a re-run of the same input finds the same partitions and skips those recorded.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ray_jobs.units import Unit
from store.errors import SeqStoreError

POSITION = "__position"  # a piece's column: each row's position in its file
MIN_PARTITIONS = 4
DEFAULT_PARTITION_EVENTS = 1_000_000  # events per partition: what one actor holds at once


@dataclass(frozen=True, slots=True)
class Partition:
    """One group of users of an input: the unit of a bulk backfill.

    ``input_key`` names the input (its row groups' canonical keys), ``fingerprint`` changes when
    any of them changes (:attr:`Unit.fingerprint`) or the partitioning does."""

    index: int
    count: int
    input_key: str
    fingerprint: str
    events: int  # input rows of the whole input (the partition holds about events / count)

    @property
    def key(self) -> str:
        return f"{self.input_key}#p{self.index:04d}of{self.count:04d}"

    @property
    def num_rows(self) -> int:
        """About how many input rows it holds (an even share; exact only once split): for progress."""
        return self.events // self.count + (self.index < self.events % self.count)

    @property
    def slug(self) -> str:
        return f"users-{self.input_key.removeprefix('input:')[:12]}-p{self.index:04d}of{self.count:04d}"


def input_key(units: Sequence[Unit]) -> str:
    """The name of an input in job records: a digest of its row groups' canonical keys."""
    return "input:" + hashlib.sha256("\n".join(u.key for u in units).encode()).hexdigest()[:24]


def partitions(units: Sequence[Unit], partition_events: int = DEFAULT_PARTITION_EVENTS) -> list[Partition]:
    """The partitions of an input: at least :data:`MIN_PARTITIONS`, about ``partition_events``
    events each."""
    if partition_events <= 0:
        raise ValueError("'partition_events' must be > 0")
    rows = sum(u.num_rows for u in units)
    count = max(MIN_PARTITIONS, math.ceil(rows / partition_events))
    key, fingerprint = input_key(units), input_fingerprint(units, count)
    return [Partition(i, count, key, fingerprint, rows) for i in range(count)]


def input_fingerprint(units: Sequence[Unit], count: int) -> str:
    """Changes when any row group of the input changes, or the number of partitions does."""
    return hashlib.sha256("\n".join([str(count), *(u.fingerprint for u in units)]).encode()).hexdigest()[:24]


def partition_of(users: pa.Array | pa.ChunkedArray, count: int) -> np.ndarray:
    """Each row's partition by its user id: ``crc32`` of the id as the writer keys it, modulo
    ``count`` (0 for ids the writer will refuse: null, uncastable)."""
    if isinstance(users, pa.ChunkedArray):
        users = users.combine_chunks()
    if pa.types.is_dictionary(users.type):
        users = users.dictionary_decode()
    if not (pa.types.is_string(users.type) or pa.types.is_large_string(users.type)
            or pa.types.is_binary(users.type) or pa.types.is_large_binary(users.type)):
        try:
            users = pc.cast(users, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return np.zeros(len(users), dtype=np.int64)
    codes = pc.dictionary_encode(users)
    names = codes.dictionary.to_pylist()
    hashed = np.array([zlib.crc32(n.encode("utf-8", "surrogatepass") if isinstance(n, str) else n) % count
                       for n in names], dtype=np.int64)
    indices = codes.indices
    out = np.zeros(len(users), dtype=np.int64)
    present = np.asarray(pc.is_valid(indices).to_numpy(zero_copy_only=False), dtype=bool)
    out[present] = hashed[np.asarray(indices.drop_null().to_numpy(), dtype=np.int64)]
    return out


def split_unit(filesystem: pafs.FileSystem, unit: Unit, count: int, wanted: frozenset[int]) -> list[pa.Table | int]:
    """A row group's rows by partition: ``[rows read, piece 0, ..., piece count-1]``, each piece
    the rows of users of that partition (an empty table for partitions not ``wanted``), with
    their position in the file in :data:`POSITION`.

    Raises:
        SeqStoreError: the row group does not hold the rows its footer says (the file changed).
    """
    with filesystem.open_input_file(unit.path) as handle:
        rows = pq.ParquetFile(handle).read_row_group(unit.row_group)
    if rows.num_rows != unit.num_rows:
        raise SeqStoreError(f"{unit.key}: read {rows.num_rows} rows, the file says {unit.num_rows}")
    rows = rows.append_column(POSITION, pa.array(np.arange(unit.first_row, unit.first_row + rows.num_rows),
                                                 pa.int64()))
    if "user_id" not in rows.schema.names:  # the load names what is missing
        parts = np.zeros(rows.num_rows, dtype=np.int64)
    else:
        parts = partition_of(rows.column("user_id"), count)
    order = np.argsort(parts, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(parts, minlength=count))])
    pieces: list[pa.Table | int] = [rows.num_rows]
    for p in range(count):
        a, b = (int(bounds[p]), int(bounds[p + 1])) if p in wanted else (0, 0)
        pieces.append(rows.take(pa.array(order[a:b], pa.int64())))  # a copy: a slice would ship the whole group
    return pieces
