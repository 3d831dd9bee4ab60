"""Helpers shared by the benchmarks: machine-wide CPU time and result files."""

from __future__ import annotations

import json
import os
import statistics
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
