"""The JVMs of a data dir: finding them, checking them, stopping them.

Every JVM the launcher starts carries ``-Dseqstore.hbase.data.dir=<data_dir>`` on its
command line, so a pid is only taken for ours if that marker is there (a recycled pid is
not), and a lost ``runtime.json`` never leaves a JVM unfindable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from hbase import jvm

log = logging.getLogger(__name__)


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def owned_alive(pid: int, data_dir: Path) -> bool:
    """True if ``pid`` is a live JVM of this data dir (a recycled pid does not count)."""
    if pid <= 0:
        return False
    _reap(pid)
    cmd = _cmdline(pid)
    if cmd is not None:
        return f"{jvm.OWNER_PROPERTY}{data_dir}".encode() in cmd.split(b"\0")
    if not Path("/proc").is_dir():  # no procfs (macOS): fall back to a liveness check
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return False


def _reap(pid: int) -> None:
    # A JVM started by this very process stays a zombie until waited for. (pid <= 0 would wait
    # for *any* child, or a process group: never that.)
    if pid > 0:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def wait_gone(pids: list[int], data_dir: Path, timeout_s: float = 30.0) -> None:
    """Wait until none of ``pids`` is a live JVM of ``data_dir``.

    Raises:
        TimeoutError: one is still alive after ``timeout_s`` (even SIGKILL takes a moment, but
            not this long: a process stuck in the kernel, say).
    """
    deadline = time.monotonic() + timeout_s
    while alive := [p for p in pids if owned_alive(p, data_dir)]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"pids {alive} of {data_dir} still alive after {timeout_s:.0f} s")
        time.sleep(0.05)


def jvm_pids(data_dir: Path) -> list[int]:
    """JVMs of this data dir found by their command line (covers a lost runtime.json)."""
    marker = f"{jvm.OWNER_PROPERTY}{data_dir}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*") if Path("/proc").is_dir() else []:
        cmd = _cmdline(int(entry.name))
        if cmd and marker in cmd.split(b"\0"):
            found.append(int(entry.name))
    return found


def terminate(pids: list[int], data_dir: Path, timeout_s: float) -> None:
    """SIGTERM (HBase flushes and closes regions on it), then SIGKILL after ``timeout_s``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(owned_alive(p, data_dir) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        if owned_alive(pid, data_dir):
            log.warning("pid %d did not stop within %.0f s; killing it", pid, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    wait_gone(pids, data_dir)
