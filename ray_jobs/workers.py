"""The base of every job's Ray actors: where Ray places them, and their own store handle."""

from __future__ import annotations

from typing import Any

from store import SequenceStore
from store.config import Config


def worker_actor(cls: type) -> Any:
    """``cls`` as the Ray actor class of a job's workers: one CPU each, never restarted by Ray
    (the runner replaces a dead actor and re-runs its unit), and spread over the cluster's nodes
    — Ray's default packs actors onto one node until it is full."""
    import ray

    return ray.remote(num_cpus=1, max_restarts=0, scheduling_strategy="SPREAD")(cls)


class JobWorker:
    """Base of a job's actor bodies. The runner calls :meth:`node` first: its answer says the
    actor has started (it gets work only then) and on which node (``RunStats.nodes``)."""

    def node(self) -> str:
        """The Ray node this actor runs on (hex id)."""
        import ray

        return str(ray.get_runtime_context().get_node_id())


class StoreWorker(JobWorker):
    """A job actor that works on one table through its own connection pool of ``pool_size``."""

    def __init__(self, config: Config, table: str, *, pool_size: int = 8) -> None:
        self.store = SequenceStore(config, pool_size=pool_size)
        self.table = self.store.table(table)
