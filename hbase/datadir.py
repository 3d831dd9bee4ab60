"""What lives in an instance's data directory, and the ports it listens on.

One data directory holds one instance::

    <data_dir>/conf/     hbase-site.xml rendered from hbase/conf/, log4j2.properties
    <data_dir>/conf/thrift/  the same plus thrift-client.xml's settings: the Thrift servers' conf
    <data_dir>/hbase/    HBase's root dir (tables, WALs) — what persists across restarts
    <data_dir>/zookeeper/
    <data_dir>/logs/     <role>.log: master.log, thrift.log, thrift2.log (standalone);
                         zookeeper.log, regionserver_2.log, thrift_2.log... (several RegionServers)
    <data_dir>/run/      runtime.json (ports, pids), ports.json (reused on the next start)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import string
from pathlib import Path

from hbase import jars
from hbase.errors import PortBusyError

CONF_TEMPLATES = jars.RUNTIME_DIR / "conf"
DATA_DIR_ENV = "SEQSTORE_HBASE_DATA_DIR"
LOG_TAIL_LINES = 40
# Settings for the Thrift servers' own HBase client only (see the file).
THRIFT_CLIENT_CONF = "thrift-client.xml"


def default_data_dir() -> Path:
    """``$SEQSTORE_HBASE_DATA_DIR``, else ``~/.local/share/seqstore/hbase``."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_DATA_HOME")
    return ((Path(xdg) if xdg else Path.home() / ".local" / "share") / "seqstore" / "hbase").resolve()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


PER_REGIONSERVER = ("regionserver_port", "thrift_port", "thrift2_port")


def port_key(name: str, index: int) -> str:
    """The key of RegionServer ``index``'s port ``name`` (1-based): ``thrift_port``, ``thrift_port_2``..."""
    return name if index == 1 else f"{name}_{index}"


def choose_ports(data_dir: Path, bind: str, thrift_port: int | None, thrift2_port: int | None,
                 regionservers: int = 1) -> dict[str, int]:
    """Ports for this start: asked-for ones must be free; others reuse the last start's if free.

    ZooKeeper and the master get one port each; every RegionServer gets its own RPC, Thrift1
    and Thrift2 ports (:func:`port_key`). ``thrift_port``/``thrift2_port`` are the first
    RegionServer's. Reusing the ports keeps each RegionServer's address stable across restarts,
    so the master finds its regions where ZooKeeper last saw them instead of recovering them.
    """
    for name, port in (("thrift port", thrift_port), ("thrift2 port", thrift2_port)):
        if port is not None and not port_is_free(port, bind):
            raise PortBusyError(
                f"The {name} {port} on {bind} is already in use.",
                hint=f"Stop what listens there (e.g. `ss -ltnp 'sport = :{port}'`) or choose another port.",
            )
    saved_path = data_dir / "run" / "ports.json"
    try:
        saved: dict[str, int] = json.loads(saved_path.read_text())
    except (OSError, ValueError):
        saved = {}
    asked = {"thrift_port": thrift_port, "thrift2_port": thrift2_port}
    keys = ["zk_port", "master_port"] + [port_key(name, i) for i in range(1, regionservers + 1)
                                         for name in PER_REGIONSERVER]
    ports: dict[str, int] = {}
    for key in keys:
        host = bind if key.startswith("thrift") else "127.0.0.1"
        previous = saved.get(key)
        if asked.get(key) is not None:
            ports[key] = asked[key]  # type: ignore[assignment]
        elif previous and previous not in ports.values() and previous not in asked.values() \
                and port_is_free(previous, host):
            ports[key] = previous
        else:
            port = free_port(host)
            while port in ports.values() or port in asked.values():
                port = free_port(host)
            ports[key] = port
    saved_path.parent.mkdir(parents=True, exist_ok=True)
    saved_path.write_text(json.dumps({**saved, **ports}, indent=2) + "\n")
    return ports


def render_config(data_dir: Path, ports: dict[str, int], regionservers: int = 1) -> Path:
    """Write ``<data_dir>/conf`` (and ``conf/thrift``) from the templates in ``hbase/conf``;
    returns the conf dir.

    One RegionServer renders the standalone runtime (one JVM for ZooKeeper, master and
    RegionServer); more render distributed mode, each role its own JVM. A RegionServer's own
    ports come on its command line (``-D``), as ``bin/local-regionservers.sh`` does it.
    """
    conf = data_dir / "conf"
    template = string.Template((CONF_TEMPLATES / "hbase-site.xml.template").read_text())
    site = template.substitute(data_dir=str(data_dir), distributed=str(regionservers > 1).lower(),
                               regionservers=regionservers, **ports)
    # The Thrift servers copy their Configuration before Hadoop's generic options (-conf, -D) are
    # applied, so their own settings can only reach them through a conf dir of their own.
    client = (CONF_TEMPLATES / THRIFT_CLIENT_CONF).read_text()
    properties = client.split("<configuration>", 1)[1].rsplit("</configuration>", 1)[0]
    for directory, text in ((conf, site), (thrift_conf_dir(data_dir), site.replace(
            "</configuration>", f"  <!-- From {THRIFT_CLIENT_CONF}: -->{properties}</configuration>"))):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "hbase-site.xml").write_text(text)
        shutil.copyfile(CONF_TEMPLATES / "log4j2.properties", directory / "log4j2.properties")
    return conf


def thrift_conf_dir(data_dir: Path) -> Path:
    """The conf dir of the Thrift servers: hbase-site.xml plus their own client's settings."""
    return data_dir / "conf" / "thrift"


def log_path(data_dir: Path, role: str) -> Path:
    return data_dir / "logs" / f"{role}.log"


def log_tail(data_dir: Path, role: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = log_path(data_dir, role).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
