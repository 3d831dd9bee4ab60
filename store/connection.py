"""Thrift2 clients with timeouts, bounded retries and error translation.

The store speaks Thrift2 (per-cell timestamps, time ranges, multi-gets, one-call scans).
Thrift and socket exceptions never leave this module: transport failures become
:class:`StoreUnavailableError` once the retry budget is spent; server-side refusals become
:class:`HBaseError` (or :class:`TableNotFoundError`) at once.

Retry policy: only transport errors and server errors HBase marks retryable
(``TIOError.canRetry``) are retried, at most ``Config.retries`` times, with capped
exponential backoff and full jitter; the connection is re-opened before each retry.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from thriftpy2.rpc import make_client
from thriftpy2.thrift import TApplicationException, TException
from thriftpy2.transport import TTransportException

from hbase.probe import load_thrift2_idl
from store.config import Config, Endpoint
from store.errors import HBaseError, StoreClosedError, StoreUnavailableError, TableNotFoundError

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (TTransportException, socket.timeout, OSError, EOFError)
RETRYABLE: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, TException)


def idl() -> ModuleType:
    """The thriftpy2 module of HBase's Thrift2 IDL (types such as ``TPut``, ``TScan``)."""
    return load_thrift2_idl()


def backoff_delays(config: Config) -> Iterator[float]:
    """Retry delays in seconds: exponential from ``backoff_ms``, capped, with full jitter."""
    for attempt in range(config.retries):
        cap = min(config.max_backoff_ms, config.backoff_ms * (2**attempt))
        yield random.uniform(0, cap) / 1000.0


class Thrift2Client:
    """One connection to a Thrift2 server; :meth:`call` retries transient failures.

    With several endpoints, the client starts on ``endpoints[first]`` and moves on to the next
    one after each failed attempt, so a dead Thrift server costs one retry, not the budget.
    """

    def __init__(self, endpoints: Sequence[Endpoint], config: Config, first: int = 0) -> None:
        if not endpoints:
            raise ValueError("no endpoints")
        self.endpoints = tuple(endpoints)
        self._at = first % len(self.endpoints)
        self.config = config
        self._idl = idl()
        self._client: Any = None

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint the client is (or will next be) connected to."""
        return self.endpoints[self._at]

    def _connect(self) -> Any:
        if self._client is None:
            self._client = make_client(self._idl.THBaseService, self.endpoint.host, self.endpoint.port,
                                       timeout=self.config.timeout_ms)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):  # closing a broken socket may fail; it is gone anyway
                self._client.close()
            self._client = None

    def call(self, method: str, *args: Any) -> Any:
        """Call a THBaseService method, e.g. ``call("putMultiple", table, puts)``.

        Idempotent calls only: a retried call may have been applied once already.
        """
        delays = backoff_delays(self.config)
        attempt = 0
        while True:
            try:
                return getattr(self._connect(), method)(*args)
            except self._idl.TIllegalArgument as exc:
                raise HBaseError(f"{method}: illegal argument: {exc.message}") from exc
            except self._idl.TIOError as exc:
                message = exc.message or ""
                table = _table_of(args)
                if "TableNotFoundException" in message or (table and message.strip() == table):
                    # HBase's TableNotFoundException reaches Thrift2 clients as just the table's name.
                    missing = table or message.splitlines()[0]
                    raise TableNotFoundError(f"{method}: table {missing!r} does not exist") from exc
                if not exc.canRetry:
                    raise HBaseError(f"{method}: {message.splitlines()[0] if message else exc!r}") from exc
                error: BaseException = exc
            except TApplicationException as exc:  # a server-side exception Thrift could not map: a bug, not weather
                raise HBaseError(f"{method}: server error: {exc.message or exc!r}") from exc
            except RETRYABLE as exc:
                error = exc
            self.close()
            failed, self._at = self.endpoint, (self._at + 1) % len(self.endpoints)
            delay = next(delays, None)
            if delay is None:
                raise StoreUnavailableError(
                    f"{method} failed after {self.config.retries} retries: {error!r}", endpoint=str(failed)
                ) from error
            # The server closes connections idle for 60 s: the first reconnect is routine.
            log.log(logging.DEBUG if attempt == 0 else logging.WARNING, "%s on %s failed (%r); retry on %s in %.2f s",
                    method, failed, error, self.endpoint, delay)
            attempt += 1
            time.sleep(delay)


def _table_of(args: tuple[Any, ...]) -> str | None:
    """The table a THBaseService call names first (a ``bytes`` name or a ``TTableName``), if any."""
    first = args[0] if args else None
    name = getattr(first, "qualifier", first)
    if isinstance(name, bytes):
        ns = getattr(first, "ns", None)
        return (ns + b":" + name if ns else name).decode(errors="replace")
    return None


class ClientPool:
    """``size`` Thrift2 clients spread over the configured endpoints, shared by threads.

    Clients connect lazily, so creating a pool opens no socket. After :meth:`close` the pool
    hands out no client: :meth:`client` and :meth:`call` raise :class:`StoreClosedError`.
    """

    def __init__(self, config: Config, size: int = 4) -> None:
        if size <= 0:
            raise ValueError("'size' must be > 0")
        if not config.thrift2:
            raise StoreUnavailableError(
                "no Thrift2 endpoint configured: the store speaks Thrift2; set SEQSTORE_HBASE_THRIFT2=host:port[,...] "
                "to the HBase Thrift2 server(s) (`hbase thrift2 start`), or run `seqstore hbase start`"
            )
        self.config = config
        self.size = size
        self._free: queue.LifoQueue[Thrift2Client] = queue.LifoQueue()
        for i in range(size):
            self._free.put(Thrift2Client(config.thrift2, config, first=i))
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def client(self) -> Iterator[Thrift2Client]:
        """A client for this thread's exclusive use; waits while all ``size`` are in use.

        Raises:
            StoreClosedError: the pool is closed, or was closed while this thread waited.
        """
        self._check_open()
        c = self._free.get()
        if self._closed:  # closed while this thread waited
            self._give_back(c)
            self._check_open()
        try:
            yield c
        finally:
            self._give_back(c)

    def call(self, method: str, *args: Any) -> Any:
        """:meth:`Thrift2Client.call` on a pooled client. Raises :class:`StoreClosedError` once closed."""
        with self.client() as c:
            return c.call(method, *args)

    def close(self) -> None:
        """Close the idle clients now and every client in use when it is returned. Idempotent.

        Calls running at that moment finish; every later :meth:`client` or :meth:`call`
        raises :class:`StoreClosedError`.
        """
        with self._lock:
            self._closed = True
            idle: list[Thrift2Client] = []
            while not self._free.empty():
                idle.append(self._free.get_nowait())
            for c in idle:
                c.close()
                # Back in the queue, closed: a thread still waiting for a client wakes and raises.
                self._free.put(c)

    def _give_back(self, c: Thrift2Client) -> None:
        with self._lock:  # so that close() cannot run between the check and the put
            if self._closed:
                c.close()
            self._free.put(c)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed; open a new SequenceStore")
