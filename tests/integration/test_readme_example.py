"""The README's store example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from store import SequenceStore
from tests.conftest import HBaseServer

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_store_example_runs(hbase_server: HBaseServer, capsys: pytest.CaptureFixture[str]) -> None:
    match = re.search(r"## The sequence store\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README lost its store example"
    exec(compile(match.group(1), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "3 {'missing_user': 1}" in out


def _ray_data_examples() -> list[str]:
    blocks = re.findall(r"<!-- ray-data example -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 3, "README lost its Ray Data examples (write, score, train)"
    return blocks


def _drop_clicks(server: HBaseServer) -> None:
    with SequenceStore(server.config(), pool_size=1) as store:
        store.drop_table("clicks")


def test_readme_ray_data_write_and_score_examples_run(
    hbase_server: HBaseServer, ray_local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    write, score, _ = _ray_data_examples()
    namespace: dict[str, object] = {}
    try:
        exec(compile(write, "README.md (Ray Data: write)", "exec"), namespace)
        out = capsys.readouterr().out.splitlines()
        assert out[0] == "5000 4950 50"
        assert out[1].startswith("{'future_timestamp': 5, 'missing_field': 5, 'missing_user': 12, ")
        assert out[2].startswith("[{'source': None, 'position': ") and "'row': {'user_id': " in out[2]
        exec(compile(score, "README.md (Ray Data: score)", "exec"), namespace)
        assert capsys.readouterr().out.strip() == "100"
    finally:
        _drop_clicks(hbase_server)


def test_readme_ray_data_training_example_runs(
    hbase_server: HBaseServer, ray_local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch", reason="the optional torch extra is not installed")
    write, _, train = _ray_data_examples()
    namespace: dict[str, object] = {}
    try:
        exec(compile(write, "README.md (Ray Data: write)", "exec"), namespace)
        capsys.readouterr()
        exec(compile(train, "README.md (Ray Data: train)", "exec"), namespace)
        assert capsys.readouterr().out.startswith("loss ")
    finally:
        _drop_clicks(hbase_server)
