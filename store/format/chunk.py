"""Columnar chunk cells: many consecutive events of one user in one cell value. Pure; no I/O.

The second tier of a user's history: up to ``chunk_events`` events stored column by column,
so a read decodes them with one Arrow call instead of one Python decode per event. Layout of a chunk value::

    format (1 byte, = 2) | schema version (uvarint) | Arrow IPC record batch message

The record batch has ``event_ts`` (int64), ``event_id`` (uint64) and the payload fields of
that schema version, newest event first — the order of the raw tier's qualifiers, ties by
``(event_ts, event_id)`` descending. The Arrow schema itself is not stored: it follows from
the table's registered schema version, so a chunk costs its columns plus a small message
header. Nulls, strings, binary and fixed-size vectors are Arrow's own encodings; the family's
HBase compression (ZSTD by default) compresses the cell.

The payload format byte (1) of raw cells and the chunk format byte (2) differ, so a value
always says which tier it belongs to.

Where chunks live: in family ``c`` of the user's own row (the bare user prefix, beside the
features and the metadata), one cell per chunk::

    qualifier = ~oldest_ts (8) | ~oldest_event_id (8) | event count (4) | nonce (8)
    timestamp = newest event_ts of the chunk

A user's chunks hold disjoint, contiguous ranges of ``(event_ts, event_id)``, so sorted by
qualifier they run newest first, and the chunks that may hold events before ``hi`` are those
from :func:`first_qualifier_before` on. The timestamp lets a read's time range skip chunks
wholly older than it, and lets HBase's TTL drop a chunk once its newest event expired. The
nonce makes every chunk a cell never written before, so deleting a replaced chunk can never
mask a new one (an HBase delete marker hides every later put of the same cell and timestamp).

The user's metadata cells beside them (the raw-tier flag, the watermark) and the protocol
that changes chunks are in :mod:`store.tiers.user_meta`.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from store.errors import SchemaError
from store.format.payload import read_uvarint, uvarint
from store.format.schema import EVENT_ID, EVENT_TS, EventSchema

FORMAT = 2
_MAX_U64 = 2**64 - 1
_QUAL = struct.Struct(">QQIQ")
QUALIFIER_LEN = _QUAL.size


class ChunkKey(NamedTuple):
    """What a chunk cell's coordinates say about it, without reading its value."""

    oldest: tuple[int, int]  # (event_ts, event_id) of its oldest event
    newest_ts: int  # event_ts of its newest event (the cell timestamp)
    events: int  # how many events it holds
    qualifier: bytes


def chunk_qualifier(oldest: tuple[int, int], count: int, nonce: bytes | None = None) -> bytes:
    """The qualifier of a new chunk whose oldest event is ``oldest`` (a fresh nonce by default)."""
    n = int.from_bytes(nonce if nonce is not None else os.urandom(8), "big")
    return _QUAL.pack(_MAX_U64 - oldest[0], _MAX_U64 - oldest[1], count, n)


def chunk_key(qualifier: bytes, timestamp: int) -> ChunkKey:
    """A chunk cell's :class:`ChunkKey` from its qualifier and timestamp."""
    inv_ts, inv_id, count, _ = _QUAL.unpack(qualifier)
    return ChunkKey((_MAX_U64 - inv_ts, _MAX_U64 - inv_id), timestamp, count, qualifier)


def first_qualifier_before(hi: int) -> bytes:
    """The smallest qualifier of a chunk whose oldest event is older than ``hi`` (event_ts
    ``< hi``): with a ``ColumnRangeFilter`` from it, a get skips chunks wholly at or after ``hi``."""
    return struct.pack(">Q", _MAX_U64 - (hi - 1)) if hi > 0 else b"\xff" * QUALIFIER_LEN


@functools.lru_cache(maxsize=256)
def chunk_schema(schema: EventSchema) -> pa.Schema:
    """The Arrow schema of a chunk written with ``schema``: ``event_ts``, ``event_id``, payload."""
    return pa.schema([pa.field(EVENT_TS, pa.int64(), nullable=False),
                      pa.field(EVENT_ID, pa.uint64(), nullable=False), *schema.payload])


def encode_chunk(events: pa.Table | pa.RecordBatch, schema: EventSchema) -> bytes:
    """One chunk value holding ``events`` (``event_ts``, ``event_id`` and ``schema``'s payload
    columns, already validated), sorted newest first.

    Raises:
        SchemaError: a column is missing, has another type, or ``event_ts``/``event_id`` holds
            a null; or two events share ``(event_ts, event_id)`` (one event, two values).
    """
    target = chunk_schema(schema)
    missing = [n for n in target.names if n not in events.schema.names]
    if missing:
        raise SchemaError(f"a chunk needs column(s) {missing}")
    table = events if isinstance(events, pa.Table) else pa.Table.from_batches([events])
    table = table.select(target.names)
    for name in (EVENT_TS, EVENT_ID):
        if table.column(name).null_count:
            raise SchemaError(f"a chunk's {name} column holds a null")
    if not table.schema.equals(target, check_metadata=False):
        try:
            table = table.cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError) as exc:
            raise SchemaError(f"chunk columns do not fit schema version {schema.version}: {exc}") from exc
    table = table.sort_by([(EVENT_TS, "descending"), (EVENT_ID, "descending")])
    if table.num_rows > 1:
        ts, ids = table.column(EVENT_TS), table.column(EVENT_ID)
        same = pc.and_(pc.equal(ts[1:], ts[:-1]), pc.equal(ids[1:], ids[:-1]))
        if pc.any(same).as_py():
            raise SchemaError("a chunk holds two events with the same (event_ts, event_id)")
    return encode_sorted_chunk(table, schema)


def encode_sorted_chunk(events: pa.Table, schema: EventSchema) -> bytes:
    """One chunk value of ``events`` that are already in :func:`chunk_schema`'s columns, sorted
    newest first, each ``(event_ts, event_id)`` once — what a merge step produces
    (:mod:`store.tiers.chunk_steps`); :func:`encode_chunk` checks and sorts first, then calls this."""
    batches = events.combine_chunks().to_batches()  # one batch; none for an empty table
    batch = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=chunk_schema(schema))
    body: bytes = batch.serialize().to_pybytes()
    return bytes((FORMAT,)) + uvarint(schema.version) + body


def is_chunk(value: bytes) -> bool:
    """Whether a cell value is a chunk (else a raw event payload)."""
    return bool(value) and value[0] == FORMAT


_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def decode_chunks(values: Sequence[bytes], versions: Mapping[int, EventSchema], current: EventSchema
                  ) -> tuple[pa.Table, list[int]]:
    """Many chunk values as one table in ``current``'s columns, in order, and the events of
    each: the record batches of one schema version are read as one IPC stream (one Arrow call
    for all of them). Raises like :func:`decode_chunk`."""
    target = chunk_schema(current)
    tables: list[pa.Table] = []
    counts: list[int] = []
    run: list[memoryview] = []
    run_version = -1

    def flush() -> None:
        if not run:
            return
        written = versions[run_version]
        stream = b"".join([chunk_schema(written).serialize().to_pybytes(), *run, _EOS])
        try:
            table = pa.ipc.open_stream(pa.py_buffer(stream)).read_all()
        except (pa.ArrowInvalid, OSError) as exc:
            raise SchemaError(f"a corrupt chunk value (schema version {run_version}): {exc}") from exc
        lengths = [len(c) for c in table.column(0).chunks]
        if len(lengths) != len(run):
            raise SchemaError(f"a corrupt chunk value (schema version {run_version}): {len(run)} chunks, "
                              f"{len(lengths)} record batches")
        counts.extend(lengths)
        tables.append(table if run_version == current.version else _upgrade(table, target))
        run.clear()

    for value in values:
        if not is_chunk(value):
            raise SchemaError(f"not a chunk value (format byte {value[:1]!r})")
        version, pos = read_uvarint(value, 1)
        if version not in versions:
            raise SchemaError(f"a chunk names schema version {version}, which this table handle does not know "
                              f"(known: {sorted(versions)}); open the table again")
        if version != run_version:
            flush()
            run_version = version
        run.append(memoryview(value)[pos:])
    flush()
    events = pa.concat_tables(tables).combine_chunks() if tables else target.empty_table()
    return events, counts


def _upgrade(table: pa.Table, target: pa.Schema) -> pa.Table:
    """Events of an older schema version in ``target``'s columns (new fields null)."""
    columns = [table.column(f.name) if f.name in table.schema.names else pa.nulls(table.num_rows, f.type)
               for f in target]
    return pa.Table.from_arrays(columns, schema=target)


def decode_chunk(value: bytes, versions: Mapping[int, EventSchema], current: EventSchema) -> pa.RecordBatch:
    """The events of a chunk value, in ``current``'s columns (``event_ts``, ``event_id``,
    payload): one Arrow call, no Python object per event. Fields added after the chunk was
    written read as nulls. Newest event first.

    Raises:
        SchemaError: not a chunk, a schema version ``versions`` does not hold (the schema
            evolved after the table was opened), or a corrupt value.
    """
    if not is_chunk(value):
        raise SchemaError(f"not a chunk value (format byte {value[:1]!r})")
    version, pos = read_uvarint(value, 1)
    written = versions.get(version)
    if written is None:
        raise SchemaError(f"a chunk names schema version {version}, which this table handle does not know "
                          f"(known: {sorted(versions)}); open the table again")
    try:
        batch = pa.ipc.read_record_batch(pa.py_buffer(value).slice(pos), chunk_schema(written))  # no copy
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(f"a corrupt chunk value (schema version {version}): {exc}") from exc
    if version == current.version:
        return batch
    target = chunk_schema(current)
    columns = [batch.column(f.name) if f.name in batch.schema.names else pa.nulls(batch.num_rows, f.type)
               for f in target]
    return pa.RecordBatch.from_arrays(columns, schema=target)
