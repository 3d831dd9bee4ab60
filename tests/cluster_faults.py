"""Faults and admin operations on the launcher's HBase, for the reliability tests.

Killing a process as a crash would is :func:`kill_role`; bringing it back is the product's own
:func:`hbase.launcher.restart_role` (``seqstore hbase restart ROLE``). What Thrift cannot do
(split a region) goes through HBase's own Java client, ``tests/hbase_admin/HBaseAdminTool.java``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import happybase
from thriftpy2.rpc import make_client

from hbase import jars, jvm, state
from hbase.errors import HBaseRuntimeError
from hbase.processes import owned_alive, wait_gone
from store import Endpoint
from store.io.connection import idl

ADMIN_TOOL = Path(__file__).resolve().parent / "hbase_admin" / "HBaseAdminTool.java"


def kill_role(data_dir: Path | str, role: str) -> None:
    """SIGKILL one JVM of a running instance (``master``, ``thrift2``, ``regionserver_2``...), as
    a crash would, and wait until it is gone."""
    data_dir = Path(data_dir).resolve()
    rt = state.read_runtime(data_dir)
    if rt is None or role not in rt.pids:
        raise HBaseRuntimeError(f"no running {role} recorded in {data_dir}")
    pid = rt.pids[role]
    if owned_alive(pid, data_dir):
        os.kill(pid, signal.SIGKILL)
    wait_gone([pid], data_dir)


def region_servers(thrift2: Endpoint, table: str) -> Counter[int]:
    """How many of ``table``'s regions each RegionServer (by port) holds, as HBase's meta says."""
    t = idl()
    client = make_client(t.THBaseService, thrift2.host, thrift2.port, timeout=30_000)
    try:
        return Counter(loc.serverName.port for loc in client.getAllRegionLocations(f"default:{table}".encode()))
    finally:
        client.close()


def admin(data_dir: Path, operation: str, table: str) -> None:
    """Run ``operation`` (``split`` or ``major_compact``) on ``table`` through HBase's Java Admin."""
    lib = jars.cached()
    assert lib is not None, "HBase jars not fetched"
    conf = data_dir / "conf"
    cmd = [jvm.find_java(), "-Xmx256m", *jvm.JDK17_FLAGS, f"-Dlog4j2.configurationFile={conf / 'log4j2.properties'}",
           "-cp", f"{conf}:{lib}/*", str(ADMIN_TOOL), operation, table]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, f"{operation} {table} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"


def split(data_dir: Path, thrift2: Endpoint, table: str, timeout_s: float = 120.0) -> int:
    """Split every region of ``table`` and wait until meta shows more regions; returns their number."""
    before = sum(region_servers(thrift2, table).values())
    admin(data_dir, "split", table)
    deadline = time.monotonic() + timeout_s
    after, error = before, None
    while after <= before:
        assert time.monotonic() < deadline, (f"{table} still has {after} region(s) {timeout_s:.0f} s after the "
                                             f"split (last error: {error!r})")
        time.sleep(0.5)
        try:
            after = sum(region_servers(thrift2, table).values())
        except Exception as exc:  # noqa: BLE001 - meta is being rewritten: a listing can fail meanwhile
            error = exc
    return after


def major_compact(thrift: Endpoint, table: str) -> None:
    """Request a major compaction of ``table`` (Thrift1 has the call; it runs in the background)."""
    conn = happybase.Connection(thrift.host, thrift.port, timeout=60_000)
    try:
        conn.compact_table(table, major=True)
    finally:
        conn.close()
