"""The audit of a row range: every stored copy of every event, and what reads return of them.

:func:`stored_copies` streams every copy a table holds of the events of users whose rows lie in
``[start, stop)``: each raw cell (family ``e`` of the user's bucket rows) and each event of
each chunk cell (family ``c`` of the user's own row), with its tier, the user's raw-tier flag
and a digest of its payload (:func:`store.format.digests.content_digests`: the same whatever schema
version encoded it). Copies a read never returns by rule are left out: those
below the user's trim watermark and those past the table's TTL (:meth:`TableSpec.ttl_floor`).

:func:`resolve` then applies the read path's rules to all copies of some events — it needs
every copy of an event together, which a partition by event gives — and says what reads
return and what is wrong, by the protocol of :mod:`store.tiers.user_meta`:

* a flagged user's event: its raw copy if it has one (the raw copy wins), else its chunk copy;
* an unflagged user's event: its chunk copies only. A raw copy of it that no chunk copy with
  the same content matches is *unread* (``raw_unread``): an acknowledged write reads never
  return (a lost flag), or a correction they do not see. A raw copy equal to a chunk copy is a
  harmless leftover of a compaction stopped before its raw deletes;
* an event in two chunks is *duplicated* (``events_duplicated``): reads return it twice and
  cut the user's history in the wrong place.

Memory: :func:`stored_copies` holds a scan page and one chunk at a time, plus the flag and
watermark of each user of the range; :func:`resolve` the copies it is given. Exact on a table
at rest. Beside a running compaction an event may move from the raw tier to a chunk between
the two scans and be missed; beside writers, new events may or may not be seen.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.format import keys
from store.format.chunk import decode_chunks
from store.format.digests import content_digests
from store.format.keys import CHUNKS, EVENTS
from store.format.visibility import Mark, kept
from store.io.connection import idl
from store.io.scanning import scan_results
from store.tiers import user_meta
from store.tiers.raw_scans import events_table

if TYPE_CHECKING:
    from store.table.handle import TableHandle

RAW_CELLS_PER_RESULT = 1_000
RAW_RESULTS_PER_CALL = 20  # at most 20k cells per call
CHUNKS_PER_RESULT = 16
CHUNK_RESULTS_PER_CALL = 16
CHUNKS_PER_DECODE = 256
RAW, CHUNK = 0, 1
_MAX = np.uint64(keys.MAX_U64)
COPIES = pa.schema([pa.field("user", pa.binary()), pa.field("eid", pa.uint64()), pa.field("digest", pa.uint64()),
                    pa.field("tier", pa.uint8()), pa.field("flagged", pa.bool_())])


class Copies(NamedTuple):
    """Stored copies of some events of one user, all from one tier."""

    prefix: bytes  # the user's row prefix (salt | len | user)
    event_ts: np.ndarray  # int64
    event_id: np.ndarray  # uint64
    digest: np.ndarray  # uint64: content_digests of the copies
    tier: int  # RAW or CHUNK
    flagged: bool  # the user's raw-tier flag is set

    def table(self) -> pa.Table:
        """The copies as rows of :data:`COPIES`."""
        n = len(self.event_id)
        return pa.table([pa.array([self.prefix] * n, pa.binary()), pa.array(self.event_id, pa.uint64()),
                         pa.array(self.digest, pa.uint64()), pa.array(np.full(n, self.tier, np.uint8)),
                         pa.array(np.full(n, self.flagged))], schema=COPIES)


def stored_copies(table: TableHandle, start: bytes, stop: bytes) -> Iterator[Copies]:
    """Every stored copy of the events of users whose rows lie in ``[start, stop)`` (see the
    module docstring), raw copies first, then chunk copies, each in row-key order.

    Raises:
        SchemaError: a cell names a schema version the table handle does not know.
        StoreUnavailableError, HBaseError: as raised by the connection. Reads only.
    """
    floor = table.spec.ttl_floor(int(time.time() * 1000))
    flags, marks = user_meta.scan_meta(table, start, stop)
    for prefix, ts, eid, digest in _raw_blocks(table, start, stop):
        yield _visible(Copies(prefix, ts, eid, digest, RAW, prefix in flags), marks.get(prefix), floor)
    if table.spec.chunk_events is not None:
        for prefix, ts, eid, digest in _chunk_blocks(table, start, stop):
            yield _visible(Copies(prefix, ts, eid, digest, CHUNK, prefix in flags), marks.get(prefix), floor)


@dataclass
class Resolved:
    """What :func:`resolve` found in some copies."""

    returned: pa.Table  # (user, eid, digest): one row per copy a read returns
    events_duplicated: int  # extra chunk copies of events held in more than one chunk
    raw_unread: int  # raw copies reads never return (see the module docstring)
    bad_users: pa.Array  # binary: users with a duplicated event or an unread raw copy


def resolve(copies: pa.Table) -> Resolved:
    """Apply the read path's rules to ``copies`` (rows of :data:`COPIES`, holding every copy of
    each of their events): what reads return, and the copies they get wrong. Pure."""
    if copies.num_rows == 0:
        return Resolved(copies.select(["user", "eid", "digest"]), 0, 0, pa.array([], pa.binary()))
    codes = np.asarray(pc.dictionary_encode(copies.column("user")).combine_chunks().indices, dtype=np.int64)
    eid = np.asarray(copies.column("eid"), dtype=np.uint64)
    digest = np.asarray(copies.column("digest"), dtype=np.uint64)
    raw = np.asarray(copies.column("tier"), dtype=np.uint8) == RAW
    flag = np.asarray(copies.column("flagged"), dtype=bool)
    order = np.lexsort((~raw, eid, codes))  # by event, its raw copy first
    codes, eid, digest, raw, flag = codes[order], eid[order], digest[order], raw[order], flag[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (codes[1:] != codes[:-1]) | (eid[1:] != eid[:-1])
    group = np.cumsum(new) - 1
    firsts = np.flatnonzero(new)
    has_raw = raw[firsts]
    raw_digest = digest[firsts]
    chunks = np.bincount(group, weights=~raw).astype(np.int64)
    same_as_raw = ~raw & has_raw[group] & (digest == raw_digest[group])
    matched = np.bincount(group, weights=same_as_raw).astype(np.int64) > 0
    group_flag = flag[firsts]
    returned = np.where(raw, group_flag[group], ~(group_flag[group] & has_raw[group]))
    unread = has_raw & ~group_flag & ~matched
    duplicated = np.maximum(chunks - 1, 0)
    users = copies.column("user").take(pa.array(order))
    bad = unread | (duplicated > 0)
    return Resolved(
        returned=pa.table({"user": users.filter(pa.array(returned)), "eid": pa.array(eid[returned], pa.uint64()),
                           "digest": pa.array(digest[returned], pa.uint64())}),
        events_duplicated=int(duplicated.sum()),
        raw_unread=int(unread.sum()),
        bad_users=pc.unique(users.take(pa.array(firsts[bad])).combine_chunks()) if bad.any()
        else pa.array([], pa.binary()))


_Block = tuple[bytes, np.ndarray, np.ndarray, np.ndarray]


def _raw_blocks(table: TableHandle, start: bytes, stop: bytes) -> Iterator[_Block]:
    t = idl()
    scan = t.TScan(startRow=start, stopRow=stop, columns=[t.TColumn(family=EVENTS)], maxVersions=1,
                   batchSize=RAW_CELLS_PER_RESULT)
    decode = table.codec.decode
    for result in scan_results(table.pool, table.name_bytes, scan, RAW_RESULTS_PER_CALL):
        cells = result.columnValues
        if not cells:
            continue
        quals = np.frombuffer(b"".join(cv.qualifier for cv in cells), dtype=">u8").reshape(-1, 2)
        ts = (_MAX - quals[:, 0].astype(np.uint64)).astype(np.int64)
        eid = _MAX - quals[:, 1].astype(np.uint64)
        events = events_table(table, [(0, 0, decode(cv.value)) for cv in cells])
        yield result.row[: -keys.BUCKET_LEN], ts, eid, content_digests(events, table.codec.current.payload)


def _chunk_blocks(table: TableHandle, start: bytes, stop: bytes) -> Iterator[_Block]:
    """Each row's chunk events; chunks are decoded and digested :data:`CHUNKS_PER_DECODE` at a
    time (one Arrow call each), so the cost per chunk is its bytes, not a fixed overhead."""
    t = idl()
    scan = t.TScan(startRow=start, stopRow=stop, columns=[t.TColumn(family=CHUNKS)], maxVersions=1,
                   batchSize=CHUNKS_PER_RESULT)
    rows: list[bytes] = []
    values: list[bytes] = []
    for result in scan_results(table.pool, table.name_bytes, scan, CHUNK_RESULTS_PER_CALL):
        for cv in result.columnValues or []:
            rows.append(result.row)
            values.append(cv.value)
        if len(values) >= CHUNKS_PER_DECODE:
            yield from _decoded(table, rows, values)
            rows, values = [], []
    yield from _decoded(table, rows, values)


def _decoded(table: TableHandle, rows: list[bytes], values: list[bytes]) -> Iterator[_Block]:
    """The events of chunk ``values`` (of ``rows``, in row order), one block per row."""
    if not values:
        return
    current = table.codec.current
    events, counts = decode_chunks(values, {s.version: s for s in table.versions}, current, rows)
    ts = np.asarray(events.column("event_ts").to_numpy(), dtype=np.int64)
    eid = np.asarray(events.column("event_id").to_numpy(), dtype=np.uint64)
    digest = content_digests(events, current.payload)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    first = 0
    for k in range(1, len(rows) + 1):
        if k == len(rows) or rows[k] != rows[first]:
            a, b = int(bounds[first]), int(bounds[k])
            yield rows[first], ts[a:b], eid[a:b], digest[a:b]
            first = k



def _visible(copies: Copies, mark: Mark | None, floor: int | None) -> Copies:
    """``copies`` without those below the watermark or past the TTL floor."""
    if mark is None and floor is None:
        return copies
    keep = kept(copies.event_ts, copies.event_id, mark, floor)
    return copies._replace(event_ts=copies.event_ts[keep], event_id=copies.event_id[keep], digest=copies.digest[keep])
