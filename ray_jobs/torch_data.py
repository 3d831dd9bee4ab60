"""A PyTorch ``IterableDataset`` over ``seqstore export`` shards (needs the ``torch`` extra).

    from torch.utils.data import DataLoader
    from ray_jobs.torch_data import SequenceShards

    data = SequenceShards("train/", fields=["item_id"], labels=["label"], max_len=50)
    for batch in DataLoader(data, batch_size=256, num_workers=2):
        batch["item_id"]   # int64 [256, 50], newest first, zero-padded (floats: float32; nulls: 0)
        batch["length"]    # int64 [256]
        batch["label"]     # [256]

Shards are divided among DataLoader workers, so each row is yielded exactly once per epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from store.arrays import padded

try:
    import torch
    from torch.utils.data import IterableDataset, get_worker_info
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("ray_jobs.torch_data needs PyTorch: pip install 'seqstore[torch]'") from exc


class SequenceShards(IterableDataset[dict[str, Any]]):  # type: ignore[misc,unused-ignore]
    """Rows of export shards as tensors: padded ``hist_<field>`` sequences, length, labels."""

    def __init__(self, path: str | Path, *, fields: Sequence[str], labels: Sequence[str], max_len: int,
                 batch_rows: int = 4096) -> None:
        self.shards = sorted(Path(path).glob("*.parquet")) if Path(path).is_dir() else [Path(path)]
        if not self.shards:
            raise FileNotFoundError(f"no Parquet shards in {path}")
        self.fields, self.labels, self.max_len, self.batch_rows = list(fields), list(labels), max_len, batch_rows

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        mine = self.shards if info is None else self.shards[info.id :: info.num_workers]
        columns = ["length", *(f"hist_{f}" for f in self.fields), *self.labels]
        for shard in mine:
            for batch in pq.ParquetFile(shard).iter_batches(batch_size=self.batch_rows, columns=columns):
                lengths = np.minimum(batch.column("length").to_numpy(), self.max_len)
                padded = {f: _padded(batch.column(f"hist_{f}"), lengths, self.max_len) for f in self.fields}
                label_values = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in self.labels}
                for i in range(batch.num_rows):
                    row = {f: torch.from_numpy(padded[f][i]) for f in self.fields}
                    row["length"] = torch.tensor(int(lengths[i]))
                    for name, values in label_values.items():
                        row[name] = torch.tensor(values[i])
                    yield row


def _padded(lists: Any, lengths: np.ndarray, max_len: int) -> np.ndarray:
    """``[rows, max_len]`` from a list column: integers as int64, floats as float32, nulls and padding 0."""
    kind = lists.type.value_type
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        dtype: Any = np.int64
    elif pa.types.is_floating(kind):
        dtype = np.float32
    else:
        raise TypeError(f"cannot make a tensor of {kind} values; pick numeric fields (fields=...)")
    values = pc.fill_null(lists.values, 0).cast(pa.from_numpy_dtype(dtype))
    return padded(values, lists.offsets.to_numpy()[:-1], lengths, max_len)
