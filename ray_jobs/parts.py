"""Jobs that write one Parquet part per unit (score, export): naming, trusting and running parts.

A part is written atomically and tagged with the unit it came from (file location,
fingerprint, row count), so a re-run skips exactly the parts that are the complete output of
their unit as the input is now, and redoes the rest.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_jobs.runner import RunStats, UnitRunner
from store.errors import SeqStoreError

PART_METADATA_KEY = b"seqstore.unit"


def part_file_name(prefix: str, unit: Any) -> str:
    """``<prefix>-<unit slug>.parquet``: unique per unit and stable across re-runs."""
    return f"{prefix}-{unit.slug}.parquet"


def write_part(table: Any, target: Path, unit: Any) -> None:
    """Write ``table`` to ``target`` atomically (a part exists only when complete), tagged
    with the unit it was made from so a later run can tell whether to trust it."""
    import pyarrow.parquet as pq

    tag = json.dumps({"unit": unit.key, "location": unit.location, "fingerprint": unit.fingerprint,
                      "rows": unit.num_rows}, sort_keys=True).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), PART_METADATA_KEY: tag})
    tmp = target.with_suffix(".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, target)


def part_rows(path: Path, unit: Any) -> int | None:
    """Rows of the part at ``path`` if it is the complete output of ``unit`` as it is now
    (written from the same file, same fingerprint, one row per input row); else None."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
        tag = json.loads((meta.metadata or {}).get(PART_METADATA_KEY, b"{}"))
    except (OSError, ValueError):  # missing, unreadable or not a Parquet file: not trusted
        return None
    if (tag.get("location"), tag.get("fingerprint")) != (unit.location, unit.fingerprint):
        return None
    return int(meta.num_rows) if meta.num_rows == unit.num_rows else None


@dataclass
class PartsOutcome:
    """What :func:`run_into_parts` did: every unit, those it ran, and how it ended.

    ``parts`` and ``rows`` count only parts that are each the complete output of their own
    unit, checked after the run; ``error`` is set when the job did not produce exactly one
    such part per unit (or found parts of another input in the output directory).
    """

    units: list[Any]
    ran: list[Any]
    stats: RunStats
    error: str = ""
    parts: int = 0
    rows: int = 0
    names: list[str] = field(default_factory=list)


def run_into_parts(units: Sequence[Any], out: Path, prefix: str, spawn: Callable[[int], Any], *,
                   workers: int, on_rows: Callable[[int], None] | None = None) -> PartsOutcome:
    """Run one actor call per unit whose output part in ``out`` is missing or stale.

    Each actor's ``run(unit)`` writes ``out/part_file_name(prefix, unit)`` with
    :func:`write_part` and returns ``{"rows": n}``. A part already there is skipped only if
    :func:`part_rows` trusts it, so a re-run resumes where a crash left off and a changed
    input file is redone. Refuses to run (``error`` set) when ``out`` holds ``<prefix>-*``
    parts no unit of this input produces: reading ``out`` would mix them in.
    """
    units = list(units)
    names = [part_file_name(prefix, u) for u in units]
    stats = RunStats()
    outcome = PartsOutcome(units, [], stats, names=names)
    if len(set(names)) != len(names):
        dup = next(n for n, c in Counter(names).items() if c > 1)
        outcome.error = f"two units of the input map to the same output part {dup}"
        return outcome
    out.mkdir(parents=True, exist_ok=True)
    expected = set(names)
    foreign = sorted(p.name for p in out.glob(f"{prefix}-*.parquet") if p.name not in expected)
    if foreign:
        outcome.error = (f"{out} holds {len(foreign)} {prefix} file(s) that no unit of this input produces "
                         f"(e.g. {foreign[0]}), left by a run over other input; remove them or write to an "
                         "empty directory")
        return outcome
    outcome.ran = [u for u, name in zip(units, names, strict=True) if part_rows(out / name, u) is None]

    def done(_unit: Any, result: dict[str, Any], _actors: list[Any]) -> None:
        if on_rows:
            on_rows(result["rows"])

    runner: UnitRunner[Any] = UnitRunner(spawn, lambda a, u: a.run.remote(u), workers=workers)
    outcome.stats = runner.stats
    try:
        runner.run(outcome.ran, done)
    except SeqStoreError as exc:
        outcome.error = str(exc)
    bad: list[Any] = []
    for unit, name in zip(units, names, strict=True):
        rows = part_rows(out / name, unit)
        if rows is None:
            bad.append(unit)
        else:
            outcome.parts += 1
            outcome.rows += rows
    if bad and not outcome.error:
        outcome.error = (f"{len(bad)} of {len(units)} units have no complete output part (e.g. {bad[0].key}); "
                         "re-run the same command to redo them")
    return outcome
