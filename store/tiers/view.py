"""The tier view: what reads see of a table's two tiers, for a batch of requests.

A user's compacted events are columnar chunks in the user's own row, read for many users per
``getMultiple`` (:mod:`store.tiers.chunk_runs`) and cut on arrays; events written since the user's
last compaction are per-event cells, scanned per request (:mod:`store.tiers.raw_scans`) only for
users whose raw-tier flag is set. :meth:`TierView.gather` merges the two, each event once by
the rules of :mod:`store.format.visibility`. The phases, per user:

1. one row-atomic get of the user's row: its raw-tier flag, its watermark and its newest
   chunks before ``as_of`` (for many users per ``getMultiple``);
2. unflagged users: more chunks if the first ones do not cover a request (rare);
3. flagged users: the raw scan, then their chunks read again;
4. on tables with ``max_events_per_user``: the watermarks read again.

A read racing a compaction finds each event raw (flag set, step 3), compacted, or both
(deduplicated, the raw copy winning), never neither — by the protocol of :mod:`store.tiers.user_meta`
(chunks and flag change together; raw cells go only after) and this order of reads: an
unflagged user's chunks in step 1 hold everything compacted before; a flagged user's chunks in
step 3 are read after its raw cells. A read racing a trim returns the kept events only: the
watermark is read again after the scan (a trim records it before deleting).

The reader (:mod:`store.reader`) shapes what the view gathers into sequences; retention
(:mod:`store.tiers.retention`) trims below what it gathers, so trimming removes exactly what reads
would otherwise return.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from store.format import keys
from store.format.visibility import Columns, Mark, bounds, kept, newest_first_once
from store.tiers import user_meta
from store.tiers.chunk_runs import ChunkRuns, Request
from store.tiers.raw_scans import RawScans, events_table

if TYPE_CHECKING:
    from store.table.handle import TableHandle


@dataclass
class Gathered:
    """What :meth:`TierView.gather` found for some requests."""

    events: pa.Table  # every event read, in the chunk tier's columns (current schema); event_id sure at picks only
    picks: list[np.ndarray]  # per request: indices into ``events``, newest first, at most max_len
    users: list[str | bytes]  # the distinct users, in first-seen order
    marks: dict[int, Mark]  # the watermark of each user that has one, by position in ``users``


class TierView:
    """How one call reads a table: its options, and :meth:`gather` for a batch of requests.

    Args:
        table: the table.
        max_len: at most this many events per request (the newest visible ones).
        window_ms: only events with ``event_ts >= as_of - window_ms``.
        types: only events whose ``event_type`` is one of these (None: all).
        inclusive: make an event exactly at ``as_of`` visible.
    """

    def __init__(self, table: TableHandle, *, max_len: int, window_ms: int | None = None,
                 types: set[str] | None = None, inclusive: bool = False) -> None:
        self.table = table
        self.max_len = max_len
        self.window_ms = window_ms
        self.types = types
        self.inclusive = inclusive
        self.tiered = table.spec.chunk_events is not None
        self.trimmed = table.spec.max_events_per_user is not None
        self.ttl_floor = table.spec.ttl_floor(int(time.time() * 1000))
        # HBase applies the TTL to raw cells itself; the chunk tier's events are cut by it here.
        self._floor = self.ttl_floor if self.tiered else None

    def gather(self, ex: ThreadPoolExecutor, users: Sequence[str | bytes], as_of: Sequence[int]) -> Gathered:
        """The visible events of each request ``(users[i], as_of[i])``; HBase calls run on ``ex``."""
        table = self.table
        unique = list(dict.fromkeys(users))
        position = {u: j for j, u in enumerate(unique)}
        prefixes = [keys.user_prefix(u, table.spec.salt_buckets) for u in unique]
        runs = ChunkRuns(table, ex, self.max_len, self.types)
        first = None
        if self.tiered:
            his = [0] * len(unique)
            for u, ts in zip(users, as_of, strict=True):
                his[position[u]] = max(his[position[u]], self._bounds(ts, None)[0])
            first = runs.first_gets(prefixes, his, user_meta.READ_CELLS if self.trimmed else (user_meta.RAW_FLAG,))
            meta = user_meta.parse_gets(first)
            flagged, before = meta.flagged, meta.marks
        else:
            flagged = set(range(len(unique)))
            before = user_meta.watermarks(table, prefixes, executor=ex) if self.trimmed else {}
        reqs = []
        for u, ts in zip(users, as_of, strict=True):
            j = position[u]
            mark = before.get(j)
            hi, lo = self._bounds(ts, mark)
            reqs.append(Request(j, hi, lo, mark))
        raw_of = [i for i, r in enumerate(reqs) if r.user in flagged]
        if self.tiered:
            runs.fetch(prefixes, reqs, [i for i, r in enumerate(reqs) if r.user not in flagged], first)
        # Flagged users: the raw tier first, then their chunks again. A compaction in between
        # wrote its chunks before deleting the raw cells they replace: they are in this get.
        scans = RawScans(table, self.max_len, self.types)
        raw_events = list(ex.map(lambda i: scans.read(users[i], reqs[i].hi, reqs[i].lo, reqs[i].mark), raw_of))
        if self.tiered and raw_of:
            runs.fetch(prefixes, reqs, raw_of)
        after = user_meta.watermarks(table, prefixes, executor=ex) if self.trimmed else before
        # All candidate events in one table: each round's chunk events, then the raw events.
        raw_flat = [e for events in raw_events for e in events]
        tables = [*runs.tables, events_table(table, raw_flat)]
        offsets = np.cumsum([0, *(t.num_rows for t in tables)])
        events = pa.concat_tables(tables).combine_chunks()
        cols = Columns.of(events, None)
        candidates: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(reqs)
        for i, (round_id, idx) in runs.found.items():
            candidates[i] = idx + offsets[round_id]
        raw_start = int(offsets[-2])
        for i, found in zip(raw_of, raw_events, strict=True):
            raw_idx = np.arange(raw_start, raw_start + len(found), dtype=np.int64)
            raw_start += len(found)
            candidates[i] = _merge(cols, candidates[i], raw_idx) if self.tiered else raw_idx
        picks = []
        for i, r in enumerate(reqs):
            idx = candidates[i]
            mark = after.get(r.user)
            if mark is not None and mark != r.mark and len(idx):
                # A trim ran meanwhile: it recorded this watermark before deleting, so what it
                # deleted lies below it. Drop it all (no "kept, gap, older trimmed").
                idx = idx[kept(-cols.neg_ts[idx], cols.eid[idx], mark, None)]
            picks.append(idx[: self.max_len])
        return Gathered(events, picks, unique, after)

    def _bounds(self, as_of: int, mark: Mark | None) -> tuple[int, int]:
        return bounds(as_of, inclusive=self.inclusive, window_ms=self.window_ms, floor=self._floor, mark=mark)


def _merge(cols: Columns, chunk_idx: np.ndarray, raw_idx: np.ndarray) -> np.ndarray:
    """Both tiers' candidates of one request, newest first, each event once (the raw copy wins)."""
    if not len(raw_idx):
        return chunk_idx
    if not len(chunk_idx):
        return raw_idx
    idx = np.concatenate([raw_idx, chunk_idx])
    merged: np.ndarray = idx[newest_first_once(-cols.neg_ts[idx], cols.eid[idx])]
    return merged
