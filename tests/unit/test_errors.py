"""Errors pickle with their attributes (Ray ships them between processes) and catch as builtins."""

from __future__ import annotations

import pickle

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
