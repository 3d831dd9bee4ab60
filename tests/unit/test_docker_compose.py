"""The Docker runtime, checked without a Docker engine: compose services, ports, health check."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_compose_publishes_both_thrift_ports_with_a_round_trip_health_check() -> None:
    compose = yaml.safe_load((REPO / "docker" / "compose.yml").read_text())
    hbase = compose["services"]["hbase"]
    assert hbase["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    targets = sorted(int(str(p).rsplit(":", 1)[-1]) for p in hbase["ports"])
    assert targets == [9090, 9091]
    test = hbase["healthcheck"]["test"]
    assert test[0] == "CMD" and "probe" in test
    assert test[test.index("--port") + 1] == "9090" and test[test.index("--thrift2-port") + 1] == "9091"
    assert "/data" in hbase["volumes"][0]


def test_dockerfile_builds_from_the_same_pom_and_launcher() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "COPY hbase/pom.xml" in dockerfile
    assert "dependency:copy-dependencies" in dockerfile
    assert "temurin-17" in dockerfile and "17-jre" in dockerfile
    assert "COPY hbase /opt/seqstore/hbase" in dockerfile
    assert '"-m", "hbase", "serve"' in dockerfile
