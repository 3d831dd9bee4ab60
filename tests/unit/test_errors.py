"""Errors pickle with their attributes (Ray ships them between processes) and catch as builtins."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest

from hbase.errors import HBaseRuntimeError, StartupError
from store.errors import (
    ConfigError,
    HBaseError,
    InvalidEventError,
    SchemaError,
    SeqStoreError,
    StoreClosedError,
    StoreUnavailableError,
    TableNotFoundError,
)

ERRORS = [
    StoreUnavailableError("down", "h:1"),
    InvalidEventError("missing_user", "user_id", 7, "null"),
    SchemaError("bad"), ConfigError("bad"), HBaseError("no"), TableNotFoundError("t"),
    StoreClosedError("closed"),
    StartupError("died", hint="see log", log_tail="tail"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_pickle_with_their_attributes(error: Exception) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and str(back) == str(error) and vars(back) == vars(error)


def test_errors_catch_as_library_root_or_builtin() -> None:
    assert isinstance(StoreUnavailableError("x"), (SeqStoreError, ConnectionError))
    assert isinstance(InvalidEventError("r", "f", 1), ValueError)
    assert isinstance(TableNotFoundError("t"), LookupError)
    assert isinstance(StoreClosedError("x"), (SeqStoreError, RuntimeError))
    assert isinstance(StartupError("x"), (HBaseRuntimeError, RuntimeError))


def _fake_table() -> Any:
    from store.format.payload import PayloadCodec
    from store.format.schema import DEFAULT_SCHEMA
    from store.table.spec import TableSpec

    return SimpleNamespace(spec=TableSpec("t"), codec=PayloadCodec([DEFAULT_SCHEMA], table="t"), name_bytes=b"t",
                           feature_codecs={}, pool=None)


def _public_calls() -> list[tuple[str, Callable[[], object]]]:
    from store import features, reader, writer
    from store.format import keys, payload, vectors
    from store.format.payload import PayloadCodec
    from store.format.schema import DEFAULT_SCHEMA

    t = _fake_table()
    ok = [("u", 1_700_000_000_000)]
    return [
        ("reader max_len", lambda: reader.read_sequences(t, ok, max_len=0)),
        ("reader window", lambda: reader.read_sequences(t, ok, max_len=5, window_ms=-1)),
        ("reader fields", lambda: reader.read_sequences(t, ok, max_len=5, fields=["nope"])),
        ("reader shape", lambda: reader.read_sequences(t, "u1", max_len=5)),
        ("reader unit", lambda: reader.read_sequences(t, [("u", 1_700_000_000)], max_len=5)),
        ("features unknown", lambda: features.read_features(t, ok, ["nope"])),
        ("codec corrupt", lambda: PayloadCodec([DEFAULT_SCHEMA]).decode(b"\x09\x01")),
        ("codec empty versions", lambda: payload.PayloadCodec([])),
        ("vector size", lambda: vectors.vector_array([b"\x00"], pa.list_(pa.float32(), 2))),
        ("key too long", lambda: keys.user_prefix("x" * 5000, 4)),
        ("writer chunk_rows", lambda: writer.write_events(t, pa.table({"a": [1]}), chunk_rows=0)),
        ("writer on_invalid", lambda: writer.write_events(t, pa.table({"a": [1]}), on_invalid="drop")),
    ]


@pytest.mark.parametrize(("name", "call"), _public_calls(), ids=[n for n, _ in _public_calls()])
def test_public_store_calls_raise_only_seqstore_errors(name: str, call: Callable[[], object]) -> None:
    """Bad arguments and bad stored values are SeqStoreErrors (still ValueErrors), never bare builtins."""
    with pytest.raises(SeqStoreError) as info:
        call()
    assert isinstance(info.value, ValueError), name


def test_a_bad_pool_size_is_a_config_error() -> None:
    from store.config import Config, Endpoint
    from store.io.connection import ClientPool

    with pytest.raises(ConfigError, match="'pool_size' must be > 0"):
        ClientPool(Config(thrift2=(Endpoint("127.0.0.1", 1),)), 0)


def test_a_job_error_whose_str_fails_is_still_reported() -> None:
    from ray_jobs.runner import _first_line

    class BytesMessage(Exception):  # thriftpy2's TApplicationException: __str__ returns bytes
        def __str__(self) -> str:
            return b"unknown method"  # type: ignore[return-value]

    assert "BytesMessage" in _first_line(BytesMessage())
    assert _first_line(RuntimeError("remote trace\n\nthe cause")) == "the cause"
