"""Tables as code: a :class:`TableSpec` becomes an HBase table with explicit family options.

A sequence table has four column families:

==== ============================================================================
e    events, raw tier: one cell per event; VERSIONS=1; TTL = ``ttl_days`` (by event time)
c    events, chunk tier: compacted columnar chunks (:mod:`store.chunks`); same TTL
f    features: one column per feature; VERSIONS = ``feature_versions`` (history)
m    metadata (:mod:`store.user_meta`): the user row's retention watermark and raw-tier flag,
     the bucket rows' write tokens
==== ============================================================================

All four are created with bloom filter ROW, block cache on, ``compression`` and
``data_block_encoding``; the table is pre-split on the salt byte. The spec and every
version of the event schema are registered in the ``seqstore_meta`` table, in the row named
after the table; rows ``<name>|...`` there (e.g. backfill manifests) belong to the table
too and are deleted with it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from typing import Any

import pyarrow as pa

from store import keys
from store.connection import ClientPool, idl
from store.errors import ConfigError, SchemaError, TableNotFoundError
from store.scanning import scan_results
from store.schema import DEFAULT_SCHEMA, EventSchema

log = logging.getLogger(__name__)

META_TABLE = b"seqstore_meta"
EVENTS, CHUNKS, FEATURES, META = b"e", b"c", b"f", b"m"
HBASE_FOREVER = 2**31 - 1  # HBase's TTL is an i32 of seconds: this is "forever"
# HBase refuses a cell larger than hbase.server.keyvalue.maxsize (10 MB by default); a chunk of
# chunk_events events of max_payload_bytes each must fit in one.
CELL_LIMIT_BYTES = 10 * 1024 * 1024
_CHUNK_OVERHEAD = 1024  # a chunk's header and Arrow framing, generously
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class TableSpec:
    """Everything about a sequence table that is chosen on purpose.

    Attributes:
        name: HBase table name.
        schema: the event schema (its payload fields).
        features: Arrow schema of the per-user features (may be empty).
        salt_buckets: number of salt values = regions the table is pre-split into (1..256).
        bucket_ms: time span of one wide row per user. Rows hold a user's events of one
            bucket; a read touches about ``max_len / events-per-bucket`` rows.
        ttl_days: events whose ``event_ts`` is older than this are expired by HBase and never
            read (the cell timestamp *is* the event time). None keeps events forever.
        max_events_per_user: keep only each user's newest N events (by ``(event_ts,
            event_id)``); older ones are trimmed after each write and never read. None = no cap.
        feature_versions: how many versions (valid-from times) of each feature are kept.
        compression: HBase compression of all families (pure-Java codecs: ZSTD, SNAPPY, LZ4).
        data_block_encoding: HBase data block encoding (FAST_DIFF suits the shared key prefixes).
        max_payload_bytes: an event whose encoded payload is larger is quarantined.
        chunk_events: most events in one compacted chunk cell (:mod:`store.compaction`); chunks
            hold between half of this and this many, so a read of ``max_len`` events decodes
            about ``max_len / chunk_events + 1`` cells. None: the table has no chunk tier
            (tables created before seqstore had one), it is never compacted.
    """

    name: str
    schema: EventSchema = DEFAULT_SCHEMA
    features: pa.Schema = field(default_factory=lambda: pa.schema([]))
    salt_buckets: int = 16
    bucket_ms: int = DAY_MS
    ttl_days: float | None = None
    max_events_per_user: int | None = None
    feature_versions: int = 100
    compression: str = "ZSTD"
    data_block_encoding: str = "FAST_DIFF"
    max_payload_bytes: int = 64 * 1024
    chunk_events: int | None = 128

    def __post_init__(self) -> None:
        if not self.name or self.name.encode() == META_TABLE:
            raise ConfigError(f"invalid table name {self.name!r}")
        if not 1 <= self.salt_buckets <= 256:
            raise ConfigError("'salt_buckets' must be in 1..256")
        if self.bucket_ms <= 0:
            raise ConfigError("'bucket_ms' must be > 0")
        if self.ttl_days is not None and not 0 < self.ttl_days <= HBASE_FOREVER // 86400:
            raise ConfigError(f"'ttl_days' must be in (0, {HBASE_FOREVER // 86400}] (HBase keeps a TTL in "
                              "seconds as a 32-bit integer), or None for no TTL")
        if self.max_events_per_user is not None and self.max_events_per_user <= 0:
            raise ConfigError("'max_events_per_user' must be > 0")
        if self.feature_versions <= 0:
            raise ConfigError("'feature_versions' must be > 0")
        if self.chunk_events is not None and not 2 <= self.chunk_events <= 65_536:
            raise ConfigError("'chunk_events' must be in 2..65536 (or None: no chunk tier)")
        if self.max_payload_bytes <= 0:
            raise ConfigError("'max_payload_bytes' must be > 0")
        if self.chunk_events is not None and self.chunk_events * (self.max_payload_bytes + 16) + _CHUNK_OVERHEAD \
                > CELL_LIMIT_BYTES:
            raise ConfigError(
                f"'chunk_events' x 'max_payload_bytes' ({self.chunk_events} x {self.max_payload_bytes}) would let a "
                f"chunk cell pass HBase's cell limit ({CELL_LIMIT_BYTES} bytes, hbase.server.keyvalue.maxsize): "
                f"lower one of them (e.g. chunk_events <= "
                f"{max(2, (CELL_LIMIT_BYTES - _CHUNK_OVERHEAD) // (self.max_payload_bytes + 16))})")
        for f in self.features:
            EventSchema.of([f])  # same type rules as event fields
        options = idl()
        if self.compression.upper() not in options.TCompressionAlgorithm._NAMES_TO_VALUES:
            raise ConfigError(f"unknown compression {self.compression!r}")
        if self.data_block_encoding.upper() not in options.TDataBlockEncoding._NAMES_TO_VALUES:
            raise ConfigError(f"unknown data block encoding {self.data_block_encoding!r}")

    @property
    def ttl_s(self) -> int:
        return HBASE_FOREVER if self.ttl_days is None else max(1, int(self.ttl_days * 86400))

    def ttl_floor(self, now_ms: int) -> int | None:
        """The TTL rule, one for every reader of it: at ``now_ms`` an event is expired iff its
        ``event_ts`` is below this (None: no TTL). HBase applies it to cells with the
        RegionServer's clock; reads and the audit apply it with their caller's clock, and
        compaction drops an event only well after (:data:`store.compaction.TTL_MARGIN_MS`), so
        clocks apart by less than that never make it delete an event a read could return."""
        return None if self.ttl_days is None else now_ms - self.ttl_s * 1000

    def settings(self) -> dict[str, Any]:
        """The spec without the schemas, as stored in the metadata table."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("schema", "features")}


def _family(spec: TableSpec, name: bytes, *, versions: int, ttl_s: int, in_memory: bool = False,
            new_version_behavior: bool = False) -> Any:
    t = idl()
    return t.TColumnFamilyDescriptor(
        attributes={b"NEW_VERSION_BEHAVIOR": b"true"} if new_version_behavior else None,
        name=name,
        maxVersions=versions,
        timeToLive=ttl_s,
        bloomnFilterType=t.TBloomFilterType.ROW,
        blockCacheEnabled=True,
        compressionType=t.TCompressionAlgorithm._NAMES_TO_VALUES[spec.compression.upper()],
        dataBlockEncoding=t.TDataBlockEncoding._NAMES_TO_VALUES[spec.data_block_encoding.upper()],
        inMemory=in_memory,
    )


def _table_name(name: str | bytes) -> Any:
    raw = name.encode() if isinstance(name, str) else name
    ns, _, qualifier = raw.rpartition(b":")
    return idl().TTableName(ns=ns or b"default", qualifier=qualifier)


def _meta_exists(pool: ClientPool) -> bool:
    return bool(pool.call("tableExists", _table_name(META_TABLE)))


def ensure_meta_table(pool: ClientPool) -> None:
    t = idl()
    if _meta_exists(pool):
        return
    family = t.TColumnFamilyDescriptor(name=META, maxVersions=1, blockCacheEnabled=True, inMemory=True)
    try:
        pool.call("createTable", t.TTableDescriptor(tableName=_table_name(META_TABLE), columns=[family]), None)
    except Exception:
        if not pool.call("tableExists", _table_name(META_TABLE)):  # lost a creation race: fine
            raise


def create_table(pool: ClientPool, spec: TableSpec) -> None:
    """Create the HBase table for ``spec`` and register its spec and schema.

    Raises:
        SchemaError: a table of that name already exists.
    """
    t = idl()
    ensure_meta_table(pool)
    if pool.call("tableExists", _table_name(spec.name)):
        raise SchemaError(f"table {spec.name!r} already exists; drop it first or use another name")
    _forget(pool, spec.name)  # leftovers of an interrupted drop: old schema versions, a backfill manifest
    families = [
        # Compaction deletes raw cells exactly; with HBase's classic semantics that delete marker
        # would also hide a later re-write of the same event (same cell and timestamp) until a
        # major compaction drops both. NEW_VERSION_BEHAVIOR: a delete hides only what it preceded.
        _family(spec, EVENTS, versions=1, ttl_s=spec.ttl_s, new_version_behavior=spec.chunk_events is not None),
        *([_family(spec, CHUNKS, versions=1, ttl_s=spec.ttl_s)] if spec.chunk_events is not None else []),
        _family(spec, FEATURES, versions=spec.feature_versions, ttl_s=HBASE_FOREVER),
        _family(spec, META, versions=1, ttl_s=HBASE_FOREVER, in_memory=True),
    ]
    descriptor = t.TTableDescriptor(tableName=_table_name(spec.name), columns=families)
    pool.call("createTable", descriptor, keys.split_keys(spec.salt_buckets) or None)
    _put_meta(pool, spec.name, {
        b"spec": json.dumps(spec.settings(), sort_keys=True).encode(),
        b"features": spec.features.serialize().to_pybytes(),
        _schema_qualifier(spec.schema.version): spec.schema.to_bytes(),
    })


def _schema_qualifier(version: int) -> bytes:
    return b"schema:%06d" % version


def _put_meta(pool: ClientPool, table: str, cells: dict[bytes, bytes]) -> None:
    t = idl()
    values = [t.TColumnValue(family=META, qualifier=q, value=v) for q, v in cells.items()]
    pool.call("put", META_TABLE, t.TPut(row=table.encode(), columnValues=values))


def _put_meta_if_absent(pool: ClientPool, table: str, qualifier: bytes, value: bytes) -> bool:
    """Put one cell of the table's registration unless that cell exists; True if this put was applied.

    Thrift2 ``checkAndPut`` without an expected value is HBase's ``checkAndMutate(row, family)
    .qualifier(q).ifNotExists().thenPut(put)``: atomic on the row, so of concurrent callers
    exactly one sees True.
    """
    t = idl()
    put = t.TPut(row=table.encode(), columnValues=[t.TColumnValue(family=META, qualifier=qualifier, value=value)])
    return bool(pool.call("checkAndPut", META_TABLE, table.encode(), META, qualifier, None, put))


@dataclass(frozen=True, slots=True)
class Registration:
    """A table's registered spec and every version of its event schema (oldest first)."""

    spec: TableSpec
    versions: tuple[EventSchema, ...]


def load(pool: ClientPool, name: str) -> Registration:
    """Read a table's registration from the metadata table.

    Raises:
        TableNotFoundError: the table was not created by seqstore (or was dropped).
    """
    t = idl()
    result = pool.call("get", META_TABLE, t.TGet(row=name.encode())) if _meta_exists(pool) else None
    cells = {cv.qualifier: cv.value for cv in (result.columnValues if result else [])}
    if b"spec" not in cells:
        raise TableNotFoundError(f"no seqstore table {name!r} (create it with `seqstore create-table {name}`)")
    versions = tuple(
        EventSchema.from_bytes(v, int(q.split(b":")[1]))
        for q, v in sorted(cells.items()) if q.startswith(b"schema:")
    )
    features = pa.ipc.read_schema(pa.py_buffer(cells[b"features"]))
    settings = json.loads(cells[b"spec"])
    settings.setdefault("chunk_events", None)  # registered before the chunk tier existed: raw only
    spec = TableSpec(schema=versions[-1], features=features, **settings)
    return Registration(spec, versions)


# Each lost race means another caller registered a version meanwhile; a handful of concurrent
# evolutions settle long before this, so running out means something keeps changing the schema.
_EVOLVE_ATTEMPTS = 8


def evolve_schema(pool: ClientPool, name: str, schema: EventSchema) -> EventSchema:
    """Register ``schema`` as the table's next schema version (if it differs) and return it.

    The new version ``v+1`` is registered with HBase's check-and-put ("only if ``schema:<v+1>``
    does not exist yet"), so a registered version is never overwritten and events encoded
    with it always decode. Concurrent calls behave as if they ran one after another: of two
    callers that both read version ``v``, exactly one registers ``v+1``; the other reads the
    registration again and

    * returns the winner's version if it has exactly the requested fields;
    * registers ``v+2`` on top of it if the request is a compatible evolution of the
      winner's schema (it keeps the winner's new fields, in order);
    * raises :class:`SchemaError` naming the concurrently registered version otherwise
      (e.g. both added a different field: the request would drop the winner's).

    Idempotent; safe to retry: a call whose put was applied but whose answer was lost finds
    its own fields at ``v+1`` and returns that version.

    Raises:
        SchemaError: the change is not compatible with the current schema (type change,
            dropped or non-nullable field), or with a version registered concurrently; or
            the schema kept changing under this call (it tried 8 times).
        TableNotFoundError: the table is not registered.
        StoreUnavailableError, HBaseError: as raised by the connection.
    """
    raced = False
    for _ in range(_EVOLVE_ATTEMPTS):
        current = load(pool, name).versions[-1]
        if current.same_fields(schema):
            return current
        try:
            new = current.evolve_to(schema)
        except SchemaError as exc:
            if not raced:
                raise
            raise SchemaError(
                f"table {name!r}: schema version {current.version} ({', '.join(current.payload.names)}) was "
                f"registered concurrently by another caller and the requested schema does not extend it: {exc}"
            ) from exc
        if _put_meta_if_absent(pool, name, _schema_qualifier(new.version), new.to_bytes()):
            return new
        raced = True
        log.info("table %r: schema version %d was registered concurrently; evolving on top of it", name, new.version)
    raise SchemaError(f"table {name!r}: its schema changed concurrently {_EVOLVE_ATTEMPTS} times while this call "
                      "tried to register a new version; try again")


def drop_table(pool: ClientPool, name: str) -> None:
    """Disable and delete the table and its registration. Missing tables are ignored."""
    tn = _table_name(name)
    if pool.call("tableExists", tn):
        if pool.call("isTableEnabled", tn):
            pool.call("disableTable", tn)
        pool.call("deleteTable", tn)
    _forget(pool, name)


def owned_prefix(name: str) -> bytes:
    """The prefix of the rows in ``seqstore_meta`` that belong to table ``name`` besides its
    registration (the jobs' records, :mod:`store.job_records`): they are deleted with it."""
    return name.encode() + b"|"


def _forget(pool: ClientPool, name: str) -> None:
    """Delete the registration row and every row the table owns (:func:`owned_prefix`)."""
    if not _meta_exists(pool):
        return
    t = idl()
    owned = owned_prefix(name)
    scan = t.TScan(startRow=owned, stopRow=keys.prefix_end(owned), filterString=b"KeyOnlyFilter()")
    rows = [name.encode(), *(r.row for r in scan_results(pool, META_TABLE, scan, 10_000))]
    for i in range(0, len(rows), 10_000):
        pool.call("deleteMultiple", META_TABLE, [t.TDelete(row=r) for r in rows[i : i + 10_000]])


def describe(pool: ClientPool, name: str) -> dict[str, Any]:
    """The table's registered spec, schema versions and the family options HBase reports."""
    t = idl()
    reg = load(pool, name)
    desc = pool.call("getTableDescriptor", _table_name(name))
    families = {}
    for cf in desc.columns:
        families[cf.name.decode()] = {
            "versions": cf.maxVersions,
            "ttl_s": cf.timeToLive,
            "bloom_filter": t.TBloomFilterType._VALUES_TO_NAMES.get(cf.bloomnFilterType),
            "block_cache": cf.blockCacheEnabled,
            "compression": t.TCompressionAlgorithm._VALUES_TO_NAMES.get(cf.compressionType),
            "data_block_encoding": t.TDataBlockEncoding._VALUES_TO_NAMES.get(cf.dataBlockEncoding),
            "in_memory": cf.inMemory,
            "new_version_behavior": (cf.attributes or {}).get(b"NEW_VERSION_BEHAVIOR", b"").lower() == b"true",
        }
    regions = pool.call("getAllRegionLocations", name.encode())
    return {
        "name": name,
        "settings": reg.spec.settings(),
        "schema_versions": [
            {"version": s.version, "fields": [f"{f.name}: {f.type}{'' if f.nullable else ' not null'}"
                                              for f in s.payload]}
            for s in reg.versions
        ],
        "features": [f"{f.name}: {f.type}" for f in reg.spec.features],
        "families": families,
        "regions": len(regions),
    }

