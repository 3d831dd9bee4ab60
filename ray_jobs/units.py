"""Splitting a Parquet input into units of work: one unit per row group of each file."""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import PurePath

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from store.errors import SeqStoreError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class Unit:
    """One row group of one Parquet file.

    ``path`` is what the input's filesystem opens: for a local file its absolute path, resolved
    on the driver by :func:`plan`, so an actor opens the same file whatever its working
    directory. ``first_row`` is the row group's first row number within its file, so quarantine
    rows carry positions that point into the source file. ``location`` names the file uniquely
    (an absolute local path, or ``<filesystem>://<path>``); ``mtime_ns`` is the file's
    modification time where the filesystem reports one. ``spelled_path`` is the file's path as
    the input spelled it (``d/x.parquet`` for ``d``), kept only for :attr:`spelled_key`.
    """

    path: str
    row_group: int
    first_row: int
    num_rows: int
    file_size: int
    mtime_ns: int | None = None
    location: str = ""
    spelled_path: str = ""

    @property
    def key(self) -> str:
        """``<location>#rg<n>``: the unit's name in job records, the same however the input was
        spelled (``d``, ``./d``, ``/abs/d``) and from whatever directory."""
        return f"{self.location or self.path}#rg{self.row_group}"

    @property
    def spelled_key(self) -> str | None:
        """The key versions before canonical keys recorded this unit under (its path as the
        input spelled it), when it differs from :attr:`key`; a manifest written by them is read
        with it as a fallback (:func:`ray_jobs.backfill.recorded_entry`)."""
        old = f"{self.spelled_path}#rg{self.row_group}" if self.spelled_path else None
        return old if old != self.key else None

    @property
    def fingerprint(self) -> str:
        """Changes when the file is replaced or rewritten — other size, row layout or
        modification time — so a stale manifest entry or output part is not trusted.

        Copying the input without preserving modification times changes it too, which makes a
        re-run redo the work (safe: writes and parts are idempotent).
        """
        return f"{self.file_size}:{self.mtime_ns}:{self.first_row}:{self.num_rows}"

    @property
    def slug(self) -> str:
        """A file-name-safe name unique to this unit: the file's stem (for people), a short
        hash of the file's full location (so ``date=1/part-0.parquet`` and
        ``date=2/part-0.parquet`` differ) and the row group. Stable across re-runs."""
        stem = _UNSAFE.sub("_", PurePath(self.path).stem)[:40] or "file"
        digest = hashlib.sha256((self.location or self.path).encode()).hexdigest()[:12]
        return f"{stem}-{digest}-rg{self.row_group:05d}"


def resolve(input_path: str) -> tuple[pafs.FileSystem, list[str]]:
    """Files of a Parquet file, directory, glob, or filesystem URI (``s3://...``).

    Raises :class:`SeqStoreError` if nothing matches or the input cannot be listed.
    """
    try:
        if any(c in input_path for c in "*?[") and "://" not in input_path:
            files = sorted(glob.glob(input_path, recursive=True))
            if not files:
                raise SeqStoreError(f"no files match {input_path!r}")
            dataset = ds.dataset(files, format="parquet")
        else:
            dataset = ds.dataset(input_path, format="parquet")
    except FileNotFoundError as exc:  # Arrow's message is the bare path
        raise SeqStoreError(f"cannot read Parquet input {input_path!r}: no such file or directory") from exc
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise SeqStoreError(f"cannot read Parquet input {input_path!r}: {_first_line(exc)}") from exc
    files = sorted(dataset.files)
    if not files:
        raise SeqStoreError(f"no Parquet files in {input_path!r}")
    return dataset.filesystem, files


def _location(fs: pafs.FileSystem, path: str) -> str:
    if isinstance(fs, pafs.LocalFileSystem):
        return os.path.abspath(path)
    return f"{fs.type_name}://{path}"


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def plan(input_path: str) -> tuple[pafs.FileSystem, list[Unit]]:
    """All units of the input, in file and row-group order.

    Local paths are resolved here, on the driver (against its working directory): each unit's
    ``path`` is absolute, and its ``key`` the file's canonical location. Reads each file's
    footer. Raises :class:`SeqStoreError` if the input cannot be listed, or naming the file
    whose footer cannot be read (not Parquet, truncated, unreadable).
    """
    fs, files = resolve(input_path)
    units: list[Unit] = []
    for spelled in files:
        path = os.path.abspath(spelled) if isinstance(fs, pafs.LocalFileSystem) else spelled
        try:
            info = fs.get_file_info(path)
            with fs.open_input_file(path) as handle:
                meta = pq.ParquetFile(handle).metadata
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise SeqStoreError(f"cannot read Parquet file {_location(fs, path)!r}: {_first_line(exc)}") from exc
        size = info.size or 0
        first = 0
        for rg in range(meta.num_row_groups):
            rows = meta.row_group(rg).num_rows
            units.append(Unit(path, rg, first, rows, size, info.mtime_ns, _location(fs, path), spelled))
            first += rows
    return fs, units
