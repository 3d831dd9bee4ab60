"""``seqstore verify``: does HBase hold exactly the valid events of an input?

For every user, the input's distinct valid events (validated and identified exactly as the
writer does; a row repeating an event is counted in ``repeated_rows_in_input``) and the
table's stored events are reduced to a count and an order-independent checksum (the sum
of event ids mod 2**64). Users whose count or checksum differ are then
compared event by event to count ``events_missing`` and ``events_extra``.

Tables with retention (``ttl_days``, ``max_events_per_user``) legitimately hold fewer events
than their input; verify reports those as missing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ray_jobs.units import plan
from store import SequenceTable, keys
from store.connection import idl
from store.scanning import scan_results
from store.table import EVENTS
from store.validate import conform
from store.writer import event_coordinates

MASK = 2**64 - 1
Tally = dict[bytes, list[int]]  # user prefix -> [count, checksum]


@dataclass
class VerifyReport:
    users_checked: int = 0
    users_mismatched: int = 0
    events_expected: int = 0
    events_found: int = 0
    events_missing: int = 0
    events_extra: int = 0
    repeated_rows_in_input: int = 0
    mismatched_users: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.users_mismatched == 0

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok, "mismatched_users": self.mismatched_users[:20]}


def _input_events(input_path: str, table: SequenceTable,
                  only: set[bytes] | None = None) -> Iterator[tuple[bytes, int]]:
    """``(user prefix, event_id)`` of every valid input row (optionally of some users only)."""
    fs, units = plan(input_path)
    for path in sorted({u.path for u in units}):
        with fs.open_input_file(path) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=20_000):
                batch, verdicts = conform(batch, table.spec.schema)
                values, identities = table.codec.encode(batch)
                sizes = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
                valid = verdicts.valid & (sizes <= table.spec.max_payload_bytes)
                for _, prefix, _, eid in event_coordinates(batch, valid, identities, table.spec.salt_buckets):
                    if only is None or prefix in only:
                        yield prefix, eid


def _stored_events(table: SequenceTable, start: bytes, stop: bytes) -> Iterator[tuple[bytes, int]]:
    t = idl()
    scan = t.TScan(startRow=start, stopRow=stop, columns=[t.TColumn(family=EVENTS)],
                   batchSize=1_000, filterString=b"KeyOnlyFilter()")
    for r in scan_results(table.pool, table.name_bytes, scan, 100):  # at most 100k cells per call
        prefix = r.row[: -keys.BUCKET_LEN]
        for cv in r.columnValues:
            yield prefix, keys.parse_qualifier(cv.qualifier)[1]


def _tally(pairs: Iterator[tuple[bytes, int]], into: Tally) -> Tally:
    for prefix, eid in pairs:
        entry = into.get(prefix)
        if entry is None:
            into[prefix] = [1, eid]
        else:
            entry[0] += 1
            entry[1] = (entry[1] + eid) & MASK
    return into


def _expected(input_path: str, table: SequenceTable) -> tuple[Tally, int]:
    """Tally of the input's distinct valid events, and how many rows were repeats of an event.

    The same event delivered twice has one identity and is stored once, so repeats are
    expected to collapse; they are counted, not flagged.
    """
    prefixes: dict[bytes, int] = {}
    user_parts: list[np.ndarray] = []
    id_parts: list[np.ndarray] = []
    users: list[int] = []
    ids: list[int] = []
    for prefix, eid in _input_events(input_path, table):
        users.append(prefixes.setdefault(prefix, len(prefixes)))
        ids.append(eid)
        if len(ids) >= 1_000_000:
            user_parts.append(np.array(users, dtype=np.int64))
            id_parts.append(np.array(ids, dtype=np.uint64))
            users, ids = [], []
    user_parts.append(np.array(users, dtype=np.int64))
    id_parts.append(np.array(ids, dtype=np.uint64))
    u, e = np.concatenate(user_parts), np.concatenate(id_parts)
    order = np.lexsort((e, u))
    u, e = u[order], e[order]
    distinct = np.r_[True, (u[1:] != u[:-1]) | (e[1:] != e[:-1])] if len(u) else np.array([], dtype=bool)
    u, e = u[distinct], e[distinct]
    names = list(prefixes)
    tally: Tally = {}
    if len(u):
        starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
        counts = np.diff(np.r_[starts, len(u)])
        sums = np.add.reduceat(e, starts)  # uint64 arithmetic wraps: the sum is mod 2**64
        for s, c, total in zip(starts.tolist(), counts.tolist(), sums.tolist(), strict=True):
            tally[names[int(u[s])]] = [c, int(total)]
    return tally, int((~distinct).sum())


def verify(input_path: str, table: SequenceTable, *, on_progress: Callable[[str], None] | None = None) -> VerifyReport:
    """Compare the input's valid events with what the table stores; see the module docstring."""
    say = on_progress or (lambda _m: None)
    say("reading input")
    expected, repeats = _expected(input_path, table)
    say("scanning table")
    salts = table.spec.salt_buckets
    ranges = [(bytes((s,)), bytes((s + 1,)) if s < 255 else b"") for s in range(salts)]
    with ThreadPoolExecutor(max_workers=table.pool.size) as ex:
        parts = list(ex.map(lambda r: _tally(_stored_events(table, *r), {}), ranges))
    found: Tally = {k: v for part in parts for k, v in part.items()}
    report = VerifyReport(users_checked=len(set(expected) | set(found)),
                          events_expected=sum(v[0] for v in expected.values()),
                          events_found=sum(v[0] for v in found.values()), repeated_rows_in_input=repeats)
    bad = {u for u in set(expected) | set(found) if expected.get(u) != found.get(u)}
    report.users_mismatched = len(bad)
    if bad:
        say(f"comparing {len(bad)} users event by event")
        want: dict[bytes, set[int]] = defaultdict(set)
        for prefix, eid in _input_events(input_path, table, only=bad):
            want[prefix].add(eid)
        for prefix in sorted(bad):
            have = {eid for _, eid in _stored_events(table, prefix, keys.prefix_end(prefix))}
            report.events_missing += len(want[prefix] - have)
            report.events_extra += len(have - want[prefix])
            report.mismatched_users.append(keys.parse_row_key(prefix + bytes(8))[1].decode("utf-8", "replace"))
    return report
