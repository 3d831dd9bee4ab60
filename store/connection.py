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
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from thriftpy2.rpc import make_client
from thriftpy2.thrift import TException
from thriftpy2.transport import TTransportException

from hbase.probe import load_thrift2_idl
from store.config import Config, Endpoint
from store.errors import HBaseError, StoreUnavailableError, TableNotFoundError

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
    """One connection to a Thrift2 server; :meth:`call` retries transient failures."""

    def __init__(self, endpoint: Endpoint, config: Config) -> None:
        self.endpoint = endpoint
        self.config = config
        self._idl = idl()
        self._client: Any = None

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
                if "TableNotFoundException" in message:
                    raise TableNotFoundError(message.splitlines()[0]) from exc
                if not exc.canRetry:
                    raise HBaseError(f"{method}: {message.splitlines()[0] if message else exc!r}") from exc
                error: BaseException = exc
            except RETRYABLE as exc:
                error = exc
            self.close()
            delay = next(delays, None)
            if delay is None:
                raise StoreUnavailableError(
                    f"{method} failed after {self.config.retries} retries: {error!r}", endpoint=str(self.endpoint)
                ) from error
            # The server closes connections idle for 60 s: the first reconnect is routine.
            log.log(logging.DEBUG if attempt == 0 else logging.WARNING, "%s on %s failed (%r); retry in %.2f s",
                    method, self.endpoint, error, delay)
            attempt += 1
            time.sleep(delay)


class ClientPool:
    """``size`` Thrift2 clients spread over the configured endpoints, shared by threads.

    Clients connect lazily, so creating a pool opens no socket.
    """

    def __init__(self, config: Config, size: int = 4) -> None:
        if size <= 0:
            raise ValueError("'size' must be > 0")
        if not config.thrift2:
            raise StoreUnavailableError(
                "no Thrift2 endpoint configured (set SEQSTORE_HBASE_THRIFT2=host:port or run `seqstore hbase start`)"
            )
        self.config = config
        self.size = size
        self._free: queue.LifoQueue[Thrift2Client] = queue.LifoQueue()
        for i in range(size):
            self._free.put(Thrift2Client(config.thrift2[i % len(config.thrift2)], config))
        self._lock = threading.Lock()

    @contextmanager
    def client(self) -> Iterator[Thrift2Client]:
        c = self._free.get()
        try:
            yield c
        finally:
            self._free.put(c)

    def call(self, method: str, *args: Any) -> Any:
        with self.client() as c:
            return c.call(method, *args)

    def close(self) -> None:
        with self._lock:
            while not self._free.empty():
                self._free.get_nowait().close()
