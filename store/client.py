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

from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from store import features as _features
from store import reader as _reader
from store import retention as _retention
from store import table as _table
from store import writer as _writer
from store.codec import PayloadCodec
from store.config import Config
from store.connection import ClientPool
from store.requests import Requests
from store.schema import EventSchema
from store.table import TableSpec


class SequenceStore:
    """A connection pool to HBase and the tables in it. Opens no socket until used.

    Args:
        config: where HBase is; default :meth:`Config.from_env`.
        pool_size: Thrift2 connections, i.e. how many calls run concurrently.
    """

    def __init__(self, config: Config | None = None, *, pool_size: int = 8) -> None:
        self.config = config or Config.from_env()
        self.pool = ClientPool(self.config, pool_size)

    def __enter__(self) -> SequenceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.pool.close()

    def create_table(self, spec: TableSpec) -> SequenceTable:
        """Create and register a table (see :func:`store.table.create_table`)."""
        _table.create_table(self.pool, spec)
        return self.table(spec.name)

    def table(self, name: str) -> SequenceTable:
        """Open a registered table. Raises :class:`TableNotFoundError` if there is none."""
        return SequenceTable(self.pool, _table.load(self.pool, name))

    def drop_table(self, name: str) -> None:
        _table.drop_table(self.pool, name)

    def evolve_schema(self, name: str, schema: EventSchema) -> EventSchema:
        """Register a compatible new schema version (see :func:`store.table.evolve_schema`)."""
        return _table.evolve_schema(self.pool, name, schema)

    def describe_table(self, name: str) -> dict[str, Any]:
        return _table.describe(self.pool, name)


class SequenceTable:
    """One registered sequence table: write events and features, read them as of a time."""

    def __init__(self, pool: ClientPool, registration: _table.Registration) -> None:
        self.pool = pool
        self.spec: TableSpec = registration.spec
        self.versions = registration.versions
        self.codec = PayloadCodec(registration.versions, table=self.spec.name)
        self.feature_codecs = _features.codecs(self.spec.features)
        self.name_bytes = self.spec.name.encode()

    @property
    def name(self) -> str:
        return self.spec.name

    def write(self, data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch], **options: Any) -> _writer.WriteResult:
        """Write events; see :func:`store.writer.write_events` for options and guarantees."""
        return _writer.write_events(self, data, **options)

    def read_sequences(self, requests: Requests, *, max_len: int, **options: Any) -> pa.Table:
        """Sequences as of each request's time; see :func:`store.reader.read_sequences`."""
        return _reader.read_sequences(self, requests, max_len=max_len, **options)

    def write_features(self, data: pa.Table) -> int:
        """See :func:`store.features.write_features`."""
        return _features.write_features(self, data)

    def read_features(self, requests: Requests, names: Sequence[str]) -> pa.Table:
        """See :func:`store.features.read_features`."""
        return _features.read_features(self, requests, names)

    def feature_history(self, user_id: str, name: str) -> list[tuple[int, Any]]:
        """See :func:`store.features.feature_history`."""
        return _features.feature_history(self, user_id, name)

    def trim(self, users: Iterable[str | bytes]) -> int:
        """Apply ``max_events_per_user`` to these users; see :mod:`store.retention`."""
        return _retention.trim(self, users)

    def watermarks(self, users: Iterable[str | bytes]) -> dict[str | bytes, tuple[int, int]]:
        return _retention.watermarks(self, users)
