"""Process bookkeeping of the launcher, on real processes (no JVM needed)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from hbase.processes import owned_alive, wait_gone


def test_checking_an_unknown_pid_never_reaps_someone_elses_child(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    time.sleep(0.5)  # it has exited: a zombie until someone waits for it
    assert not owned_alive(-1, tmp_path)  # "no recorded pid" must not mean waitpid(-1)
    assert child.wait(timeout=10) == 3  # its exit status is still ours to collect


def test_a_process_without_the_data_dir_marker_is_not_ours(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not owned_alive(child.pid, tmp_path)
        wait_gone([child.pid], tmp_path, timeout_s=1)  # not ours: nothing to wait for
    finally:
        child.kill()
        child.wait()


def test_waiting_for_a_process_that_stays_is_bounded(tmp_path: Path) -> None:
    marker = f"-Dseqstore.hbase.data.dir={tmp_path}"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    try:
        deadline = time.monotonic() + 10  # until exec, /proc/<pid>/cmdline is still ours
        while not owned_alive(child.pid, tmp_path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert owned_alive(child.pid, tmp_path)
        with pytest.raises(TimeoutError, match="still alive"):
            wait_gone([child.pid], tmp_path, timeout_s=0.3)
    finally:
        child.kill()
        child.wait()
