"""Tables as code: a :class:`TableSpec` becomes an HBase table with explicit family options.

A sequence table has four column families:

==== ============================================================================
e    events, raw tier: one cell per event; VERSIONS=1; TTL = ``ttl_days`` (by event time)
c    events, chunk tier: compacted columnar chunks (:mod:`store.format.chunk`); same TTL
f    features: one column per feature; VERSIONS = ``feature_versions`` (history)
m    metadata (:mod:`store.tiers.user_meta`): the user row's retention watermark and raw-tier flag,
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
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from store.errors import SchemaError, TableExistsError, TableNotFoundError
from store.format import keys
from store.format.keys import CHUNKS, EVENTS, FEATURES, META, META_TABLE
from store.format.schema import EventSchema
from store.io.calls import KEY_ONLY, delete_multiple
from store.io.connection import ClientPool, idl
from store.io.scanning import scan_results
from store.table.spec import HBASE_FOREVER, TableSpec

log = logging.getLogger(__name__)


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
        TableExistsError: a table of that name already exists.
    """
    t = idl()
    ensure_meta_table(pool)
    if pool.call("tableExists", _table_name(spec.name)):
        raise TableExistsError(f"table {spec.name!r} already exists; drop it first or use another name")
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
    settings.setdefault("id_scheme", 1)  # registered before column-wise ids: blake2b per event
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
    registration (the jobs' records, :mod:`store.table.job_records`): they are deleted with it."""
    return name.encode() + b"|"


def _forget(pool: ClientPool, name: str) -> None:
    """Delete the registration row and every row the table owns (:func:`owned_prefix`)."""
    if not _meta_exists(pool):
        return
    t = idl()
    owned = owned_prefix(name)
    scan = t.TScan(startRow=owned, stopRow=keys.prefix_end(owned), filterString=KEY_ONLY)
    rows = [name.encode(), *(r.row for r in scan_results(pool, META_TABLE, scan, 10_000))]
    delete_multiple(pool, META_TABLE, [t.TDelete(row=r) for r in rows])


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

