"""A job's output directory: one job at a time (:class:`OutputLock`), and files that appear in
it whole and durable (:func:`temp_path`, :func:`publish`), never half-written under their name.

Used by the parts of score and export (:mod:`ray_jobs.parts`), the backfill's quarantine files
and the Datasink's.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from store.errors import SeqStoreError

LOCK_NAME = ".seqstore-lock"
TEMP_SUFFIX = ".tmp"


class OutputInUseError(SeqStoreError):
    """Another live job holds the output directory's lock (not retried: wait for it, or use
    another directory)."""


class OutputLock:
    """An exclusive lock on a job's output directory: ``out/.seqstore-lock``, created with
    ``O_CREAT | O_EXCL`` and holding the holder's host, pid and start time.

    Entering the ``with`` block creates ``out`` if needed and takes the lock, or raises
    :class:`OutputInUseError` (one line, naming the holder) while a live job holds it. A lock
    left by a job that is gone — same host, no such process — is stale: it is removed and
    taken. A holder on another host cannot be checked, so its lock is honoured until someone
    removes the file. The lock is re-entrant within one process (a job's driver takes it
    around its whole run, and :func:`run_into_parts` again inside); leaving the outermost
    block removes the file if it is still this lock's.
    """

    _held: ClassVar[dict[Path, int]] = {}  # per process: lock file -> nesting depth

    def __init__(self, out: Path) -> None:
        self.path = Path(out).resolve() / LOCK_NAME
        self._text = ""

    def __enter__(self) -> OutputLock:
        depth = OutputLock._held.get(self.path, 0)
        if depth == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._acquire()
        OutputLock._held[self.path] = depth + 1
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        depth = OutputLock._held.pop(self.path) - 1
        if depth:
            OutputLock._held[self.path] = depth
            return
        try:
            if self.path.read_text() == self._text:
                self.path.unlink()
        except OSError:  # already removed by hand: nothing left to release
            pass

    def _acquire(self) -> None:
        text = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started_ms": int(time.time() * 1000)})
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = self._read()
                if held is None or not self._stale(held):
                    raise OutputInUseError(self._refusal(held)) from None
                # Stale: remove it only if it is still the lock judged dead (another job may
                # have broken it and taken the directory meanwhile).
                if self._read() == held:
                    self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            self._text = text
            return
        raise OutputInUseError(self._refusal(self._read()))

    def _read(self) -> dict[str, Any] | None:
        try:
            held = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return held if isinstance(held, dict) else None

    @staticmethod
    def _stale(held: dict[str, Any]) -> bool:
        if held.get("host") != socket.gethostname() or not isinstance(held.get("pid"), int):
            return False
        try:
            os.kill(held["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False

    def _refusal(self, held: dict[str, Any] | None) -> str:
        if held is None:
            who = "an unreadable lock"
        else:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(held.get("started_ms", 0)) / 1000))
            who = f"pid {held.get('pid')} on {held.get('host')}, since {since}"
        return (f"{self.path.parent} is in use by another job ({who}); wait for it to end, or remove "
                f"{self.path} if that job is gone")


def temp_path(target: Path) -> Path:
    """``.<target name>.<uuid>.tmp`` beside ``target``: unique per writer (two writers of one
    part never share a file), and skipped by pyarrow's and Ray's directory discovery."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")


def remove_stale_temps(out: Path, prefix: str) -> list[str]:
    """Remove the temporary files of ``<prefix>-*`` parts in ``out``, left by writers that were
    killed (a stopped job's actors); returns their names. Also removes ``<prefix>-*.tmp``, the
    visible temporary names of older versions, which make ``pq.read_table(out)`` fail.

    Call it only while holding :class:`OutputLock` on ``out``: a live writer's file would go too.
    """
    stale = sorted({*out.glob(f".{prefix}-*{TEMP_SUFFIX}"), *out.glob(f"{prefix}-*{TEMP_SUFFIX}")})
    for path in stale:
        path.unlink(missing_ok=True)
    return [p.name for p in stale]


def publish(tmp: Path, target: Path) -> None:
    """Make the finished local file ``tmp`` durable and visible as ``target``, atomically:
    fsync its data, rename it over ``target``, then fsync the directory so that the rename
    itself survives a crash of the node. Without the first fsync a crash could leave
    ``target`` naming a file whose blocks were never written.

    Raises OSError. Before the rename ``target`` is untouched; if only the directory's fsync
    fails, ``target`` is already the new file (whose data is on disk).
    """
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
