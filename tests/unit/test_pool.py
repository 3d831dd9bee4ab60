"""A closed client pool hands out no client and closes every client, idle or in use (no server needed)."""

from __future__ import annotations

import threading

import pytest

from store.config import Config, Endpoint
from store.errors import StoreClosedError
from store.io.connection import ClientPool, Thrift2Client


@pytest.fixture
def closed_clients(monkeypatch: pytest.MonkeyPatch) -> list[Thrift2Client]:
    """The clients whose close() ran, in order."""
    closed: list[Thrift2Client] = []
    monkeypatch.setattr(Thrift2Client, "close", lambda self: closed.append(self))
    return closed


def _pool(size: int) -> ClientPool:
    return ClientPool(Config(thrift2=(Endpoint("127.0.0.1", 1),)), size)


def test_a_closed_pool_refuses_clients_and_calls(closed_clients: list[Thrift2Client]) -> None:
    pool = _pool(2)
    pool.close()
    assert len(set(map(id, closed_clients))) == 2
    with pytest.raises(StoreClosedError, match="closed"), pool.client():
        pass
    with pytest.raises(StoreClosedError):
        pool.call("tableExists", b"t")
    pool.close()  # idempotent


def test_a_client_in_use_at_close_is_closed_when_returned(closed_clients: list[Thrift2Client]) -> None:
    pool = _pool(2)
    with pool.client() as busy:
        pool.close()
        assert busy not in closed_clients and len(closed_clients) == 1
    assert closed_clients[-1] is busy


def test_a_thread_waiting_for_a_client_when_the_pool_closes_gets_an_error(
        closed_clients: list[Thrift2Client]) -> None:
    pool = _pool(1)
    errors: list[BaseException] = []
    waiting = threading.Event()

    def wait_for_client() -> None:
        waiting.set()
        try:
            with pool.client():
                pass
        except StoreClosedError as exc:
            errors.append(exc)

    with pool.client():
        thread = threading.Thread(target=wait_for_client)
        thread.start()
        waiting.wait(5)
        pool.close()
    thread.join(5)
    assert not thread.is_alive() and len(errors) == 1


def test_the_pools_call_threads_are_made_once_shared_and_shut_down_by_close(
        closed_clients: list[Thrift2Client]) -> None:
    pool = _pool(3)
    first = pool.executor
    assert pool.executor is first and first._max_workers == 3
    names = set(first.map(lambda _: threading.current_thread().name, range(6)))
    assert names and all(n.startswith("seqstore-call") for n in names)
    pool.close()
    with pytest.raises(StoreClosedError):  # a read that got the threads before the close, submitting after it
        first.submit(int)
    with pytest.raises(StoreClosedError):
        list(first.map(int, ["1", "2"]))
    with pytest.raises(StoreClosedError):
        _ = pool.executor
