"""The narrow handle the store's modules work on: one open table's connection pool, spec and codecs.

:class:`store.client.SequenceTable` is the public face of a table and holds one of these;
the writer, the reader, features, retention, compaction and the audit take the handle, so
none of them depends on the facade (which imports them all).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from store.format.payload import PayloadCodec, feature_codecs
from store.format.schema import EventSchema
from store.io.connection import ClientPool
from store.table.chunk_cache import ChunkCache
from store.table.registry import Registration
from store.table.spec import TableSpec


@dataclass(frozen=True)
class TableHandle:
    """One registered table, opened on ``pool``.

    Attributes:
        pool: the connections every call of the table goes through.
        spec: the table's registered settings.
        versions: every registered version of its event schema, oldest first.
        codec: encodes payloads with the current schema, decodes any version.
        feature_codecs: one codec per feature column.
        chunk_cache: decoded chunks kept between reads, shared with the store's other tables.
    """

    pool: ClientPool
    spec: TableSpec
    versions: tuple[EventSchema, ...]
    codec: PayloadCodec = field(repr=False)
    feature_codecs: dict[str, PayloadCodec] = field(repr=False)
    chunk_cache: ChunkCache | None = field(default=None, repr=False)

    @classmethod
    def open(cls, pool: ClientPool, registration: Registration, chunk_cache: ChunkCache | None = None) -> TableHandle:
        spec = registration.spec
        return cls(pool, spec, registration.versions, PayloadCodec(registration.versions, table=spec.name),
                   feature_codecs(spec.features), chunk_cache)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def name_bytes(self) -> bytes:
        return self.spec.name.encode()
