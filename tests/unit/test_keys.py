"""Key codecs: round trips, newest-first order, no prefix leakage, unicode and binary ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store.format import keys

user_ids = st.one_of(st.text(min_size=1, max_size=40), st.binary(min_size=1, max_size=40))
timestamps = st.integers(min_value=0, max_value=2**62)
event_ids = st.integers(min_value=0, max_value=2**64 - 1)
buckets = st.integers(min_value=1, max_value=256)


@given(user_ids, timestamps, st.integers(min_value=1, max_value=10**10), buckets)
def test_row_key_round_trip(user: str | bytes, ts: int, bucket_ms: int, salt_buckets: int) -> None:
    prefix = keys.user_prefix(user, salt_buckets)
    key = keys.row_key(prefix, keys.bucket_of(ts, bucket_ms))
    salt, raw_user, bucket = keys.parse_row_key(key)
    assert raw_user == keys.user_bytes(user)
    assert salt == keys.salt_of(raw_user, salt_buckets) < salt_buckets
    assert bucket == ts // bucket_ms


@given(timestamps, event_ids)
def test_qualifier_round_trip(ts: int, eid: int) -> None:
    q = keys.qualifier(ts, eid)
    assert len(q) == keys.QUALIFIER_LEN
    assert keys.parse_qualifier(q) == (ts, eid)


@given(timestamps, event_ids, timestamps, event_ids)
def test_qualifiers_sort_newest_first_with_ties_by_event_id(t1: int, e1: int, t2: int, e2: int) -> None:
    # Byte order of qualifiers is the reverse of (event_ts, event_id) order.
    assert (keys.qualifier(t1, e1) < keys.qualifier(t2, e2)) == ((t1, e1) > (t2, e2))


@given(user_ids, st.integers(min_value=0, max_value=2**40), st.integers(min_value=0, max_value=2**40))
def test_newer_buckets_sort_first(user: str | bytes, b1: int, b2: int) -> None:
    prefix = keys.user_prefix(user, 16)
    assert (keys.row_key(prefix, b1) < keys.row_key(prefix, b2)) == (b1 > b2)


@given(user_ids, user_ids, st.integers(min_value=0, max_value=2**40), buckets)
def test_no_prefix_leakage_between_users(a: str | bytes, b: str | bytes, bucket: int, salt_buckets: int) -> None:
    if keys.user_bytes(a) == keys.user_bytes(b):
        return
    pa_, pb = keys.user_prefix(a, salt_buckets), keys.user_prefix(b, salt_buckets)
    key_b = keys.row_key(pb, bucket)
    # b's rows are outside a's scan range [prefix_a, prefix_end(prefix_a)).
    assert not key_b.startswith(pa_)
    assert not (pa_ <= key_b < keys.prefix_end(pa_))


def test_user_12_never_matches_user_123() -> None:
    for salt_buckets in (1, 16):
        p12, p123 = keys.user_prefix("12", salt_buckets), keys.user_prefix("123", salt_buckets)
        assert not keys.row_key(p123, 5).startswith(p12)
        assert not (p12 <= keys.row_key(p123, 5) < keys.prefix_end(p12))


@given(st.binary(min_size=1, max_size=20))
def test_prefix_end_bounds_every_extension(prefix: bytes) -> None:
    end = keys.prefix_end(prefix)
    for suffix in (b"", b"\x00", b"\xff" * 9):
        assert prefix + suffix < end or end == b""


def test_unicode_and_binary_ids_are_keyed_by_their_bytes() -> None:
    assert keys.user_bytes("ü😀") == "ü😀".encode()
    assert keys.user_prefix(b"\x00\xff", 1) == b"\x00\x00\x02\x00\xff"
    assert keys.user_prefix("ü", 1) != keys.user_prefix("u", 1)


def test_event_id_is_deterministic_and_content_sensitive() -> None:
    a = keys.event_id(b"u", 1, b"x")
    assert a == keys.event_id(b"u", 1, b"x")
    assert len({a, keys.event_id(b"u", 2, b"x"), keys.event_id(b"v", 1, b"x"), keys.event_id(b"u", 1, b"y")}) == 4


def test_split_keys_pre_split_on_salt() -> None:
    assert keys.split_keys(1) == []
    assert keys.split_keys(4) == [b"\x01", b"\x02", b"\x03"]


@pytest.mark.parametrize("user_id", [5, 0, None, 5.0])
def test_a_user_id_that_is_not_str_or_bytes_is_refused(user_id: object) -> None:
    # bytes(5) would be five zero bytes: the row of another user, silently.
    with pytest.raises(TypeError, match="'user_id' must be str or bytes"):
        keys.user_bytes(user_id)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        keys.user_prefix(user_id, 16)  # type: ignore[arg-type]
