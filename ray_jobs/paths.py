"""Checks on local paths that jobs write to, made before a job starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from store.errors import SeqStoreError


def check_writable_dir(path: Path, *, what: str = "output directory") -> None:
    """Create directory ``path`` (with its parents) if missing and prove a file can be
    written in it, by creating and deleting a probe file.

    ``what`` names the path in the message (e.g. ``"--out"``). Raises :class:`SeqStoreError`
    naming the path and the operating system's reason (not a directory, permission denied,
    read-only file system...). Leaves the directory in place, empty if it was created.
    """
    shown = str(path)
    if path.exists() and not path.is_dir():
        raise SeqStoreError(f"cannot write to {what} {shown!r}: it exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".seqstore-write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SeqStoreError(f"cannot write to {what} {shown!r}: {exc.strerror or exc}") from exc
