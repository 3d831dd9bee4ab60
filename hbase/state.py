"""Where a running local HBase is recorded, so every command and client finds it.

Two files hold the same JSON: ``<data_dir>/run/runtime.json`` (the instance's own record)
and the *endpoint file* (``$SEQSTORE_STATE_DIR/hbase.json``, default
``~/.local/state/seqstore/hbase.json``), which names the instance started last and is what
the CLI and the Python client read when neither ``SEQSTORE_HBASE_THRIFT2`` nor
``SEQSTORE_HBASE`` is set.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_DIR_ENV = "SEQSTORE_STATE_DIR"


@dataclass(frozen=True, slots=True)
class Runtime:
    """A started local HBase: where it listens and which processes are its own.

    ``thrift_port``/``thrift2_port``/``regionserver_port`` are the first RegionServer's;
    ``thrift_ports``/``thrift2_ports``/``regionserver_ports`` list every RegionServer's (one
    entry for the standalone runtime). ``pids`` maps each process's role to its pid: ``master``,
    ``thrift``, ``thrift2`` for the standalone JVMs; ``zookeeper``, ``master``,
    ``regionserver.N``, ``thrift.N``, ``thrift2.N`` for a cluster of several RegionServers.
    """

    host: str
    thrift_port: int
    thrift2_port: int
    data_dir: str
    zk_port: int
    master_port: int
    regionserver_port: int
    hbase_version: str
    pids: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    regionservers: int = 1
    thrift_ports: list[int] = field(default_factory=list)
    thrift2_ports: list[int] = field(default_factory=list)
    regionserver_ports: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A record written before clusters existed lists no ports: it had one RegionServer.
        for many, one in (("thrift_ports", self.thrift_port), ("thrift2_ports", self.thrift2_port),
                          ("regionserver_ports", self.regionserver_port)):
            if not getattr(self, many):
                object.__setattr__(self, many, [one])

    @property
    def thrift_endpoints(self) -> list[str]:
        """Every Thrift1 server as ``host:port``, first RegionServer first."""
        return [f"{self.host}:{port}" for port in self.thrift_ports]

    @property
    def thrift2_endpoints(self) -> list[str]:
        """Every Thrift2 server as ``host:port``, first RegionServer first."""
        return [f"{self.host}:{port}" for port in self.thrift2_ports]

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Runtime:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})  # type: ignore[arg-type]


def state_dir() -> Path:
    """The directory holding the endpoint file (the store finds it the same way:
    :func:`store.endpoint_file.state_dir`, which cannot import this launcher module)."""
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "seqstore"


def endpoint_file() -> Path:
    return state_dir() / "hbase.json"


def runtime_file(data_dir: Path) -> Path:
    return data_dir / "run" / "runtime.json"


def _write_atomic(path: Path, data: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _read(path: Path) -> Runtime | None:
    try:
        return Runtime.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def record(rt: Runtime) -> None:
    """Record ``rt`` as its data dir's runtime and as the default endpoint."""
    _write_atomic(runtime_file(Path(rt.data_dir)), rt.to_json())
    _write_atomic(endpoint_file(), rt.to_json())


def read_runtime(data_dir: Path) -> Runtime | None:
    return _read(runtime_file(data_dir))


def read_endpoint() -> Runtime | None:
    """The runtime started last on this machine (by this user), or None."""
    return _read(endpoint_file())


def forget(data_dir: Path) -> None:
    """Remove the records of the runtime in ``data_dir`` (the endpoint only if it is that one)."""
    runtime_file(data_dir).unlink(missing_ok=True)
    current = read_endpoint()
    if current is not None and Path(current.data_dir) == data_dir:
        endpoint_file().unlink(missing_ok=True)
