"""Finding the local HBase that ``seqstore hbase start`` recorded: the endpoint file.

The launcher (:mod:`hbase.state`) writes the file; the store only reads it, and imports
nothing of the launcher. The file is ``$SEQSTORE_STATE_DIR/hbase.json`` (default
``$XDG_STATE_HOME/seqstore/hbase.json``, else ``~/.local/state/seqstore/hbase.json``), a JSON
object whose keys ``host``, ``thrift_ports`` and ``thrift2_ports`` (one port per RegionServer;
a record from before clusters has only ``thrift_port``/``thrift2_port``) are all this module
reads. A test checks the launcher and this module agree on the place and the keys.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

STATE_DIR_ENV = "SEQSTORE_STATE_DIR"


@dataclass(frozen=True, slots=True)
class LocalHBase:
    """The Thrift servers of the recorded local HBase, first RegionServer first."""

    host: str
    thrift_ports: tuple[int, ...]
    thrift2_ports: tuple[int, ...]


def state_dir() -> Path:
    """The directory holding the endpoint file."""
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "seqstore"


def endpoint_file() -> Path:
    return state_dir() / "hbase.json"


def read_local_hbase() -> LocalHBase | None:
    """The HBase started last on this machine (by this user), or None if none is recorded
    (or the record cannot be read)."""
    try:
        data = json.loads(endpoint_file().read_text())
        return LocalHBase(str(data["host"]),
                          tuple(int(p) for p in data.get("thrift_ports") or [data["thrift_port"]]),
                          tuple(int(p) for p in data.get("thrift2_ports") or [data["thrift2_port"]]))
    except (OSError, ValueError, TypeError, KeyError):
        return None
