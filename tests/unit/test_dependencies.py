"""The store stands alone: importing it and using its API pulls in neither Ray, tqdm, happybase
nor the HBase launcher (they belong to the ``jobs`` extra)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

CHECK = """
import sys
import store
from store import SequenceStore, TableSpec, to_numpy
from store import writer
from store.tiers import compaction
from store.table import job_records
from store.tiers import stored_events
heavy = sorted(m for m in ("ray", "tqdm", "happybase", "hbase") if m in sys.modules)
print(",".join(heavy))
"""


def test_importing_the_store_loads_no_job_or_launcher_dependency() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, cwd=REPO, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"the store imported {done.stdout.strip()}"
