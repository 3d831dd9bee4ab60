"""``seqstore verify``: does HBase hold exactly the valid events of an input?

Every valid input row (judged and identified by the writer's own
:func:`store.writer.validated_cells`, with the "now" the backfill recorded for its unit, so
the future-timestamp check is the writer's rule, not verify's clock) and every stored event
is reduced to ``(user prefix, event_id, content digest)``.
The table side is what reads return: every stored copy of every event, from both tiers, is
resolved by the read path's rules (:func:`store.tiers.stored_events.resolve`), so a table is checked
the same before and after compaction, and what reads would get wrong is found too:
``events_duplicated`` (an event held in two chunks: reads return it twice) and ``raw_unread``
(raw cells of a user whose raw-tier flag is clear, that no chunk holds with the same content:
acknowledged writes reads never return). Payloads are compared by digest: a stored event
whose content is none of the input's versions of it is counted in ``payload_mismatched``.
Each of these makes its user mismatched and the verification fail. Run it on a table at rest:
beside a running compaction an event moving between the tiers may be missed.
Both sides are spilled to temporary Arrow files, hash-partitioned by event (so one user's
long history spreads over all partitions), and compared one partition at a time: memory is
bounded by a partition (about ``partition_events`` events; partitions are sized from the
input, so a table much larger than its input makes them larger), never by the input or by a
user's history. The input's distinct events are compared with the stored ones
(``events_missing``, ``events_extra``); an input row repeating an event of the input is
counted in ``repeated_rows_in_input`` (the same event delivered twice is stored once). Users
(``users_checked``, ``users_mismatched``) are counted from second, per-user partitions.

Tables with retention (``ttl_days``, ``max_events_per_user``) legitimately hold fewer events
than their input; verify reports those as missing.
"""

from __future__ import annotations

import math
import tempfile
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_jobs.backfill import JOB, recorded_now
from ray_jobs.units import plan
from store import SequenceTable
from store.format import content_digests, keys
from store.tiers import COPIES, resolve

PARTITION_EVENTS = 2_000_000  # events per spill partition (about 40 MB of Arrow)
MAX_PARTITIONS = 256  # open spill files per side
BATCH_ROWS = 20_000
_EVENTS = pa.schema([pa.field("user", pa.binary()), pa.field("eid", pa.uint64()), pa.field("digest", pa.uint64())])
_USERS = pa.schema([pa.field("user", pa.binary())])
_MIX = np.uint64(0x9E3779B97F4A7C15)


class _Side:
    """One side of the comparison (the input or the table): its events and its users."""

    def __init__(self, directory: Path, name: str, partitions: int, schema: pa.Schema = _EVENTS) -> None:
        self.events = _Spill(directory, f"{name}-events", partitions, schema)
        self.users = _Spill(directory, f"{name}-users", partitions, _USERS)

    def add(self, rows: pa.Table) -> None:
        """Rows of the side's schema (``user`` and ``eid`` first), partitioned by event."""
        if not rows.num_rows:
            return
        users = rows.column("user").to_pylist()
        n = len(self.events.paths)
        crc = np.fromiter((zlib.crc32(u) for u in users), dtype=np.uint64, count=len(users))
        ids = np.asarray(rows.column("eid"), dtype=np.uint64)
        with np.errstate(over="ignore"):  # a hash: uint64 arithmetic wraps on purpose
            by_event = ((crc * _MIX) ^ ids) % np.uint64(n)
        self.events.add([c.combine_chunks() for c in rows.columns], by_event.astype(np.int64))
        distinct = list(dict.fromkeys(users))
        self.users.add([pa.array(distinct, pa.binary())], _user_partitions(distinct, n))

    def close(self) -> None:
        self.events.close()
        self.users.close()


def _user_partitions(users: list[bytes], n: int) -> np.ndarray:
    return np.fromiter((zlib.crc32(u) for u in users), dtype=np.int64, count=len(users)) % n


@dataclass
class VerifyReport:
    users_checked: int = 0
    users_mismatched: int = 0
    events_expected: int = 0
    events_found: int = 0
    events_missing: int = 0
    events_extra: int = 0
    events_duplicated: int = 0
    payload_mismatched: int = 0
    raw_unread: int = 0
    repeated_rows_in_input: int = 0
    mismatched_users: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.users_mismatched == 0 and self.events_duplicated == 0 and self.raw_unread == 0

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok, "mismatched_users": self.mismatched_users[:20]}


class _Spill:
    """Rows of ``schema`` written to one Arrow stream file per partition."""

    def __init__(self, directory: Path, name: str, partitions: int, schema: pa.Schema) -> None:
        self.paths = [directory / f"{name}-{p:03d}.arrow" for p in range(partitions)]
        self.schema = schema
        self._writers = [pa.ipc.new_stream(str(path), schema) for path in self.paths]
        self._lock = threading.Lock()

    def add(self, columns: list[pa.Array], parts: np.ndarray) -> None:
        """Append rows; ``parts`` holds each row's partition."""
        if not len(parts):
            return
        batch = pa.RecordBatch.from_arrays(columns, schema=self.schema)
        with self._lock:
            for p in np.unique(parts).tolist():
                self._writers[p].write_batch(batch.filter(pa.array(parts == p)))

    def close(self) -> None:
        for writer in self._writers:
            writer.close()

    def read(self, p: int) -> pa.Table:
        with pa.ipc.open_stream(str(self.paths[p])) as reader:
            return reader.read_all()


def _spill_input(input_path: str, table: SequenceTable, spill: _Side) -> None:
    """Spill every valid input row's coordinates, judged as the backfill judged its unit."""
    fs, units = plan(input_path)
    nows = recorded_now(table.job_records(JOB), units)
    for unit in units:
        now_ms = nows[unit.key]
        with fs.open_input_file(unit.path) as handle:
            for raw in pq.ParquetFile(handle).iter_batches(batch_size=BATCH_ROWS, row_groups=[unit.row_group]):
                cells = table.validated_cells(raw, now_ms=now_ms)
                coords = cells.coordinates()
                digests = content_digests(cells.batch.take(pa.array(coords.rows, pa.int64())),
                                          table.spec.schema.payload)
                spill.add(pa.table([coords.prefixes, pa.array(coords.ids, pa.uint64()),
                                    pa.array(digests, pa.uint64())], schema=_EVENTS))


def _spill_table(table: SequenceTable, spill: _Side) -> None:
    def one(span: tuple[bytes, bytes]) -> None:
        held: list[pa.Table] = []
        rows = 0
        for copies in table.stored_copies(*span):
            held.append(copies.table())
            rows += len(copies.event_id)
            if rows >= BATCH_ROWS:
                spill.add(pa.concat_tables(held))
                held, rows = [], 0
        if held:
            spill.add(pa.concat_tables(held))

    with ThreadPoolExecutor(max_workers=table.concurrency) as ex:
        list(ex.map(one, table.salt_ranges()))


def _compare_events(expected: pa.Table, copies: pa.Table, report: VerifyReport, bad_users: _Spill) -> None:
    """Fold one event partition's comparison into ``report``: the input's events against what
    reads return of the stored ``copies``; users of differing events go to ``bad_users``."""
    resolved = resolve(copies)
    found = resolved.returned
    report.events_duplicated += resolved.events_duplicated
    report.raw_unread += resolved.raw_unread
    distinct = expected.group_by(["user", "eid"]).aggregate([])
    report.repeated_rows_in_input += expected.num_rows - distinct.num_rows
    report.events_expected += distinct.num_rows
    report.events_found += found.num_rows
    found_keys = found.group_by(["user", "eid"]).aggregate([])
    both = distinct.append_column("in_input", pa.array(np.ones(distinct.num_rows, dtype=bool))).join(
        found_keys.append_column("in_table", pa.array(np.ones(found_keys.num_rows, dtype=bool))),
        keys=["user", "eid"], join_type="full outer")
    missing = pc.is_null(both.column("in_table"))
    extra = pc.is_null(both.column("in_input"))
    report.events_missing += int(pc.sum(missing).as_py() or 0)
    report.events_extra += int(pc.sum(extra).as_py() or 0)
    # A stored event whose content is none of the input's versions of it (the input may hold
    # several: a correction delivered with the same event_id).
    versions = expected.group_by(["user", "eid", "digest"]).aggregate([])
    checked = found.join(distinct, keys=["user", "eid"], join_type="left semi")
    wrong = checked.join(versions, keys=["user", "eid", "digest"], join_type="left anti")
    report.payload_mismatched += wrong.num_rows
    users = pc.unique(pa.chunked_array([both.filter(pc.or_(missing, extra)).column("user"), wrong.column("user"),
                                        resolved.bad_users], pa.binary())).to_pylist()
    bad_users.add([pa.array(users, pa.binary())], _user_partitions(users, len(bad_users.paths)))


def _count_users(expected: pa.Table, found: pa.Table, bad: pa.Table, report: VerifyReport) -> None:
    report.users_checked += len(pc.unique(pa.chunked_array([*expected.column("user").chunks,
                                                            *found.column("user").chunks], pa.binary())))
    mismatched = pc.unique(bad.column("user")) if bad.num_rows else pa.array([], pa.binary())
    report.users_mismatched += len(mismatched)
    for prefix in mismatched.to_pylist()[: max(0, 20 - len(report.mismatched_users))]:
        report.mismatched_users.append(keys.parse_row_key(prefix + bytes(8))[1].decode("utf-8", "replace"))


def verify(input_path: str, table: SequenceTable, *, on_progress: Callable[[str], None] | None = None,
           partition_events: int = PARTITION_EVENTS, spill_dir: Path | None = None) -> VerifyReport:
    """Compare the input's valid events with what the table stores; see the module docstring.

    Args:
        input_path: the Parquet input (file, directory, glob or URI), as given to backfill.
        table: the table to check.
        on_progress: called with a short message per phase.
        partition_events: events per spill partition: bounds memory (about 20 bytes per event
            plus the user id), at the cost of more temporary files.
        spill_dir: where the temporary files go (default: the system's temporary directory);
            they take about as much space as the input's user ids and event ids, and are removed.

    Raises:
        SeqStoreError: the input cannot be read. StoreUnavailableError, HBaseError: as raised
        by the connection. Reads only.
    """
    if partition_events <= 0:
        raise ValueError("'partition_events' must be > 0")
    say = on_progress or (lambda _m: None)
    _, units = plan(input_path)
    partitions = max(1, min(MAX_PARTITIONS, math.ceil(sum(u.num_rows for u in units) / partition_events)))
    report = VerifyReport()
    with tempfile.TemporaryDirectory(prefix="seqstore-verify-", dir=spill_dir) as tmp:
        say("reading input")
        expected = _Side(Path(tmp), "input", partitions)
        try:
            _spill_input(input_path, table, expected)
        finally:
            expected.close()
        say("scanning table")
        found = _Side(Path(tmp), "table", partitions, COPIES)
        try:
            _spill_table(table, found)
        finally:
            found.close()
        say(f"comparing {partitions} partition(s)")
        bad = _Spill(Path(tmp), "mismatched", partitions, _USERS)
        try:
            for p in range(partitions):
                _compare_events(expected.events.read(p), found.events.read(p), report, bad)
                # Give the join's memory back: allocators otherwise keep each partition's peak.
                pa.default_memory_pool().release_unused()
        finally:
            bad.close()
        for p in range(partitions):
            _count_users(expected.users.read(p), found.users.read(p), bad.read(p), report)
    report.mismatched_users.sort()
    return report
