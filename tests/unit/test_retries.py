"""Retry policy of the Thrift2 client, through a fault-injection seam or a plain socket
server that never answers (no HBase needed)."""

from __future__ import annotations

import pickle
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from thriftpy2.transport import TTransportException

from store.config import Config, Endpoint
from store.errors import HBaseError, InvalidRequestError, StoreUnavailableError
from store.io import connection
from store.io.connection import Thrift2Client, idl, socket_family


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
    client._connect = lambda *_: stub  # type: ignore[method-assign]
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

    def connect(*_: Any) -> Flaky:
        tried.append(client.endpoint)
        return stub

    client._connect = connect  # type: ignore[method-assign]
    assert client.call("tableExists", None) is True
    assert tried == [endpoints[1], endpoints[2], endpoints[0]]


class FakeClock:
    """``time`` for the connection module: each failed attempt costs ``attempt_s`` of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_dead_hbase_is_given_up_on_after_the_time_budget_not_the_retry_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(connection, "time", clock)
    config = Config(retries=100, backoff_ms=1_000, max_backoff_ms=1_000, timeout_ms=30_000,
                    unavailable_after_ms=60_000)
    client = Thrift2Client([Endpoint("127.0.0.1", 1)], config)
    timeouts: list[int] = []

    class Hanging:  # every call waits out its socket timeout, as with a Thrift server whose HBase is gone
        def putMultiple(self, *_: Any) -> None:
            clock.now += timeouts[-1] / 1000
            raise TimeoutError("timed out")

        def close(self) -> None:
            pass

    def connect(timeout_ms: int | None = None) -> Hanging:
        timeouts.append(timeout_ms or config.timeout_ms)
        return Hanging()

    client._connect = connect  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailableError, match=r"^HBase unreachable: putMultiple failed for 6\d s") as info:
        client.call("putMultiple", b"t", [])
    assert clock.now - 1000.0 <= 61  # the budget, not 101 attempts x 30 s
    assert timeouts[0] == 30_000 and timeouts[-1] < 30_000  # the last wait was cut to what was left
    assert info.value.unavailable_after_s == 60
    back = pickle.loads(pickle.dumps(info.value))  # Ray ships it from the worker to the driver
    assert back.unavailable_after_s == 60 and str(back) == str(info.value)


@pytest.fixture
def silent_server() -> Iterator[tuple[Endpoint, list[socket.socket]]]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield Endpoint("127.0.0.1", server.getsockname()[1]), accepted
    server.close()
    for conn in accepted:
        conn.close()


def test_a_request_that_cannot_be_encoded_is_an_argument_error_at_once(
    silent_server: tuple[Endpoint, list[socket.socket]],
) -> None:
    endpoint, accepted = silent_server
    t = idl()
    client = Thrift2Client([endpoint], Config(retries=3, backoff_ms=1, max_backoff_ms=2, timeout_ms=2_000))
    too_late = t.TGet(row=b"r", timeRange=t.TTimeRange(minStamp=0, maxStamp=2**63))  # as_of = 2**63-1, inclusive
    with pytest.raises(InvalidRequestError, match=r"get: the request cannot be encoded: .*maxStamp") as info:
        client.call("get", b"t", too_late)
    assert isinstance(info.value, ValueError)
    deadline = time.monotonic() + 5
    while not accepted and time.monotonic() < deadline:  # the server thread accepts in its own time
        time.sleep(0.01)
    time.sleep(0.1)
    assert len(accepted) == 1  # one connection, nothing retried
    assert client._client is None  # the half-written request was dropped with its connection


def test_socket_family_follows_the_address() -> None:
    assert socket_family("::1") == socket.AF_INET6
    assert socket_family("127.0.0.1") == socket.AF_INET
    assert socket_family("localhost") == socket.AF_INET  # the Thrift servers bind IPv4 by default


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_endpoint_connects_over_ipv6() -> None:
    server = socket.create_server(("::1", 0), family=socket.AF_INET6)
    try:
        endpoint = Endpoint.parse(f"[::1]:{server.getsockname()[1]}")
        client = Thrift2Client([endpoint], Config(retries=0, timeout_ms=2_000))
        client._connect()
        conn, peer = server.accept()
        conn.close()
        assert peer[0] == "::1"
        client.close()
    finally:
        server.close()
