"""Per-user features with history: each version's cell timestamp is its valid-from time.

A feature is a column ``f:<name>`` of the user's features row (the bare user prefix).
``VERSIONS = feature_versions`` keeps that many valid-from times per feature; the family
has no TTL, so an old valid-from time never expires a value.

* :func:`write_features` sends many values with many timestamps per Thrift call (Thrift2
  carries a timestamp per cell), never one round trip per cell.
* :func:`read_features` returns, per request, the newest kept version with
  ``valid_from < as_of`` (``<=`` with ``inclusive=True``): the rule events follow, so a
  version stamped by the event at ``as_of`` itself is not seen. One ``getMultiple`` per
  chunk of users reads their newest versions; a second one reads every kept version of the
  users asked about a time before their newest. Time ranges are never sent: HBase would
  count versions only after skipping the newer ones, and return a version past
  ``feature_versions`` until it compacts it away.
* :func:`feature_history` returns all kept versions of one feature, newest first: the same
  versions reads choose from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from store.errors import HBaseError, InvalidEventError, SchemaError
from store.format import keys
from store.format.keys import FEATURES
from store.format.payload import payload_array
from store.format.schema import USER_ID
from store.format.vectors import vector_array, vector_rows
from store.inputs.requests import Requests, normalize, user_ids
from store.inputs.rows import MIN_PLAUSIBLE_MS, Verdicts, conform_user_ids, reject_null_vector_items
from store.io.calls import GETS_PER_CALL, get_multiple, put_rows
from store.io.connection import idl

if TYPE_CHECKING:
    from store.table.handle import TableHandle

VALID_FROM = "valid_from_ts"
CELLS_PER_CALL = 20_000  # bounds a getMultiple reading many versions of each feature


def write_features(table: TableHandle, data: pa.Table) -> int:
    """Write feature values; returns the number of cells written.

    ``data`` has ``user_id``, ``valid_from_ts`` (int64 ms UTC) and one column per feature
    to set (a subset of the table's features). Null values are skipped (not written).
    User ids are converted and checked exactly as for events
    (:func:`store.inputs.rows.conform_user_ids`): the integer ``5`` is user ``"5"``.

    Raises:
        SchemaError: unknown feature columns, missing key columns, a bad timestamp or type.
        InvalidEventError: a row's user id is null, empty, too long or not castable to a
            string (``missing_user``, ``user_id_too_long``, ``wrong_type``), or a vector has
            a null item (``null_in_vector``); names the first such row. Nothing is written.

    Idempotent: the same value at the same valid-from time is the same cell.
    """
    names = [n for n in data.schema.names if n not in (USER_ID, VALID_FROM)]
    known = {f.name: f for f in table.spec.features}
    unknown = sorted(set(names) - set(known))
    if unknown or USER_ID not in data.schema.names or VALID_FROM not in data.schema.names:
        raise SchemaError(f"features need {USER_ID}, {VALID_FROM} and known features {sorted(known)}; "
                          f"unknown: {unknown}")
    ts = np.asarray(data.column(VALID_FROM).cast(pa.int64()).fill_null(-1).to_numpy(), dtype=np.int64)
    if (ts < MIN_PLAUSIBLE_MS).any():
        raise SchemaError(f"{VALID_FROM} must be int64 milliseconds UTC (row {int(np.argmax(ts < MIN_PLAUSIBLE_MS))})")
    verdicts = Verdicts.empty(data.num_rows)
    users = conform_user_ids(data.column(USER_ID), verdicts).to_pylist()
    cast: dict[str, pa.Array] = {}
    for name in names:
        column = data.column(name).combine_chunks()
        try:
            column = column.cast(known[name].type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(f"feature {name!r} must be {known[name].type}: {exc}") from exc
        if pa.types.is_fixed_size_list(column.type):
            column = reject_null_vector_items(column, name, verdicts)
        cast[name] = column
    if not verdicts.valid.all():
        i = int(np.argmin(verdicts.valid))
        raise InvalidEventError(verdicts.reason[i], verdicts.field[i], i, verdicts.detail[i])
    t = idl()
    per_row: dict[bytes, list[Any]] = {}
    for name, column in cast.items():
        values, _ = table.feature_codecs[name].encode(pa.RecordBatch.from_arrays([column], names=[name]))
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        qualifier = name.encode()
        for i in np.flatnonzero(valid).tolist():
            row = keys.user_prefix(users[i], table.spec.salt_buckets)
            per_row.setdefault(row, []).append(
                t.TColumnValue(family=FEATURES, qualifier=qualifier, value=values[i], timestamp=int(ts[i])))
    put_rows(table.pool, table.name_bytes, per_row)
    return sum(len(columns) for columns in per_row.values())


def read_features(table: TableHandle, requests: Requests, names: Sequence[str], *, inclusive: bool = False,
                  allow_any_ts: bool = False) -> pa.Table:
    """Per request, each feature's newest version with ``valid_from < as_of`` (null if none).

    The time rule of :func:`store.reader.read_sequences`: a version stamped exactly at
    ``as_of`` (e.g. updated by the labelled event itself) is not seen unless ``inclusive``
    (``valid_from <= as_of``); pass the same ``inclusive`` to both reads.

    Only the ``feature_versions`` newest versions count — those :func:`feature_history`
    lists —, so the answer does not change when HBase compacts away older ones.
    ``requests`` takes the shapes of :func:`store.inputs.requests.normalize`; user ids are converted
    as on writes, so a feature written for ``5`` reads back for ``5`` and ``"5"``.
    Returns ``user_id`` (as given, with its type), ``as_of_ts`` and one column per name, in
    request order. ``allow_any_ts`` skips the timestamp units check.

    Raises:
        SchemaError: an unknown feature, or requests that are ambiguous or invalid.
        InvalidRequestError: an ``as_of_ts`` that looks like seconds or microseconds.
        StoreUnavailableError, HBaseError: as raised by the connection (HBaseError also when
            HBase answers with results that do not match the request).
    """
    known = {f.name: f for f in table.spec.features}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SchemaError(f"unknown feature(s) {unknown}; the table has {sorted(known)}")
    batch = normalize(requests, allow_any_ts=allow_any_ts)
    rows = [keys.user_prefix(u, table.spec.salt_buckets) for u in batch.users]
    as_of = [int(ts) for ts in batch.ts]
    bound = [ts + 1 if inclusive else ts for ts in as_of]  # a version is seen iff valid_from < bound
    # First each user's newest version only: it answers every request as of a time after it.
    kept = _versions(table, list(dict.fromkeys(rows)), names, 1)
    deeper = sorted({row for row, end in zip(rows, bound, strict=True)
                     for cells in kept[row].values() if cells and cells[0][0] >= end})
    if deeper and table.spec.feature_versions > 1:
        kept.update(_versions(table, deeper, names, table.spec.feature_versions))
    out: dict[str, list[Any]] = {n: [None] * len(rows) for n in names}
    for i, (row, end) in enumerate(zip(rows, bound, strict=True)):
        for name, cells in kept[row].items():
            value = next((v for stamp, v in cells if stamp < end), None)
            if value is not None:
                out[name][i] = table.feature_codecs[name].decode(value)[0]
    arrays = {USER_ID: batch.ids, "as_of_ts": pa.array(as_of, pa.int64())}
    for n in names:
        arrays[n] = payload_array(out[n], known[n].type)
    return pa.table(arrays)


def _versions(table: TableHandle, rows: list[bytes], names: Sequence[str],
              versions: int) -> dict[bytes, dict[str, list[tuple[int, bytes]]]]:
    """Per row, per feature, the newest ``versions`` kept versions ``(valid_from_ts, encoded
    value)``, newest first — what :func:`feature_history` lists, never a version past
    ``feature_versions`` that HBase has not compacted away yet (a get with a time range would
    count versions only after skipping newer ones, and return it)."""
    t = idl()
    columns = [t.TColumn(family=FEATURES, qualifier=n.encode()) for n in names]
    gets = [t.TGet(row=row, columns=columns, maxVersions=versions) for row in rows]
    per_call = max(1, min(GETS_PER_CALL, CELLS_PER_CALL // (versions * max(1, len(names)))))
    results = get_multiple(table.pool, table.name_bytes, gets, per_call=per_call, executor=table.pool.executor)
    kept: dict[bytes, dict[str, list[tuple[int, bytes]]]] = {}
    for i, (row, result) in enumerate(zip(rows, results, strict=True)):
        if result.row not in (None, b"", row):
            raise HBaseError(f"getMultiple result {i} is for another row")
        cells: dict[str, list[tuple[int, bytes]]] = {}
        for cv in result.columnValues:
            cells.setdefault(cv.qualifier.decode(), []).append((int(cv.timestamp), cv.value))
        kept[row] = {name: sorted(found, key=lambda c: -c[0]) for name, found in cells.items()}
    return kept


def feature_history(table: TableHandle, user_id: str | bytes | int, name: str) -> list[tuple[int, Any]]:
    """All kept versions of one feature of one user: ``[(valid_from_ts, value), ...]`` newest first.

    Raises:
        SchemaError: an unknown feature, or a null, empty or too long user id.
    """
    if name not in table.feature_codecs:
        raise SchemaError(f"unknown feature {name!r}")
    (user,) = user_ids([user_id])
    t = idl()
    get = t.TGet(row=keys.user_prefix(user, table.spec.salt_buckets),
                 columns=[t.TColumn(family=FEATURES, qualifier=name.encode())],
                 maxVersions=table.spec.feature_versions)
    result = table.pool.call("get", table.name_bytes, get)
    arrow_type = next(f.type for f in table.spec.features if f.name == name)
    values = [table.feature_codecs[name].decode(cv.value)[0] for cv in result.columnValues]
    if pa.types.is_fixed_size_list(arrow_type):
        rows, valid = vector_rows(vector_array(values, arrow_type))
        values = [row if ok else None for row, ok in zip(rows, valid, strict=True)]
    history = [(cv.timestamp, v) for cv, v in zip(result.columnValues, values, strict=True)]
    return sorted(history, key=lambda h: -h[0])
