"""The HBase runtime seqstore runs against: a pinned version, its config, and a launcher.

``hbase/pom.xml`` pins the HBase release; :mod:`hbase.jars` resolves it with Maven into a
cache outside the repository; :mod:`hbase.launcher` starts standalone HBase (ZooKeeper,
master and one RegionServer in one JVM) plus the Thrift1 and Thrift2 servers on loopback, or
with ``regionservers=N`` a local cluster of separate JVMs (:mod:`hbase.roles`).

This package depends on the standard library and happybase only, so the Docker image can
run it without the rest of seqstore::

    from hbase import launcher
    rt, _ = launcher.start(data_dir="/tmp/hb")   # returns once a real round trip works
    print(rt.thrift2_endpoints)
    launcher.stop(rt.data_dir)
"""

from hbase.errors import HBaseRuntimeError
from hbase.state import Runtime

__all__ = ["HBaseRuntimeError", "Runtime"]
