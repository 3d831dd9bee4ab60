"""Running units of work on a set of Ray actors, with the fault handling every job shares.

* An actor that fails (``RayActorError``: its process or its whole node died, or Ray finds it
  unavailable, when it may still be running the unit), or whose unit failed with any other Ray
  system error (a lost object, a crashed worker), is killed — so it cannot go on with the unit —
  and replaced, and its unit re-run elsewhere after a bounded, jittered backoff, the reason
  being Ray's own error. A unit that failed with :class:`StoreUnavailableError` (HBase
  unreachable past the connection's own retry budget) is re-queued the same way on its actor.
  Meanwhile the other units keep running.
* An actor whose constructor fails (:func:`ray_jobs.workers.worker_actor` keeps its exception
  for its first call) stops the job with that error — a missing model module would fail every
  actor alike, so no unit is retried and no resume is suggested — unless it is
  :class:`StoreUnavailableError`: that is an outage (below), and the slot gets a new actor
  after a backoff.
* Either way a unit gets at most ``max_attempts`` tries; then, or on any other error, the
  job stops with a :class:`SeqStoreError` saying which unit failed and why. An unexpected
  error in the driver loop also ends as a :class:`SeqStoreError`, so every job can report
  it and stay resumable.
* An outage is bounded in time too: once units (or starting actors) fail with
  :class:`StoreUnavailableError` (each after its call retried for
  ``Config.unavailable_after_ms``), the job retries units for
  as long again and then stops ("HBase unreachable: ..."), even with units still in flight,
  unless some unit succeeds meanwhile. While it retries, the status listener (:func:`reporting_status`)
  hears :data:`UNREACHABLE_STATUS`, and ``""`` once a unit succeeded again.
* An actor gets work only once it has started. One that Ray cannot place within
  :data:`ACTOR_START_TIMEOUT_S` (the cluster has fewer free CPU slots than ``--workers``, say,
  after losing a node) is given up with a warning, and the job goes on with the others; if
  none of them could start, the job stops saying so, rather than waiting forever.
* The first units go out once every actor has started, so a short job too uses every node
  its actors were spread over; but for at most :data:`ACTOR_START_WAIT_S`, and not at all
  while the cluster has no free CPU (then the actors still pending may be ones Ray cannot
  place).
* Actors are spread over the cluster's nodes (:func:`ray_jobs.workers.worker_actor`), so
  losing a node costs a share of a job's actors, not all of them. The nodes the job's actors
  started on are counted (``RunStats.nodes``) from each actor's first call,
  :meth:`ray_jobs.workers.JobWorker.node`, whose answer is also what says it has started.
"""

from __future__ import annotations

import heapq
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from store.config import Config
from store.errors import SeqStoreError, StoreUnavailableError
from store.io import backoff_s

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 5.0
UNREACHABLE_STATUS = "HBase unreachable, retrying"
RESUME_HINT = "Completed units are recorded: re-run the same command to resume."
ACTOR_START_TIMEOUT_S = 120.0  # a new actor Ray has not placed by then is given up
ACTOR_START_WAIT_S = 30.0  # how long a job's first units wait for all its actors to start

# Who hears a job's status changes. Ambient rather than a parameter, so the CLI can show them
# for every job without each job function threading a callback through to its runner.
_status_listener: ContextVar[Callable[[str], None] | None] = ContextVar("seqstore_job_status", default=None)


@contextmanager
def reporting_status(listener: Callable[[str], None]) -> Iterator[None]:
    """Within the block, every :class:`UnitRunner` run calls ``listener(status)`` when its
    status changes: :data:`UNREACHABLE_STATUS` while units wait to be retried because HBase is
    unreachable, ``""`` once a unit succeeded again. The listener runs in the driver's thread."""
    token = _status_listener.set(listener)
    try:
        yield
    finally:
        _status_listener.reset(token)


def _say(status: str) -> None:
    listener = _status_listener.get()
    if listener is not None:
        listener(status)


class HasKey(Protocol):
    @property
    def key(self) -> str: ...


U = TypeVar("U", bound=HasKey)


@dataclass
class RunStats:
    units_done: int = 0
    units_retried: int = 0
    nodes: set[str] = field(default_factory=set)  # Ray node ids the job's actors started on


class UnitRunner(Generic[U]):
    """Feeds ``units`` to ``workers`` actors made by ``spawn(slot)`` (of a
    :class:`~ray_jobs.workers.JobWorker` class); ``submit(actor, unit)`` returns an ObjectRef;
    ``on_done(unit, result, actors)`` runs in the driver per finished unit."""

    def __init__(self, spawn: Callable[[int], Any], submit: Callable[[Any, U], Any], *, workers: int,
                 max_attempts: int = 3) -> None:
        if workers <= 0:
            raise ValueError("'workers' must be > 0")
        if max_attempts <= 0:
            raise ValueError("'max_attempts' must be > 0")
        self.spawn = spawn
        self.submit = submit
        self.workers = workers
        self.max_attempts = max_attempts
        self.stats = RunStats()

    def run(self, units: Sequence[U], on_done: Callable[[U, Any, list[Any]], None]) -> RunStats:
        """Run every unit; raises :class:`SeqStoreError` when the job has to stop (whatever the
        cause; "HBase unreachable ..." when HBase stayed unreachable past the retry budget).
        Units finished before that have had their ``on_done``."""
        import ray

        actors: list[Any] = []
        try:
            self._loop(ray, deque(units), actors, on_done)
        except StoreUnavailableError as exc:  # from the driver's own calls (on_done recording a unit)
            raise SeqStoreError(f"{exc}; stopping. {RESUME_HINT}") from exc
        except SeqStoreError:
            raise
        except Exception as exc:  # anything else still ends as a reportable, resumable stop
            log.debug("unexpected error while running units", exc_info=True)
            raise SeqStoreError(
                f"stopped on an unexpected {type(exc).__name__}: {_first_line(exc)}. {RESUME_HINT}") from exc
        finally:
            for actor in actors:
                _kill(ray, actor)
        return self.stats

    def _loop(self, ray: Any, todo: deque[U], actors: list[Any], on_done: Callable[[U, Any, list[Any]], None]
              ) -> None:
        actors.extend(self.spawn(i) for i in range(min(self.workers, len(todo))))
        starting = _Starting(ray, self.stats.nodes)
        for slot, actor in enumerate(actors):
            starting.add(slot, actor)
        gate = _StartGate(ray, time.monotonic() + min(ACTOR_START_WAIT_S, ACTOR_START_TIMEOUT_S))
        idle: deque[int] = deque()
        attempts: Counter[str] = Counter()
        in_flight: dict[Any, tuple[int, U]] = {}
        # Units waiting out a backoff: (due time, sequence number, unit); they do not hold an actor.
        waiting: list[tuple[float, int, U]] = []
        seq = 0
        outage = _Outage()
        # Slots whose actor could not start because HBase was unreachable: when to build it again.
        rebuild: dict[int, float] = {}
        start_failures: Counter[int] = Counter()

        def renew(slot: int) -> None:
            _kill(ray, actors[slot])  # dead already, or unavailable and maybe still running its unit
            actors[slot] = self.spawn(slot)
            starting.add(slot, actors[slot])

        while todo or in_flight or waiting:
            outage.check()
            now = time.monotonic()
            started, given_up, failed = starting.poll()
            idle.extend(started)
            for slot in given_up:
                _kill(ray, actors[slot])
            for slot, error in failed:
                _kill(ray, actors[slot])
                start_failures[slot] += 1
                rebuild[slot] = now + _could_not_start(slot, error, start_failures[slot], outage)
            for slot in [slot for slot, due in rebuild.items() if due <= now]:
                del rebuild[slot]
                renew(slot)
            if not (idle or in_flight or starting or rebuild):
                raise SeqStoreError(
                    f"no Ray worker could be started in {ACTOR_START_TIMEOUT_S:.0f} s (the cluster has no free CPU "
                    f"slot for one, or its node is gone); stopping. {RESUME_HINT}")
            while waiting and waiting[0][0] <= now:
                todo.appendleft(heapq.heappop(waiting)[2])
            while todo and idle and not gate.holds(starting):
                slot, unit = idle.popleft(), todo.popleft()
                attempts[unit.key] += 1
                in_flight[self.submit(actors[slot], unit)] = (slot, unit)
            dues = [waiting[0][0]] if waiting else []
            until_due = max(0.0, min([*dues, *rebuild.values()]) - now) if dues or rebuild else 1.0
            if not in_flight:
                time.sleep(min(0.2 if starting else 1.0, until_due))  # nothing running: actors starting or backoffs
                continue
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=min(0.2 if starting else 1.0, until_due))
            for ref in ready:
                slot, unit = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    if isinstance(exc, ray.exceptions.RayTaskError) and not isinstance(
                            exc, ray.exceptions.RayActorError):
                        idle.append(slot)
                        why = _unit_failed(unit, exc, outage)  # raises unless HBase was unreachable
                    else:
                        # The actor died or is unavailable (it may still be running the unit), or a
                        # system error (a lost object, a crashed worker) left it unusable.
                        log.warning("%s during %s: %s; re-running the unit on a new actor",
                                    type(exc).__name__, unit.key, _first_line(exc))
                        renew(slot)
                        why = f"{type(exc).__name__}: {_first_line(exc)}"
                    delay = self._requeue(unit, attempts, why)
                    seq += 1
                    heapq.heappush(waiting, (time.monotonic() + delay, seq, unit))
                    continue
                idle.append(slot)
                outage.ended()
                start_failures.clear()
                on_done(unit, result, actors)
                self.stats.units_done += 1

    def _requeue(self, unit: U, attempts: Counter[str], why: str) -> float:
        """Count a retry; raises when the unit is out of attempts, else returns its backoff."""
        self.stats.units_retried += 1
        if attempts[unit.key] >= self.max_attempts:
            raise SeqStoreError(
                f"unit {unit.key} failed {attempts[unit.key]} times (last: {why}); stopping. {RESUME_HINT}")
        return backoff_s(attempts[unit.key], base_s=BACKOFF_BASE_S, max_s=BACKOFF_MAX_S)


def _unit_failed(unit: HasKey, exc: Any, outage: _Outage) -> str:
    """The reason to retry ``unit``, whose worker raised (``exc``: Ray's RayTaskError) because HBase
    was unreachable (an outage); raises :class:`SeqStoreError` naming the unit for any other error."""
    # The worker's own exception: its text is one line, without Ray's remote traceback.
    cause: BaseException = getattr(exc, "cause", None) or exc.as_instanceof_cause()
    if not isinstance(cause, StoreUnavailableError):
        raise SeqStoreError(f"unit {unit.key} failed: {_first_line(cause)}") from None
    outage.hit(cause)
    return str(cause)


def _could_not_start(slot: int, error: BaseException, failures: int, outage: _Outage) -> float:
    """A new actor's constructor raised ``error``. HBase unreachable is an outage: returns how long
    to wait before building the slot's actor again (the outage's budget bounds the attempts). Any
    other error would fail every actor alike, so the job stops with it (:class:`SeqStoreError`),
    without a resume hint: re-running as is fails the same way."""
    if not isinstance(error, StoreUnavailableError):
        raise SeqStoreError(f"a worker could not be started: {_error_text(error)}; stopping") from None
    outage.hit(error)
    log.warning("worker %d could not start (%s); starting it again", slot, error)
    return backoff_s(failures, base_s=BACKOFF_BASE_S, max_s=BACKOFF_MAX_S)


class _Starting:
    """Actors not yet known to have started: each slot's ``node()`` ref and its deadline; the
    nodes of those that started go into ``nodes``."""

    def __init__(self, ray: Any, nodes: set[str]) -> None:
        self.ray = ray
        self.nodes = nodes
        self.pending: dict[int, tuple[Any, float]] = {}

    def add(self, slot: int, actor: Any) -> None:
        self.pending[slot] = (actor.node.remote(), time.monotonic() + ACTOR_START_TIMEOUT_S)

    def __bool__(self) -> bool:
        return bool(self.pending)

    def poll(self) -> tuple[list[int], list[int], list[tuple[int, BaseException]]]:
        """``(started, given_up, failed)`` slots since the last poll; all leave the pending set.
        ``failed`` pairs a slot with what its actor's constructor raised (:func:`_start_error`)."""
        if not self.pending:
            return [], [], []
        refs = {ref: slot for slot, (ref, _) in self.pending.items()}
        ready, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=0)
        started: list[int] = []
        given_up: list[int] = []
        failed: list[tuple[int, BaseException]] = []
        for ref in ready:
            slot = refs[ref]
            del self.pending[slot]
            try:
                self.nodes.add(self.ray.get(ref))
            except self.ray.exceptions.RayError as exc:
                error = _start_error(self.ray, exc)
                if error is not None:
                    failed.append((slot, error))
                    continue
                # Died some other way (its node lost, say): its first unit finds out, and is re-run.
            started.append(slot)
        now = time.monotonic()
        for slot, (_, deadline) in list(self.pending.items()):
            if now > deadline:
                log.warning("worker %d was not started by Ray within %.0f s (no free CPU slot in the cluster?); "
                            "going on without it", slot, ACTOR_START_TIMEOUT_S)
                given_up.append(slot)
                del self.pending[slot]
        return started, given_up, failed


def _start_error(ray: Any, exc: BaseException) -> BaseException | None:
    """What a new actor's constructor raised, from ``exc``, the error of its first call
    (:meth:`~ray_jobs.workers.JobWorker.node`), or None if it did not fail in its constructor.

    The constructors of :func:`~ray_jobs.workers.worker_actor` classes keep their exception and
    ``node()`` raises it: it arrives as itself (a RayTaskError's ``cause``). One Ray could not even
    run (the class cannot be loaded on the node, say) arrives as a RayActorError with
    ``actor_init_failed``, whose text ends with the error."""
    if isinstance(exc, ray.exceptions.RayActorError):
        return exc if getattr(exc, "actor_init_failed", False) else None
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause: BaseException = getattr(exc, "cause", None) or exc.as_instanceof_cause()
        return cause
    return None


class _StartGate:
    """Holds the first units back until every actor has started, the deadline has passed, or the
    cluster has no free CPU. A placed actor holds its CPU while its process starts, so with a
    CPU free every pending actor has been placed and is only starting; with none free, some may
    never be placed, and the job goes on without waiting for them. Once open, it stays open."""

    def __init__(self, ray: Any, deadline: float) -> None:
        self.ray = ray
        self.deadline = deadline
        self.open = False

    def holds(self, starting: _Starting) -> bool:
        if not self.open and (not starting or time.monotonic() > self.deadline
                              or self.ray.available_resources().get("CPU", 0) < 1):
            self.open = True
        return not self.open


class _Outage:
    """Since when units (or starting actors) have been failing with HBase unreachable, and for how
    long they are retried: the failing call's own budget (``Config.unavailable_after_ms``) again.
    Tells the status listener while it lasts; ends when a unit succeeds."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.budget_s = 0.0
        self.last = ""

    def hit(self, error: StoreUnavailableError) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.budget_s = error.unavailable_after_s or _default_budget_s()
            log.warning("HBase unreachable (%s); retrying units for up to %.0f s", error, self.budget_s)
            _say(UNREACHABLE_STATUS)
        self.last = str(error)

    def check(self) -> None:
        """Raises :class:`SeqStoreError` ("HBase unreachable: ...") once the budget is spent."""
        if self.since is not None and time.monotonic() - self.since > self.budget_s:
            raise SeqStoreError(
                f"HBase unreachable: no unit succeeded in {time.monotonic() - self.since:.0f} s of retrying after a "
                f"call gave up (last: {self.last}); stopping. {RESUME_HINT}")

    def ended(self) -> None:
        if self.since is not None:
            log.warning("HBase reachable again after %.0f s", time.monotonic() - self.since)
            self.since = None
            _say("")


def _default_budget_s() -> float:
    return Config().unavailable_after_ms / 1000


def _kill(ray: Any, actor: Any) -> None:
    try:
        ray.kill(actor)
    except Exception as exc:  # noqa: BLE001 - a failed cleanup must not hide the job's outcome
        log.warning("could not kill an actor: %s", exc)


def _error_text(error: BaseException) -> str:
    """One line for ``error``: its message, after its type where the message alone may not say
    what went wrong (``ModuleNotFoundError: No module named 'x'``); Ray's errors already end so."""
    import ray

    text = _first_line(error)
    if isinstance(error, (SeqStoreError, ray.exceptions.RayError)):
        return text
    return f"{type(error).__name__}: {text}"


def _first_line(exc: BaseException) -> str:
    try:
        text = str(exc).strip()
    except Exception:  # noqa: BLE001 - e.g. thriftpy2's TApplicationException, whose __str__ returns bytes
        return repr(exc)
    # RayTaskError's text carries the remote traceback; the cause's own message comes last.
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else repr(exc)


def init_ray(address: str | None, workers: int) -> None:
    """Join a Ray cluster, or start a local Ray sized for ``workers`` actors (quietly).

    Joins ``address`` if given, else ``RAY_ADDRESS`` if set (Ray's own convention); otherwise
    starts a new local Ray — never one merely recorded in ``/tmp/ray`` by an earlier ``ray start``.
    Does nothing if Ray is already initialised in this process.

    Joining makes one connection attempt and gives up within about 25 s (about 40 s if Ray was
    imported before the first call), where Ray's defaults keep retrying for about 14 minutes;
    ``RAY_gcs_server_port_wait_time_s`` (attempts) and ``RAY_py_gcs_connect_timeout_s`` (seconds
    per attempt), if set, are used instead. Ray's warnings while trying are logged at DEBUG, not
    printed. Raises :class:`SeqStoreError` ("cannot join the Ray cluster at ...") if joining fails.

    Joining uses Ray's token authentication when ``RAY_AUTH_MODE`` is unset and this machine has
    a Ray token (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, which any
    local Ray creates): the rule Ray applies to a cluster it finds itself, but not to an address
    it is given. ``ray start --head`` turns authentication on whenever that token exists, so
    without it ``--ray-address`` would be refused ("InvalidAuthToken"); a cluster without
    authentication accepts the token too. ``RAY_AUTH_MODE`` then stays ``token`` in this
    process's environment, as Ray leaves it when it starts a local cluster.
    """
    import tempfile

    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        import ray

        if not ray.is_initialized():
            ray.init(address="local", num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False,
                     logging_level=logging.ERROR, log_to_driver=False, object_store_memory=512 * 2**20)
        return
    # Ray's own defaults: 20 attempts of about 40 s each. The attempt count is read by Ray's
    # Python at every join; the GCS wait by its C++ config when ``ray`` is first imported, so
    # both are set before the import (and removed afterwards: they are ours, not the user's).
    bounds = {"RAY_gcs_server_port_wait_time_s": "1", "RAY_py_gcs_connect_timeout_s": "15"}
    ours = [name for name in bounds if name not in os.environ]
    os.environ.update({name: bounds[name] for name in ours})
    error: Exception | None = None
    t0 = time.monotonic()
    try:
        import ray

        if ray.is_initialized():
            return
        # Ray's C++ core prints its connection warnings straight to file descriptor 2; keep
        # them for the debug log so a failure is the one line the caller reports.
        with tempfile.TemporaryFile() as noise:
            saved = os.dup(2)
            os.dup2(noise.fileno(), 2)
            try:
                _token_auth_if_token_available()
                ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            except Exception as exc:  # noqa: BLE001 - whatever Ray raises, it is "could not join"
                error = exc
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            noise.seek(0)
            said = noise.read().decode(errors="replace").strip()
    finally:
        for name in ours:
            os.environ.pop(name, None)
    if said:
        log.debug("Ray, while joining %s:\n%s", address, said)
    if error is not None:
        reason = _first_line(error)
        if error.__cause__ is not None:  # Ray's ConnectionError wraps the actual reason (timeout, auth...)
            reason += f": {_first_line(error.__cause__).removeprefix('ray.exceptions.')}"
        raise SeqStoreError(f"cannot join the Ray cluster at {address!r}: {reason} "
                            f"(gave up after {time.monotonic() - t0:.0f} s)") from error


def _token_auth_if_token_available() -> None:
    """Ray's own rule for joining a cluster it found (see :func:`init_ray`): token authentication
    when ``RAY_AUTH_MODE`` is unset and a token is available. Nothing on a Ray without tokens."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray from before token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
