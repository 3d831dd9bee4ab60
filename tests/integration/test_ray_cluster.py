"""The jobs on a real multi-node Ray cluster (a head and two worker nodes on this machine)
against a real multi-RegionServer HBase (three RegionServers, each with its own Thrift servers),
through the CLI: the four actors are spread over all three nodes (Ray's default would put them on
two), their connections over all three Thrift2 servers, and the results are complete."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.generate import generate
from store import SequenceStore, SequenceTable, TableSpec
from store.format import DAY_MS
from tests.conftest import HBaseServer
from tests.ray_cluster import RayCluster, seqstore

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _job(ray_cluster: RayCluster, hbase: HBaseServer, *args: str) -> dict[str, Any]:
    done = seqstore(*args, "--workers", "4", "--ray-address", ray_cluster.address, "--json", env=hbase.env())
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


@pytest.fixture
def cluster_table(hbase_cluster: HBaseServer) -> Iterator[SequenceTable]:
    with SequenceStore(hbase_cluster.config()) as store:
        name = f"t{uuid.uuid4().hex[:10]}_events"
        yield store.create_table(TableSpec(name, salt_buckets=6))
        store.drop_table(name)


def test_backfill_score_export_spread_over_the_nodes(
    ray_cluster: RayCluster, hbase_cluster: HBaseServer, cluster_table: SequenceTable, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    generate(log, users=400, events=24_000, seed=3, bad_fraction=0.01, files=2, row_group_rows=2_000)
    table, hb = cluster_table, hbase_cluster

    back = _job(ray_cluster, hb, "backfill", str(log), "--table", table.name, "--report-dir", str(tmp_path / "report"),
                "--partition-events", "2000")  # 12 groups of users
    assert back["completed"] and back["units_done"] == back["units_total"] == 12
    assert back["events_in"] == 24_000 == back["events_written"] + back["events_merged"] + back["events_quarantined"]
    assert back["nodes"] == len(ray_cluster.nodes) == 3, "the actors were not spread over every node"
    checked = seqstore("verify", str(log), "--table", table.name, "--json", env=hb.env())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["users_mismatched"] == 0

    users = sorted({u for u in pq.read_table(log, columns=["user_id"]).column(0).to_pylist() if u})[:300]
    rng = np.random.default_rng(4)
    now = int(time.time() * 1000)
    ask = [*users, *users[:100], "nobody"]  # a hundred users twice, at other times; one unknown user
    requests = pa.table({"user_id": ask, "as_of_ts": pa.array(now - rng.integers(0, 30 * DAY_MS, len(ask)))})
    pq.write_table(requests, tmp_path / "requests.parquet", row_group_size=50)
    score = _job(ray_cluster, hb, "score", "--requests", str(tmp_path / "requests.parquet"), "--table", table.name,
                 "--model", "ray_jobs.examples.models:recency_similarity", "--out", str(tmp_path / "scores"))
    assert score["completed"] and score["requests"] == score["scored"] == 401
    assert score["nodes"] == 3, "the actors were not spread over every node"
    assert _pairs(pq.read_table(tmp_path / "scores"), "as_of_ts") == _pairs(requests, "as_of_ts")

    labels = pa.table({"user_id": users, "ts": pa.array(now - rng.integers(0, 30 * DAY_MS, len(users))),
                       "label": rng.integers(0, 2, len(users))})
    pq.write_table(labels, tmp_path / "labels.parquet", row_group_size=60)
    export = _job(ray_cluster, hb, "export", "--labels", str(tmp_path / "labels.parquet"), "--table", table.name,
                  "--out", str(tmp_path / "train"))
    assert export["completed"] and export["labels"] == export["rows_written"] == 300 and export["shards"] == 5
    assert export["nodes"] == 3, "the actors were not spread over every node"
    assert _pairs(pq.read_table(tmp_path / "train"), "ts") == _pairs(labels, "ts")


def _pairs(table: pa.Table, ts: str) -> Counter[tuple[str, int]]:
    """The (user, time) rows of ``table``, with their multiplicity."""
    return Counter(zip(table.column("user_id").to_pylist(), table.column(ts).to_pylist(), strict=True))
