"""Columnar chunk cells: many consecutive events of one user in one cell value. Pure; no I/O.

The second tier of a user's history: up to ``chunk_events`` events stored column by column,
so a read decodes them with one Arrow call instead of one Python decode per event. A chunk
value (format 3, what is written)::

    format (uint8, = 3) | schema version (uint16) | layout (uint32) | events (uint32)
    | newest event_ts (int64) | per dictionary-coded field: values (uint8) | their bytes
    (uint32) | each value's length (uint16) | the values | Arrow IPC record batch message

(all little-endian).

The record batch holds the events newest first — the order of the raw tier's qualifiers, ties
by ``(event_ts, event_id)`` descending — in columns that follow from the table's registered
schema version and the ``layout`` bits, so the Arrow schema itself is never stored:

* ``ts_gap``: each event's time below the one before it (0 for the newest, whose time is in
  the header), uint32 — uint64 with :data:`WIDE_GAPS`;
* ``event_id`` (uint64), only with :data:`STORED_IDS`: a chunk whose every id is the content
  id that id scheme 2 gives its events (:func:`store.format.event_ids.content_ids` of the
  user, the time and the payload: the ids of every event written without an explicit id)
  leaves them out, and reading recomputes them; any other chunk (scheme 1 tables, explicit
  ids) stores them;
* the payload fields of that schema version; the ``k``-th string or binary field is
  dictionary-coded (int8 codes into the values of its dictionary in the header) when bit
  ``DICTIONARY << k`` is set — a chunk sets it where the field has at most 127 distinct
  values, each used twice on average.

Nulls, strings, binary and fixed-size vectors are otherwise Arrow's own encodings; the
family's HBase compression (ZSTD by default) compresses the cell, which measures better than
compressing each value (it sees a whole block of cells). The layout bits leave room for more
system columns coded against their neighbours (a knowledge time, mostly equal to the event
time). Format 2 values (``event_ts`` int64, ``event_id`` uint64 and the payload, plainly)
were written before format 3 and stay readable; nothing converts them until a merge
rewrites their chunk.

The payload format byte (1) of raw cells and the chunk format bytes (2, 3) differ, so a
value always says which tier it belongs to.

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
import itertools
import os
import struct
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.errors import SchemaError
from store.format.event_ids import bytes_hashes, content_ids
from store.format.keys import prefix_user
from store.format.payload import read_uvarint
from store.format.schema import EVENT_ID, EVENT_TS, EventSchema

FORMAT = 3  # what is written
FORMAT_2 = 2  # read only
STORED_IDS = 1  # layout bit: the chunk stores event_id (its ids are not all content ids)
WIDE_GAPS = 2  # layout bit: ts_gap is uint64 (a gap of 2**32 ms or more)
DICTIONARY = 4  # layout bit of the first string/binary field coded as a dictionary (the next: 8, ...)
DICTIONARY_MAX = 127  # int8 codes
TS_GAP = "ts_gap"
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
    """The Arrow schema of a chunk's decoded events with ``schema``: ``event_ts``, ``event_id``,
    payload."""
    return pa.schema([pa.field(EVENT_TS, pa.int64(), nullable=False),
                      pa.field(EVENT_ID, pa.uint64(), nullable=False), *schema.payload])


def _codable(schema: EventSchema) -> list[int]:
    """Positions in the payload of the fields that may be dictionary-coded (string, binary)."""
    return [i for i, f in enumerate(schema.payload)
            if pa.types.is_string(f.type) or pa.types.is_binary(f.type)]


@functools.lru_cache(maxsize=1024)
def _coded(schema: EventSchema, layout: int) -> list[int]:
    """Positions in the payload of the fields a chunk of ``layout`` dictionary-codes."""
    return [i for k, i in enumerate(_codable(schema)) if layout & (DICTIONARY << k)]


@functools.lru_cache(maxsize=1024)
def stored_schema(schema: EventSchema, layout: int) -> pa.Schema:
    """The Arrow schema of a format 3 chunk's record batch (see the module docstring)."""
    fields = [pa.field(TS_GAP, pa.uint64() if layout & WIDE_GAPS else pa.uint32(), nullable=False)]
    if layout & STORED_IDS:
        fields.append(pa.field(EVENT_ID, pa.uint64(), nullable=False))
    coded = set(_coded(schema, layout))
    fields.extend(pa.field(f.name, pa.int8(), nullable=f.nullable) if i in coded else f
                  for i, f in enumerate(schema.payload))
    return pa.schema(fields)


def encode_chunk(events: pa.Table | pa.RecordBatch, schema: EventSchema, row: bytes | None = None) -> bytes:
    """One chunk value holding ``events`` (``event_ts``, ``event_id`` and ``schema``'s payload
    columns, already validated), sorted newest first. ``row``: the user's row prefix, without
    which the chunk stores its ids.

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
    return encode_sorted_chunks([table], None if row is None else [row], schema)[0]


def encode_sorted_chunks(pieces: Sequence[pa.Table], rows: Sequence[bytes] | None, schema: EventSchema
                         ) -> list[bytes]:
    """The chunk values of ``pieces``, each already in :func:`chunk_schema`'s columns, sorted
    newest first, each ``(event_ts, event_id)`` once — what a merge step produces
    (:mod:`store.tiers.chunk_steps`); :func:`encode_chunk` checks and sorts first.

    ``rows``: each piece's user row prefix; a piece whose ids all equal their content ids
    leaves them out. Without ``rows`` every piece stores its ids. Every column is coded for all
    pieces at once (one content id computation, one dictionary encoding per field): a piece
    costs its own slices and one IPC message, not a dozen Arrow calls.
    """
    if not pieces:
        return []
    if schema.version > 0xFFFF:
        raise SchemaError(f"schema version {schema.version} does not fit a format 3 chunk (at most 65535)")
    counts = np.array([p.num_rows for p in pieces], dtype=np.int64)
    total = int(counts.sum())
    if not total:
        return [_encode_empty(schema) for _ in pieces]
    events = pa.concat_tables([p.select(chunk_schema(schema).names) for p in pieces]).combine_chunks()
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    full = counts > 0
    layouts = np.zeros(len(pieces), dtype=np.int64)
    ids = np.asarray(events.column(EVENT_ID).to_numpy(), dtype=np.uint64)
    if rows is None:
        layouts |= STORED_IDS
    else:
        same = _content_ids(events, _row_hashes(rows, counts), schema) == ids
        layouts[full] |= np.where(np.logical_and.reduceat(same, starts[full]), 0, STORED_IDS)
    ts = np.asarray(events.column(EVENT_TS).to_numpy(), dtype=np.int64)
    gaps = np.zeros(total, dtype=np.uint64)
    gaps[1:] = (ts[:-1] - ts[1:]).astype(np.uint64)
    gaps[starts[full]] = 0
    wide = np.zeros(len(pieces), dtype=bool)
    wide[full] = np.maximum.reduceat(gaps, starts[full]) > 0xFFFF_FFFF
    layouts[wide] |= WIDE_GAPS
    narrow_gaps = pa.array(gaps.astype(np.uint32))
    wide_gaps = pa.array(gaps) if wide.any() else narrow_gaps
    columns = {name: events.column(name).chunk(0) for name in events.schema.names}
    dictionaries: dict[str, _Dictionaries] = {}
    for k, i in enumerate(_codable(schema)):
        name = schema.payload[i].name
        dictionaries[name] = _Dictionaries.of(columns[name], counts)
        layouts[dictionaries[name].chosen] |= DICTIONARY << k
    out = []
    coded_of: dict[int, set[int]] = {}
    for p, (a, n, layout) in enumerate(zip(starts.tolist(), counts.tolist(), layouts.tolist(), strict=True)):
        if not n:
            out.append(_encode_empty(schema))
            continue
        arrays = [(wide_gaps if layout & WIDE_GAPS else narrow_gaps).slice(a, n)]
        if layout & STORED_IDS:
            arrays.append(columns[EVENT_ID].slice(a, n))
        messages = []
        coded_fields = coded_of.get(layout) or coded_of.setdefault(layout, set(_coded(schema, layout)))
        for i, f in enumerate(schema.payload):
            if i in coded_fields:
                codes, dictionary = dictionaries[f.name].piece(p, a, n)
                arrays.append(codes)
                messages.append(dictionary)
            else:
                arrays.append(columns[f.name].slice(a, n))
        batch = pa.RecordBatch.from_arrays(arrays, schema=stored_schema(schema, layout))
        out.append(b"".join([_HEAD.pack(FORMAT, schema.version, layout, n, int(ts[a])), *messages,
                             batch.serialize()]))
    return out


def _encode_empty(schema: EventSchema) -> bytes:
    batch = pa.RecordBatch.from_pylist([], schema=stored_schema(schema, STORED_IDS))
    body: bytes = batch.serialize().to_pybytes()
    return _HEAD.pack(FORMAT, schema.version, STORED_IDS, 0, 0) + body


class _Dictionaries:
    """One string or binary column of many pieces, dictionary-coded per piece, all at once:
    ``chosen`` marks the pieces worth coding (at most :data:`DICTIONARY_MAX` distinct values,
    each used twice on average, none over 65,535 bytes)."""

    def __init__(self, codes: np.ndarray, valid: pa.Array | None, offsets: np.ndarray, data: memoryview,
                 first: np.ndarray, distinct: np.ndarray, chosen: np.ndarray) -> None:
        self.codes, self.valid, self.offsets, self.data = codes, valid, offsets, data
        self.first, self.distinct, self.chosen = first, distinct, chosen

    @classmethod
    def of(cls, column: pa.Array, counts: np.ndarray) -> _Dictionaries:
        encoded = column.dictionary_encode()
        size = len(encoded.dictionary) + 1
        codes = np.asarray(encoded.indices.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        piece = np.repeat(np.arange(len(counts)), counts)
        unique, inverse = np.unique(piece * size + codes, return_inverse=True)
        owner = unique // size
        first = np.searchsorted(owner, np.arange(len(counts)))
        distinct = np.bincount(owner, minlength=len(counts))
        local = (inverse - first[piece]).astype(np.int8)  # wraps only where not chosen
        chosen = (counts > 0) & (distinct <= DICTIONARY_MAX) & (2 * distinct <= counts)
        valid = column.is_valid() if column.null_count else None
        values = encoded.dictionary.take(pa.array(unique % size, pa.int64())) if len(encoded.dictionary) \
            else pa.array([b""] * len(unique), pa.binary())
        buffers = values.buffers()
        offsets = np.frombuffer(buffers[1], dtype=np.int32, count=len(values) + 1, offset=values.offset * 4)
        if len(values) and int(np.diff(offsets).max()) > 0xFFFF:
            chosen[:] = False
        data = memoryview(buffers[2]) if buffers[2] is not None else memoryview(b"")
        return cls(local, valid, offsets, data, first, distinct, chosen)

    def piece(self, p: int, a: int, n: int) -> tuple[pa.Array, bytes]:
        """Piece ``p``'s codes (rows ``a:a+n``) and its dictionary: ``values (uint8) | their
        bytes (uint32 LE) | each value's length (uint16 LE) | the values``."""
        mask = None if self.valid is None else pc.invert(self.valid.slice(a, n))
        codes = pa.array(self.codes[a : a + n], pa.int8(), mask=None if mask is None else mask.to_numpy(
            zero_copy_only=False))
        first, d = int(self.first[p]), int(self.distinct[p])
        offsets = self.offsets[first : first + d + 1]
        start, end = int(offsets[0]), int(offsets[-1])
        lengths = np.diff(offsets).astype("<u2").tobytes()
        return codes, b"".join([_DICT.pack(d, end - start), lengths, self.data[start:end]])


def _row_hashes(rows: Sequence[bytes], counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per event, the scheme 2 hash of its user (:func:`bytes_hashes`), from its piece's row."""
    hashes = bytes_hashes(pa.array([prefix_user(r) for r in rows], pa.binary()))
    return np.repeat(hashes, counts)


def _content_ids(events: pa.Table, user_hashes: np.ndarray, schema: EventSchema) -> np.ndarray:
    """The scheme 2 content ids of ``events`` (one chunk or many; ``event_ts`` and ``schema``'s
    payload): what a chunk without stored ids reads as, and what it was checked against."""
    batches = events.combine_chunks().to_batches()
    if not batches:
        return np.zeros(0, dtype=np.uint64)
    return content_ids(batches[0], user_hashes, schema.payload, None)


@functools.lru_cache(maxsize=1024)
def _schema_message(schema: pa.Schema) -> bytes:
    message: bytes = schema.serialize().to_pybytes()
    return message


def is_chunk(value: bytes) -> bool:
    """Whether a cell value is a chunk (else a raw event payload)."""
    return bool(value) and value[0] in (FORMAT, FORMAT_2)


_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
_HEAD = struct.Struct("<BHIIq")  # format 3: format, schema version, layout, events, newest event_ts
_HEADS = np.dtype([("format", "u1"), ("version", "<u2"), ("layout", "<u4"), ("events", "<u4"), ("newest", "<i8")])
_DICT = struct.Struct("<BI")  # a dictionary: values, their bytes


class _Group(NamedTuple):
    """The values of one format, schema version and layout in a :func:`decode_chunks` call."""

    members: np.ndarray  # their positions in the call's values
    bodies: list[memoryview]  # their record batch messages
    events: np.ndarray  # format 3: their events
    newest: np.ndarray  # format 3: their newest event times
    dictionaries: list[tuple[np.ndarray, list[memoryview]]]  # format 3: per coded field, sizes and dictionaries


def _groups(values: Sequence[bytes], versions: Mapping[int, EventSchema]) -> dict[tuple[int, int, int], _Group]:
    """The values by format, schema version and layout, their parts located: the format 3
    headers of all values parsed at once (numpy over their joined bytes), format 2's one by one."""
    sizes = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    joined = b"".join(values)
    view = memoryview(joined)
    data = np.frombuffer(joined, dtype=np.uint8)
    base = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    if not sizes.min(initial=1):
        raise SchemaError("not a chunk value (format byte b'')")
    fmt = data[base]
    bad = np.flatnonzero((fmt != FORMAT) & (fmt != FORMAT_2))
    if len(bad):
        raise SchemaError(f"not a chunk value (format byte {bytes(fmt[bad[:1]])!r})")
    n = len(values)
    version = np.zeros(n, dtype=np.int64)
    layout = np.zeros(n, dtype=np.int64)
    events = np.zeros(n, dtype=np.int64)
    newest = np.zeros(n, dtype=np.int64)
    body = np.zeros(n, dtype=np.int64)  # where each value's record batch message starts in joined
    three = np.flatnonzero(fmt == FORMAT)
    dict_spans: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per coded field: values, start, end
    if len(three):
        if int(sizes[three].min()) < _HEAD.size:
            raise SchemaError("a corrupt chunk value: a short header")
        at = base[three]
        heads = np.frombuffer(data[at[:, None] + np.arange(_HEAD.size)].tobytes(), dtype=_HEADS)
        version[three], layout[three] = heads["version"], heads["layout"]
        events[three], newest[three] = heads["events"], heads["newest"]
        pos = at + _HEAD.size
        coded = np.array([int(x).bit_count() for x in (layout[three] >> 2).tolist()], dtype=np.int64)
        end = base[three] + sizes[three]
        for j in range(int(coded.max(initial=0))):
            has = coded > j
            if (pos[has] + _DICT.size > end[has]).any():
                raise SchemaError("a corrupt chunk value: a short dictionary header")
            p = np.where(has, pos, 0)
            distinct = np.where(has, data[p], 0).astype(np.int64)
            size = np.where(has, data[p + 1] | data[p + 2].astype(np.int64) << 8 | data[p + 3].astype(np.int64) << 16
                            | data[p + 4].astype(np.int64) << 24, 0)
            start = pos + _DICT.size
            stop = start + 2 * distinct + size
            dict_spans.append((distinct, start, stop))
            pos = np.where(has, stop, pos)
        if (pos > end).any():
            raise SchemaError("a corrupt chunk value: its header runs past its end")
        body[three] = pos
    for k in np.flatnonzero(fmt == FORMAT_2).tolist():
        version[k], at2 = read_uvarint(values[k], 1)
        body[k] = base[k] + at2
    for v in np.unique(version).tolist():
        if v not in versions:
            raise SchemaError(f"a chunk names schema version {v}, which this table handle does not know "
                              f"(known: {sorted(versions)}); open the table again")
    ends = (base + sizes).tolist()
    starts = body.tolist()
    key = fmt.astype(np.int64) << 48 | version << 32 | layout
    groups: dict[tuple[int, int, int], _Group] = {}
    for k in np.unique(key).tolist():
        members = np.flatnonzero(key == k)
        spans = []
        if k >> 48 == FORMAT:
            where = np.searchsorted(three, members)  # positions among format 3 values
            coded_fields = ((k & 0xFFFF_FFFF) >> 2).bit_count()
            for distinct, start, stop in dict_spans[:coded_fields]:
                spans.append((distinct[where], [view[a:b] for a, b in zip(start[where].tolist(), stop[where].tolist(),
                                                                            strict=True)]))
        bodies = [view[starts[m] : ends[m]] for m in members.tolist()]
        groups[(k >> 48, (k >> 32) & 0xFFFF, k & 0xFFFF_FFFF)] = _Group(
            members, bodies, events[members], newest[members], spans)
    return groups


def decode_chunks(values: Sequence[bytes], versions: Mapping[int, EventSchema], current: EventSchema,
                  rows: Sequence[bytes] | None = None) -> tuple[pa.Table, list[int]]:
    """Many chunk values as one table in ``current``'s :func:`chunk_schema` columns, in order,
    and the events of each. The values of one format, schema version and layout are read as
    one IPC stream (one Arrow call for all of them, wherever they are in ``values``), and the
    ids of all chunks without stored ids are computed in one go. ``rows``: each value's user
    row prefix, needed for chunks without stored ids (ValueError if missing then). Fields
    added after a chunk was written read as nulls.

    Raises:
        SchemaError: not a chunk, a schema version ``versions`` does not hold (the schema
            evolved after the table was opened), or a corrupt value.
    """
    events, counts, pending = decode_chunks_deferred(values, versions, current, rows)
    return (events if pending is None else pending.fill(events, None)), counts


class PendingIds(NamedTuple):
    """The ids :func:`decode_chunks_deferred` left to compute: a read that returns a few of the
    events it decoded computes only theirs (content ids cost ~50 ns an event, in bulk)."""

    need: np.ndarray  # per event: its id is still to compute (event_id holds 0 there)
    user_hashes: np.ndarray  # per event: its user's hash (:func:`_row_hashes`)
    schema: EventSchema  # the columns' schema version (content ids skip its null fields)

    def fill(self, events: pa.Table, at: np.ndarray | None) -> pa.Table:
        """``events`` with the ids computed at rows ``at`` (indices; None: every row)."""
        if at is None:
            picked = np.flatnonzero(self.need)
        else:
            wanted = np.zeros(len(self.need), dtype=bool)
            wanted[at] = True
            picked = np.flatnonzero(wanted & self.need)
        if not len(picked):
            return events
        if len(picked) == events.num_rows:
            ids = _content_ids(events, self.user_hashes, self.schema)
        else:
            ids = np.asarray(events.column(EVENT_ID).to_numpy(), dtype=np.uint64).copy()
            taken = events.take(pa.array(picked, pa.int64()))
            ids[picked] = _content_ids(taken, self.user_hashes[picked], self.schema)
        self.need[picked] = False
        return events.set_column(1, chunk_schema(self.schema).field(1), pa.array(ids, pa.uint64()))


def decode_chunks_deferred(values: Sequence[bytes], versions: Mapping[int, EventSchema], current: EventSchema,
                           rows: Sequence[bytes] | None) -> tuple[pa.Table, list[int], PendingIds | None]:
    """:func:`decode_chunks`, but the ids of chunks without stored ids are left to compute
    (0 until :meth:`PendingIds.fill`); None when there are none."""
    target = chunk_schema(current)
    if not values:
        return target.empty_table(), [], None
    groups = _groups(values, versions)
    tables: list[pa.Table] = []
    counts = np.zeros(len(values), dtype=np.int64)
    placed = np.zeros(len(values), dtype=np.int64)  # where each value's events start in the concatenation
    derive: list[np.ndarray] = []  # per group: whether its events need their ids computed
    done = 0
    for (fmt, version, layout), group in groups.items():
        written = versions[version]
        if fmt == FORMAT_2:
            table = _read_stream(chunk_schema(written), group.bodies, version)
            lengths = _lengths(table, len(group.members), version)
        else:
            table, lengths = _format_3(group, written, layout)
        counts[group.members] = lengths
        placed[group.members] = done + np.concatenate([[0], np.cumsum(lengths)[:-1]])
        done += table.num_rows
        derive.append(np.full(table.num_rows, fmt == FORMAT and not layout & STORED_IDS))
        tables.append(_upgrade(table, target))
    events = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    need = np.concatenate(derive)
    if len(groups) > 1:  # back to the order of values: one slice per run of values read together
        jumps = np.flatnonzero(placed[1:] != placed[:-1] + counts[:-1]) + 1
        runs = np.concatenate([[0], jumps, [len(values)]])
        spans = [(int(placed[a]), int(counts[a:b].sum())) for a, b in itertools.pairwise(runs)]
        events = pa.concat_tables([events.slice(a, n) for a, n in spans])
        need = np.concatenate([need[a : a + n] for a, n in spans])
    if not need.any():
        return pa.Table.from_arrays(events.columns, schema=target), counts.tolist(), None
    if rows is None:
        raise ValueError("chunks without stored ids are decoded with their rows")
    ids = events.column(EVENT_ID).fill_null(0)
    events = events.set_column(1, target.field(1), ids)
    return events, counts.tolist(), PendingIds(need, _row_hashes(rows, counts), current)


def _lengths(table: pa.Table, expected: int, version: int) -> np.ndarray:
    lengths = np.array([len(c) for c in table.column(0).chunks], dtype=np.int64)
    if len(lengths) != expected:
        raise SchemaError(f"a corrupt chunk value (schema version {version}): {expected} chunks, "
                          f"{len(lengths)} record batches")
    return lengths


def _read_stream(schema: pa.Schema, bodies: Sequence[memoryview], version: int) -> pa.Table:
    stream = b"".join([_schema_message(schema), *bodies, _EOS])
    try:
        return pa.ipc.open_stream(pa.py_buffer(stream)).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(f"a corrupt chunk value (schema version {version}): {exc}") from exc


def _format_3(group: _Group, written: EventSchema, layout: int) -> tuple[pa.Table, np.ndarray]:
    """Format 3 chunks of one layout in ``written``'s :func:`chunk_schema` columns (ids null
    unless stored), and their lengths: times from the gaps, strings from their dictionaries."""
    version = written.version
    stored = _read_stream(stored_schema(written, layout), group.bodies, version)
    lengths = group.events
    if int(lengths.sum()) != stored.num_rows:
        raise SchemaError(f"a corrupt chunk value (schema version {version}): {stored.num_rows} events where the "
                          f"headers say {int(lengths.sum())}")
    gaps = np.asarray(stored.column(TS_GAP).to_numpy(), dtype=np.uint64).view(np.int64)
    before = np.concatenate([[0], np.cumsum(gaps)])  # the gaps before each event, summed
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ts = np.repeat(group.newest + before[starts], lengths) - before[1:]
    coded = _coded(written, layout)
    payload = []
    for i, f in enumerate(written.payload):
        column = stored.column(f.name)
        if i in coded:
            sizes, blobs = group.dictionaries[coded.index(i)]
            dictionary = _dictionary(f, sizes, blobs, version)
            offsets = np.repeat(np.concatenate([[0], np.cumsum(sizes)[:-1]]), lengths)
            codes = np.asarray(column.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64) + offsets
            mask = None if not column.null_count else np.asarray(column.is_null().to_numpy(zero_copy_only=False))
            column = dictionary.take(pa.array(codes, pa.int64(), mask=mask))
        payload.append(column)
    ids = stored.column(EVENT_ID) if layout & STORED_IDS else pa.chunked_array([pa.nulls(len(ts), pa.uint64())])
    schema = chunk_schema(written)
    table = pa.Table.from_arrays([pa.array(ts, pa.int64()), ids, *payload],
                                 schema=schema.set(1, schema.field(1).with_nullable(True)))
    return table, lengths


def _dictionary(field: pa.Field, sizes: np.ndarray, blobs: list[memoryview], version: int) -> pa.Array:
    """The values of many chunks' dictionaries of ``field`` (``sizes`` values each), as one array."""
    lengths = []
    data = []
    for d, blob in zip(sizes.tolist(), blobs, strict=True):  # each: lengths (uint16 LE), then the values
        lengths.append(blob[: 2 * d])
        data.append(blob[2 * d :])
    offsets = np.zeros(int(sizes.sum()) + 1, dtype=np.int32)
    np.cumsum(np.frombuffer(b"".join(lengths), dtype="<u2"), out=offsets[1:])
    values = b"".join(data)
    if int(offsets[-1]) != len(values):
        raise SchemaError(f"a corrupt chunk value (schema version {version}): a dictionary of {field.name} "
                          "holds other bytes than its lengths say")
    return pa.Array.from_buffers(field.type, len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(values)])


def _upgrade(table: pa.Table, target: pa.Schema) -> pa.Table:
    """Events of any schema version in ``target``'s columns (fields added since null), ids
    nullable (those to be computed are null)."""
    columns = [table.column(f.name) if f.name in table.schema.names else pa.nulls(table.num_rows, f.type)
               for f in target]
    return pa.Table.from_arrays(columns, schema=target.set(1, target.field(1).with_nullable(True)))


def decode_chunk(value: bytes, versions: Mapping[int, EventSchema], current: EventSchema,
                 row: bytes | None = None) -> pa.Table:
    """The events of a chunk value, in ``current``'s columns (``event_ts``, ``event_id``,
    payload), newest first; ``row``: the user's row prefix (see :func:`decode_chunks`)."""
    return decode_chunks([value], versions, current, None if row is None else [row])[0]
