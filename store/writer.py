"""The idempotent event writer: Arrow in, wide rows out, bad rows quarantined.

Guarantees (see :func:`write_events`):

* Idempotent: an event's cell coordinates (row, qualifier, timestamp = event time) and
  value depend only on the event, so writing the same input again rewrites the very same
  cells; a retried or partly applied batch converges to the same state.
* Conservation: ``rows_in == written + merged + quarantined`` for every call, checked before
  return, where ``written`` counts the cells of acknowledged puts (not the rows judged valid),
  so a row lost between validation and HBase fails the call instead of vanishing.
* Merges are counted, not hidden: valid rows of one chunk with the same cell coordinates
  (same user, ``event_ts`` and event id — e.g. a double click with identical content in one
  millisecond, or an explicit ``event_id`` repeated at the same time) are one cell in HBase;
  the last of them in input order is written and the others count as ``merged``. Events are
  not given an occurrence index: an at-least-once pipeline delivering a row twice must still
  store it once. A repeat in another chunk or another call rewrites the same cell and counts
  as written again (the writer keeps no memory across chunks).
* Visibility: after a chunk of rows is acknowledged, its users' raw-tier flags are set, and
  puts of explicitly identified events carry their row's write token (rules 1 and 5 of
  :mod:`store.tiers.user_meta`); reads look at the raw tier of flagged users only. A call that
  fails may leave events of its last chunk unread until it is run again (which is safe) or a
  compaction finds them.
* Bounded memory: input is consumed ``chunk_rows`` rows at a time; at most ``pool.size``
  put calls run at once, with at most as many more submitted and waiting behind them.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.errors import InvalidEventError, InvalidRequestError, SeqStoreError
from store.format import event_ids, keys
from store.format.chunk import chunk_schema
from store.format.keys import EVENTS
from store.format.schema import EVENT_ID, EVENT_TS, USER_ID
from store.inputs.rows import QUARANTINE_SCHEMA, Reason, Verdicts, conform
from store.io.calls import put_batches, put_multiple
from store.io.connection import idl
from store.tiers import bulk, user_meta
from store.tiers.retention import trim

if TYPE_CHECKING:
    from store.format.payload import PayloadCodec
    from store.table.handle import TableHandle
    from store.table.spec import TableSpec

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one :func:`write_events` call did.

    Attributes:
        rows_in: input rows seen.
        written: events written: distinct cells in puts HBase acknowledged.
        quarantine: one row per rejected input row (``position``, ``reason``, ``field``,
            ``detail``, ``source``); ``len(quarantine) == rows_in - written - merged``.
        put_calls: Thrift calls made for the writes.
        merged: valid rows not written as a cell of their own because a later row of the
            same chunk has the same cell coordinates (user, ``event_ts``, event id): HBase
            holds one event for them. Repeats across chunks or calls are not counted here.
    """

    rows_in: int
    written: int
    quarantine: pa.Table
    put_calls: int
    merged: int = 0

    @property
    def quarantined(self) -> int:
        return int(self.quarantine.num_rows)

    def by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for reason in self.quarantine.column("reason").to_pylist():
            counts[reason] += 1
        return dict(counts)


def _batches(data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch], chunk_rows: int) -> Iterator[pa.RecordBatch]:
    if isinstance(data, pa.Table):
        source: Iterable[pa.RecordBatch] = data.to_batches(max_chunksize=chunk_rows)
    elif isinstance(data, pa.RecordBatch):
        source = [data]
    else:
        source = data
    for batch in source:
        for offset in range(0, batch.num_rows, chunk_rows):
            yield batch.slice(offset, chunk_rows)


def write_events(
    table: TableHandle,
    data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch],
    *,
    source: str | None = None,
    start_position: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_invalid: str = "quarantine",
    now_ms: int | None = None,
) -> WriteResult:
    """Write events; return counts and the quarantine of rejected rows.

    An event's identity is its explicit ``event_id`` if the input has that column (string,
    UTF-8 binary or integer, as its decimal string; a null, empty or non-UTF-8 id is
    quarantined as ``missing_event_id`` / ``invalid_event_id``), else its content. Rows of a
    chunk with the same user, ``event_ts`` and identity are one cell, counted as ``merged``.

    Args:
        table: the destination (from :meth:`SequenceStore.table`).
        data: a ``pyarrow.Table``, a record batch, or an iterator of record batches with
            ``user_id``, ``event_ts`` (int64 ms UTC), the schema's payload fields and
            optionally ``event_id``.
        source: a label carried into quarantine rows (e.g. the input file).
        start_position: position of the first input row (quarantine ``position`` counts on).
        chunk_rows: rows validated, encoded and sent at a time (bounds memory).
        on_invalid: ``"quarantine"`` (default) or ``"raise"``: raise
            :class:`InvalidEventError` for the first invalid row before writing that chunk.
        now_ms: "now" for the future-timestamp check (default: the clock).

    Raises:
        SchemaError: the columns do not fit the table's schema, e.g. a float ``event_id``
            column (nothing of that chunk is written).
        StoreUnavailableError: HBase stayed unreachable past the retry budget. Chunks before
            the failing one are written; re-running the same input is safe.
        HBaseError: HBase refused a write for a non-retryable reason.

    Idempotent; safe to retry.
    """
    if chunk_rows <= 0:
        raise InvalidRequestError("'chunk_rows' must be > 0")
    if on_invalid not in ("quarantine", "raise"):
        raise InvalidRequestError("'on_invalid' must be 'quarantine' or 'raise'")
    spec = table.spec
    rows_in = written = merged = calls = 0
    quarantines: list[pa.Table] = []
    position = start_position
    in_flight: set[Future[None]] = set()
    with _PutThreads(table.pool.size) as executor:
        for raw in _batches(data, chunk_rows):
            cells = validated_cells(table, raw, now_ms=now_ms)
            batch, verdicts = cells.batch, cells.verdicts
            n = batch.num_rows
            positions = np.arange(position, position + n, dtype=np.int64)
            valid = verdicts.valid
            if on_invalid == "raise" and not valid.all():
                i = int(np.argmin(valid))
                raise InvalidEventError(verdicts.reason[i], verdicts.field[i], int(positions[i]), verdicts.detail[i])
            puts, chunk_merged = _group_puts(cells, spec.bucket_ms)
            chunk_cells = 0
            stamp = spec.chunk_events is not None and EVENT_ID in batch.schema.names
            for group in put_batches(puts):
                calls += 1
                chunk_cells += sum(len(p.columnValues) for p in group)
                if stamp:
                    user_meta.stamp_rows(group)
                in_flight.add(executor.submit(put_multiple, table.pool, table.name_bytes, group))
                # pool.size calls run; as many more wait queued, so no worker idles while one is awaited.
                if len(in_flight) >= table.pool.size * 2:
                    in_flight = _settle(in_flight, FIRST_COMPLETED)
            in_flight = _settle(in_flight, ALL_COMPLETED)  # a chunk counts as written once all of its puts are acked
            touched = _touched_users(batch, valid) if puts else set()
            if spec.chunk_events is not None and touched:
                calls += user_meta.flag_users(table, [keys.user_prefix(u, spec.salt_buckets) for u in touched])
            if spec.max_events_per_user is not None:
                trim(table, touched)
            rows_in += n
            written += chunk_cells  # cells of acknowledged puts: counted, not inferred from `valid`
            merged += chunk_merged
            quarantines.append(verdicts.quarantine(positions, source))
            position += n
    quarantine = pa.concat_tables(quarantines) if quarantines else QUARANTINE_SCHEMA.empty_table()
    if rows_in != written + merged + quarantine.num_rows:
        raise SeqStoreError(f"conservation violated: {rows_in} in, {written} written, "
                            f"{quarantine.num_rows} quarantined, {merged} merged")
    return WriteResult(rows_in, written, quarantine, calls, merged)


class _Skipped(Exception):
    """A put not sent because another put of the same call had failed."""


class _PutThreads:
    """The threads that run one call's puts. Once a put has failed, no other put starts: those
    queued are skipped, not each left to wait out its own retry budget against a server that is
    gone (a worker freed by the failure would otherwise start the next one at once)."""

    def __init__(self, workers: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="seqstore-put")
        self._failed = threading.Event()

    def submit(self, fn: Callable[..., None], *args: Any) -> Future[None]:
        return self._executor.submit(self._run, fn, *args)

    def _run(self, fn: Callable[..., None], *args: Any) -> None:
        if self._failed.is_set():
            raise _Skipped
        try:
            fn(*args)
        except BaseException:
            self._failed.set()
            raise

    def __enter__(self) -> _PutThreads:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            self._failed.set()
        # Waits for the puts running now (they end with the same failure), cancels the queued ones.
        self._executor.shutdown(wait=True, cancel_futures=exc_type is not None)


def _settle(futures: set[Future[None]], until: str) -> set[Future[None]]:
    """Wait until one (``FIRST_COMPLETED``) or all (``ALL_COMPLETED``) of ``futures`` are done,
    raising the first failure as soon as any put fails; returns the futures still pending."""
    done, pending = wait(futures, return_when=FIRST_EXCEPTION if until == ALL_COMPLETED else until)
    errors = [e for e in (f.exception() for f in done) if e is not None]
    for error in errors:
        if not isinstance(error, _Skipped):
            raise error
    if errors:  # skipped puts: the failure that skipped them is still pending
        return _settle(pending, ALL_COMPLETED)
    return pending


class ValidatedCells:
    """What one chunk of input would write: the conformed ``batch``, every row's ``verdicts``
    (all the writer's rules, the payload size limit included), and — computed when first
    asked for — each row's encoded payload (:attr:`values`, only the raw tier stores them) and
    where each valid row's cell goes (:meth:`coordinates`). :func:`write_events` writes exactly
    these, a bulk load (:class:`ChunkLoad`) stores exactly these events, and ``seqstore
    verify`` expects exactly these."""

    def __init__(self, spec: TableSpec, codec: PayloadCodec, batch: pa.RecordBatch, verdicts: Verdicts) -> None:
        self.batch = batch
        self.verdicts = verdicts
        self._spec = spec
        self._codec = codec
        self._encoded: tuple[list[bytes], list[bytes]] | None = None
        self._coordinates: event_ids.Coordinates | None = None

    @property
    def values(self) -> list[bytes]:
        """Per row, the payload cell value (:meth:`PayloadCodec.encode`)."""
        return self._encode()[0]

    def _encode(self) -> tuple[list[bytes], list[bytes]]:
        if self._encoded is None:
            self._encoded = self._codec.encode(self.batch)
        return self._encoded

    def coordinates(self) -> event_ids.Coordinates:
        """The valid rows' user prefixes, times and event ids (:func:`event_ids.coordinates`)."""
        if self._coordinates is None:
            spec = self._spec
            content_scheme_1 = spec.id_scheme == 1 and EVENT_ID not in self.batch.schema.names
            self._coordinates = event_ids.coordinates(
                self.batch, self.verdicts.valid, salt_buckets=spec.salt_buckets, scheme=spec.id_scheme,
                payload=list(self._codec.current.payload),
                identities=self._encode()[1] if content_scheme_1 else None)
        return self._coordinates


def validated_cells(table: TableHandle, raw: pa.RecordBatch, *, now_ms: int | None = None) -> ValidatedCells:
    """Judge one chunk of input as :func:`write_events` does, writing nothing.

    Raises:
        SchemaError: the columns do not fit the table's schema.
    """
    spec = table.spec
    batch, verdicts = conform(raw, spec.schema, now_ms=now_ms)
    verdicts.reject(table.codec.sizes(batch) > spec.max_payload_bytes, Reason.PAYLOAD_TOO_LARGE, "*",
                    f"encoded payload over {spec.max_payload_bytes} bytes")
    return ValidatedCells(spec, table.codec, batch, verdicts)


def _group_puts(cells: ValidatedCells, bucket_ms: int) -> tuple[dict[bytes, list[Any]], int]:
    """Cells of the valid rows grouped by row key (one wide row per (user, time bucket)),
    one per distinct coordinates, and how many valid rows merged into a later row's cell."""
    t = idl()
    coords = cells.coordinates()
    values = cells.values
    keep = last_of_each_cell(cells.batch, cells.verdicts.valid, coords.ids)
    rows: dict[bytes, list[Any]] = defaultdict(list)
    for (i, prefix, when, eid), kept in zip(coords, keep.tolist(), strict=True):
        if kept:
            rows[keys.row_key(prefix, keys.bucket_of(when, bucket_ms))].append(
                t.TColumnValue(family=EVENTS, qualifier=keys.qualifier(when, eid), value=values[i], timestamp=when)
            )
    return rows, len(coords) - int(keep.sum())


def last_of_each_cell(batch: pa.RecordBatch, valid: np.ndarray, event_ids: np.ndarray) -> np.ndarray:
    """Per valid row (in order), whether it is the last of the rows with its cell coordinates.

    Coordinates are (user, ``event_ts``, event id): the bucket, row key, qualifier and cell
    timestamp all follow from them. ``event_ids`` are the valid rows' ids, as
    :meth:`ValidatedCells.coordinates` gives them. The last row is the one written: what writing
    the rows one after another would leave (a later put of a cell replaces it).
    """
    index = np.flatnonzero(valid)
    n = len(index)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    # Invalid rows may be null: filled so the arrays stay integers (they are not looked at).
    codes = pc.dictionary_encode(batch.column(USER_ID)).indices.fill_null(-1)
    users = np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int64)[index]
    ts = np.asarray(batch.column(EVENT_TS).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)[index]
    order = np.lexsort((event_ids, ts, users))  # stable: equal coordinates stay in input order
    u, w, e = users[order], ts[order], event_ids[order]
    same_as_next = (u[1:] == u[:-1]) & (w[1:] == w[:-1]) & (e[1:] == e[:-1])
    keep[order[:-1][same_as_next]] = False
    return keep


def _touched_users(batch: pa.RecordBatch, valid: np.ndarray) -> set[str]:
    users = batch.column(USER_ID).to_pylist()
    return {users[i] for i in np.flatnonzero(valid).tolist()}


class ChunkLoad:
    """A bulk load: events judged and identified exactly as :func:`write_events` does, then
    merged straight into the chunk tier (:func:`store.tiers.bulk.merge`), no raw cell written.

    :meth:`add` validates input (quarantining bad rows with the writer's reasons) and holds
    the valid events; :meth:`commit` merges them all, one step per user (a heavy user in
    steps), so the events a load holds decide its memory: hand it whole users' histories, a
    group of users at a time. Rows of the whole load with the same cell coordinates (user,
    ``event_ts``, event id) are one event, the last added winning, counted as ``merged``.
    Idempotent: loading the same events again stores nothing twice.
    """

    def __init__(self, table: TableHandle, *, now_ms: int | None = None, on_invalid: str = "quarantine",
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        if chunk_rows <= 0:
            raise InvalidRequestError("'chunk_rows' must be > 0")
        if on_invalid not in ("quarantine", "raise"):
            raise InvalidRequestError("'on_invalid' must be 'quarantine' or 'raise'")
        table.spec.check_tiered()
        self.table = table
        self.now_ms = now_ms
        self.on_invalid = on_invalid
        self.chunk_rows = chunk_rows
        self.rows_in = 0
        self._events: list[pa.Table] = []
        self._quarantines: list[pa.Table] = []

    def add(self, data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch], *, source: str | None = None,
            start_position: int = 0, positions: np.ndarray | None = None) -> None:
        """Judge ``data`` (the columns :func:`write_events` takes) and hold its valid events.

        ``positions``: each row's position in ``source`` (default ``start_position`` on), for
        rows gathered from several places of one source.

        Raises:
            SchemaError: the columns do not fit the table's schema.
            InvalidEventError: ``on_invalid="raise"`` and a row is invalid (nothing of it held).
        """
        target = chunk_schema(self.table.codec.current)
        offset = 0
        for raw in _batches(data, self.chunk_rows):
            cells = validated_cells(self.table, raw, now_ms=self.now_ms)
            n = cells.batch.num_rows
            if positions is not None:
                where = np.asarray(positions[offset : offset + n], dtype=np.int64)
            else:
                where = np.arange(start_position + offset, start_position + offset + n, dtype=np.int64)
            valid = cells.verdicts.valid
            if self.on_invalid == "raise" and not valid.all():
                i = int(np.argmin(valid))
                v = cells.verdicts
                raise InvalidEventError(v.reason[i], v.field[i], int(where[i]), v.detail[i])
            coords = cells.coordinates()
            rows = pa.array(coords.rows, pa.int64())
            batch = cells.batch
            columns = [pa.array(coords.ts, pa.int64()), pa.array(coords.ids, pa.uint64()),
                       *(batch.column(f.name).take(rows) for f in target if f.name not in (EVENT_TS, EVENT_ID))]
            events = pa.Table.from_arrays(columns, schema=target)
            self._events.append(events.append_column(_PREFIX, coords.prefixes))
            self._quarantines.append(cells.verdicts.quarantine(where, source))
            self.rows_in += n
            offset += n

    def commit(self) -> WriteResult:
        """Merge every event held into the chunk tier; the load's counts and quarantine.

        Raises:
            StoreUnavailableError, HBaseError: as raised by the connection; users merged before
                stay merged, and loading the same events again is safe.
            SeqStoreError: a user kept being changed by others (re-run), or conservation failed.
        """
        events = pa.concat_tables(self._events) if self._events else None
        self._events = []
        quarantine = pa.concat_tables(self._quarantines) if self._quarantines else QUARANTINE_SCHEMA.empty_table()
        users, merged = _by_user(events)
        stats = bulk.merge(self.table, users)
        written = sum(e.num_rows for _, e in users)
        if stats.events != written or self.rows_in != written + merged + quarantine.num_rows:
            raise SeqStoreError(f"conservation violated: {self.rows_in} in, {written} distinct events, "
                                f"{stats.events} merged into chunks, {quarantine.num_rows} quarantined, "
                                f"{merged} repeats")
        if self.table.spec.max_events_per_user is not None:
            trim(self.table, [keys.parse_row_key(p + bytes(keys.BUCKET_LEN))[1] for p, _ in users])
        return WriteResult(self.rows_in, written, quarantine, stats.calls, merged)


_PREFIX = "__prefix"


def _by_user(events: pa.Table | None) -> tuple[list[tuple[bytes, pa.Table]], int]:
    """Each user's events (by row prefix, in prefix order), newest first, each ``(event_ts,
    event_id)`` once — the last held winning — and how many repeats were dropped."""
    if events is None or not events.num_rows:
        return [], 0
    codes = pc.dictionary_encode(events.column(_PREFIX)).combine_chunks()
    prefixes = codes.dictionary.to_pylist()
    rank = np.empty(len(prefixes), dtype=np.int64)
    rank[sorted(range(len(prefixes)), key=prefixes.__getitem__)] = np.arange(len(prefixes))
    user = rank[np.asarray(codes.indices.to_numpy(), dtype=np.int64)]
    ts = np.asarray(events.column(EVENT_TS).to_numpy(), dtype=np.int64)
    eid = np.asarray(events.column(EVENT_ID).to_numpy(), dtype=np.uint64)
    seq = np.arange(len(ts), dtype=np.int64)
    order = np.lexsort((-seq, ~eid, -ts, user))  # user, then newest first, then the last held first
    u, w, e = user[order], ts[order], eid[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (u[1:] != u[:-1]) | (w[1:] != w[:-1]) | (e[1:] != e[:-1])
    order = order[first]
    table = events.drop_columns([_PREFIX]).take(pa.array(order, pa.int64()))
    starts = np.flatnonzero(np.diff(user[order], prepend=-1))
    by_rank = sorted(prefixes)
    out = []
    for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(order)], strict=True):
        out.append((by_rank[int(user[order[a]])], table.slice(a, b - a)))
    return out, int(len(first) - first.sum())


def write_chunks(table: TableHandle, data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch], *,
                 source: str | None = None, start_position: int = 0, on_invalid: str = "quarantine",
                 now_ms: int | None = None) -> WriteResult:
    """Write events straight into the chunk tier: :class:`ChunkLoad` of ``data`` in one go
    (all of it is held until merged). The arguments, errors and quarantine are those of
    :func:`write_events`; repeats are merged across the whole call."""
    load = ChunkLoad(table, now_ms=now_ms, on_invalid=on_invalid)
    load.add(data, source=source, start_position=start_position)
    return load.commit()
