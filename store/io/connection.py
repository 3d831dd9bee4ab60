"""Thrift2 clients with timeouts, bounded retries and error translation.

The store speaks Thrift2 (per-cell timestamps, time ranges, multi-gets, one-call scans).
Thrift and socket exceptions never leave this module: transport failures become
:class:`StoreUnavailableError` once the retry budget is spent; server-side refusals become
:class:`HBaseError` (or :class:`TableNotFoundError`) at once.

Retry policy: only transport errors and server errors HBase marks retryable
(``TIOError.canRetry``) are retried, at most ``Config.retries`` times and for at most
``Config.unavailable_after_ms`` in all, with capped exponential backoff and jitter; the
connection is re-opened before each retry. A request that cannot even be encoded (a value
out of its Thrift type's range) is an argument error: :class:`InvalidRequestError`, at once.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import queue
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import thriftpy2
from thriftpy2.protocol import TBinaryProtocolFactory
from thriftpy2.thrift import TApplicationException, TClient, TDecodeException, TException
from thriftpy2.transport import TBufferedTransport, TSocket, TTransportException

from store.config import Config, Endpoint
from store.errors import (
    ConfigError,
    HBaseError,
    InvalidRequestError,
    StoreClosedError,
    StoreUnavailableError,
    TableNotFoundError,
)
from store.io.backoff import backoff_s

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (TTransportException, socket.timeout, OSError, EOFError)
RETRYABLE: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, TException)
# What thriftpy2 raises when a value does not fit its field while a request is *encoded*: the cython
# protocol raises TDecodeException (despite the name), the pure-Python one struct.error and friends.
ENCODING_ERRORS: tuple[type[BaseException], ...] = (
    TDecodeException, struct.error, OverflowError, TypeError, ValueError, UnicodeError,
)
# A socket wait is never cut shorter than this to fit the remaining budget: below it, even a
# healthy server could not answer.
MIN_ATTEMPT_TIMEOUT_MS = 1_000
TRANSPORT_BUFFER = 65_536  # bytes each way: a chunk commit or a multi-get goes out in one send, not one per 4 KiB


# HBase's Thrift2 IDL, vendored from the pinned hbase-thrift jar (a test checks it is the jar's),
# so a client of a remote HBase needs no jars.
IDL_PATH = Path(__file__).resolve().parents[1] / "idl" / "hbase2.thrift"


@functools.cache
def idl() -> ModuleType:
    """The thriftpy2 module of HBase's Thrift2 IDL (types such as ``TPut``, ``TScan``), loaded once."""
    return thriftpy2.load(str(IDL_PATH), module_name="hbase2_thrift")


def backoff_delays(config: Config) -> Iterator[float]:
    """Retry delays in seconds: exponential from ``backoff_ms``, capped at ``max_backoff_ms``,
    jittered (:func:`store.io.backoff.backoff_s`)."""
    for attempt in range(config.retries):
        yield backoff_s(attempt, base_s=config.backoff_ms / 1000, max_s=config.max_backoff_ms / 1000)


def socket_family(host: str) -> socket.AddressFamily:
    """The address family to connect to ``host`` on: IPv6 for an IPv6 address (``::1``) or a
    name with only IPv6 addresses, else IPv4 (a name with both, e.g. ``localhost``, keeps IPv4:
    HBase's Thrift servers bind an IPv4 address unless told otherwise)."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror:
        try:
            socket.getaddrinfo(host, None, socket.AF_INET6, socket.SOCK_STREAM)
        except socket.gaierror:
            return socket.AF_INET  # unresolvable: connecting reports it (and is retried)
        return socket.AF_INET6
    return socket.AF_INET


class _EncodingCheckedClient(TClient):
    """thriftpy2's client, with errors raised while *encoding* a request told apart from
    transport and server errors (which the same exception types can also signal)."""

    def _send(self, _api: str, **kwargs: Any) -> None:
        try:
            super()._send(_api, **kwargs)
        except ENCODING_ERRORS as exc:
            raise InvalidRequestError(f"{_api}: the request cannot be encoded: {exc}") from exc


class Thrift2Client:
    """One connection to a Thrift2 server; :meth:`call` retries transient failures.

    With several endpoints, the client starts on ``endpoints[first]`` and moves on to the next
    one after each failed attempt, so a dead Thrift server costs one retry, not the budget.
    """

    def __init__(self, endpoints: Sequence[Endpoint], config: Config, first: int = 0) -> None:
        if not endpoints:
            raise ConfigError("no Thrift2 endpoints configured")
        self.endpoints = tuple(endpoints)
        self._at = first % len(self.endpoints)
        self.config = config
        self._idl = idl()
        self._client: Any = None
        self._socket: Any = None

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint the client is (or will next be) connected to."""
        return self.endpoints[self._at]

    def _connect(self, timeout_ms: int | None = None) -> Any:
        """The connected client, (re)opened if needed, its socket timeout set to ``timeout_ms``
        (default ``Config.timeout_ms``)."""
        timeout_ms = timeout_ms or self.config.timeout_ms
        if self._client is None:
            # As thriftpy2's make_client, but on the endpoint's address family and with our client class.
            ep = self.endpoint
            sock: Any = TSocket(ep.host, ep.port, socket_family=socket_family(ep.host),  # type: ignore[no-untyped-call]
                                socket_timeout=timeout_ms)
            transport: Any = TBufferedTransport(sock, buf_size=TRANSPORT_BUFFER)  # type: ignore[no-untyped-call]
            protocol: Any = TBinaryProtocolFactory().get_protocol(transport)  # type: ignore[no-untyped-call]
            transport.open()
            self._client, self._socket = _EncodingCheckedClient(self._idl.THBaseService, protocol), sock
        else:
            self._socket.set_timeout(timeout_ms)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):  # closing a broken socket may fail; it is gone anyway
                self._client.close()
            self._client = self._socket = None

    def call(self, method: str, *args: Any) -> Any:
        """Call a THBaseService method, e.g. ``call("putMultiple", table, puts)``.

        Idempotent calls only: a retried call may have been applied once already.

        Raises:
            StoreUnavailableError: transient failures went on past ``Config.retries`` retries
                or ``Config.unavailable_after_ms`` (each attempt's socket wait is cut to fit).
            InvalidRequestError: the arguments cannot be encoded (e.g. an int64 field out of
                range); not retried.
            TableNotFoundError, HBaseError: HBase refused the call; not retried.
        """
        delays = backoff_delays(self.config)
        budget_ms = self.config.unavailable_after_ms
        start = time.monotonic()
        attempt = 0
        while True:
            left_ms = budget_ms - int((time.monotonic() - start) * 1000)
            timeout_ms = max(MIN_ATTEMPT_TIMEOUT_MS, min(self.config.timeout_ms, left_ms))
            try:
                return getattr(self._connect(timeout_ms), method)(*args)
            except InvalidRequestError:
                self.close()  # the half-encoded request may sit in the write buffer: never send it
                raise
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
            elapsed_s = time.monotonic() - start
            if delay is None or elapsed_s + delay >= budget_ms / 1000:
                spent = (f"after {self.config.retries} retries" if delay is None else
                         f"for {elapsed_s:.0f} s (unavailable_after_ms={budget_ms})")
                raise StoreUnavailableError(
                    f"HBase unreachable: {method} failed {spent}: {error!r}", endpoint=str(failed),
                    unavailable_after_s=budget_ms / 1000,
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


class _CallThreads(ThreadPoolExecutor):
    """A pool's call threads: a task submitted once the pool is closed raises
    :class:`StoreClosedError`, as a call would (not the executor's RuntimeError)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().submit(fn, *args, **kwargs)
        except RuntimeError as exc:  # shut down (the pool closed), or the interpreter is exiting
            raise StoreClosedError("the store is closed; open a new SequenceStore") from exc


class ClientPool:
    """``size`` Thrift2 clients spread over the configured endpoints, shared by threads.

    Clients connect lazily, so creating a pool opens no socket. After :meth:`close` the pool
    hands out no client: :meth:`client` and :meth:`call` raise :class:`StoreClosedError`.
    """

    def __init__(self, config: Config, size: int = 4) -> None:
        if size <= 0:
            raise ConfigError("'pool_size' must be > 0")
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
        self._executor: ThreadPoolExecutor | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        """``size`` threads that issue this pool's calls concurrently, shared by every caller and
        created on first use (a call of one user's read makes none). A task on it must never wait
        for another task on it. Shut down by :meth:`close`.

        Raises:
            StoreClosedError: the pool is closed.
        """
        with self._lock:
            self._check_open()
            if self._executor is None:
                self._executor = _CallThreads(max_workers=self.size, thread_name_prefix="seqstore-call")
            return self._executor

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
            if self._executor is not None:
                self._executor.shutdown(wait=False)
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
