"""`seqstore create-table / describe-table / drop-table` against the suite's HBase."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HBaseServer

pytestmark = pytest.mark.integration
EXAMPLE_SCHEMA = Path(__file__).resolve().parents[2] / "ray_jobs" / "examples" / "schema.json"


def seqstore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ray_jobs.cli", *args], env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)


def test_create_describe_drop(hbase_server: HBaseServer, table_prefix: str, tmp_path: Path) -> None:
    name = f"{table_prefix}cli"
    created = seqstore("create-table", name, "--schema", str(EXAMPLE_SCHEMA), "--salt-buckets", "8",
                       "--ttl-days", "30", "--max-events-per-user", "500", "--json")
    assert created.returncode == 0, created.stderr
    try:
        info = json.loads(seqstore("describe-table", name, "--json").stdout)
        assert info["regions"] == 8
        assert info["settings"]["max_events_per_user"] == 500
        events = info["families"]["e"]
        assert events == {"versions": 1, "ttl_s": 30 * 86400, "bloom_filter": "ROW", "block_cache": True,
                          "compression": "ZSTD", "data_block_encoding": "FAST_DIFF", "in_memory": False,
                          "new_version_behavior": True}
        assert info["families"]["c"] == {**events, "new_version_behavior": False}  # chunks: same TTL and options
        assert info["settings"]["chunk_events"] == 128
        assert info["families"]["f"]["versions"] == 100
        assert "item_emb: fixed_size_list<item: halffloat>[8]" in info["schema_versions"][0]["fields"]
        human = seqstore("describe-table", name)
        assert "family e:" in human.stdout and "compression=ZSTD" in human.stdout
        again = seqstore("create-table", name)
        assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    finally:
        assert seqstore("drop-table", name).returncode == 0
    missing = seqstore("describe-table", name)
    assert missing.returncode == 2 and "no seqstore table" in missing.stderr


def test_bad_schema_file_is_a_clear_error(hbase_server: HBaseServer, table_prefix: str, tmp_path: Path) -> None:
    bad = tmp_path / "schema.json"
    bad.write_text(json.dumps({"fields": [{"name": "x", "type": "decimal"}]}))
    result = seqstore("create-table", f"{table_prefix}bad", "--schema", str(bad))
    assert result.returncode == 2
    assert "unknown type 'decimal'" in result.stderr and "Traceback" not in result.stderr
