"""Finding a JDK and building the command lines of the HBase JVMs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from hbase.errors import JavaNotFoundError

MIN_JAVA = 17
_INSTALL_HINT = (
    "Install JDK 17 or newer (Debian/Ubuntu: apt-get install openjdk-17-jdk-headless; "
    "macOS: brew install openjdk@17) and put it on PATH or set JAVA_HOME; "
    "or run HBase in Docker: docker compose -f docker/compose.yml up"
)

# What HBase's bin/hbase adds on JDK >= 11: without these the JVM fails at start-up with
# InaccessibleObjectException from the shaded netty and the unsafe helpers.
JDK17_FLAGS: tuple[str, ...] = (
    "-Dorg.apache.hbase.thirdparty.io.netty.tryReflectionSetAccessible=true",
    "--add-modules=jdk.unsupported",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    "--add-exports=java.base/sun.net.dns=ALL-UNNAMED",
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
)

MAIN_CLASSES = {
    "master": "org.apache.hadoop.hbase.master.HMaster",
    "regionserver": "org.apache.hadoop.hbase.regionserver.HRegionServer",  # several RegionServers only
    "zookeeper": "org.apache.hadoop.hbase.zookeeper.HQuorumPeer",  # several RegionServers only
    "thrift": "org.apache.hadoop.hbase.thrift.ThriftServer",
    "thrift2": "org.apache.hadoop.hbase.thrift2.ThriftServer",
    "pe": "org.apache.hadoop.hbase.PerformanceEvaluation",  # `hbase pe`: HBase's own benchmark
}

# Heap per kind of JVM; overridable with SEQSTORE_HBASE_HEAP_<KIND> (e.g. SEQSTORE_HBASE_HEAP_MASTER=2g).
# The standalone master holds the regions too. With several RegionServers the master only
# coordinates, and the sizes keep three RegionServers (11 JVMs) within 6.25 GB of heap.
DEFAULT_HEAP = {"master": "2g", "thrift": "512m", "thrift2": "512m", "pe": "1g"}
CLUSTER_HEAP = {"zookeeper": "256m", "master": "768m", "regionserver": "1g", "thrift": "384m", "thrift2": "384m"}


def heap(kind: str, regionservers: int = 1) -> str:
    """The ``-Xmx`` of a JVM of ``kind`` in a runtime of ``regionservers`` RegionServers."""
    default = (CLUSTER_HEAP if regionservers > 1 else DEFAULT_HEAP)[kind]
    return os.environ.get(f"SEQSTORE_HBASE_HEAP_{kind.upper()}", default)

# Marks a JVM as belonging to one data dir, so stop can find it even without a pid file.
OWNER_PROPERTY = "-Dseqstore.hbase.data.dir="


def find_java() -> str:
    """Path of the ``java`` to use: ``$JAVA_HOME/bin/java`` if set, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise JavaNotFoundError("Java was not found (no JAVA_HOME, no 'java' on PATH).", hint=_INSTALL_HINT)
    return found


def parse_java_version(text: str) -> int:
    """Major version from ``java -version`` output: '1.8.0_392' -> 8, '17.0.15' -> 17."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if match is None:
        raise JavaNotFoundError(f"Could not read the Java version from: {text.strip()[:200]!r}", hint=_INSTALL_HINT)
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java(java: str | None = None) -> tuple[str, int]:
    """Find java and make sure it is >= 17. Returns ``(path, major_version)``."""
    java = java or find_java()
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise JavaNotFoundError(f"Could not run {java} -version: {exc}", hint=_INSTALL_HINT) from exc
    major = parse_java_version(out.stderr + out.stdout)
    if major < MIN_JAVA:
        raise JavaNotFoundError(
            f"{java} is Java {major}; HBase {MIN_JAVA}+ is required by this runtime.", hint=_INSTALL_HINT
        )
    return java, major


def command(
    role: str,
    *,
    java: str,
    lib: Path,
    conf_dir: Path,
    data_dir: Path,
    args: list[str],
    regionservers: int = 1,
) -> list[str]:
    """The full command line of one HBase JVM (``role`` in :data:`MAIN_CLASSES`)."""
    return [
        java,
        f"-Dproc_{role}",
        f"-Xmx{heap(role, regionservers)}",
        "-XX:+UseG1GC",
        "-XX:OnOutOfMemoryError=kill -9 %p",
        "-Djava.net.preferIPv4Stack=true",
        f"-Dlog4j2.configurationFile={conf_dir / 'log4j2.properties'}",
        "-Djava.util.logging.config.class=org.apache.hadoop.hbase.logging.JulToSlf4jInitializer",
        f"-Dhbase.log.dir={data_dir / 'logs'}",
        f"{OWNER_PROPERTY}{data_dir}",
        *JDK17_FLAGS,
        "-cp",
        f"{conf_dir}{os.pathsep}{lib}{os.sep}*",
        MAIN_CLASSES[role],
        *args,
    ]
