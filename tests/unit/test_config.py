"""Config: endpoint parsing, unknown keys, environment resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.config import Config, Endpoint
from store.errors import ConfigError
from store.io.connection import backoff_delays


def test_endpoint_parse() -> None:
    assert Endpoint.parse("10.0.0.5:9090") == Endpoint("10.0.0.5", 9090)
    for bad in ("nohost", "host:", ":9090", "host:99999", "host:x"):
        with pytest.raises(ConfigError):
            Endpoint.parse(bad)


def test_ipv6_endpoints_parse_and_print_with_brackets() -> None:
    ep = Endpoint.parse("[::1]:9090")
    assert ep == Endpoint("::1", 9090)
    assert str(ep) == "[::1]:9090" and Endpoint.parse(str(ep)) == ep  # printed as it is written
    assert Endpoint.parse("[fe80::1%eth0]:9091") == Endpoint("fe80::1%eth0", 9091)
    for bad in ("::1:9090", "[::1]", "[]:9090", "[::1:9090"):
        with pytest.raises(ConfigError, match="host:port"):
            Endpoint.parse(bad)


def test_the_unavailable_budget_is_configurable_and_positive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQSTORE_STATE_DIR", str(tmp_path))
    assert Config().unavailable_after_ms == 60_000
    cfg = Config.from_env({"SEQSTORE_HBASE_THRIFT2": "h1:9091", "SEQSTORE_UNAVAILABLE_AFTER_MS": "20000"})
    assert cfg.unavailable_after_ms == 20_000
    with pytest.raises(ConfigError, match="'unavailable_after_ms' must be > 0"):
        Config.from_env({"SEQSTORE_HBASE_THRIFT2": "h1:9091", "SEQSTORE_UNAVAILABLE_AFTER_MS": "0"})


def test_from_mapping_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key.*timeout"):
        Config.from_mapping({"timeout": 5})
    with pytest.raises(ConfigError, match="'timeout_ms' must be > 0"):
        Config.from_mapping({"timeout_ms": 0})


def test_from_env_prefers_seqstore_hbase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQSTORE_STATE_DIR", str(tmp_path))
    cfg = Config.from_env({"SEQSTORE_HBASE": "h1:9090,h2:9090", "SEQSTORE_HBASE_THRIFT2": "h1:9091",
                           "SEQSTORE_TIMEOUT_MS": "1500"})
    assert cfg.thrift == (Endpoint("h1", 9090), Endpoint("h2", 9090))
    assert cfg.thrift2 == (Endpoint("h1", 9091),)
    assert cfg.timeout_ms == 1500


def test_thrift2_alone_is_enough_for_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQSTORE_STATE_DIR", str(tmp_path))
    cfg = Config.from_env({"SEQSTORE_HBASE_THRIFT2": "h1:9091,h2:9091"})
    assert cfg.thrift2 == (Endpoint("h1", 9091), Endpoint("h2", 9091)) and cfg.thrift == ()


def test_from_env_without_any_hbase_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQSTORE_STATE_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="seqstore hbase start"):
        Config.from_env({})


def test_backoff_is_capped_jittered_and_bounded() -> None:
    cfg = Config(retries=6, backoff_ms=100, max_backoff_ms=400)
    delays = list(backoff_delays(cfg))
    assert len(delays) == 6
    assert all(0 <= d <= 0.4 for d in delays)
    assert len({round(d, 6) for d in delays}) > 1


def test_table_spec_refuses_chunks_that_could_pass_hbases_cell_limit() -> None:
    """F9: chunk_events x max_payload_bytes must fit a cell (hbase.server.keyvalue.maxsize)."""
    from store import TableSpec

    TableSpec("ok", chunk_events=128, max_payload_bytes=64 * 1024)  # the defaults: 8 MiB
    with pytest.raises(ConfigError, match=r"'chunk_events' x 'max_payload_bytes' \(256 x 65536\).*chunk_events <= 159"):
        TableSpec("big", chunk_events=256, max_payload_bytes=64 * 1024)
    TableSpec("no-chunks", chunk_events=None, max_payload_bytes=1024 * 1024)  # no chunk tier: no chunk cells


def test_table_spec_refuses_a_ttl_hbase_cannot_hold() -> None:
    """F9: HBase keeps a TTL in seconds as an i32 (about 24,855 days): a clear error, not an encoding failure."""
    from store import TableSpec

    TableSpec("ok", ttl_days=24_855)
    for bad in (24_856, 1e9, 0, -1):
        with pytest.raises(ConfigError, match=r"'ttl_days' must be in \(0, 24855\]"):
            TableSpec("bad", ttl_days=bad)


def test_the_chunk_cache_size_is_a_size_or_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQSTORE_STATE_DIR", str(tmp_path))
    assert Config().chunk_cache_bytes == 256 * 1024**2
    for text, size in [("256MiB", 256 * 1024**2), ("2GB", 2 * 1000**3), ("1.5 kib", 1536), ("4096", 4096),
                       ("off", 0), ("0", 0), (" 8 MB ", 8_000_000)]:
        env = {"SEQSTORE_HBASE_THRIFT2": "h1:9091", "SEQSTORE_CHUNK_CACHE_BYTES": text}
        assert Config.from_env(env).chunk_cache_bytes == size, text
    assert Config.from_mapping({"chunk_cache_bytes": 1024}).chunk_cache_bytes == 1024
    for bad in ("lots", "12 parsecs", "-5MiB", "MiB", ""):
        with pytest.raises(ConfigError, match=r"'chunk_cache_bytes' must be a size such as 256MiB"):
            Config.from_mapping({"chunk_cache_bytes": bad})
    with pytest.raises(ConfigError, match="'chunk_cache_bytes' must be >= 0"):
        Config(chunk_cache_bytes=-1)
