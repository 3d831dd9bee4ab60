"""A table's settings as a value: :class:`TableSpec`, checked when made, and its TTL rule."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import pyarrow as pa

from store.errors import ConfigError, InvalidRequestError
from store.format.event_ids import SCHEMES
from store.format.keys import DAY_MS, META_TABLE
from store.format.schema import DEFAULT_SCHEMA, EventSchema
from store.io.connection import idl

HBASE_FOREVER = 2**31 - 1  # HBase's TTL is an i32 of seconds: this is "forever"
# HBase refuses a cell larger than hbase.server.keyvalue.maxsize (10 MB by default); a chunk of
# chunk_events events of max_payload_bytes each must fit in one.
CELL_LIMIT_BYTES = 10 * 1024 * 1024
_CHUNK_OVERHEAD = 1024  # a chunk's header and Arrow framing, generously


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
        chunk_events: most events in one compacted chunk cell (:mod:`store.tiers.compaction`); chunks
            hold between half of this and this many, so a read of ``max_len`` events decodes
            about ``max_len / chunk_events + 1`` cells. None: the table has no chunk tier
            (tables created before seqstore had one), it is never compacted.
        id_scheme: how event ids are hashed (:mod:`store.format.event_ids`): 2, column-wise,
            for new tables; 1 for tables registered before scheme 2 (their ids stay theirs).
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
    id_scheme: int = 2

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
        if self.id_scheme not in SCHEMES:
            raise ConfigError(f"'id_scheme' must be one of {SCHEMES}")
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
        compaction drops an event only well after (:data:`store.tiers.chunk_steps.TTL_MARGIN_MS`), so
        clocks apart by less than that never make it delete an event a read could return."""
        return None if self.ttl_days is None else now_ms - self.ttl_s * 1000

    def check_tiered(self) -> None:
        """Raise :class:`InvalidRequestError` if the table has no chunk tier (it cannot be compacted)."""
        if self.chunk_events is None:
            raise InvalidRequestError(
                f"table {self.name!r} has no chunk tier (it was created before seqstore compacted tables), "
                "so it cannot be compacted; it is read from its raw tier only. Recreate it and backfill again "
                "to compact it")

    def settings(self) -> dict[str, Any]:
        """The spec without the schemas, as stored in the metadata table."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("schema", "features")}
