"""Jobs that write one Parquet part per unit (score, export): naming, trusting and running parts.

A part is written atomically (streamed to a temporary file of its own, ``.<part>.<uuid>.tmp``
— hidden from pyarrow's and Ray's directory discovery, which skip names starting with ``.`` —
and renamed when complete) and tagged with the unit it came from (file location, fingerprint,
row count) and with the job's *settings* — everything that shapes the output (table and its
schema, model, ``max_len``, features, ...) — as a digest. A re-run skips exactly the parts that are the complete output
of their unit as the input is now, made with the same settings, and redoes missing or stale
ones. A part made with other settings is never trusted: the job refuses to run, naming what
differs, unless ``overwrite`` is set, which redoes such parts (and removes parts of other inputs).

One job at a time writes into an output directory: :class:`~ray_jobs.outputs.OutputLock` holds
``out/.seqstore-lock`` for the job's whole run, so two jobs cannot interleave their parts.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ray_jobs.outputs import OutputLock, publish, remove_stale_temps, temp_path
from ray_jobs.report import JobReport, ReadingReport
from ray_jobs.runner import RunStats, UnitRunner
from store.errors import SeqStoreError

PART_METADATA_KEY = b"seqstore.unit"
RUN_RECORD_NAME = ".seqstore-job.json"


def part_file_name(prefix: str, unit: Any) -> str:
    """``<prefix>-<unit slug>.parquet``: unique per unit and stable across re-runs."""
    return f"{prefix}-{unit.slug}.parquet"


def last_run(out: Path, prefix: str) -> dict[str, Any] | None:
    """What the last run of ``prefix`` parts into ``out`` recorded in ``out/.seqstore-job.json``:
    ``{"prefix", "settings", "completed"}``, or None (no such run, or an unreadable record).
    A run records itself once it starts running units (``completed`` False) and again when it
    ends; a run refused before that leaves the record as it was."""
    try:
        record = json.loads((out / RUN_RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("prefix") == prefix else None


def _record_run(out: Path, prefix: str, settings: Mapping[str, Any], *, completed: bool) -> None:
    target = out / RUN_RECORD_NAME
    tmp = temp_path(target)
    try:
        tmp.write_text(json.dumps({"prefix": prefix, "settings": settings, "completed": completed},
                                  sort_keys=True, default=str))
        publish(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def job_settings(table: Any, job: str, **options: Any) -> dict[str, Any]:
    """What shapes a job's output: the job, the table (its spec, every schema version and its
    features) and the job's own ``options`` (model, ``max_len``, features, ...)."""
    return {
        "job": job,
        "table": table.spec.settings(),
        "schema_versions": [[s.version, str(s.payload)] for s in table.schema_versions],
        "table_features": str(table.spec.features),
        **options,
    }


def settings_digest(settings: Mapping[str, Any]) -> str:
    """A stable digest of a job's settings (JSON-ready values)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:32]


class PartWriter:
    """Streams one unit's output into ``target``, batch by batch, so memory is bounded by a
    batch; the part appears (fsynced and atomically renamed, :func:`publish`) only when
    :meth:`close` succeeds, tagged with the unit and the job's settings. Leaving the ``with``
    block on an error removes the temporary file and leaves ``target`` as it was."""

    def __init__(self, target: Path, unit: Any, settings: Mapping[str, Any] | None = None) -> None:
        self.target = target
        self.tmp = temp_path(target)
        settings = dict(settings or {})
        self.tag = json.dumps({"unit": unit.key, "location": unit.location, "fingerprint": unit.fingerprint,
                               "rows": unit.num_rows, "settings": settings,
                               "settings_digest": settings_digest(settings)}, sort_keys=True).encode()
        self._writer: Any = None

    def write(self, table: Any) -> None:
        """Append ``table`` (every batch of a part has the first batch's schema)."""
        import pyarrow.parquet as pq

        if self._writer is None:
            schema = table.schema.with_metadata({**(table.schema.metadata or {}), PART_METADATA_KEY: self.tag})
            self._writer = pq.ParquetWriter(self.tmp, schema)
        self._writer.write_table(table)

    def close(self, empty: Any = None) -> None:
        """Finish the part; ``empty`` (a table) is written when no batch was."""
        if self._writer is None:
            import pyarrow as pa

            self.write(empty if empty is not None else pa.table({}))
        self._writer.close()
        publish(self.tmp, self.target)

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            if self._writer is not None:
                self._writer.close()
            self.tmp.unlink(missing_ok=True)


def write_part(table: Any, target: Path, unit: Any, *, settings: Mapping[str, Any] | None = None) -> None:
    """Write ``table`` as the whole part of ``unit`` (see :class:`PartWriter`)."""
    with PartWriter(target, unit, settings) as writer:
        writer.write(table)
        writer.close()


def give_empty_parts_the_schema(out: Path, units: Sequence[Any], names: Sequence[str], *,
                                settings: Mapping[str, Any] | None = None) -> list[str]:
    """Rewrite each trusted 0-row part in ``out`` whose columns differ from those of the first
    non-empty trusted part (by name) as an empty table of that schema, keeping its tag; returns
    the names rewritten. A job whose output columns are known only once data went through it
    (score: the model's columns) writes an empty unit's part without them, and pyarrow takes a
    directory's schema from its first file: such a part sorting first would hide every model
    column of the whole output.

    Call it while holding :class:`OutputLock` on ``out``. Idempotent.
    """
    import pyarrow.parquet as pq

    trusted = [(u, out / n) for u, n in zip(units, names, strict=True)
               if part_rows(out / n, u, settings=settings) is not None]
    full = next((p for u, p in sorted(trusted, key=lambda t: t[1].name) if u.num_rows), None)
    if full is None:
        return []
    schema = pq.read_schema(full).remove_metadata()
    rewritten = []
    for unit, path in trusted:
        if unit.num_rows == 0 and not pq.read_schema(path).remove_metadata().equals(schema):
            write_part(schema.empty_table(), path, unit, settings=settings)
            rewritten.append(path.name)
    return rewritten


def _tag(path: Path) -> tuple[dict[str, Any], int] | None:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
        tag = json.loads((meta.metadata or {}).get(PART_METADATA_KEY, b"{}"))
    except (OSError, ValueError):  # missing, unreadable or not a Parquet file: not trusted
        return None
    return (tag, int(meta.num_rows)) if isinstance(tag, dict) else None


def part_rows(path: Path, unit: Any, *, settings: Mapping[str, Any] | None = None) -> int | None:
    """Rows of the part at ``path`` if it is the complete output of ``unit`` as it is now
    (written from the same file, same fingerprint, one row per input row) made with these
    ``settings``; else None."""
    return _trusted_rows(_tag(path), unit, settings_digest(dict(settings or {})))


def _trusted_rows(found: tuple[dict[str, Any], int] | None, unit: Any, digest: str) -> int | None:
    if found is None:
        return None
    tag, rows = found
    if (tag.get("location"), tag.get("fingerprint")) != (unit.location, unit.fingerprint):
        return None
    if tag.get("settings_digest") != digest:
        return None
    return rows if rows == unit.num_rows else None


def _settings_diff(found: tuple[dict[str, Any], int] | None, settings: Mapping[str, Any], digest: str) -> str | None:
    """What differs between the settings a part (its tag, as read) was made with and
    ``settings`` (None: same, or not a tagged part)."""
    if found is None or "settings_digest" not in found[0]:
        return None
    theirs = found[0].get("settings") or {}
    if found[0]["settings_digest"] == digest:
        return None
    keys = sorted(k for k in set(theirs) | set(settings) if theirs.get(k) != settings.get(k))
    return ", ".join(f"{k}: {_short(theirs.get(k))} -> {_short(settings.get(k))}" for k in keys[:3]) or "digest"


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class PartsOutcome:
    """What :func:`run_into_parts` did: every unit, those it skipped (trusted parts already
there) and those it ran, and how it ended.

    ``parts`` and ``rows`` count only parts that are each the complete output of their own
    unit, checked after the run; ``error`` is set when the job did not produce exactly one
    such part per unit (or found parts of another input in the output directory).
    """

    units: list[Any]
    ran: list[Any]
    stats: RunStats
    skipped: list[Any] = field(default_factory=list)
    error: str = ""
    parts: int = 0
    rows: int = 0
    names: list[str] = field(default_factory=list)
    cache_hits: int = 0  # chunk cache hits and misses of the units run, as they reported them
    cache_misses: int = 0

    def fill(self, report: JobReport, started: float) -> float:
        """Put the run's units, runner counts and outcome into ``report`` and time it from
        ``started``; returns the input rows this run processed per second (0 if it failed)."""
        if isinstance(report, ReadingReport):
            report.cache_counts(self.cache_hits, self.cache_misses)
        report.units_total, report.units_skipped = len(self.units), len(self.skipped)
        report.units_done = self.stats.units_done
        report.ran(self.stats)
        report.completed, report.error = not self.error, self.error
        return report.timed(started, sum(u.num_rows for u in self.ran) if report.completed else 0)


def run_into_parts(units: Sequence[Any], out: Path, prefix: str, spawn: Callable[[int], Any], *,
                   workers: int, settings: Mapping[str, Any] | None = None, overwrite: bool = False,
                   on_plan: Callable[[Sequence[Any]], None] | None = None,
                   on_rows: Callable[[int], None] | None = None) -> PartsOutcome:
    """Run one actor call per unit whose output part in ``out`` is missing or stale.

    Each actor's ``run(unit)`` writes ``out/part_file_name(prefix, unit)`` with
    :class:`PartWriter` (tagged with ``settings``) and returns ``{"rows": n}``. A part already
    there is skipped only if :func:`part_rows` trusts it, so a re-run resumes where a crash left
    off and a changed input file is redone. Holds :class:`OutputLock` on ``out`` throughout
    (raises :class:`OutputInUseError` while another job holds it) and removes the temporary
    files of ``prefix`` parts that dead writers left (:func:`remove_stale_temps`): a stopped
    job's before running, and this job's lost actors' once its own have ended.
    Refuses to run (``error`` set) when ``out`` holds ``<prefix>-*`` parts no unit of this
    input produces (reading ``out`` would mix them in), or parts made with other settings (they
    would be kept as if made by this job) — unless ``overwrite``, which removes the former and
    redoes the latter. ``on_plan`` hears the units
    it is about to run, ``on_rows`` the rows of each unit done. Records the run in ``out``
    (:func:`last_run`) once it starts running units and when it ends.
    """
    settings = dict(settings or {})
    units = list(units)
    names = [part_file_name(prefix, u) for u in units]
    stats = RunStats()
    outcome = PartsOutcome(units, [], stats, names=names)
    if len(set(names)) != len(names):
        dup = next(n for n, c in Counter(names).items() if c > 1)
        outcome.error = f"two units of the input map to the same output part {dup}"
        return outcome
    with OutputLock(out):
        _run_locked(outcome, out, prefix, spawn, workers=workers, settings=settings, overwrite=overwrite,
                    on_plan=on_plan, on_rows=on_rows)
    return outcome


def _run_locked(outcome: PartsOutcome, out: Path, prefix: str, spawn: Callable[[int], Any], *, workers: int,
                settings: dict[str, Any], overwrite: bool, on_plan: Callable[[Sequence[Any]], None] | None,
                on_rows: Callable[[int], None] | None) -> None:
    units, names = outcome.units, outcome.names
    remove_stale_temps(out, prefix)
    expected = set(names)
    foreign = sorted(p.name for p in out.glob(f"{prefix}-*.parquet") if p.name not in expected)
    if foreign and overwrite:
        for name in foreign:
            (out / name).unlink()
    elif foreign:
        outcome.error = (f"{out} holds {len(foreign)} {prefix} file(s) that no unit of this input produces "
                         f"(e.g. {foreign[0]}), left by a run over other input; pass --overwrite to replace them "
                         "or write to an empty directory")
        return
    digest = settings_digest(settings)
    tags = [_tag(out / name) for name in names]  # each part's metadata, read once
    if not overwrite:
        for found in tags:
            diff = _settings_diff(found, settings, digest)
            if diff is not None:
                outcome.error = (f"{out} holds parts made with other settings ({diff}); pass --overwrite to "
                                 "replace them, or write to another directory")
                return
    trusted = [_trusted_rows(found, u, digest) is not None for u, found in zip(units, tags, strict=True)]
    outcome.ran = [u for u, ok in zip(units, trusted, strict=True) if not ok]
    outcome.skipped = [u for u, ok in zip(units, trusted, strict=True) if ok]

    def done(_unit: Any, result: dict[str, Any], _actors: list[Any]) -> None:
        outcome.cache_hits += result.get("cache_hits", 0)
        outcome.cache_misses += result.get("cache_misses", 0)
        if on_rows:
            on_rows(result["rows"])

    if on_plan:
        on_plan(outcome.ran)
    _record_run(out, prefix, settings, completed=False)
    runner: UnitRunner[Any] = UnitRunner(spawn, lambda a, u: a.run.remote(u), workers=workers)
    outcome.stats = runner.stats
    try:
        runner.run(outcome.ran, done)
    except SeqStoreError as exc:
        outcome.error = str(exc)
    remove_stale_temps(out, prefix)  # those of actors that died during this run (a lost node's)
    bad: list[Any] = []
    for unit, name in zip(units, names, strict=True):
        rows = part_rows(out / name, unit, settings=settings)
        if rows is None:
            bad.append(unit)
        else:
            outcome.parts += 1
            outcome.rows += rows
    if bad and not outcome.error:
        outcome.error = (f"{len(bad)} of {len(units)} units have no complete output part (e.g. {bad[0].key}); "
                         "re-run the same command to redo them")
    _record_run(out, prefix, settings, completed=not outcome.error)
