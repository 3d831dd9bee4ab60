"""The Docker runtime's files, checked without an engine (``make test-docker`` runs them)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


class _ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's ``!reset`` tag (an override that drops a base value)."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: ("!reset", loader.construct_sequence(node)))


def load(name: str) -> dict:  # type: ignore[type-arg]
    return yaml.load((REPO / "docker" / name).read_text(), Loader=_ComposeLoader)


def test_compose_publishes_both_thrift_ports_with_a_round_trip_health_check() -> None:
    hbase = load("compose.yml")["services"]["hbase"]
    assert hbase["build"]["context"] == ".." and hbase["build"]["dockerfile"] == "docker/Dockerfile"
    assert "BASE_IMAGE" in hbase["build"]["args"]
    targets = sorted(int(str(p).rsplit(":", 1)[-1]) for p in hbase["ports"])
    assert targets == [9090, 9091]
    test = hbase["healthcheck"]["test"]
    assert test[0] == "CMD" and "probe" in test
    assert test[test.index("--port") + 1] == "9090" and test[test.index("--thrift2-port") + 1] == "9091"
    assert "/data" in hbase["volumes"][0]


def test_ci_override_uses_host_networking_on_the_ports_it_probes() -> None:
    hbase = load("compose.ci.yml")["services"]["hbase"]
    assert hbase["network_mode"] == "host" and hbase["build"]["network"] == "host"
    assert hbase["ports"] == ("!reset", [])  # published ports mean nothing under host networking
    command, probe = hbase["command"], hbase["healthcheck"]["test"]
    assert command[command.index("--bind") + 1] == "127.0.0.1"
    for serve_flag, probe_flag in (("--thrift-port", "--port"), ("--thrift2-port", "--thrift2-port")):
        assert command[command.index(serve_flag) + 1] == probe[probe.index(probe_flag) + 1]


def test_dockerfile_builds_from_the_same_pom_and_launcher_on_a_chosen_base() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=debian:bookworm", dockerfile, re.M)
    assert dockerfile.count("FROM ${BASE_IMAGE}") == 1
    assert "COPY docker/certs/ /usr/local/share/ca-certificates/" in dockerfile
    assert "update-ca-certificates" in dockerfile
    assert "COPY hbase/pom.xml" in dockerfile and "dependency:copy-dependencies" in dockerfile
    assert "openjdk-17-jre-headless" in dockerfile
    assert "COPY hbase /opt/seqstore/hbase" in dockerfile
    assert '"-m", "hbase", "serve"' in dockerfile


def test_build_context_keeps_the_virtualenv_out_and_no_certificate_is_committed() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    # An allowlist: everything is excluded first, then only what the image needs comes back.
    assert patterns[0] == "*" and {"!hbase/", "!docker/certs/"} <= set(patterns[1:])
    assert "docker/certs/*.crt" in (REPO / ".gitignore").read_text().split()
