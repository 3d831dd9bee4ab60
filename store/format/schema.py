"""Event schemas: which fields an event has, declared with Arrow types.

Every event has ``user_id`` (string) and ``event_ts`` (int64, milliseconds UTC); they live
in the row key and the qualifier. The other fields form the event's payload. An optional
input column ``event_id`` (string, UTF-8 binary or integer; an integer is its decimal
string) names events explicitly; without it an event is identified by its content (see
:mod:`store.format.keys`). When the column is given it must name every row: a null id is
quarantined as ``missing_event_id`` (never identified by content instead), an empty or
non-UTF-8 one as ``invalid_event_id``.

A table's schema is registered in HBase and versioned: adding a nullable field makes a
new version and old events read back with nulls; changing a field's type, dropping a
field or adding a non-nullable one is refused with :class:`SchemaError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from store.errors import SchemaError

USER_ID = "user_id"
EVENT_TS = "event_ts"
EVENT_ID = "event_id"

# Payload types the codec can encode; fixed-size lists carry embeddings.
_SCALARS = {
    pa.bool_(), pa.int8(), pa.int16(), pa.int32(), pa.int64(),
    pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64(),
    pa.float16(), pa.float32(), pa.float64(), pa.string(), pa.binary(),
}
_VECTOR_ITEMS = {pa.int8(), pa.uint8(), pa.float16(), pa.float32()}


def _check_type(field: pa.Field) -> None:
    t = field.type
    if t in _SCALARS:
        return
    if pa.types.is_fixed_size_list(t) and t.value_type in _VECTOR_ITEMS:
        return
    raise SchemaError(
        f"field {field.name!r} has unsupported type {t}; use a scalar "
        f"(int/float/bool/string/binary) or fixed_size_list<int8|uint8|float16|float32, n>"
    )


@dataclass(frozen=True, slots=True)
class EventSchema:
    """The payload fields of a table's events, at one schema version.

    Build it with :meth:`of`. ``payload`` excludes ``user_id`` and ``event_ts``.
    """

    payload: pa.Schema
    version: int = 1

    @classmethod
    def of(cls, fields: list[pa.Field] | pa.Schema, *, version: int = 1) -> EventSchema:
        """Declare a schema from Arrow fields. ``user_id``/``event_ts`` may be listed or omitted.

        Raises:
            SchemaError: a key field has the wrong type, or a payload type is unsupported.
        """
        payload = []
        for f in fields:
            if f.name == USER_ID:
                if not (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)):
                    raise SchemaError(f"'{USER_ID}' must be a string, not {f.type}")
            elif f.name == EVENT_TS:
                if f.type != pa.int64():
                    raise SchemaError(f"'{EVENT_TS}' must be int64 milliseconds UTC, not {f.type}")
            elif f.name == EVENT_ID:
                raise SchemaError(f"'{EVENT_ID}' is reserved for the optional event identity column")
            else:
                _check_type(f)
                payload.append(f)
        names = [f.name for f in payload]
        if len(set(names)) != len(names):
            raise SchemaError(f"duplicate field names in {names}")
        return cls(pa.schema(payload), version)

    @property
    def arrow(self) -> pa.Schema:
        """The full input schema: key fields first, then the payload."""
        return pa.schema([pa.field(USER_ID, pa.string(), nullable=False),
                          pa.field(EVENT_TS, pa.int64(), nullable=False), *self.payload])

    def to_bytes(self) -> bytes:
        """Arrow IPC serialization of the payload schema (how it is stored in HBase)."""
        return bytes(self.payload.serialize().to_pybytes())

    @classmethod
    def from_bytes(cls, data: bytes, version: int) -> EventSchema:
        return cls(pa.ipc.read_schema(pa.py_buffer(data)), version)

    def evolve_to(self, new: EventSchema) -> EventSchema:
        """Check that ``new`` is a compatible evolution and return it at the next version.

        Compatible: every existing field kept with the same type; new fields nullable.

        Raises:
            SchemaError: naming the field and what changed.
        """
        new_fields = {f.name: f for f in new.payload}
        for old in self.payload:
            if old.name not in new_fields:
                raise SchemaError(f"field {old.name!r} cannot be dropped (stored events carry it)")
            if new_fields[old.name].type != old.type:
                raise SchemaError(
                    f"field {old.name!r} cannot change type from {old.type} to {new_fields[old.name].type}; "
                    "add a new field instead"
                )
        old_names = set(self.payload.names)
        for f in new.payload:
            if f.name not in old_names and not f.nullable:
                raise SchemaError(f"new field {f.name!r} must be nullable: stored events have no value for it")
        if new.payload.names[: len(self.payload)] != self.payload.names:
            raise SchemaError("existing fields must keep their order; add new fields at the end")
        return EventSchema(new.payload, self.version + 1)

    def same_fields(self, other: EventSchema) -> bool:
        return bool(self.payload.equals(other.payload))


DEFAULT_SCHEMA = EventSchema.of([
    pa.field("event_type", pa.string(), nullable=False),
    pa.field("item_id", pa.int64(), nullable=False),
    pa.field("dwell_ms", pa.int32(), nullable=True),
])
"""The built-in schema used by the CLI and the demo."""


_TYPE_NAMES = {
    "bool": pa.bool_(), "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
    "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(), "uint64": pa.uint64(),
    "float16": pa.float16(), "float32": pa.float32(), "float64": pa.float64(),
    "string": pa.string(), "binary": pa.binary(),
}


def parse_type(text: str) -> pa.DataType:
    """Parse a type name: a scalar (``int64``, ``string``, ...) or ``list<float16, 8>``."""
    spec = text.strip().lower().replace(" ", "")
    if spec in _TYPE_NAMES:
        return _TYPE_NAMES[spec]
    for head in ("list<", "fixed_size_list<"):
        if spec.startswith(head) and spec.endswith(">"):
            item, _, size = spec[len(head) : -1].partition(",")
            if item in _TYPE_NAMES and size.isdigit() and int(size) > 0:
                return pa.list_(_TYPE_NAMES[item], int(size))
    raise SchemaError(f"unknown type {text!r}; use one of {', '.join(_TYPE_NAMES)} or list<float16, N>")


def fields_from_json(items: list[dict[str, object]], what: str = "fields") -> list[pa.Field]:
    """Arrow fields from ``[{"name": ..., "type": ..., "nullable": true}, ...]``; unknown keys are refused."""
    out = []
    for i, item in enumerate(items):
        unknown = set(item) - {"name", "type", "nullable"}
        if unknown or "name" not in item or "type" not in item:
            raise SchemaError(f"{what}[{i}] needs 'name' and 'type' (and optionally 'nullable'); got {sorted(item)}")
        nullable = bool(item.get("nullable", True))
        out.append(pa.field(str(item["name"]), parse_type(str(item["type"])), nullable=nullable))
    return out
