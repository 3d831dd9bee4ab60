"""``seqstore show``: one user's sequence as a text table, for a person looking at the data.

The sequence is what :meth:`store.SequenceTable.read_sequences` returns for ``(user, as_of)``;
this module only reads it and lays it out: times as UTC dates, ids in hex, long lists and
binaries shortened.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from store import SequenceTable

_LIST_ITEMS = 4  # items of a list value shown before "…"
_BYTES_SHOWN = 8  # bytes of a binary value shown (in hex) before "…"
_WIDTH = 40  # a column wider than this is cut


def parse_time(text: str) -> int:
    """Milliseconds UTC from ``text``: an integer (ms) or an ISO 8601 date or time (UTC unless it
    says otherwise). Raises ValueError with what was expected."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("expected milliseconds UTC or an ISO 8601 time such as 2026-12-01T10:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def utc(ms: int) -> str:
    """``ms`` as ``YYYY-MM-DD HH:MM:SS.mmm`` UTC."""
    when = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


def sequence(table: SequenceTable, user: str, *, as_of: int, max_len: int, fields: Sequence[str] | None,
             oldest_first: bool, allow_any_ts: bool = False) -> dict[str, Any]:
    """The read of one request, as a JSON-ready dict (times in ms, ids as integers)."""
    out = table.read_sequences([(user, as_of)], max_len=max_len, fields=fields, oldest_first=oldest_first,
                               allow_any_ts=allow_any_ts)
    row = out.to_pylist()[0]
    return {"user_id": user, "as_of_ts": as_of, "length": row["length"], "history_complete": row["history_complete"],
            "events": row["sequence"]}


def render(shown: dict[str, Any], max_len: int) -> str:
    """``shown`` (from :func:`sequence`) as a header line and an aligned table."""
    events = shown["events"]
    head = (f"{shown['user_id']} as of {utc(shown['as_of_ts'])} UTC: {len(events)} event"
            f"{'' if len(events) == 1 else 's'} (max_len {max_len})")
    if not shown["history_complete"]:
        head += "; retention may have removed older events"
    if not events:
        return head + "\n"
    names = list(events[0])
    cells = [[_cell(name, e[name]) for name in names] for e in events]
    header = ["#", *names]
    rows = [[str(i), *r] for i, r in enumerate(cells, 1)]
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    lines = ["  ".join(v.rjust(w) if k == 0 else v.ljust(w) for k, (v, w) in enumerate(zip(r, widths, strict=True)))
             .rstrip() for r in [header, *rows]]
    return head + "\n" + "\n".join(lines) + "\n"


def _cell(name: str, value: Any) -> str:
    if value is None:
        text = "-"
    elif name == "event_ts":
        text = utc(value)
    elif name == "event_id":
        text = f"{value:016x}"
    elif isinstance(value, bytes):
        text = value[:_BYTES_SHOWN].hex() + ("…" if len(value) > _BYTES_SHOWN else "")
    elif isinstance(value, list):
        shown = ", ".join(_number(v) for v in value[:_LIST_ITEMS])
        text = f"[{shown}{', …' if len(value) > _LIST_ITEMS else ''}] ({len(value)})"
    elif isinstance(value, float):
        text = _number(value)
    else:
        text = str(value)
    return text if len(text) <= _WIDTH else text[: _WIDTH - 1] + "…"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
