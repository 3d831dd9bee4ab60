"""Example models for ``seqstore score``. A model is any function of the batch dict.

The batch (see :func:`ray_jobs.assemble.model_inputs`) holds ``user_id``, ``as_of_ts``,
``lengths`` and ``[batch, max_len]`` arrays per event field, newest event first. Return a
dict of equal-length columns (or one array, which becomes ``score``)::

    seqstore score --requests req.parquet --model ray_jobs.examples.models:recency_similarity \\
        --out scores/ --table clicks
"""

from __future__ import annotations

import numpy as np

DIM = 16
_FREQ = np.linspace(0.001, 0.5, DIM)


def item_embeddings(item_ids: np.ndarray) -> np.ndarray:
    """Deterministic stand-in item embeddings, unit length: ``[..., DIM]``."""
    phases = np.asarray(item_ids, dtype=np.float64)[..., None] * _FREQ
    emb = np.concatenate([np.sin(phases), np.cos(phases)], axis=-1)
    normalized: np.ndarray = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
    return normalized


def recency_similarity(batch: dict[str, np.ndarray], *, decay: float = 0.85) -> dict[str, np.ndarray]:
    """How close the user's latest item is to their recency-weighted taste.

    user taste = sum_k decay**k * emb(item_k) over the sequence (newest first);
    score = cosine(taste, emb(latest item)); 0 for users with no history.
    """
    lengths = batch["lengths"]
    items = batch["item_id"]
    max_len = items.shape[1]
    mask = np.arange(max_len)[None, :] < lengths[:, None]
    weights = (decay ** np.arange(max_len))[None, :] * mask
    emb = item_embeddings(items)
    taste = (weights[..., None] * emb).sum(axis=1)
    norm = np.linalg.norm(taste, axis=1)
    latest = emb[:, 0, :]
    score = np.where(norm > 0, (taste * latest).sum(axis=1) / np.maximum(norm, 1e-12), 0.0)
    return {"score": score.astype(np.float32), "history": lengths.astype(np.int32)}


def history_length(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A baseline: the score is the number of events in the sequence (its length)."""
    return {"score": batch["lengths"].astype(np.float32)}
