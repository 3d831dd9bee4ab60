"""Which stored events a read returns: the visibility rules, once, as pure functions. No I/O.

The reader, the compaction, retention and the audit behind ``seqstore verify`` all decide with
these, so they agree on which events exist:

* **Time**: a request ``(user, as_of)`` sees ``lo <= event_ts < hi`` (:func:`bounds`): ``hi`` is
  ``as_of`` (``as_of + 1`` with ``inclusive``), ``lo`` the window's start, the TTL floor
  (:meth:`store.table.spec.TableSpec.ttl_floor`, the one TTL rule) and the trim watermark's time.
* **Trim watermark** ``mark = (event_ts, event_id)`` of a user's oldest kept event: events
  ordered below it (by ``(event_ts, event_id)``) are trimmed (:func:`kept`, :func:`below`).
* **Once**: an event is identified by ``(event_ts, event_id)``; of several copies (raw and
  chunk tier, or two chunks) the first given wins (:func:`newest_first_once`). Callers put the
  raw copy first: it is the newest write of the event.
* **Order**: newest first, ties by ``event_id`` descending; oldest first is the exact reverse.

:func:`cut` applies the time, mark and event-type rules to an array of events already sorted
newest first, by binary search.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.format.keys import MAX_TS

Mark = tuple[int, int]  # (event_ts, event_id) of a user's oldest kept event
_EMPTY = np.zeros(0, dtype=np.int64)


def bounds(as_of: int, *, inclusive: bool, window_ms: int | None, floor: int | None,
           mark: Mark | None) -> tuple[int, int]:
    """``(hi, lo)``: a request's event_ts range ``lo <= event_ts < hi`` — its time, window, the
    TTL ``floor`` (None: no TTL, or HBase applies it) and the trim ``mark``."""
    hi = min(as_of + 1, MAX_TS) if inclusive else as_of
    lo = max(0, as_of - window_ms) if window_ms else 0
    if floor is not None:
        lo = max(lo, floor)
    if mark is not None:
        lo = max(lo, mark[0])
    return hi, lo


def below(event: Mark, mark: Mark | None) -> bool:
    """Whether ``event`` (``(event_ts, event_id)``) is trimmed by ``mark``."""
    return mark is not None and event < mark


def kept(ts: np.ndarray, eid: np.ndarray, mark: Mark | None, floor: int | None) -> np.ndarray:
    """Mask of the events (``event_ts``, ``event_id`` arrays) neither below ``mark`` nor
    expired (``event_ts`` below ``floor``)."""
    keep = np.ones(len(ts), dtype=bool)
    if mark is not None:
        keep &= (ts > mark[0]) | ((ts == mark[0]) & (eid >= np.uint64(mark[1])))
    if floor is not None:
        keep &= ts >= floor
    return keep


def newest_first_once(ts: np.ndarray, eid: np.ndarray) -> np.ndarray:
    """Positions of the events newest first, each ``(event_ts, event_id)`` once: the first
    given of its copies (the sort is stable)."""
    order = np.lexsort((~eid.astype(np.uint64), -ts.astype(np.int64)))
    ts, eid = ts[order], eid[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (ts[1:] != ts[:-1]) | (eid[1:] != eid[:-1])
    return order[first]


@dataclass(slots=True)
class Columns:
    """The arrays a cut looks at, over a table of events sorted newest first per run."""

    neg_ts: np.ndarray  # -event_ts (ascending within a run)
    eid: np.ndarray
    type_ok: np.ndarray | None  # event type wanted, or None for no filter

    @classmethod
    def of(cls, events: pa.Table, types: set[str] | None) -> Columns:
        ts = np.asarray(events.column("event_ts").to_numpy(), dtype=np.int64)
        eid = np.asarray(events.column("event_id").to_numpy(), dtype=np.uint64)
        ok = None
        if types is not None:
            mask = pc.is_in(events.column("event_type"), value_set=pa.array(sorted(types), pa.string()))
            ok = np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)
        return cls(-ts, eid, ok)


def cut(cols: Columns, start: int, end: int, hi: int, lo: int, mark: Mark | None, max_len: int) -> np.ndarray:
    """Indices (newest first) of the at most ``max_len`` newest events of rows ``[start, end)``
    with ``lo <= event_ts < hi``, of a wanted type, not below ``mark`` (``lo >= mark[0]``)."""
    if hi <= lo or end <= start:
        return _EMPTY
    neg = cols.neg_ts[start:end]
    a = start + int(np.searchsorted(neg, -hi, "right"))
    b = start + int(np.searchsorted(neg, -lo, "right"))
    if mark is not None and mark[0] == lo:  # events at the watermark's time: only ids >= its id
        c = max(a, start + int(np.searchsorted(neg, -lo, "left")))
        if c < b:
            b = c + int(np.count_nonzero(cols.eid[c:b] >= np.uint64(mark[1])))
    if b <= a:
        return _EMPTY
    if cols.type_ok is None:
        return np.arange(a, min(b, a + max_len), dtype=np.int64)
    return a + np.flatnonzero(cols.type_ok[a:b])[:max_len].astype(np.int64)
