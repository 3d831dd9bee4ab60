"""A tiny PyTorch sequence model for ``seqstore score`` (needs the ``torch`` extra).

    seqstore score ... --model ray_jobs.examples.torch_model:gru_score

A GRU over stand-in item embeddings (oldest to newest), a linear head, a sigmoid. The
weights are seeded, not trained: the point is the plumbing from padded numpy batches to
a torch module and back.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from ray_jobs.examples.models import DIM, item_embeddings


@lru_cache(maxsize=1)
def _model() -> Any:
    import torch

    torch.manual_seed(0)
    gru = torch.nn.GRU(input_size=2 * DIM, hidden_size=16, batch_first=True)
    head = torch.nn.Linear(16, 1)
    return torch.nn.ModuleDict({"gru": gru, "head": head}).eval()


def gru_score(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    lengths = np.maximum(batch["lengths"], 1)
    # The batch is newest first; the GRU reads oldest to newest.
    items = batch["item_id"][:, ::-1].copy()
    max_len = items.shape[1]
    emb = item_embeddings(items).astype(np.float32)
    model = _model()
    with torch.no_grad():
        x = torch.from_numpy(emb[:, max_len - lengths.max():, :])
        out, _ = model["gru"](x)
        logits = model["head"](out[:, -1, :]).squeeze(-1)
        score = torch.sigmoid(logits).numpy()
    score[batch["lengths"] == 0] = 0.0
    return {"score": score.astype(np.float32)}
