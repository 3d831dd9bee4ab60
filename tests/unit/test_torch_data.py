"""The PyTorch dataset over export shards: padding, dtypes, nulls, worker sharding (needs the torch extra)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch", reason="the optional torch extra is not installed")

from torch.utils.data import DataLoader  # noqa: E402

from ray_jobs.torch_data import SequenceShards  # noqa: E402


def _shard(path: Path, first: int, rows: int) -> None:
    hist = [list(range(first + i, first + i + i % 4)) for i in range(rows)]  # lengths 0..3
    pq.write_table(pa.table({
        "user_id": [f"u{first + i}" for i in range(rows)],
        "length": pa.array([len(h) for h in hist], pa.int32()),
        "hist_item_id": pa.array(hist, pa.list_(pa.int64())),
        "hist_dwell_ms": pa.array([[None if j == 0 else j * 10 for j in range(len(h))] for h in hist],
                                  pa.list_(pa.int32())),
        "hist_score": pa.array([[0.5] * len(h) for h in hist], pa.list_(pa.float16())),
        "hist_event_type": pa.array([["view"] * len(h) for h in hist], pa.list_(pa.string())),
        "label": list(range(first, first + rows)),
    }), path)


def test_rows_are_padded_typed_and_each_yielded_once_across_workers(tmp_path: Path) -> None:
    _shard(tmp_path / "part-0.parquet", 0, 10)
    _shard(tmp_path / "part-1.parquet", 100, 10)
    data = SequenceShards(tmp_path, fields=["item_id", "dwell_ms", "score"], labels=["label"], max_len=3)
    rows = [row for batch in DataLoader(data, batch_size=4, num_workers=2) for row in _unbatch(batch)]
    assert sorted(r["label"] for r in rows) == [*range(10), *range(100, 110)]
    by_label = {r["label"]: r for r in rows}
    assert by_label[3]["item_id"] == [3, 4, 5] and by_label[3]["length"] == 3
    assert by_label[101]["item_id"] == [101, 0, 0] and by_label[101]["length"] == 1
    assert by_label[104]["item_id"] == [0, 0, 0] and by_label[104]["length"] == 0
    assert by_label[2]["dwell_ms"] == [0, 10, 0]  # a null value and the padding are both 0
    assert by_label[2]["score"] == [0.5, 0.5, 0.0]


def test_dtypes_and_non_numeric_fields(tmp_path: Path) -> None:
    _shard(tmp_path / "part-0.parquet", 0, 4)
    row = next(iter(SequenceShards(tmp_path, fields=["item_id", "score"], labels=["label"], max_len=5)))
    assert row["item_id"].dtype == torch.int64 and row["score"].dtype == torch.float32
    with pytest.raises(TypeError, match="numeric fields"):
        next(iter(SequenceShards(tmp_path, fields=["event_type"], labels=["label"], max_len=5)))


def _unbatch(batch: dict[str, torch.Tensor]) -> list[dict[str, object]]:
    return [{k: v[i].tolist() for k, v in batch.items()} for i in range(len(batch["label"]))]
