"""Reading the chunk tier: runs of users' chunks, many users per call, cut on arrays.

A *run* is what one get of a user's row returns: the user's chunks from the one that may hold
events before ``hi`` back in time (a ``ColumnRangeFilter`` from
:func:`~store.format.chunk.first_qualifier_before`), at most ``limit`` of them (``storeLimit``).
Gets of many users go in one ``getMultiple``; a user with several requests (e.g. a training
export's labels) is served by one run from its newest request while that run covers the
others. The first get of a user also returns its metadata cells (raw-tier flag, watermark):
one row-atomic read (:meth:`ChunkRuns.first_gets`).

A run *covers* a request when it holds every event the request can see: it reached the
request's ``hi``, and it either holds ``max_len`` visible events below it, or reaches below
the request's ``lo``, or is the end of the user's chunks. Requests not covered get another
run in the next round, from their own ``hi`` and with four times the limit if the last run
already reached it, so rounds are few and memory stays bounded by what a request needs.

Cutting a request out of a run never loops over events: a run's events are sorted newest
first (chunks are disjoint and each is sorted), so ``hi``, ``lo`` and the trim watermark
are binary searches (:func:`store.format.visibility.cut`), an event-type filter one mask.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from store.format.chunk import chunk_key, chunk_schema, decode_chunks, first_qualifier_before
from store.format.keys import CHUNKS, META
from store.format.visibility import Columns, cut
from store.io.calls import columns_from, family_or, get_multiple
from store.io.connection import idl

if TYPE_CHECKING:
    from store.table.handle import TableHandle

UNFILTERED_WITHIN_MS = 3_600_000
GETS_PER_CALL = 256  # the reader's slices hold at most this many users: one call per round
_Run = tuple[int, int, int | None, bool]  # start, end, oldest_ts of the last chunk, end of the user's chunks


@dataclass(slots=True)
class Request:
    """One request as the chunk tier sees it (bounds already include window, TTL and mark)."""

    user: int  # index into the call's user prefixes
    hi: int  # exclusive upper bound on event_ts
    lo: int  # inclusive lower bound
    mark: tuple[int, int] | None


class ChunkRuns:
    """The runs fetched for one call; :meth:`fetch` serves all requests, round by round.

    After :meth:`fetch`, :attr:`tables` holds each round's decoded events and
    ``found[i] = (round, indices)`` the cut of request ``i`` (indices into that round's table).
    """

    def __init__(self, table: TableHandle, executor: ThreadPoolExecutor, max_len: int,
                 types: set[str] | None) -> None:
        self.table = table
        self.executor = executor
        self.max_len = max_len
        self.types = types
        self.t = idl()
        self.schema = chunk_schema(table.codec.current)
        chunk_events = table.spec.chunk_events or 2
        # Chunks hold chunk_events/2..chunk_events events; the newest is often smaller.
        self.first_limit = math.ceil(max_len / (chunk_events / 2)) + 1
        self.now_ms = int(time.time() * 1000)
        self.tables: list[pa.Table] = []
        self.found: dict[int, tuple[int, np.ndarray]] = {}

    def first_gets(self, prefixes: Sequence[bytes], his: Sequence[int], meta: Sequence[bytes]) -> list[Any]:
        """Round one for every user, with the user's ``meta`` cells (family ``m``) in the same
        get: a row-atomic read of the flags, the watermark and the newest chunks before each
        user's highest ``hi``. Pass the results to :meth:`fetch` as ``first``."""
        columns = [self.t.TColumn(family=META, qualifier=q) for q in meta]
        return self._get_multiple([self._get(p, hi, self.first_limit, columns, first=True)
                                   for p, hi in zip(prefixes, his, strict=True)])

    def fetch(self, prefixes: Sequence[bytes], requests: Sequence[Request], indices: Sequence[int],
              first: Sequence[Any] | None = None) -> None:
        """Find a covering run for each of ``requests[i]``, ``i`` in ``indices``; ``first``: the
        results of :meth:`first_gets` for round one (else round one is fetched here)."""
        pending: dict[int, list[int]] = {}
        for i in sorted(indices, key=lambda i: -requests[i].hi):
            r = requests[i]
            if r.hi > r.lo:
                pending.setdefault(r.user, []).append(i)
        limits = dict.fromkeys(pending, self.first_limit)
        start_round = len(self.tables)
        while pending:
            users = list(pending)
            round_id = len(self.tables)
            if first is not None:
                results = [first[u] for u in users]
                first = None
            else:
                results = self._get_multiple([self._get(prefixes[u], requests[pending[u][0]].hi, limits[u],
                                                        first=round_id == start_round) for u in users])
            events, runs = self._decode(results, [limits[u] for u in users])
            cols = Columns.of(events, self.types)
            self.tables.append(events)
            left: dict[int, list[int]] = {}
            for u, (start, end, oldest, exhausted) in zip(users, runs, strict=True):
                rest = []
                for i in pending[u]:
                    r = requests[i]
                    idx = cut(cols, start, end, r.hi, r.lo, r.mark, self.max_len)
                    reached = exhausted or (oldest is not None and oldest < r.hi)
                    if reached and (exhausted or len(idx) >= self.max_len or (oldest is not None and oldest < r.lo)):
                        self.found[i] = (round_id, idx)
                    else:
                        rest.append(i)
                if rest:
                    top_reached = oldest is not None and oldest < requests[rest[0]].hi
                    limits[u] = limits[u] * 4 if top_reached else self.first_limit
                    left[u] = rest
            pending = left

    def _get(self, prefix: bytes, hi: int, limit: int, meta: list[Any] | None = None, *, first: bool = False) -> Any:
        """A get of the user's newest ``limit`` chunks that may hold events before ``hi``.

        No time range: it would hide the ``m`` cells, and ``limit`` already bounds the run.
        In a user's ``first`` get for a recent ``hi`` (within :data:`UNFILTERED_WITHIN_MS` of
        the clock: batch scoring "as of now"), no filter either: chunks from ``hi`` on hold only
        events of the last moments, so the newest chunks are nearly always the ones wanted, and
        the server skips a filter on every cell (a quarter of its time per get, measured). A run
        holding only newer chunks does not reach ``hi``; the next round (never ``first``) filters.
        Either way the result is the same; only the number of rounds differs."""
        t = self.t
        chunks = None
        if not first or hi < self.now_ms - UNFILTERED_WITHIN_MS:
            chunks = columns_from(first_qualifier_before(hi))
            if meta:  # the filter applies to every family: let the m cells through
                chunks = family_or(META, chunks)
        return t.TGet(row=prefix, columns=[t.TColumn(family=CHUNKS), *(meta or [])], maxVersions=1,
                      storeLimit=max(limit, len(meta or [])), filterString=chunks)

    def _get_multiple(self, gets: list[Any]) -> list[Any]:
        return get_multiple(self.table.pool, self.table.name_bytes, gets, per_call=GETS_PER_CALL,
                            executor=self.executor)

    def _decode(self, results: list[Any], limits: list[int]) -> tuple[pa.Table, list[_Run]]:
        """All runs' events in one table, and per run ``(start, end, oldest_ts of its last
        chunk, whether it is the end of the user's chunks)``."""
        versions = {s.version: s for s in self.table.versions}
        values: list[bytes] = []
        shape = []
        for result, limit in zip(results, limits, strict=True):
            cells = [cv for cv in result.columnValues or [] if cv.family == CHUNKS]
            values.extend(cv.value for cv in cells)
            oldest = chunk_key(cells[-1].qualifier, cells[-1].timestamp).oldest[0] if cells else None
            shape.append((len(cells), oldest, len(cells) < limit))
        events, counts = decode_chunks(values, versions, self.table.codec.current)
        runs: list[_Run] = []
        offset = done = 0
        for n, oldest, exhausted in shape:
            size = sum(counts[done : done + n])
            runs.append((offset, offset + size, oldest, exhausted))
            offset += size
            done += n
        return events, runs
