"""The README's store example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import HBaseServer

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_store_example_runs(hbase_server: HBaseServer, capsys: pytest.CaptureFixture[str]) -> None:
    match = re.search(r"## The sequence store\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README lost its store example"
    exec(compile(match.group(1), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "3 {'missing_user': 1}" in out
