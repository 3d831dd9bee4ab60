"""A Ray worker node dies (SIGKILL, as a machine failure) while a job runs on the multi-node
cluster, with one of the job's actors inside a unit on it: the job re-runs the lost units on the
surviving nodes and completes, with nothing lost or duplicated."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.backfill import JOB
from ray_jobs.generate import generate
from ray_jobs.verify import verify
from store import SequenceStore, SequenceTable
from store.format import DAY_MS
from store.table import job_records
from tests.ray_cluster import REPO, WORKER_NODES, RayCluster, seqstore_command

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.slow]


@pytest.fixture
def cluster(ray_cluster: RayCluster) -> Iterator[RayCluster]:
    yield ray_cluster
    ray_cluster.restore()  # the next test gets all three nodes again


def _run_killing_a_node(cluster: RayCluster, args: list[str], actor: str, units_done: Callable[[], int],
                        tmp_path: Path) -> tuple[dict[str, Any], str, int]:
    """Run ``seqstore ARGS --workers 4`` on the cluster; once two units are done, kill a worker node
    on which an ``actor`` is inside a unit. Returns the job's JSON summary, the node killed and the
    units done when it was killed."""
    with open(tmp_path / "stdout", "w+") as out, open(tmp_path / "stderr", "w+") as err:
        job = subprocess.Popen(seqstore_command(*args, "--workers", "4", "--ray-address", cluster.address, "--json"),
                               cwd=REPO, stdout=out, stderr=err, text=True)
        try:
            killed, done = "", 0
            deadline = time.monotonic() + 300
            while not killed and job.poll() is None and time.monotonic() < deadline:
                if units_done() >= 2:
                    busy = [name for name in WORKER_NODES if cluster.actor_pids(name, f"{actor}.run")]
                    if busy:
                        done = units_done()
                        cluster.kill(busy[0])
                        killed = busy[0]
                time.sleep(0.1)
            job.wait(timeout=600)
        finally:
            if job.poll() is None:
                job.kill()
                job.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    assert killed, f"no worker node was caught with a busy {actor} (job exit {job.returncode}): {stderr[-2000:]}"
    assert job.returncode == 0, stderr[-3000:]
    summary: dict[str, Any] = json.loads(stdout)
    return summary, killed, done


def test_backfill_completes_when_a_worker_node_dies_mid_job(
    cluster: RayCluster, make_table: Callable[..., SequenceTable], store: SequenceStore, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    generate(log, users=1_000, events=60_000, seed=8, bad_fraction=0.01, files=3, row_group_rows=2_000)
    table = make_table(salt_buckets=4)

    summary, killed, done_at_kill = _run_killing_a_node(
        cluster, ["backfill", str(log), "--table", table.name, "--report-dir", str(tmp_path / "report"),
                  "--into", "raw"],  # row groups: a node is caught inside one (the chunk path: not yet)
        "BackfillWorker", lambda: len(job_records.load(store.pool, table.name, JOB)), tmp_path)

    assert done_at_kill < summary["units_total"] == 30, "the node died after the job's units were done"
    assert summary["completed"] and summary["units_done"] == 30
    assert summary["units_retried"] >= 1, f"node {killed} died with a unit in flight, yet no unit was re-run"
    assert summary["events_in"] == 60_000 == (summary["events_written"] + summary["events_merged"]
                                              + summary["events_quarantined"])
    result = verify(str(log), table)
    assert result.ok and result.events_found == result.events_expected and result.events_extra == 0


def test_score_writes_one_row_per_request_when_a_worker_node_dies_mid_job(
    cluster: RayCluster, make_table: Callable[..., SequenceTable], tmp_path: Path
) -> None:
    table = make_table(salt_buckets=4)
    now = int(time.time() * 1000)
    users = [f"user{u:05d}" for u in range(1_000)]
    table.write(pa.table({"user_id": [u for u in users for _ in range(20)],
                          "event_ts": [now - DAY_MS + 60_000 * i for _ in users for i in range(20)],
                          "event_type": ["view"] * 20_000, "item_id": list(range(20_000))}))
    rng = np.random.default_rng(9)
    requests = pa.table({"user_id": users * 6, "as_of_ts": pa.array(now - rng.integers(0, 2 * DAY_MS, 6_000))})
    pq.write_table(requests, tmp_path / "requests.parquet", row_group_size=250)
    out = tmp_path / "scores"

    summary, killed, done_at_kill = _run_killing_a_node(
        cluster, ["score", "--requests", str(tmp_path / "requests.parquet"), "--table", table.name,
                  "--model", "ray_jobs.examples.models:recency_similarity", "--out", str(out)],
        "ScoreWorker", lambda: len(list(out.glob("part-*.parquet"))), tmp_path)

    assert done_at_kill < summary["units_total"] == 24, "the node died after the job's units were done"
    assert summary["completed"] and summary["requests"] == summary["scored"] == 6_000
    assert summary["units_retried"] >= 1, f"node {killed} died with a unit in flight, yet no unit was re-run"
    scores = pq.read_table(out)
    pairs = Counter(zip(scores.column("user_id").to_pylist(), scores.column("as_of_ts").to_pylist(), strict=True))
    assert pairs == Counter(zip(requests.column("user_id").to_pylist(), requests.column("as_of_ts").to_pylist(),
                                strict=True)), "a request was lost or scored twice"
    assert not list(out.glob("*.tmp")), "a part left unfinished by the dead node is still there"
