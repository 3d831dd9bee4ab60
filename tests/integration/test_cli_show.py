"""`seqstore show USER`: the CLI prints exactly what `read_sequences` returns, on both tiers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from store import SequenceStore
from tests.conftest import HBaseServer

pytestmark = pytest.mark.integration
EXAMPLE_SCHEMA = Path(__file__).resolve().parents[2] / "ray_jobs" / "examples" / "schema.json"
T0 = 1_780_000_000_000
DAY = 86_400_000


def seqstore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ray_jobs.cli", *args], env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)


def _events(rng: np.random.Generator, users: list[str], n: int) -> pa.Table:
    emb = rng.normal(size=(n, 8)).astype(np.float16)
    return pa.table({
        "user_id": pa.array(rng.choice(users, n)),
        "event_ts": pa.array(T0 + rng.integers(0, 10, n) * (DAY // 4), pa.int64()),  # ties on purpose
        "event_type": pa.array(rng.choice(["click", "view"], n)),
        "item_id": pa.array(rng.integers(0, 50, n), pa.int64()),
        "dwell_ms": pa.array([None if x % 5 == 0 else int(x) for x in rng.integers(0, 1000, n)], pa.int32()),
        "item_emb": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel(), pa.float16()), 8),
    })


def test_show_prints_what_the_reader_returns(hbase_server: HBaseServer, table_prefix: str) -> None:
    name = f"{table_prefix}show"
    assert seqstore("create-table", name, "--schema", str(EXAMPLE_SCHEMA), "--salt-buckets", "4").returncode == 0
    rng = np.random.default_rng(11)
    users = ["alice", "bob", "carol"]
    with SequenceStore(hbase_server.config()) as store:
        table = store.table(name)
        table.write_chunks(_events(rng, users, 300))  # chunks
        table.write(_events(rng, users, 40))  # and raw events beside them
        for trial in range(6):
            user = users[trial % 3]
            as_of = T0 + int(rng.integers(0, 11)) * (DAY // 4)
            max_len = int(rng.integers(1, 60))
            oldest = bool(trial % 2)
            args = ["show", user, "--table", name, "--as-of", str(as_of), "--max-len", str(max_len), "--json"]
            result = seqstore(*args, *(["--oldest-first"] if oldest else []))
            assert result.returncode == 0, result.stderr
            shown = json.loads(result.stdout)
            want = table.read_sequences([(user, as_of)], max_len=max_len, oldest_first=oldest).to_pylist()[0]
            assert shown["length"] == want["length"] and shown["history_complete"] == want["history_complete"]
            assert shown["events"] == json.loads(json.dumps(want["sequence"], default=float))

            human = seqstore(*args[:-1], *(["--oldest-first"] if oldest else []))
            assert human.returncode == 0, human.stderr
            lines = human.stdout.splitlines()
            assert lines[0].startswith(f"{user} as of ") and f"{want['length']} event" in lines[0]
            rows = lines[2:] if want["length"] else lines[1:]
            assert len(rows) == want["length"]
            for row, event in zip(rows, want["sequence"], strict=True):
                assert f"{event['event_id']:016x}" in row and str(event["item_id"]) in row

    fields = seqstore("show", "alice", "--table", name, "--fields", "item_id", "--max-len", "3",
                      "--as-of", "2026-05-30T00:00:00Z", "--json")
    assert fields.returncode == 0, fields.stderr
    assert all(set(e) == {"event_ts", "event_id", "item_id"} for e in json.loads(fields.stdout)["events"])
    nobody = seqstore("show", "nobody", "--table", name)
    assert nobody.returncode == 0 and "0 events" in nobody.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--as-of", "yesterday"], "argument --as-of: expected milliseconds UTC or an ISO 8601 time"),
    (["--as-of", "1780000000"], "looks like seconds"),
    (["--max-len", "0"], "argument --max-len: must be > 0"),
    (["--fields", "item_id,bogus"], "unknown field(s) ['bogus']"),
])
def test_show_refuses_bad_arguments_in_one_line(hbase_server: HBaseServer, table_prefix: str, args: list[str],
                                                message: str) -> None:
    name = f"{table_prefix}bad"
    assert seqstore("create-table", name, "--salt-buckets", "2").returncode == 0
    result = seqstore("show", "alice", "--table", name, *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_show_of_a_missing_table_names_it(hbase_server: HBaseServer, table_prefix: str) -> None:
    result = seqstore("show", "alice", "--table", f"{table_prefix}none")
    assert result.returncode == 2 and f"no seqstore table '{table_prefix}none'" in result.stderr
