"""Readiness: a real create/put/get/delete round trip through each Thrift server.

An open port proves nothing: the Thrift servers accept connections before ``hbase:meta``
is assigned. A probe passes only when a table can be created, written, read back and dropped.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from types import ModuleType

import happybase
import thriftpy2
from thriftpy2.rpc import make_client

IDL_PATH = Path(__file__).resolve().parent / "idl" / "hbase2.thrift"
_IDL: ModuleType | None = None


def _probe_table() -> bytes:
    return f"seqstore_probe_{os.getpid()}_{uuid.uuid4().hex[:8]}".encode()


def probe_thrift1(host: str, port: int, *, timeout_s: float = 30.0) -> None:
    """Create, write, read and drop a table through the Thrift1 server (happybase).

    Raises whatever the connection raises on failure (the caller retries until its deadline).
    """
    name = _probe_table()
    conn = happybase.Connection(host, port, timeout=int(timeout_s * 1000), autoconnect=False)
    try:
        conn.open()
        conn.create_table(name, {"f": {"max_versions": 1, "block_cache_enabled": True}})
        try:
            table = conn.table(name)
            table.put(b"row", {b"f:q": b"ok"})
            got = table.row(b"row")
            if got.get(b"f:q") != b"ok":
                raise RuntimeError(f"probe read back {got!r} instead of the value written")
        finally:
            conn.delete_table(name, disable=True)
    finally:
        conn.close()


def load_thrift2_idl() -> ModuleType:
    """The Thrift2 IDL as a thriftpy2 module (loaded once per process).

    ``hbase/idl/hbase2.thrift`` is the IDL shipped in the pinned ``hbase-thrift`` jar,
    vendored so a client of a remote HBase needs no jars.
    """
    global _IDL
    if _IDL is None:
        _IDL = thriftpy2.load(str(IDL_PATH), module_name="hbase2_thrift")
    return _IDL


def probe_thrift2(host: str, port: int, idl: ModuleType, *, timeout_s: float = 30.0) -> None:
    """The same round trip through the Thrift2 server."""
    name = idl.TTableName(ns=b"default", qualifier=_probe_table())
    client = make_client(idl.THBaseService, host, port, timeout=int(timeout_s * 1000))
    try:
        family = idl.TColumnFamilyDescriptor(name=b"f", maxVersions=1, blockCacheEnabled=True)
        client.createTable(idl.TTableDescriptor(tableName=name, columns=[family]), None)
        try:
            table = name.ns + b":" + name.qualifier
            client.put(table, idl.TPut(row=b"row", columnValues=[idl.TColumnValue(b"f", b"q", b"ok")]))
            got = client.get(table, idl.TGet(row=b"row"))
            if not got.columnValues or got.columnValues[0].value != b"ok":
                raise RuntimeError(f"probe read back {got!r} instead of the value written")
        finally:
            client.disableTable(name)
            client.deleteTable(name)
    finally:
        client.close()
