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

from store.format.chunk import PendingIds, chunk_key, chunk_schema, decode_chunks_deferred, first_qualifier_before
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
    Only the found events are sure to have their ``event_id``: those of chunks without stored
    ids are computed for them alone (:class:`~store.format.chunk.PendingIds`).
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
        self._ids_left: list[PendingIds | None] = []  # per round: the ids not computed yet
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
            # A user's first round may stop decoding where its one request is covered; a later
            # round (that one was not) decodes all it got, so every round makes progress.
            alone = [requests[pending[u][0]].hi if round_id == start_round and len(pending[u]) == 1
                     and self.types is None else None for u in users]
            events, runs, ids_left = self._decode(results, [limits[u] for u in users], alone)
            if ids_left is not None and any(requests[i].mark is not None for u in users for i in pending[u]):
                events, ids_left = ids_left.fill(events, None), None  # cuts at a watermark compare ids
            cols = Columns.of(events, self.types)
            self.tables.append(events)
            self._ids_left.append(ids_left)
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
        self._fill_ids(start_round, indices)

    def _fill_ids(self, start_round: int, indices: Sequence[int]) -> None:
        """Compute the ids left to compute (:class:`~store.format.chunk.PendingIds`) of the
        events found for ``indices`` in the rounds from ``start_round`` on: only those."""
        found: dict[int, list[np.ndarray]] = {}
        for i in indices:
            if i in self.found and self.found[i][0] >= start_round:
                found.setdefault(self.found[i][0], []).append(self.found[i][1])
        for round_id, picks in found.items():
            ids_left = self._ids_left[round_id]
            if ids_left is not None:
                self.tables[round_id] = ids_left.fill(self.tables[round_id], np.concatenate(picks))

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

    def _enough(self, cells: list[Any], hi: int) -> int:
        """How many of a run's chunks (newest first) hold ``max_len`` events wholly before
        ``hi``: a request before ``hi`` is covered by them (unless retention or a watermark
        hides some of them: then the next round reads further), so the rest are not decoded."""
        held = 0
        for k, cv in enumerate(cells):
            key = chunk_key(cv.qualifier, cv.timestamp)
            if key.newest_ts < hi:
                held += key.events
                if held >= self.max_len:
                    return k + 1
        return len(cells)

    def _get_multiple(self, gets: list[Any]) -> list[Any]:
        return get_multiple(self.table.pool, self.table.name_bytes, gets, per_call=GETS_PER_CALL,
                            executor=self.executor)

    def _decode(self, results: list[Any], limits: list[int], alone: list[int | None]
                ) -> tuple[pa.Table, list[_Run], PendingIds | None]:
        """All runs' events in one table, per run ``(start, end, oldest_ts of its last chunk,
        whether it is the end of the user's chunks)``, and the ids not computed yet.

        ``alone[j]``: the ``hi`` of user ``j``'s one request (no type filter), whose run is
        decoded only as far as :meth:`_enough` chunks; None: the whole run."""
        versions = {s.version: s for s in self.table.versions}
        values: list[bytes] = []
        rows: list[bytes] = []
        shape = []
        for result, limit, hi in zip(results, limits, alone, strict=True):
            cells = [cv for cv in result.columnValues or [] if cv.family == CHUNKS]
            exhausted = len(cells) < limit
            if hi is not None:
                enough = self._enough(cells, hi)
                exhausted = exhausted and enough == len(cells)
                cells = cells[:enough]
            values.extend(cv.value for cv in cells)
            rows.extend([result.row] * len(cells))
            oldest = chunk_key(cells[-1].qualifier, cells[-1].timestamp).oldest[0] if cells else None
            shape.append((len(cells), oldest, exhausted))
        events, counts, ids_left = decode_chunks_deferred(values, versions, self.table.codec.current, rows)
        runs: list[_Run] = []
        offset = done = 0
        for n, oldest, exhausted in shape:
            size = sum(counts[done : done + n])
            runs.append((offset, offset + size, oldest, exhausted))
            offset += size
            done += n
        return events, runs, ids_left
