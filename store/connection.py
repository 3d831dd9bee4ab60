"""Connections to HBase's Thrift1 server, with timeouts and error translation.

Thrift and socket exceptions never leave this module: they become
:class:`~store.errors.StoreUnavailableError` (retryable) here.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import happybase
from thriftpy2.transport import TTransportException

from store.config import Config, Endpoint
from store.errors import StoreUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors that mean "the connection or server is (temporarily) gone": safe to retry.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (TTransportException, socket.timeout, ConnectionError, OSError)


def open_connection(endpoint: Endpoint, *, timeout_ms: int) -> happybase.Connection:
    """Open a happybase connection whose socket times out after ``timeout_ms``.

    Raises:
        StoreUnavailableError: the server could not be reached.
    """
    try:
        return happybase.Connection(endpoint.host, endpoint.port, timeout=timeout_ms)
    except TRANSIENT_ERRORS as exc:
        raise StoreUnavailableError(f"cannot connect to HBase Thrift: {exc}", endpoint=str(endpoint)) from exc


@contextmanager
def connection(config: Config, *, index: int = 0) -> Iterator[happybase.Connection]:
    """A Thrift1 connection to ``config.thrift[index % n]``, closed on exit."""
    if not config.thrift:
        raise StoreUnavailableError("no Thrift endpoint configured")
    conn = open_connection(config.thrift[index % len(config.thrift)], timeout_ms=config.timeout_ms)
    try:
        yield conn
    finally:
        conn.close()


def backoff_delays(config: Config) -> Iterator[float]:
    """Retry delays in seconds: exponential from ``backoff_ms``, capped, with full jitter."""
    for attempt in range(config.retries):
        cap = min(config.max_backoff_ms, config.backoff_ms * (2**attempt))
        yield random.uniform(0, cap) / 1000.0


def with_retries(config: Config, call: Callable[[], T], *, what: str) -> T:
    """Run ``call``; on a transient error wait and retry, at most ``config.retries`` times.

    Only transport-level errors are retried; anything else propagates at once. After the
    last attempt a :class:`StoreUnavailableError` is raised from the last error.
    """
    delays = backoff_delays(config)
    while True:
        try:
            return call()
        except TRANSIENT_ERRORS as exc:
            delay = next(delays, None)
            if delay is None:
                raise StoreUnavailableError(f"{what} failed after {config.retries} retries: {exc}") from exc
            log.warning("%s failed (%s); retrying in %.2f s", what, exc, delay)
            time.sleep(delay)
