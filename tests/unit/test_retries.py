"""Retry policy of the Thrift2 client, through a fault-injection seam (no server needed)."""

from __future__ import annotations

from typing import Any

import pytest
from thriftpy2.transport import TTransportException

from store.config import Config, Endpoint
from store.connection import Thrift2Client, idl
from store.errors import HBaseError, StoreUnavailableError


class Flaky:
    """Stands in for the thriftpy2 stub: fails ``failures`` times, then answers."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = list(failures)
        self.calls = 0

    def tableExists(self, _name: Any) -> bool:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return True

    def close(self) -> None:
        pass


def _client(stub: Flaky, retries: int = 3) -> Thrift2Client:
    client = Thrift2Client([Endpoint("127.0.0.1", 1)], Config(retries=retries, backoff_ms=1, max_backoff_ms=2))
    client._connect = lambda: stub  # type: ignore[method-assign]
    return client


def test_transient_errors_are_retried_then_succeed() -> None:
    stub = Flaky([TTransportException(message="reset"), ConnectionResetError(), idl().TIOError("busy", True)])
    assert _client(stub).call("tableExists", None) is True
    assert stub.calls == 4


def test_retry_budget_is_bounded() -> None:
    stub = Flaky([TTransportException(message="down")] * 10)
    with pytest.raises(StoreUnavailableError, match="after 2 retries"):
        _client(stub, retries=2).call("tableExists", None)
    assert stub.calls == 3


@pytest.mark.parametrize("error", [idl().TIllegalArgument("bad"), idl().TIOError("too large", False)])
def test_non_retryable_errors_are_not_retried(error: BaseException) -> None:
    stub = Flaky([error])
    with pytest.raises(HBaseError):
        _client(stub).call("tableExists", None)
    assert stub.calls == 1


def test_each_failed_attempt_moves_on_to_the_next_endpoint() -> None:
    endpoints = [Endpoint("h1", 1), Endpoint("h2", 2), Endpoint("h3", 3)]
    client = Thrift2Client(endpoints, Config(retries=3, backoff_ms=1, max_backoff_ms=2), first=1)
    stub = Flaky([TTransportException(message="down"), TTransportException(message="down")])
    tried: list[Endpoint] = []

    def connect() -> Flaky:
        tried.append(client.endpoint)
        return stub

    client._connect = connect  # type: ignore[method-assign]
    assert client.call("tableExists", None) is True
    assert tried == [endpoints[1], endpoints[2], endpoints[0]]
