"""A PyTorch ``IterableDataset`` over ``seqstore export`` shards (needs the ``torch`` extra).

    from torch.utils.data import DataLoader
    from ray_jobs.torch_data import SequenceShards

    data = SequenceShards("train/", fields=["item_id"], labels=["label"], max_len=50)
    for batch in DataLoader(data, batch_size=256, num_workers=2):
        batch["item_id"]   # int64 [256, 50], newest first, zero-padded
        batch["length"]    # int64 [256]
        batch["label"]     # [256]

Shards are divided among DataLoader workers, so each row is yielded exactly once per epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

try:
    import torch
    from torch.utils.data import IterableDataset, get_worker_info
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("ray_jobs.torch_data needs PyTorch: pip install 'seqstore[torch]'") from exc


class SequenceShards(IterableDataset):  # type: ignore[misc]
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
                padded = {}
                for f in self.fields:
                    lists = batch.column(f"hist_{f}")
                    out = np.zeros((batch.num_rows, self.max_len), dtype=np.int64)
                    offsets = lists.offsets.to_numpy()
                    values = lists.values.to_numpy(zero_copy_only=False)
                    for i in range(batch.num_rows):
                        n = int(lengths[i])
                        out[i, :n] = values[offsets[i] : offsets[i] + n]
                    padded[f] = out
                label_values = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in self.labels}
                for i in range(batch.num_rows):
                    row = {f: torch.from_numpy(padded[f][i]) for f in self.fields}
                    row["length"] = torch.tensor(int(lengths[i]))
                    for name, values in label_values.items():
                        row[name] = torch.tensor(values[i])
                    yield row
