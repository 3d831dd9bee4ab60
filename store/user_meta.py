"""The per-user metadata cells (family ``m`` of the user's own row, the bare user prefix).

==========  ==================================================================================
``trim``    the retention watermark: ``(event_ts, event_id)`` of the oldest event kept by
            ``max_events_per_user`` (:mod:`store.retention`); reads skip everything older
``raw``     present while the user may have events in the raw tier; its value is a token each
            write changes; compaction swaps the user's chunks with a check-and-mutate on it,
            so it clears the flag only if no write (and no other compaction) came in meanwhile
==========  ==================================================================================
"""

from __future__ import annotations

import struct

WATERMARK = b"trim"
RAW_FLAG = b"raw"
_MARK = struct.Struct(">QQ")


def pack_watermark(mark: tuple[int, int]) -> bytes:
    return _MARK.pack(*mark)


def parse_watermark(value: bytes) -> tuple[int, int]:
    ts, eid = _MARK.unpack(value)
    return ts, eid
