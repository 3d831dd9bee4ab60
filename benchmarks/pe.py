"""HBase's own PerformanceEvaluation (``hbase pe``), run against the running local HBase.

The ceiling our numbers are divided by: the same server, driven by HBase's Java client.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from hbase import jars, jvm, state

_DURATION = re.compile(r"\[(\w+) duration \]\s+Min: (\d+)ms\s+Max: (\d+)ms")


def run_pe(test: str, clients: int, *, rows: int, table: str, extra: tuple[str, ...] = ()) -> dict[str, float]:
    """Run one PE test with ``clients`` threads (--nomapred); returns rows/s over the slowest client.

    ``rows`` is per client. For scanRange100, each "row" is one scan of 100 rows.
    """
    rt = state.read_endpoint()
    lib = jars.cached()
    if rt is None or lib is None:
        raise RuntimeError("start HBase first: seqstore hbase start")
    data_dir = Path(rt.data_dir)
    args = ["--nomapred", f"--rows={rows}", f"--table={table}", "--presplit=8", *extra, test, str(clients)]
    cmd = jvm.command("pe", java=jvm.find_java(), lib=lib, conf_dir=data_dir / "conf",
                      data_dir=data_dir / "run" / "pe", args=args)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    wall = time.perf_counter() - t0
    match = _DURATION.search(proc.stdout + proc.stderr)
    if proc.returncode != 0 or match is None:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise RuntimeError(f"PerformanceEvaluation {test} failed (exit {proc.returncode}):\n{tail}")
    slowest_s = int(match.group(3)) / 1000
    return {"rows_per_s": rows * clients / slowest_s, "wall_s": wall, "clients": clients}
