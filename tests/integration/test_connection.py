"""The Thrift2 client against a real server: reconnects, fail-over, and errors HBase refuses."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from store import SequenceTable
from store.config import Endpoint
from store.errors import HBaseError, InvalidRequestError, TableNotFoundError
from store.io.connection import ClientPool, idl
from tests.conftest import HBaseServer

pytestmark = pytest.mark.integration


def _dead_endpoint() -> Endpoint:
    with socket.socket() as s:  # a port that was just free: connecting to it is refused
        s.bind(("127.0.0.1", 0))
        return Endpoint("127.0.0.1", s.getsockname()[1])


def test_a_dead_endpoint_costs_one_retry_not_the_call(hbase_server: HBaseServer,
                                                      make_table: Callable[..., SequenceTable]) -> None:
    table = make_table()
    live = hbase_server.config()
    config = replace(live, thrift2=(_dead_endpoint(), *live.thrift2), retries=1, backoff_ms=1)
    pool = ClientPool(config, size=2)  # client 0 starts on the dead endpoint, client 1 on the live one
    try:
        with pool.client() as first, pool.client() as second:
            assert {first.endpoint, second.endpoint} == set(config.thrift2)
            for c in (first, second):
                assert c.call("tableExists", idl().TTableName(qualifier=table.name.encode())) is True
                assert c.endpoint == live.thrift2[0]
    finally:
        pool.close()


def test_a_connection_closed_under_the_client_is_reopened(hbase_server: HBaseServer,
                                                          make_table: Callable[..., SequenceTable]) -> None:
    table = make_table()
    pool = ClientPool(replace(hbase_server.config(), retries=1, backoff_ms=1), size=1)
    name = idl().TTableName(qualifier=table.name.encode())
    try:
        with pool.client() as c:
            assert c.call("tableExists", name) is True
            # The socket dies under the client, as when the server drops an idle connection.
            c._client._iprot.trans.sock.shutdown(socket.SHUT_RDWR)
            time.sleep(0.1)
            assert c.call("tableExists", name) is True
    finally:
        pool.close()


def test_refusals_from_hbase_are_not_retried(hbase_server: HBaseServer, table_prefix: str,
                                             make_table: Callable[..., SequenceTable]) -> None:
    t = idl()
    table = make_table()
    pool = ClientPool(replace(hbase_server.config(), retries=3, backoff_ms=2_000), size=1)
    try:
        started = time.monotonic()
        with pytest.raises(TableNotFoundError):
            pool.call("get", f"{table_prefix}missing".encode(), t.TGet(row=b"r"))
        with pytest.raises(HBaseError, match=r"(?i)family"):
            pool.call("put", table.handle.name_bytes,
                      t.TPut(row=b"r", columnValues=[t.TColumnValue(b"nope", b"q", b"v")]))
        with pytest.raises(HBaseError, match="server error"):  # a put of no cells: the server throws
            pool.call("putMultiple", table.handle.name_bytes, [t.TPut(row=b"r", columnValues=[])])
        assert time.monotonic() - started < 2.0  # no 2 s backoff was slept: none was retried
    finally:
        pool.close()


def test_a_read_that_cannot_be_encoded_is_an_argument_error_not_an_outage(
        make_table: Callable[..., SequenceTable]) -> None:
    table = make_table()
    with pytest.raises(InvalidRequestError):  # maxStamp = 2**63 overflows int64 (or a units check refuses it)
        table.read_sequences([("u1", 2**63 - 1)], max_len=10, inclusive=True)
    assert table.read_sequences([("u1", 1_700_000_000_000)], max_len=10).num_rows == 1  # the pool still works
