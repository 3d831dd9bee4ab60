"""The only modules that speak Thrift2 to HBase: the connection pool with its retries and
typed errors (:mod:`.connection`, :mod:`.backoff`), stateless scans (:mod:`.scanning`) and
batched calls with the filter strings (:mod:`.calls`).

May import :mod:`store.config`, :mod:`store.endpoint_file` and :mod:`store.errors`.
"""

from store.io.backoff import backoff_s
from store.io.connection import ClientPool, idl
from store.io.scanning import scan_results

__all__ = ["ClientPool", "backoff_s", "idl", "scan_results"]
