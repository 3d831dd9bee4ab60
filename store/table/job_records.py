"""What jobs keep about a table in the ``seqstore_meta`` table: one row per record.

A job's records of table ``T`` are the rows ``T|<job>|<key>`` (e.g. the backfill's completed
units, ``T|backfill|<unit key>``), each holding one JSON entry. They sit under the table's own
prefix (:func:`store.table.registry.owned_prefix`), so dropping the table forgets them too. A record is
only ever replaced, one at a time (a job redoing a unit overwrites that unit's entry): jobs on
other inputs of the same table keep theirs.
"""

from __future__ import annotations

import json
from typing import Any

from store.format.keys import META, META_TABLE, prefix_end
from store.io.connection import ClientPool, idl
from store.io.scanning import scan_results
from store.table.registry import ensure_meta_table, owned_prefix

_ENTRY = b"unit"  # the qualifier of a record's entry (named when records were only backfill units)


def _prefix(table: str, job: str) -> bytes:
    return owned_prefix(table) + job.encode() + b"|"


def load(pool: ClientPool, table: str, job: str) -> dict[str, dict[str, Any]]:
    """Every record of ``job`` about ``table``: key -> entry."""
    ensure_meta_table(pool)
    t = idl()
    start = _prefix(table, job)
    scan = t.TScan(startRow=start, stopRow=prefix_end(start), columns=[t.TColumn(family=META, qualifier=_ENTRY)])
    return {r.row[len(start):].decode(): json.loads(r.columnValues[0].value)
            for r in scan_results(pool, META_TABLE, scan, 1000)}


def record(pool: ClientPool, table: str, job: str, key: str, entry: dict[str, Any]) -> None:
    """Write (or replace) the record ``key`` of ``job``. Idempotent."""
    t = idl()
    value = json.dumps(entry, sort_keys=True).encode()
    pool.call("put", META_TABLE, t.TPut(row=_prefix(table, job) + key.encode(),
                                        columnValues=[t.TColumnValue(META, _ENTRY, value)]))

