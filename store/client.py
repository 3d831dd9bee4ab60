"""The entry points: :class:`SequenceStore` (tables) and :class:`SequenceTable` (one table).

Example (against a running ``seqstore hbase start``)::

    import pyarrow as pa
    from store import SequenceStore, TableSpec

    with SequenceStore() as store:
        table = store.create_table(TableSpec("clicks"))
        table.write(pa.table({"user_id": ["u1", "u1"], "event_ts": [1_700_000_000_000, 1_700_000_001_000],
                              "event_type": ["view", "click"], "item_id": [7, 7], "dwell_ms": [1200, None]}))
        seqs = table.read_sequences([("u1", 1_700_000_001_000)], max_len=50)   # sees only the view
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa

from store import features as _features
from store import reader as _reader
from store import writer as _writer
from store.config import Config
from store.format import keys
from store.format.schema import EventSchema
from store.inputs.requests import Requests
from store.io.connection import ClientPool
from store.table import job_records as _job_records
from store.table import registry as _table
from store.table.chunk_cache import ChunkCache
from store.table.handle import TableHandle
from store.table.spec import TableSpec
from store.tiers import compaction as _compaction
from store.tiers import retention as _retention
from store.tiers import stored_events as _stored_events
from store.tiers import user_meta
from store.tiers.compaction import CompactionStats
from store.tiers.stored_events import Copies


class SequenceStore:
    """A connection pool to HBase and the tables in it. Opens no socket until used.

    Args:
        config: where HBase is; default :meth:`Config.from_env`.
        pool_size: Thrift2 connections, i.e. how many calls run concurrently.
    """

    def __init__(self, config: Config | None = None, *, pool_size: int = 8) -> None:
        self.config = config or Config.from_env()
        self.pool = ClientPool(self.config, pool_size)
        size = self.config.chunk_cache_bytes
        #: decoded chunks every table of this store shares between reads (None: ``chunk_cache_bytes`` 0)
        self.chunk_cache: ChunkCache | None = ChunkCache(size) if size else None

    def __enter__(self) -> SequenceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections. Idempotent.

        Afterwards this store and its tables refuse calls with :class:`StoreClosedError`;
        a call already running finishes, and its connection is closed when it is done.
        """
        self.pool.close()

    def create_table(self, spec: TableSpec) -> SequenceTable:
        """Create and register a table (see :func:`store.table.registry.create_table`)."""
        _table.create_table(self.pool, spec)
        return self.table(spec.name)

    def table(self, name: str) -> SequenceTable:
        """Open a registered table. Raises :class:`TableNotFoundError` if there is none."""
        return SequenceTable(TableHandle.open(self.pool, _table.load(self.pool, name), self.chunk_cache))

    def drop_table(self, name: str) -> None:
        """Disable and delete the table and its registration; a table that does not exist is ignored.

        Idempotent; safe to retry: an interrupted drop is finished by the next one (or by a
        :meth:`create_table` of the same name).

        Raises:
            StoreUnavailableError: HBase stayed unreachable past the retry budget.
            HBaseError: HBase refused a step.
        """
        _table.drop_table(self.pool, name)

    def evolve_schema(self, name: str, schema: EventSchema) -> EventSchema:
        """Register ``schema`` as the table's next schema version (if it differs) and return it.

        Compatible changes only: every field kept with its type and order, new fields
        nullable and at the end. Atomic: the version is registered with HBase's
        check-and-put, so of concurrent callers exactly one registers ``v+1``; another one
        gets that version if it asked for the same fields, registers ``v+2`` on top if its
        schema extends the winner's, and otherwise gets a :class:`SchemaError`. Open tables
        see the new version after :meth:`table` is called again. Idempotent; safe to retry.

        Raises:
            SchemaError: the change is incompatible (with the current schema or with a
                version registered concurrently).
            TableNotFoundError: the table is not registered.
            StoreUnavailableError, HBaseError: as raised by the connection.
        """
        return _table.evolve_schema(self.pool, name, schema)

    def describe_table(self, name: str) -> dict[str, Any]:
        """What is known of a table, as JSON-ready values.

        Keys: ``name``, ``settings`` (the spec), ``schema_versions`` (each version's fields),
        ``features``, ``families`` (the options HBase reports per column family) and
        ``regions`` (how many). Reads only.

        Raises:
            TableNotFoundError: no such table is registered.
            StoreUnavailableError, HBaseError: as raised by the connection.
        """
        return _table.describe(self.pool, name)


class SequenceTable:
    """One registered sequence table: write events and features, read them as of a time.

    Made by :meth:`SequenceStore.table`; its calls go through that store's connections.
    """

    def __init__(self, handle: TableHandle) -> None:
        self._handle = handle

    @property
    def name(self) -> str:
        """The table's name (in HBase and in the registry)."""
        return self._handle.name

    @property
    def spec(self) -> TableSpec:
        """The table's registered settings (its current event schema is ``spec.schema``)."""
        return self._handle.spec

    @property
    def schema_versions(self) -> tuple[EventSchema, ...]:
        """Every registered version of the event schema, oldest first."""
        return self._handle.versions

    @property
    def handle(self) -> TableHandle:
        """The narrow handle the store's own modules take; jobs use the methods below instead."""
        return self._handle

    @property
    def concurrency(self) -> int:
        """How many HBase calls of this table's store run at once (its connection pool size)."""
        return self._handle.pool.size

    def write(
        self,
        data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch],
        *,
        source: str | None = None,
        start_position: int = 0,
        chunk_rows: int = _writer.DEFAULT_CHUNK_ROWS,
        on_invalid: str = "quarantine",
        now_ms: int | None = None,
    ) -> _writer.WriteResult:
        """Write events; return counts and the quarantine of rejected rows.

        ``data`` is a ``pyarrow.Table``, a record batch or an iterator of record batches with
        ``user_id``, ``event_ts`` (int64 ms UTC), the schema's payload fields and optionally
        ``event_id``. The options, the errors and the guarantees (idempotence, conservation,
        bounded memory) are those of :func:`store.writer.write_events`.
        """
        return _writer.write_events(self._handle, data, source=source, start_position=start_position,
                                    chunk_rows=chunk_rows, on_invalid=on_invalid, now_ms=now_ms)

    def write_chunks(
        self,
        data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch],
        *,
        source: str | None = None,
        start_position: int = 0,
        on_invalid: str = "quarantine",
        now_ms: int | None = None,
    ) -> _writer.WriteResult:
        """Write events straight into the chunk tier, merged with what each user holds: no raw
        cell, nothing to compact. For bulk loads of whole histories (all of ``data`` is held
        until merged); live writes of a few events per user belong in :meth:`write`. Same
        validation, quarantine and identity as :meth:`write` (:func:`store.writer.write_chunks`)."""
        return _writer.write_chunks(self._handle, data, source=source, start_position=start_position,
                                    on_invalid=on_invalid, now_ms=now_ms)

    def chunk_load(self, *, now_ms: int | None = None, on_invalid: str = "quarantine") -> _writer.ChunkLoad:
        """A bulk load built up from several parts (:class:`store.writer.ChunkLoad`): ``add`` them,
        then ``commit``. What a backfill's reducer uses for a group of users."""
        return _writer.ChunkLoad(self._handle, now_ms=now_ms, on_invalid=on_invalid)

    def read_sequences(
        self,
        requests: Requests,
        *,
        max_len: int,
        window_ms: int | None = None,
        event_types: Sequence[str] | None = None,
        fields: Sequence[str] | None = None,
        inclusive: bool = False,
        oldest_first: bool = False,
        allow_any_ts: bool = False,
    ) -> pa.Table:
        """Each request's sequence as of its time: one row per request, in request order.

        ``requests`` are ``(user_id, as_of_ts)`` pairs (an Arrow table, a pair of arrays or an
        iterable of tuples). The options, the time contract, the result's columns (among them
        ``history_complete``, False where retention may have removed events) and the errors
        are those of :func:`store.reader.read_sequences`.
        """
        return _reader.read_sequences(self._handle, requests, max_len=max_len, window_ms=window_ms,
                                      event_types=event_types, fields=fields, inclusive=inclusive,
                                      oldest_first=oldest_first, allow_any_ts=allow_any_ts)

    def write_features(self, data: pa.Table) -> int:
        """See :func:`store.features.write_features`."""
        return _features.write_features(self._handle, data)

    def read_features(self, requests: Requests, names: Sequence[str], *, inclusive: bool = False,
                      allow_any_ts: bool = False) -> pa.Table:
        """See :func:`store.features.read_features`: each feature's newest version with
        ``valid_from < as_of`` (``<=`` with ``inclusive``), the events' time rule."""
        return _features.read_features(self._handle, requests, names, inclusive=inclusive,
                                       allow_any_ts=allow_any_ts)

    def feature_history(self, user_id: str | bytes | int, name: str) -> list[tuple[int, Any]]:
        """See :func:`store.features.feature_history`."""
        return _features.feature_history(self._handle, user_id, name)

    def trim(self, users: Iterable[str | bytes]) -> int:
        """Apply ``max_events_per_user`` to these users; see :mod:`store.tiers.retention`."""
        return _retention.trim(self._handle, users)

    def watermarks(self, users: Iterable[str | bytes]) -> dict[str | bytes, tuple[int, int]]:
        """Each given user's trim watermark, for users that have one.

        The watermark is the ``(event_ts, event_id)`` of the oldest event kept by
        ``max_events_per_user``; reads skip everything older. Users never trimmed are absent.
        Reads only; see :mod:`store.tiers.retention` and :mod:`store.tiers.user_meta`.

        Raises:
            StoreUnavailableError, HBaseError: as raised by the connection.
        """
        users = list(dict.fromkeys(users))
        prefixes = [keys.user_prefix(u, self.spec.salt_buckets) for u in users]
        return {users[j]: mark for j, mark in user_meta.watermarks(self._handle, prefixes).items()}

    # --- what jobs build on: compaction, the audit, job records ---

    def salt_ranges(self) -> list[tuple[bytes, bytes]]:
        """``(start, stop)`` row ranges, one per salt value: the units of parallel work."""
        return keys.salt_ranges(self.spec.salt_buckets)

    def compact_range(self, start: bytes, stop: bytes, *, older_than_ms: int | None = None,
                      on_progress: Callable[[CompactionStats], None] | None = None) -> CompactionStats:
        """Compact the users whose rows lie in ``[start, stop)``; see :func:`store.tiers.compaction.compact_range`."""
        return _compaction.compact_range(self._handle, start, stop, older_than_ms=older_than_ms,
                                         on_progress=on_progress)

    def compact_users(self, users: Iterable[str | bytes], *, older_than_ms: int | None = None) -> CompactionStats:
        """Compact these users; see :func:`store.tiers.compaction.compact_users`."""
        return _compaction.compact_users(self._handle, list(users), older_than_ms=older_than_ms)

    def stored_copies(self, start: bytes, stop: bytes) -> Iterator[Copies]:
        """Every stored copy of the events of the users in ``[start, stop)``, for an audit; see
        :func:`store.tiers.stored_events.stored_copies` and :func:`store.tiers.stored_events.resolve`."""
        return _stored_events.stored_copies(self._handle, start, stop)

    def validated_cells(self, batch: pa.RecordBatch, *, now_ms: int | None = None) -> _writer.ValidatedCells:
        """Judge and encode one batch of input as :meth:`write` does, writing nothing."""
        return _writer.validated_cells(self._handle, batch, now_ms=now_ms)

    def job_records(self, job: str) -> dict[str, dict[str, Any]]:
        """Every record ``job`` kept about this table: key -> entry (:mod:`store.table.job_records`)."""
        return _job_records.load(self._handle.pool, self.name, job)

    def record_job(self, job: str, key: str, entry: dict[str, Any]) -> None:
        """Write (or replace) the record ``key`` of ``job`` about this table. Idempotent."""
        _job_records.record(self._handle.pool, self.name, job, key, entry)
