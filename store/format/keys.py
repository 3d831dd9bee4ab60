"""Row keys and qualifiers: pure functions, no I/O.

Event row key::

    salt (1 byte) | len(user) (2 bytes, big-endian) | user bytes | ~bucket (8 bytes)

* ``salt = crc32(user) % salt_buckets`` spreads users over regions pre-split on the salt;
  crc32 is stable across processes and machines (Python's ``hash`` is not).
* The length prefix means user ``"12"`` never prefix-matches user ``"123"``.
* ``bucket = event_ts // bucket_ms``, inverted (``2**64 - 1 - bucket``) so a user's newest
  bucket sorts first and a forward scan walks back in time.

Qualifier (in the events family)::

    ~event_ts (8 bytes) | ~event_id (8 bytes)

so the cells of a row sort newest first, ties by ``(event_ts, event_id)`` descending; the
oldest-first order is the exact reverse. ``event_id`` is a 64-bit hash of the event's
identity (an explicit id if the input has one, else its content), so re-writing an event
hits the same cell. The bare user prefix (no bucket) is the user's features/metadata row.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

from store.errors import InvalidRequestError

MAX_U64 = 2**64 - 1
META_TABLE = b"seqstore_meta"  # the registry of tables (:mod:`store.table.registry`)
EVENTS, CHUNKS, FEATURES, META = b"e", b"c", b"f", b"m"  # a sequence table's column families
DAY_MS = 86_400_000  # the default bucket_ms: one wide row per user and day
MAX_TS = 2**63 - 1  # HBase timestamps (and event times) are int64
MAX_USER_BYTES = 1024
_U64 = struct.Struct(">Q")
_QUAL = struct.Struct(">QQ")
_LEN = struct.Struct(">H")
QUALIFIER_LEN = 16
BUCKET_LEN = 8


def user_bytes(user_id: str | bytes) -> bytes:
    """The bytes a user id is keyed by: UTF-8 for ``str``, as is for ``bytes``.

    Raises:
        TypeError: ``user_id`` is neither (``bytes(5)`` would be five zero bytes: another
            user's row). Convert other ids first, as :func:`store.inputs.requests.user_ids` does.
    """
    if isinstance(user_id, str):
        return user_id.encode("utf-8")
    if isinstance(user_id, (bytes, bytearray, memoryview)):
        return bytes(user_id)
    raise TypeError(f"'user_id' must be str or bytes, not {type(user_id).__name__}")


def salt_of(user: bytes, salt_buckets: int) -> int:
    return zlib.crc32(user) % salt_buckets


def user_prefix(user_id: str | bytes, salt_buckets: int) -> bytes:
    """``salt | len | user``: the prefix of every row of this user (and its features row)."""
    user = user_bytes(user_id)
    if len(user) > MAX_USER_BYTES:
        raise InvalidRequestError(f"user id is {len(user)} bytes; the limit is {MAX_USER_BYTES}")
    return bytes((salt_of(user, salt_buckets),)) + _LEN.pack(len(user)) + user


def prefix_user(prefix: bytes) -> bytes:
    """The user id bytes of a :func:`user_prefix` (a user's chunk and features row)."""
    (length,) = _LEN.unpack_from(prefix, 1)
    return prefix[3 : 3 + length]


def bucket_of(ts_ms: int, bucket_ms: int) -> int:
    return ts_ms // bucket_ms


def row_key(prefix: bytes, bucket: int) -> bytes:
    return prefix + _U64.pack(MAX_U64 - bucket)


def parse_row_key(key: bytes) -> tuple[int, bytes, int]:
    """``(salt, user bytes, bucket)`` of an event row key."""
    (length,) = _LEN.unpack_from(key, 1)
    user = key[3 : 3 + length]
    (inv,) = _U64.unpack_from(key, 3 + length)
    return key[0], user, MAX_U64 - inv


def qualifier(ts_ms: int, event_id: int) -> bytes:
    return _QUAL.pack(MAX_U64 - ts_ms, MAX_U64 - event_id)


def parse_qualifier(q: bytes) -> tuple[int, int]:
    """``(event_ts, event_id)`` of a qualifier."""
    inv_ts, inv_id = _QUAL.unpack(q)
    return MAX_U64 - inv_ts, MAX_U64 - inv_id


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (a scan's stop row)."""
    b = bytearray(prefix)
    while b and b[-1] == 0xFF:
        b.pop()
    if not b:
        return b""
    b[-1] += 1
    return bytes(b)


def scan_start(prefix: bytes, as_of_bucket: int) -> bytes:
    """First row of a newest-first walk from ``as_of_bucket`` back in time."""
    return row_key(prefix, as_of_bucket)


def event_id(user: bytes, ts_ms: int, identity: bytes) -> int:
    """A 64-bit id from the user, the timestamp and the event's identity bytes."""
    h = hashlib.blake2b(digest_size=8)
    h.update(_LEN.pack(len(user)))
    h.update(user)
    h.update(_U64.pack(ts_ms))
    h.update(identity)
    return int.from_bytes(h.digest(), "big")


def salt_ranges(salt_buckets: int) -> list[tuple[bytes, bytes]]:
    """``(start, stop)`` row ranges, one per salt value: a table's units of parallel work."""
    n = salt_buckets
    return [(bytes((s,)), bytes((s + 1,)) if s < 255 else b"") for s in range(n)]


def split_keys(salt_buckets: int) -> list[bytes]:
    """Region split points for a table pre-split on the salt byte."""
    return [bytes((i,)) for i in range(1, salt_buckets)]
