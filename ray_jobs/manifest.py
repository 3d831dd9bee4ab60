"""The backfill manifest: which units of an input are done, stored in HBase.

One row per completed unit in ``seqstore_meta``: ``<table>|backfill|<unit key>``, holding
the unit's fingerprint (rows, size and modification time of its file) and its counts. A
unit is recorded only after every write of it was acknowledged, so a crash at any point
leaves a manifest that a re-run can trust: recorded units whose fingerprint still matches
are skipped, everything else is (re)written, and re-writing is idempotent.
"""

from __future__ import annotations

import json
from typing import Any

from store.connection import ClientPool, idl
from store.keys import prefix_end
from store.scanning import scan_results
from store.table import META, META_TABLE, ensure_meta_table


def _prefix(table: str) -> bytes:
    # Under the table's own prefix, so dropping the table forgets its manifest too.
    return table.encode() + b"|backfill|"


def _row(table: str, unit_key: str) -> bytes:
    return _prefix(table) + unit_key.encode()


def load(pool: ClientPool, table: str) -> dict[str, dict[str, Any]]:
    """Completed units of ``table``: unit key -> recorded entry."""
    ensure_meta_table(pool)
    t = idl()
    start = _prefix(table)
    scan = t.TScan(startRow=start, stopRow=prefix_end(start), columns=[t.TColumn(family=META)])
    done: dict[str, dict[str, Any]] = {}
    for r in scan_results(pool, META_TABLE, scan, 1000):
        entry = json.loads(r.columnValues[0].value)
        done[entry["unit"]] = entry
    return done


def record(pool: ClientPool, table: str, entry: dict[str, Any]) -> None:
    """Mark one unit done (``entry["unit"]`` is its key). Idempotent."""
    t = idl()
    value = json.dumps(entry, sort_keys=True).encode()
    pool.call("put", META_TABLE, t.TPut(row=_row(table, entry["unit"]),
                                        columnValues=[t.TColumnValue(META, b"unit", value)]))


def clear(pool: ClientPool, table: str) -> int:
    """Forget every completed unit of ``table`` (what ``--force`` does first)."""
    t = idl()
    keys = list(load(pool, table))
    if keys:
        pool.call("deleteMultiple", META_TABLE, [t.TDelete(row=_row(table, k)) for k in keys])
    return len(keys)
