"""The base of every job's Ray actors: where Ray places them, which Thrift2 server each starts
from, and their own store handle."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from store import SequenceStore
from store.config import Config


def actor_config(config: Config, slot: int) -> Config:
    """``config`` for the actor in ``slot``: its Thrift2 servers rotated by the slot, so a job's
    actors spread over all of them (each still fails over to the others)."""
    n = len(config.thrift2)
    if n <= 1:
        return config
    k = slot % n
    return replace(config, thrift2=config.thrift2[k:] + config.thrift2[:k])


def worker_actor(cls: type[JobWorker]) -> Any:
    """``cls`` (a :class:`JobWorker`) as the Ray actor class of a job's workers: one CPU each,
    never restarted by Ray (the runner replaces a dead actor and re-runs its unit), and spread
    over the cluster's nodes — Ray's default packs actors onto one node until it is full.

    An exception of ``cls``'s constructor does not kill the actor (Ray would keep only its
    text): the actor keeps it, and its first call, :meth:`JobWorker.node`, raises it as itself,
    so the runner can tell HBase unreachable (retried) from, say, a model module missing on
    the node (the job stops with it)."""
    import ray

    return ray.remote(num_cpus=1, max_restarts=0, scheduling_strategy="SPREAD")(_keeping_start_error(cls))


def _keeping_start_error(cls: type[JobWorker]) -> type:
    """A subclass of ``cls`` with ``cls``'s name, whose constructor keeps its exception in
    ``_start_error`` instead of raising it."""
    init = cls.__init__

    # Not functools.wraps: Ray unwraps an actor's methods to annotate their signatures, which
    # fails on ``object.__init__``; Ray then checks no arguments here, and a wrong one is the
    # constructor's error like any other.
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - raised again, as itself, by node()
            self._start_error = exc

    return type(cls.__name__, (cls,), {"__init__": __init__, "__qualname__": cls.__qualname__,
                                        "__doc__": cls.__doc__})


class JobWorker:
    """Base of a job's actor bodies. The runner calls :meth:`node` first: its answer says the
    actor has started (it gets work only then) and on which node (``RunStats.nodes``)."""

    _start_error: Exception | None = None

    def node(self) -> str:
        """The Ray node this actor runs on (hex id). Raises what the actor's constructor raised,
        if it did (see :func:`worker_actor`)."""
        if self._start_error is not None:
            raise self._start_error
        import ray

        return str(ray.get_runtime_context().get_node_id())


class StoreWorker(JobWorker):
    """A job actor that works on one table through its own connection pool of ``pool_size``."""

    def __init__(self, config: Config, table: str, *, pool_size: int = 8) -> None:
        self.store = SequenceStore(config, pool_size=pool_size)
        self.table = self.store.table(table)

    def cache_counts(self) -> tuple[int, int]:
        """The chunk cache's hits and misses so far (the actor's store keeps one across units)."""
        cache = self.store.chunk_cache
        stats = cache.stats() if cache is not None else None
        return (stats.hits, stats.misses) if stats is not None else (0, 0)

    def cache_since(self, before: tuple[int, int]) -> dict[str, int]:
        """A unit's chunk cache hits and misses since :meth:`cache_counts` gave ``before``, for
        its result (:class:`ray_jobs.parts.PartsOutcome` sums them)."""
        hits, misses = self.cache_counts()
        return {"cache_hits": hits - before[0], "cache_misses": misses - before[1]}
