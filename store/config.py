"""Where seqstore finds HBase, and how it talks to it.

Resolution order for the Thrift endpoints:

1. ``SEQSTORE_HBASE_THRIFT2=host:port[,...]`` — the Thrift2 server(s) of any HBase, which
   the store speaks; ``SEQSTORE_HBASE=host:port[,...]`` — its Thrift1 server(s), used only by
   happybase tools (benchmark baselines, tests). Setting either skips the endpoint file.
2. The endpoint file written by ``seqstore hbase start`` (:mod:`store.endpoint_file`).

Everything else comes from :class:`Config` fields, each readable from ``SEQSTORE_<FIELD>``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from store.endpoint_file import read_local_hbase
from store.errors import ConfigError

__all__ = ["HBASE_ENV", "HBASE_THRIFT2_ENV", "Config", "Endpoint", "parse_size"]

HBASE_ENV = "SEQSTORE_HBASE"
HBASE_THRIFT2_ENV = "SEQSTORE_HBASE_THRIFT2"
DEFAULT_CHUNK_CACHE_BYTES = 256 * 1024**2


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One Thrift server."""

    host: str
    port: int

    def __str__(self) -> str:
        # An IPv6 address keeps its brackets, so that the text parses back to the same endpoint.
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """Parse ``host:port``, or ``[ipv6]:port`` for an IPv6 address.

        Raises:
            ConfigError: naming the bad value (no port, a port out of range, an IPv6 address
                without brackets).
        """
        host, sep, port = text.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"expected host:port, got {text!r}")
        if host.startswith("[") and host.endswith("]") and len(host) > 2:
            return cls(host[1:-1], int(port))
        if ":" in host or "[" in host or "]" in host:
            # "::1:9090" could be the address ::1:9090 with no port: only brackets say where the port starts.
            raise ConfigError(f"expected host:port with an IPv6 address in brackets ([::1]:9090), got {text!r}")
        return cls(host, int(port))


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*")


def parse_size(value: object, name: str) -> int:
    """A size in bytes from an int or a text such as ``256MiB``, ``1.5GB``, ``0`` or ``off``.

    Raises:
        ConfigError: naming ``name`` and the value, when it is not a size.
    """
    if isinstance(value, bool):
        raise ConfigError(f"'{name}' must be a size such as 256MiB or off, got {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text in ("off", "none", "no", "false"):
        return 0
    match = _SIZE.fullmatch(text)
    if match is None or match.group(2) not in _UNITS:
        raise ConfigError(f"'{name}' must be a size such as 256MiB, 2GB or off, got {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def _parse_list(text: str) -> tuple[Endpoint, ...]:
    return tuple(Endpoint.parse(part) for part in text.split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class Config:
    """How to reach HBase. Immutable; build it with :meth:`from_env` or :meth:`from_mapping`.

    Attributes:
        thrift: Thrift1 servers (happybase). Several spread the load across clients.
        thrift2: Thrift2 servers; empty if none is known.
        timeout_ms: socket timeout of every Thrift call, in milliseconds.
        retries: attempts after the first for a retryable (transport) error.
        backoff_ms: first retry delay; doubles per attempt, with full jitter.
        max_backoff_ms: cap of one retry delay.
        unavailable_after_ms: how long one call keeps retrying an unreachable HBase before it
            raises :class:`StoreUnavailableError` (its whole retry sequence, socket waits
            included). Jobs retry their units for as long again, so a job stops about twice
            this after HBase went away.
        chunk_cache_bytes: memory for decoded chunks kept between reads
            (:mod:`store.tiers.chunk_cache`), shared by every table of a store; 0 turns it off.
            From a mapping or ``SEQSTORE_CHUNK_CACHE_BYTES`` also a size: ``256MiB``, ``2GB``,
            ``off``.
    """

    thrift: tuple[Endpoint, ...] = ()
    thrift2: tuple[Endpoint, ...] = ()
    timeout_ms: int = 30_000
    retries: int = 5
    backoff_ms: int = 100
    max_backoff_ms: int = 5_000
    unavailable_after_ms: int = 60_000
    chunk_cache_bytes: int = DEFAULT_CHUNK_CACHE_BYTES

    def __post_init__(self) -> None:
        for name in ("timeout_ms", "backoff_ms", "max_backoff_ms", "unavailable_after_ms"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"'{name}' must be > 0")
        if self.retries < 0:
            raise ConfigError("'retries' must be >= 0")
        if self.chunk_cache_bytes < 0:
            raise ConfigError("'chunk_cache_bytes' must be >= 0 (0: no cache)")

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> Config:
        """Build from a mapping of field names; unknown keys are rejected."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        kwargs: dict[str, object] = {}
        for key, value in values.items():
            if key in ("thrift", "thrift2"):
                kwargs[key] = _parse_list(value) if isinstance(value, str) else tuple(value)  # type: ignore[arg-type]
            elif key == "chunk_cache_bytes":
                kwargs[key] = parse_size(value, key)
            else:
                try:
                    kwargs[key] = int(value)  # type: ignore[call-overload]
                except (TypeError, ValueError) as exc:
                    raise ConfigError(f"'{key}' must be an integer, got {value!r}") from exc
        return cls(**kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Read ``SEQSTORE_HBASE_THRIFT2``/``SEQSTORE_HBASE``, else the local endpoint file.

        Raises:
            ConfigError: no HBase is configured and none was started with ``seqstore hbase start``.
        """
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            key = f"SEQSTORE_{f.name.upper()}"
            if f.name not in ("thrift", "thrift2") and key in env:
                values[f.name] = env[key]
        config = cls.from_mapping(values)
        if env.get(HBASE_ENV) or env.get(HBASE_THRIFT2_ENV):
            return replace(config, thrift=_parse_list(env.get(HBASE_ENV, "")),
                           thrift2=_parse_list(env.get(HBASE_THRIFT2_ENV, "")))
        rt = read_local_hbase()
        if rt is None:
            raise ConfigError(
                f"No HBase configured: run `seqstore hbase start`, or set {HBASE_THRIFT2_ENV}=host:port "
                f"(and {HBASE_ENV}=host:port for Thrift1 tools) to use another HBase (see `seqstore hbase status`)."
            )
        # A local cluster has one Thrift server of each kind per RegionServer: clients spread over all.
        return replace(config, thrift=tuple(Endpoint(rt.host, port) for port in rt.thrift_ports),
                       thrift2=tuple(Endpoint(rt.host, port) for port in rt.thrift2_ports))
