"""Helpers shared by the benchmarks: machine-wide CPU time and result files."""

from __future__ import annotations

import json
import os
import statistics
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine_cpu_s() -> float:
    """Non-idle CPU seconds of the whole machine so far (client, Ray workers and HBase alike)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


_KINDS = (  # (kind, a substring of the command line), first match wins
    ("hbase regionserver", "-Dproc_regionserver"),
    ("hbase master (standalone: with its regionserver)", "-Dproc_master"),
    ("hbase thrift2", "-Dproc_thrift2"), ("hbase thrift", "-Dproc_thrift"), ("ray workers", "ray::"),
    ("ray workers", "default_worker.py"), ("ray daemons", "raylet"), ("ray daemons", "gcs_server"),
    ("ray daemons", "ray/"), ("ray daemons", "ray."), ("driver", "ray_jobs.cli"),
)


def _process_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of every process by pid, with the kind of process it is."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # An ended process not yet reaped has no command line (Ray's workers at a job's end).
        name = cmdline[:60].strip() or "ended"
        kind = next((k for k, s in _KINDS if s in cmdline), f"other ({name})")
        found[int(entry)] = (kind, (int(fields[11]) + int(fields[12])) / tick)
    return found


class ProcessCpu:
    """CPU seconds by kind of process (HBase's JVMs, Ray's daemons and workers, the driver) over a
    ``with`` block: sampled every ``every`` seconds so that processes which end inside the block
    (Ray workers) count up to their last sample."""

    def __init__(self, every: float = 0.2) -> None:
        self._every = every
        self._start: dict[int, tuple[str, float]] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.by_kind: dict[str, float] = {}

    def _sample(self) -> None:
        while not self._stop.wait(self._every):
            self._last.update(_process_cpu())

    def __enter__(self) -> ProcessCpu:
        self._start = _process_cpu()
        self._last = dict(self._start)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._last.update(_process_cpu())
        totals: dict[str, float] = {}
        for pid, (kind, cpu) in self._last.items():
            used = cpu - self._start.get(pid, (kind, 0.0))[1]
            if used > 0:
                totals[kind] = totals.get(kind, 0.0) + used
        self.by_kind = {k: round(v, 2) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def save(name: str, report: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def measure(reps: int, fn: Callable[[], float]) -> dict[str, float]:
    """Median, min and max of ``reps`` runs of ``fn`` (each returns a rate or a cost)."""
    values = [fn() for _ in range(reps)]
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "reps": reps}
