"""Clear errors, never a bare stack trace: java, Maven, ports, a JVM that fails to start."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hbase import jars, jvm, launcher
from hbase.errors import JavaNotFoundError, MavenError, PortBusyError, StartupError


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ray_jobs.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("text", "major"), [
    ('openjdk version "17.0.15" 2025-04-15', 17),
    ('java version "1.8.0_392"', 8),
    ('openjdk version "21-ea" 2023-09-19', 21),
    ('openjdk version "11.0.2" 2019-01-15', 11),
])
def test_parse_java_version(text: str, major: int) -> None:
    assert jvm.parse_java_version(text) == major


def test_java_older_than_17_is_refused_with_what_to_install(tmp_path: Path) -> None:
    old = _script(tmp_path / "java", "echo 'openjdk version \"11.0.2\" 2019-01-15' >&2")
    with pytest.raises(JavaNotFoundError) as err:
        jvm.check_java(str(old))
    assert "Java 11" in str(err.value) and "JDK 17" in str(err.value)


def test_cli_without_java_says_what_to_install(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "SEQSTORE_HBASE")}
    env["PATH"] = str(bin_dir)  # no java here
    env["SEQSTORE_STATE_DIR"] = str(tmp_path / "state")
    result = _cli("hbase", "start", "--data-dir", str(tmp_path / "d"), env=env)
    assert result.returncode == 2
    assert "Java was not found" in result.stderr and "openjdk-17" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_maven_points_to_install_or_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQSTORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(jars.LIB_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn here
    with pytest.raises(MavenError) as err:
        jars.fetch()
    assert "mvn" in str(err.value) and "docker compose" in str(err.value)


@pytest.mark.slow
def test_unreachable_maven_central_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Real Maven, pointed at a mirror on a closed loopback port, with an empty local repository.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    settings = tmp_path / "settings.xml"
    settings.write_text(
        "<settings><mirrors><mirror><id>down</id><mirrorOf>*</mirrorOf>"
        f"<url>http://127.0.0.1:{closed_port}/maven2</url></mirror></mirrors></settings>"
    )
    monkeypatch.setenv("SEQSTORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(jars.LIB_ENV, raising=False)
    with pytest.raises(MavenError) as err:
        jars.fetch(maven_args=("-s", str(settings), f"-Dmaven.repo.local={tmp_path / 'm2'}"))
    assert "unreachable" in str(err.value)
    assert jars.cached() is None  # nothing half-fetched is left as if complete


def test_busy_thrift_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortBusyError) as err:
            launcher.start(tmp_path / "d", thrift_port=port)
    assert str(port) in str(err.value)
    assert launcher.jvm_pids(tmp_path / "d") == []


@pytest.mark.slow
def test_hbase_failing_to_start_shows_log_tail_and_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A heap too small for the JVM to boot: a real start-up failure, reported with its log.
    monkeypatch.setenv("SEQSTORE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SEQSTORE_HBASE_HEAP_MASTER", "1k")
    data_dir = tmp_path / "d"
    with pytest.raises(StartupError) as err:
        launcher.start(data_dir, timeout_s=60)
    message = str(err.value)
    assert "master exited" in message
    assert str(data_dir / "logs" / "master.log") in message
    assert "last log lines" in message and "heap" in message.lower()
    assert launcher.jvm_pids(data_dir) == []
