"""Splitting a Parquet input into units of work: one unit per row group of each file."""

from __future__ import annotations

import glob
from dataclasses import dataclass

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from store.errors import SeqStoreError


@dataclass(frozen=True, slots=True)
class Unit:
    """One row group of one Parquet file.

    ``first_row`` is the row group's first row number within its file, so quarantine rows
    carry positions that point into the source file.
    """

    path: str
    row_group: int
    first_row: int
    num_rows: int
    file_size: int

    @property
    def key(self) -> str:
        return f"{self.path}#rg{self.row_group}"

    @property
    def fingerprint(self) -> str:
        """Changes if the file is replaced by another, so a stale manifest entry is not trusted."""
        return f"{self.file_size}:{self.first_row}:{self.num_rows}"


def resolve(input_path: str) -> tuple[pafs.FileSystem, list[str]]:
    """Files of a Parquet file, directory, glob, or filesystem URI (``s3://...``)."""
    try:
        if any(c in input_path for c in "*?[") and "://" not in input_path:
            files = sorted(glob.glob(input_path, recursive=True))
            if not files:
                raise SeqStoreError(f"no files match {input_path!r}")
            dataset = ds.dataset(files, format="parquet")
        else:
            dataset = ds.dataset(input_path, format="parquet")
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise SeqStoreError(f"cannot read Parquet input {input_path!r}: {exc}") from exc
    files = sorted(dataset.files)
    if not files:
        raise SeqStoreError(f"no Parquet files in {input_path!r}")
    return dataset.filesystem, files


def plan(input_path: str) -> tuple[pafs.FileSystem, list[Unit]]:
    """All units of the input, in file and row-group order."""
    fs, files = resolve(input_path)
    units: list[Unit] = []
    for path in files:
        size = fs.get_file_info(path).size or 0
        with fs.open_input_file(path) as handle:
            meta = pq.ParquetFile(handle).metadata
        first = 0
        for rg in range(meta.num_row_groups):
            rows = meta.row_group(rg).num_rows
            units.append(Unit(path, rg, first, rows, size))
            first += rows
    return fs, units
