"""Reading the raw tier: one user's per-event cells for one request, as a stateless scan.

A request is one Thrift2 ``getScannerResults`` call in the common case: a scan from the
user's bucket of ``hi`` back in time, the server filtering on the cell timestamp (= event
time) and returning at most ``max_len`` cells per row. Continuations fetch geometrically more
rows for users whose recent buckets are sparse, resuming inside a wide row where an
``event_types`` filter rejected most of it (see :mod:`store.io.scanning`). Memory per request
is bounded by ``max_len`` times a small constant, whatever the user's history length.

The reader (:mod:`store.reader`) scans the raw tier only for users whose raw-tier flag is
set (events written since their last compaction), and for every user of a table without a
chunk tier.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from store.format import keys
from store.format.chunk import chunk_schema
from store.format.keys import EVENTS
from store.format.payload import payload_array
from store.io.connection import idl
from store.io.scanning import scan_results

if TYPE_CHECKING:
    from store.table.handle import TableHandle

FIRST_ROWS = 2
Event = tuple[int, int, list[Any]]  # (event_ts, event_id, payload values)
# Cells one getScannerResults call may return (page rows x max_len): bounds one Thrift reply.
SCAN_CELLS_PER_CALL = 8_192


class RawScans:
    """How one table's raw tier is read for one call; :meth:`read` serves one request."""

    def __init__(self, table: TableHandle, max_len: int, types: set[str] | None) -> None:
        self.table = table
        self.max_len = max_len
        self.types = types
        self.type_index = table.codec.field_names.index("event_type") if types is not None else -1
        self.t = idl()
        self.columns = [self.t.TColumn(family=EVENTS)]
        # Cells per row seen so far in this call: the first scan of the next request asks for
        # enough rows to fill max_len at once (one round trip) instead of growing from FIRST_ROWS.
        # Threads update these without a lock; a lost update only makes one guess less informed.
        self.seen_cells = 0
        self.seen_rows = 0

    def first_rows(self) -> int:
        if self.seen_rows < 8:
            return FIRST_ROWS
        per_row = max(1.0, self.seen_cells / self.seen_rows)
        if per_row >= self.max_len:
            return 1  # one row (batched to max_len cells) is enough
        # One spare row absorbs the variance of row widths.
        return max(1, min(math.ceil(self.max_len / per_row) + 1, SCAN_CELLS_PER_CALL // self.max_len))

    def read(self, user: str | bytes, hi: int, lo: int, mark: tuple[int, int] | None) -> list[Event]:
        """The newest ``max_len`` visible events with ``lo <= event_ts < hi``, not below ``mark``."""
        if hi <= lo:
            return []
        spec = self.table.spec
        prefix = keys.user_prefix(user, spec.salt_buckets)
        low_bucket = keys.bucket_of(lo, spec.bucket_ms)
        stop = keys.row_key(prefix, low_bucket - 1) if low_bucket > 0 else keys.prefix_end(prefix)
        start = keys.scan_start(prefix, keys.bucket_of(hi - 1, spec.bucket_ms))
        scan = self.t.TScan(startRow=start, stopRow=stop, columns=self.columns, maxVersions=1,
                            timeRange=self.t.TTimeRange(minStamp=lo, maxStamp=hi), batchSize=self.max_len)
        out: list[Event] = []
        decode = self.table.codec.decode
        results = scan_results(self.table.pool, self.table.name_bytes, scan, self.first_rows(),
                               max_page=SCAN_CELLS_PER_CALL // self.max_len)
        for result in results:
            # A result of max_len cells is a (possibly partial) wide row: it counts as max_len wide.
            self.seen_rows += 1
            self.seen_cells += len(result.columnValues)
            for cv in result.columnValues:
                ts, eid = keys.parse_qualifier(cv.qualifier)
                if mark is not None and (ts, eid) < mark:
                    continue
                payload = decode(cv.value)
                if self.types is not None and payload[self.type_index] not in self.types:
                    continue
                out.append((ts, eid, payload))
                if len(out) == self.max_len:
                    return out
        return out


def events_table(table: TableHandle, events: list[Event]) -> pa.Table:
    """Decoded raw events as a table in the chunk tier's columns (the current schema)."""
    schema = chunk_schema(table.codec.current)
    columns = [pa.array([e[0] for e in events], pa.int64()), pa.array([e[1] for e in events], pa.uint64())]
    columns += [payload_array([e[2][j] for e in events], f.type) for j, f in enumerate(table.codec.current.payload)]
    return pa.Table.from_arrays(columns, schema=schema)
