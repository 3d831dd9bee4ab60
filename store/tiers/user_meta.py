"""The per-user metadata cells and the raw-flag protocol that keeps the two tiers consistent.

This module is the one place the protocol is told, and the only one that reads or writes
family ``m`` of a user's rows.

Cells:

==============  ==============================================================================
user row ``m:trim``  the retention watermark: ``(event_ts, event_id)`` of the oldest event kept by
                ``max_events_per_user`` (:mod:`store.tiers.retention` decides it, :func:`put_watermark`
                records it); reads skip everything older
user row ``m:raw``   the raw-tier *flag*: a random 8-byte token while the user may have raw events
                that are not in its chunks; when it has none, a *clean token* (``00`` and 8
                random bytes, new with every commit) — or, on rows no commit touched since this
                layout, empty or absent
bucket row ``m:w``   the row's *write token*: a random 8-byte token put with every put of
                explicitly identified events to that row, in the same row mutation
==============  ==============================================================================

The invariant: **every event a writer had acknowledged is readable, once, from the user's
chunks or — when the flag is set — from its raw cells.** Readers read the raw tier of flagged
users only (:mod:`store.tiers.view`). The rules that keep it:

1. A writer sets the flag to a fresh token after its raw cells were acknowledged
   (:func:`flag_users`). A write call that fails before that leaves raw cells under an empty
   flag: not read until the same input is written again (documented on the writer) or a
   compaction picks them up (rule 4).
2. A user's chunks change only in :func:`commit`: one row-atomic ``checkAndMutate`` of the user
   row, conditional on the flag value the committer read *before* everything it merged, that
   also sets the flag — to a new clean token, or to a new token of the committer's while raw
   events remain. Every value a commit or a writer puts is random and never reused, so the
   check passes only if no write and no other commit touched the user since the value was
   read; the loser writes nothing. That holds for a clean flag too: two committers that both
   read the same clean token (or the empty flag of an untouched row: HBase matches an empty
   expected value to an absent cell) cannot both pass, because the first one's commit puts a
   value the second did not read. So a bulk load (:mod:`store.tiers.bulk`) commits a clean
   user in one call, with no claim first.
3. The flag is never deleted, only overwritten. Family ``m`` has classic delete semantics: a
   delete marker at the server's "now" hides every put with an equal or older timestamp, so a
   writer's flag put in the same millisecond as the clear would be lost (measured on HBase
   2.6.1: 104 of 300 such puts hidden). A put after a put of equal timestamp wins.
4. A compactor that finds raw cells under a clean flag (a write call that failed before
   flagging) first :func:`claim` s the user — a token of its own, conditional on the clean
   value it read — so reads see those cells from then on, and reads the user's cells only
   after that claim succeeded.
5. Raw cells are deleted only after the commit that put their events into chunks, exactly
   (qualifier and timestamp): a reader sees each event raw, in a chunk, or both (deduplicated),
   never in neither. An explicitly identified event can be re-written with another payload
   under the same cell coordinates (a correction); :func:`delete_merged` deletes the cells of a
   row that carries a write token only if the token is still the one read before the cells, so a
   correction written after the compactor's scan survives (and its flag makes it read).

Clock assumption (as HBase's own): the RegionServers' clocks do not run backwards for a row
between two of its mutations.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from store.format import keys
from store.format.keys import EVENTS, META
from store.io.calls import NOT_EMPTY, delete_multiple, get_multiple, put_rows
from store.io.connection import idl
from store.io.scanning import scan_results

if TYPE_CHECKING:
    from store.table.handle import TableHandle

WATERMARK = b"trim"
RAW_FLAG = b"raw"
ROW_TOKEN = b"w"
UNFLAGGED = b""  # the flag of a row no commit touched (an absent cell reads as this)
_CLEAN = b"\x00"  # a clean token: this byte and 8 random ones (a raw token is 8 bytes long)
_MARK = struct.Struct(">QQ")


def pack_watermark(mark: tuple[int, int]) -> bytes:
    return _MARK.pack(*mark)


def parse_watermark(value: bytes) -> tuple[int, int]:
    ts, eid = _MARK.unpack(value)
    return ts, eid


def new_token() -> bytes:
    """A raw-tier token: the flag of a user that may have raw events."""
    return os.urandom(8)


def new_clean_token() -> bytes:
    """A clean token: the flag of a user whose events are all in chunks, new with each commit."""
    return _CLEAN + os.urandom(8)


def flagged(value: bytes | None) -> bool:
    """Whether a ``m:raw`` cell value (None: no cell) says the user may have unread raw events:
    a raw token (8 bytes), not a clean token (9 bytes, the first 0) nor empty."""
    return value is not None and value != b"" and not (len(value) == len(_CLEAN) + 8 and value[:1] == _CLEAN)


@dataclass
class UserMeta:
    """What the ``m`` cells of one get say, by position of the get (:func:`parse_gets`)."""

    flagged: set[int] = field(default_factory=set)  # the users whose flag is set
    marks: dict[int, tuple[int, int]] = field(default_factory=dict)


def parse_gets(results: Iterable[Any]) -> UserMeta:
    """The flags and watermarks in gets of users' rows (other families' cells are ignored)."""
    meta = UserMeta()
    for j, result in enumerate(results):
        for cv in result.columnValues or []:
            if cv.family == META and cv.qualifier == RAW_FLAG and flagged(cv.value):
                meta.flagged.add(j)
            elif cv.family == META and cv.qualifier == WATERMARK:
                meta.marks[j] = parse_watermark(cv.value)
    return meta


READ_CELLS = (RAW_FLAG, WATERMARK)  # what a read of a user row looks at besides its chunks


def watermarks(table: TableHandle, prefixes: Sequence[bytes], *, executor: Executor | None = None
               ) -> dict[int, tuple[int, int]]:
    """The trim watermark of each user (by row prefix) that has one, by position in ``prefixes``."""
    t = idl()
    columns = [t.TColumn(META, WATERMARK)]
    gets = [t.TGet(row=p, columns=columns) for p in prefixes]
    return parse_gets(get_multiple(table.pool, table.name_bytes, gets, executor=executor)).marks


def put_watermark(table: TableHandle, prefix: bytes, mark: tuple[int, int]) -> None:
    """Record ``mark`` (``(event_ts, event_id)`` of the oldest kept event) for the user of ``prefix``.

    The cell is stamped with the mark's event time: a concurrent trim that computed an older
    watermark writes an older version, which HBase (``VERSIONS=1``) never returns, so the
    watermark never moves back in time.
    """
    t = idl()
    table.pool.call("put", table.name_bytes, t.TPut(row=prefix, columnValues=[
        t.TColumnValue(META, WATERMARK, pack_watermark(mark), timestamp=mark[0])]))


def scan_meta(table: TableHandle, start: bytes, stop: bytes) -> tuple[set[bytes], dict[bytes, tuple[int, int]]]:
    """The flagged users (row prefixes) of ``[start, stop)`` and every user's watermark there:
    one scan, which skips unflagged users' empty flags on the server."""
    t = idl()
    scan = t.TScan(startRow=start, stopRow=stop, columns=[t.TColumn(META, RAW_FLAG), t.TColumn(META, WATERMARK)],
                   filterString=NOT_EMPTY)
    flags: set[bytes] = set()
    marks: dict[bytes, tuple[int, int]] = {}
    for result in scan_results(table.pool, table.name_bytes, scan, 10_000):
        for cv in result.columnValues or []:
            if cv.qualifier == RAW_FLAG and flagged(cv.value):
                flags.add(result.row)
            elif cv.qualifier == WATERMARK:
                marks[result.row] = parse_watermark(cv.value)
    return flags, marks


# --- writers (rule 1, rule 5) ---


def flag_users(table: TableHandle, prefixes: Iterable[bytes]) -> int:
    """Rule 1: set the flag of each user (by row prefix) to a token new to this call, after its
    raw cells were acknowledged; returns the calls made. Idempotent."""
    t = idl()
    token = new_token()
    return put_rows(table.pool, table.name_bytes, {p: [t.TColumnValue(META, RAW_FLAG, token)] for p in prefixes})


def stamp_rows(puts: Iterable[Any]) -> None:
    """Rule 5: add a fresh write token to each of these raw-tier ``TPut`` s (one per put, so a
    row split over several puts changes its token with each)."""
    t = idl()
    for put in puts:
        put.columnValues.append(t.TColumnValue(META, ROW_TOKEN, new_token()))


# --- compaction (rules 2-5) ---


def scan_tokens(table: TableHandle, start: bytes, stop: bytes) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """The token of every flagged user and of every raw row in ``[start, stop)``: ``(flags by
    user prefix, tokens by bucket row key)``; unflagged users are left out (the server skips
    empty flags). Read this before the raw cells it guards. Holds one small entry per flagged
    user and per row written with explicit ids."""
    t = idl()
    scan = t.TScan(startRow=start, stopRow=stop, columns=[t.TColumn(META, RAW_FLAG), t.TColumn(META, ROW_TOKEN)],
                   filterString=NOT_EMPTY)
    flags: dict[bytes, bytes] = {}
    tokens: dict[bytes, bytes] = {}
    for result in scan_results(table.pool, table.name_bytes, scan, 10_000):
        for cv in result.columnValues or []:
            if cv.qualifier == RAW_FLAG:
                if flagged(cv.value):
                    flags[result.row] = cv.value
            else:
                tokens[result.row] = cv.value
    return flags, tokens


def user_tokens(table: TableHandle, prefix: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """One user's flag value (clean, or :data:`UNFLAGGED` if none) and its raw rows' write
    tokens: one get, then one scan."""
    t = idl()
    (result,) = get_multiple(table.pool, table.name_bytes, [t.TGet(row=prefix, columns=[t.TColumn(META, RAW_FLAG)])])
    value = result.columnValues[0].value if result.columnValues else UNFLAGGED
    _, tokens = scan_tokens(table, prefix, keys.prefix_end(prefix))
    return value, tokens


def claim(table: TableHandle, prefix: bytes, current: bytes) -> bytes | None:
    """Rule 4: put a token of our own on a user whose flag is clean, conditional on the clean
    value ``current`` read (:data:`UNFLAGGED` for none); the token, or None if the user changed
    meanwhile (read its flag again)."""
    t = idl()
    token = new_token()
    put = t.TPut(row=prefix, columnValues=[t.TColumnValue(META, RAW_FLAG, token)])
    # An empty expected value matches an empty cell and an absent one (HBase's checkAndMutate).
    if table.pool.call("checkAndPut", table.name_bytes, prefix, META, RAW_FLAG, current, put):
        return token
    return None


def commit(table: TableHandle, prefix: bytes, token: bytes, mutations: list[Any], cells: list[Any], *,
           keep_flag: bool) -> tuple[bool, bytes]:
    """Rule 2: apply ``mutations`` (deletes) and put ``cells`` on the user row, atomically, if
    its flag is still ``token`` (the value read before everything merged: a raw token, a clean
    token or :data:`UNFLAGGED`); the flag becomes a new token of ours if ``keep_flag`` (raw
    events remain) else a new clean token. Returns ``(applied, the flag now)``; nothing is
    written when the check fails. A retried call whose first attempt was applied returns False:
    the caller starts the user again, which is safe."""
    t = idl()
    next_token = new_token() if keep_flag else new_clean_token()
    put = t.TPut(row=prefix, columnValues=[*cells, t.TColumnValue(META, RAW_FLAG, next_token)])
    row = t.TRowMutations(row=prefix, mutations=[*mutations, t.TMutation(put=put)])
    applied = table.pool.call("checkAndMutate", table.name_bytes, prefix, META, RAW_FLAG, t.TCompareOp.EQUAL,
                              token, row)
    return bool(applied), next_token


def delete_merged(table: TableHandle, cells: Mapping[bytes, list[Any]], tokens: Mapping[bytes, bytes], *,
                  executor: Executor | None = None) -> int:
    """Rule 5: delete committed raw cells (``TColumnValue`` s by row key), exactly; returns the
    cells left in place (merged again next time, harmlessly).

    ``tokens``: the write tokens read before the cells. A row that had one is deleted only if
    it is unchanged (one ``checkAndMutate`` per row). A row that had none held only content-
    identified events then (an explicit-id put carries a token); if it has a token now, an
    explicit-id write reached it since, possibly a correction of a cell read, so it is left
    alone; else its cells go in batched deletes (a content-identified re-write is the same event).
    The conditional deletes run on ``executor`` if given (never one whose threads may be
    waiting on this call).
    """
    t = idl()
    late = _rows_with_token(table, [row for row in cells if row not in tokens])
    plain: list[Any] = []
    guarded: list[tuple[bytes, Any, bytes]] = []
    kept = 0
    for row, cvs in cells.items():
        columns = [t.TColumn(EVENTS, cv.qualifier, timestamp=cv.timestamp) for cv in cvs]
        delete = t.TDelete(row=row, columns=columns, deleteType=t.TDeleteType.DELETE_COLUMN)
        token = tokens.get(row)
        if row in late:
            kept += len(cvs)
        elif token is None:
            plain.append(delete)
        else:
            guarded.append((row, delete, token))

    def delete_if_unchanged(job: tuple[bytes, Any, bytes]) -> int:
        row, delete, token = job
        mutation = t.TRowMutations(row=row, mutations=[t.TMutation(deleteSingle=delete)])
        applied = table.pool.call("checkAndMutate", table.name_bytes, row, META, ROW_TOKEN, t.TCompareOp.EQUAL,
                                  token, mutation)
        return 0 if applied else len(delete.columns)

    kept += sum((executor.map if executor is not None else map)(delete_if_unchanged, guarded))
    delete_multiple(table.pool, table.name_bytes, plain)
    return kept


def _rows_with_token(table: TableHandle, rows: list[bytes]) -> set[bytes]:
    """Which of ``rows`` have a write token now: one scan of the key range they span, which
    returns only rows that have one (none, on a table written without explicit ids)."""
    if not rows:
        return set()
    t = idl()
    scan = t.TScan(startRow=min(rows), stopRow=max(rows) + b"\x00", columns=[t.TColumn(META, ROW_TOKEN)])
    wanted = set(rows)
    return {r.row for r in scan_results(table.pool, table.name_bytes, scan, 10_000) if r.row in wanted}

