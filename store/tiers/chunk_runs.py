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

With the table's chunk cache (:mod:`store.table.chunk_cache`), a user row the cache holds
chunks of is read *key-only* for its chunks (qualifiers and timestamps, the metadata cells
whole): the same row-atomic get, without the bytes. Its chunks the cache holds come from
memory; the others in one more get of exactly those cells. A chunk gone by then (a compaction
replaced it after the first get) sends the user back to one full get, row-atomic again, so
what a run holds is always one moment of the row, whoever supplies the bytes. Chunks decoded
from bytes are cached with every id computed.
"""

from __future__ import annotations

import functools
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
from store.io.calls import KEY_ONLY, all_of, columns_from, family_is, family_or, get_multiple
from store.io.connection import idl

if TYPE_CHECKING:
    from store.table.handle import TableHandle

UNFILTERED_WITHIN_MS = 3_600_000
GETS_PER_CALL = 256  # the reader's slices hold at most this many users: one call per round
_Run = tuple[int, int, int | None, bool]  # start, end, oldest_ts of the last chunk, end of the user's chunks
_Ask = tuple[bytes, int, int, list[Any] | None, bool]  # a run's get: prefix, hi, limit, meta columns, first


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
        self.cache = table.chunk_cache
        self.version = table.codec.current.version
        self._cached: dict[tuple[bytes, bytes, int], pa.Table] = {}  # chunks this call takes from the cache
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
        return self._runs([(p, hi, self.first_limit, columns, True) for p, hi in zip(prefixes, his, strict=True)])

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
                results = self._runs([(prefixes[u], requests[pending[u][0]].hi, limits[u], None,
                                       round_id == start_round) for u in users])
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

    def _runs(self, asks: Sequence[_Ask]) -> list[Any]:
        """The results of the runs' gets, in order; with the cache, a user row it holds chunks
        of is read key-only and its chunk values are completed (:meth:`_complete`)."""
        cache = self.cache
        keyed = [cache is not None and cache.holds(self.table.name, self.version, ask[0]) for ask in asks]
        results = self._get_multiple([self._get(*ask, keys_only=k) for ask, k in zip(asks, keyed, strict=True)])
        if any(keyed):
            self._complete(asks, results, keyed)
        return results

    def _complete(self, asks: Sequence[_Ask], results: list[Any], keyed: Sequence[bool]) -> None:
        """Give the key-only results their chunks: from the cache (kept in :attr:`_cached` for
        this call), else the cells' values from one more get; a user one of whose chunks is
        gone by then gets one full get instead, and its result is replaced by that one."""
        assert self.cache is not None
        t = self.t
        missing: dict[int, list[Any]] = {}  # result index -> its cells without a value
        for j, result in enumerate(results):
            if not keyed[j]:
                continue
            cells = [cv for cv in result.columnValues or [] if cv.family == CHUNKS]
            found = self.cache.get(self.table.name, self.version, result.row,
                                   [(cv.qualifier, cv.timestamp) for cv in cells])
            for cv, piece in zip(cells, found, strict=True):
                if piece is None:
                    missing.setdefault(j, []).append(cv)
                else:
                    self._cached[(result.row, cv.qualifier, cv.timestamp)] = piece
        if not missing:
            return
        order = list(missing)
        values = self._get_multiple([
            t.TGet(row=results[j].row, columns=[t.TColumn(family=CHUNKS, qualifier=cv.qualifier) for cv in missing[j]],
                   maxVersions=1) for j in order])
        again = []
        for j, got in zip(order, values, strict=True):
            by_key = {(cv.qualifier, cv.timestamp): cv.value for cv in got.columnValues or []}
            for cv in missing[j]:
                cv.value = by_key.get((cv.qualifier, cv.timestamp), b"")
            if not all(cv.value for cv in missing[j]):
                again.append(j)
        if again:
            full = self._get_multiple([self._get(*asks[j], keys_only=False) for j in again])
            for j, result in zip(again, full, strict=True):
                results[j] = result

    def _get(self, prefix: bytes, hi: int, limit: int, meta: list[Any] | None = None, first: bool = False, *,
             keys_only: bool = False) -> Any:
        """A get of the user's newest ``limit`` chunks that may hold events before ``hi``.

        No time range: it would hide the ``m`` cells, and ``limit`` already bounds the run.
        In a user's ``first`` get for a recent ``hi`` (within :data:`UNFILTERED_WITHIN_MS` of
        the clock: batch scoring "as of now"), no filter either: chunks from ``hi`` on hold only
        events of the last moments, so the newest chunks are nearly always the ones wanted, and
        the server skips a filter on every cell (a quarter of its time per get, measured). A run
        holding only newer chunks does not reach ``hi``; the next round (never ``first``) filters.
        Either way the result is the same; only the number of rounds differs.
        ``keys_only``: the chunks without their values (the metadata cells whole)."""
        t = self.t
        chunks = None
        if not first or hi < self.now_ms - UNFILTERED_WITHIN_MS:
            chunks = columns_from(first_qualifier_before(hi))
        if keys_only:
            chunks = _keys_only(chunks, bool(meta))
        elif meta and chunks:  # the filter applies to every family: let the m cells through
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
        fresh: list[tuple[bytes, tuple[bytes, int]]] = []  # the chunks decoded from values: row, key
        pieces: list[pa.Table | None] = []  # per chunk used: its cached events, or None (decoded)
        shape = []
        for result, limit, hi in zip(results, limits, alone, strict=True):
            cells = [cv for cv in result.columnValues or [] if cv.family == CHUNKS]
            exhausted = len(cells) < limit
            if hi is not None:
                enough = self._enough(cells, hi)
                exhausted = exhausted and enough == len(cells)
                cells = cells[:enough]
            for cv in cells:
                piece = None if cv.value else self._cached[(result.row, cv.qualifier, cv.timestamp)]
                pieces.append(piece)
                if piece is None:
                    values.append(cv.value)
                    rows.append(result.row)
                    fresh.append((result.row, (cv.qualifier, cv.timestamp)))
            oldest = chunk_key(cells[-1].qualifier, cells[-1].timestamp).oldest[0] if cells else None
            shape.append((len(cells), oldest, exhausted))
        events, counts, ids_left = decode_chunks_deferred(values, versions, self.table.codec.current, rows)
        if self.cache is not None:
            if ids_left is not None:
                events, ids_left = ids_left.fill(events, None), None
            starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).tolist()
            self.cache.put(self.table.name, self.version, events,
                           [(row, key, starts[k], counts[k]) for k, (row, key) in enumerate(fresh)])
            if len(fresh) < len(pieces):
                events, counts = _assemble(events, starts, pieces)
        runs: list[_Run] = []
        offset = done = 0
        for n, oldest, exhausted in shape:
            size = sum(counts[done : done + n])
            runs.append((offset, offset + size, oldest, exhausted))
            offset += size
            done += n
        return events, runs, ids_left


@functools.lru_cache(maxsize=64)
def _keys_only(chunks: bytes | None, meta: bool) -> bytes:
    """The filter of a key-only run get: its chunks' keys (the ``chunks`` filter's), and with
    ``meta`` the metadata cells whole (those filters repeat across a call's gets)."""
    return family_or(META, all_of(family_is(CHUNKS), KEY_ONLY, chunks)) if meta else all_of(KEY_ONLY, chunks)


def _assemble(decoded: pa.Table, starts: list[int], pieces: Sequence[pa.Table | None]) -> tuple[pa.Table, list[int]]:
    """The events of every chunk used, in order (``pieces``: cached events, or None for the
    next chunk of ``decoded``, which begins at ``starts``), and each chunk's event count;
    consecutive decoded chunks stay one slice."""
    parts: list[pa.Table] = []
    counts: list[int] = []
    k = run = 0  # the next decoded chunk; where the current run of decoded ones began
    for piece in pieces:
        if piece is None:
            counts.append(starts[k + 1] - starts[k])
            k += 1
            continue
        if k > run:
            parts.append(decoded.slice(starts[run], starts[k] - starts[run]))
        run = k
        parts.append(piece)
        counts.append(piece.num_rows)
    if k > run:
        parts.append(decoded.slice(starts[run], starts[k] - starts[run]))
    return pa.concat_tables(parts), counts
