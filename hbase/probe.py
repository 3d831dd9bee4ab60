"""Readiness: a real create/put/get/delete round trip through each Thrift server.

An open port proves nothing: the Thrift servers accept connections before ``hbase:meta``
is assigned. A probe passes only when a table can be created, written, read back and dropped.
"""

from __future__ import annotations

import io
import os
import uuid
import zipfile
from types import ModuleType

import happybase
import thriftpy2
from thriftpy2.rpc import make_client

from hbase import jars
from hbase.errors import MavenError

# The Thrift2 IDL inside the pinned hbase-thrift jar (the store vendors a copy of it).
IDL_IN_JAR = "org/apache/hadoop/hbase/thrift2/hbase.thrift"
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
    """The Thrift2 IDL of the pinned HBase as a thriftpy2 module, read from its own
    ``hbase-thrift`` jar (loaded once per process). Raises :class:`MavenError` when the jars
    have not been fetched."""
    global _IDL
    if _IDL is None:
        _IDL = thriftpy2.load_fp(io.StringIO(thrift2_idl_text()), module_name="hbase2_jar_thrift")
    return _IDL


def thrift2_idl_text() -> str:
    """The text of the Thrift2 IDL in the pinned ``hbase-thrift`` jar."""
    lib = jars.cached()
    found = sorted(lib.glob("hbase-thrift-*.jar")) if lib else []
    if not found:
        raise MavenError(f"no hbase-thrift jar in {lib or jars.lib_dir()}: fetch the jars with `seqstore hbase fetch`")
    with zipfile.ZipFile(found[0]) as jar:
        return jar.read(IDL_IN_JAR).decode("utf-8")


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


def probe_cluster(host: str, thrift_ports: list[int], thrift2_ports: list[int], regionserver_ports: list[int],
                  idl: ModuleType, *, timeout_s: float = 30.0) -> None:
    """The round trip through every Thrift server, on a table that has a region on every RegionServer.

    Creates a table pre-split into one region per RegionServer (through the first Thrift2
    server), checks that every RegionServer holds one of them, writes and reads a row of every
    region through every Thrift2 server, reads them through every Thrift1 server, and drops
    the table. Raises on the first failure (the caller retries until its deadline).
    """
    n = len(regionserver_ports)
    name = idl.TTableName(ns=b"default", qualifier=_probe_table())
    table = name.ns + b":" + name.qualifier
    rows = [bytes([i * 256 // n]) + b"probe" for i in range(n)]
    admin = make_client(idl.THBaseService, host, thrift2_ports[0], timeout=int(timeout_s * 1000))
    try:
        family = idl.TColumnFamilyDescriptor(name=b"f", maxVersions=1, blockCacheEnabled=True)
        admin.createTable(idl.TTableDescriptor(tableName=name, columns=[family]), [r[:1] for r in rows[1:]])
        try:
            held = sorted({loc.serverName.port for loc in admin.getAllRegionLocations(table)})
            if held != sorted(regionserver_ports):
                raise RuntimeError(f"the probe table's {n} regions are on RegionServers {held}, "
                                   f"not on each of {sorted(regionserver_ports)}")
            for port in thrift2_ports:
                client = make_client(idl.THBaseService, host, port, timeout=int(timeout_s * 1000))
                try:
                    for row in rows:
                        value = f"ok {port}".encode()
                        client.put(table, idl.TPut(row=row, columnValues=[idl.TColumnValue(b"f", b"q", value)]))
                        got = client.get(table, idl.TGet(row=row))
                        if not got.columnValues or got.columnValues[0].value != value:
                            raise RuntimeError(f"probe via thrift2 port {port} read back {got!r}")
                finally:
                    client.close()
            for port in thrift_ports:
                conn = happybase.Connection(host, port, timeout=int(timeout_s * 1000), autoconnect=False)
                try:
                    conn.open()
                    for row in rows:
                        if b"f:q" not in conn.table(name.qualifier).row(row):
                            raise RuntimeError(f"probe via thrift port {port} found no row {row!r}")
                finally:
                    conn.close()
        finally:
            admin.disableTable(name)
            admin.deleteTable(name)
    finally:
        admin.close()
