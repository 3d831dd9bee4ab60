"""How the writer fails: once one put has failed, the puts still queued behind it are dropped
instead of each waiting out its own retry budget (no server needed: a scripted pool)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pyarrow as pa
import pytest

from store import DEFAULT_SCHEMA, TableSpec
from store.errors import StoreUnavailableError
from store.io.calls import PUT_CELLS_PER_CALL
from store.table.handle import TableHandle
from store.table.registry import Registration
from store.writer import write_events

T0 = 1_700_000_000_000


class DeadAfterFirstPool:
    """Once ``size`` puts run at once, the first fails as against a dead HBase; the others take a
    while, then succeed."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.started = 0
        self._lock = threading.Lock()
        self._all_running = threading.Barrier(size)

    def call(self, method: str, *_: Any) -> None:
        with self._lock:
            self.started += 1
            first = self.started == 1
        if self.started <= self.size:
            self._all_running.wait(timeout=10)
        if first:
            raise StoreUnavailableError("HBase unreachable: putMultiple failed for 60 s", "h:1", 60.0)
        time.sleep(0.3)


def test_a_failed_put_drops_the_puts_queued_behind_it() -> None:
    size = 4
    pool = DeadAfterFirstPool(size)
    table = TableHandle.open(pool, Registration(TableSpec("t"), (DEFAULT_SCHEMA,)))  # type: ignore[arg-type]
    n = PUT_CELLS_PER_CALL * (2 * size + 2)  # more calls than run (size) plus wait queued (size)
    events = pa.table({
        "user_id": [f"u{i % 500}" for i in range(n)], "event_ts": [T0 + i for i in range(n)],
        "event_type": ["click"] * n, "item_id": list(range(n)), "dwell_ms": [1] * n,
    })
    with pytest.raises(StoreUnavailableError, match="HBase unreachable"):
        write_events(table, events, chunk_rows=n, now_ms=T0 + n)
    # The failed call and the size - 1 running beside it; none of the queued ones, not even the one
    # its freed worker picks up at once (each would wait out its own budget against a dead server).
    assert pool.started == size
