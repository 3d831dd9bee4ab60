"""Start, probe, stop and inspect a local HBase plus its Thrift servers.

One data directory holds one instance (its layout: :mod:`hbase.datadir`). With one
RegionServer (the default) three JVMs run: the standalone master (ZooKeeper + master +
RegionServer), the Thrift1 server (what happybase speaks) and the Thrift2 server (what the
store speaks). With several, ZooKeeper, the master and each RegionServer run as JVMs of their
own and every RegionServer has its own Thrift1 and Thrift2 server (:mod:`hbase.roles`).
Everything listens on 127.0.0.1 except the Thrift servers, which bind to ``bind``
(127.0.0.1 unless asked otherwise, e.g. 0.0.0.0 inside Docker).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from hbase import jars, jvm, probe, roles, state
from hbase.datadir import (
    PER_REGIONSERVER,
    choose_ports,
    default_data_dir,
    log_path,
    log_tail,
    port_key,
    render_config,
    thrift_conf_dir,
)
from hbase.errors import HBaseRuntimeError, StartupError
from hbase.processes import jvm_pids, owned_alive, terminate
from hbase.state import Runtime

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT_S = 180.0
DEFAULT_STOP_TIMEOUT_S = 60.0


# ---------------------------------------------------------------- lifecycle


def running(data_dir: Path) -> Runtime | None:
    """The runtime recorded in ``data_dir`` if all of its JVMs are alive, else None."""
    rt = state.read_runtime(data_dir)
    if rt is None or not rt.pids:
        return None
    if all(owned_alive(pid, data_dir) for pid in rt.pids.values()):
        return rt
    return None


def start(
    data_dir: Path | str | None = None,
    *,
    regionservers: int | None = None,
    bind: str = "127.0.0.1",
    thrift_port: int | None = None,
    thrift2_port: int | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
    on_progress: Callable[[str], None] | None = None,
) -> tuple[Runtime, bool]:
    """Start HBase in ``data_dir`` and return once it is usable through every Thrift server.

    ``regionservers`` > 1 starts a local cluster (:mod:`hbase.roles`); None means 1, or as
    many as the instance already running in ``data_dir`` has. Usable means: a table pre-split
    into one region per RegionServer has a region on every one of them, and its rows are
    written and read through every Thrift2 server and read through every Thrift1 server.

    Returns ``(runtime, already_running)``: if this data dir's HBase is already up, it is
    returned as is and nothing is started. The runtime is recorded as the default endpoint.

    Raises:
        JavaNotFoundError, MavenError, PortBusyError: before anything is started.
        HBaseRuntimeError: the running instance has another number of RegionServers.
        StartupError: a JVM exited or HBase was not usable within ``timeout_s``; every JVM
            started here is stopped again and the error carries the tail of the failing log.
    """
    data_dir = Path(data_dir).expanduser().resolve() if data_dir else _default_for_start()
    say = on_progress or (lambda _msg: None)
    current = running(data_dir)
    if current is not None:
        if regionservers not in (None, current.regionservers):
            raise HBaseRuntimeError(
                f"HBase in {data_dir} is running with {current.regionservers} RegionServer(s), not {regionservers}.",
                hint="Stop it first (seqstore hbase stop) to change the number of RegionServers.")
        state.record(current)
        return current, True
    n = regionservers or 1
    if n < 1:
        raise HBaseRuntimeError(f"--regionservers must be at least 1, got {n}")
    terminate(jvm_pids(data_dir), data_dir, DEFAULT_STOP_TIMEOUT_S)  # leftovers of a crash

    java, _ = jvm.check_java()
    say("fetching HBase jars" if jars.cached() is None else "HBase jars cached")
    lib = jars.fetch()
    ports = choose_ports(data_dir, bind, thrift_port, thrift2_port, n)
    conf = render_config(data_dir, ports, n)
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)

    t0 = time.monotonic()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for proc in roles.layout(n, ports, bind, data_dir):
        procs[proc.role] = _spawn(proc, java=java, lib=lib, conf=thrift_conf_dir(data_dir) if proc.is_thrift else conf,
                                  data_dir=data_dir, regionservers=n)
    every = range(1, n + 1)
    rt = Runtime(
        host="127.0.0.1" if bind in ("0.0.0.0", "") else bind,
        thrift_port=ports["thrift_port"],
        thrift2_port=ports["thrift2_port"],
        data_dir=str(data_dir),
        zk_port=ports["zk_port"],
        master_port=ports["master_port"],
        regionserver_port=ports["regionserver_port"],
        hbase_version=jars.hbase_version(),
        pids={role: p.pid for role, p in procs.items()},
        regionservers=n,
        thrift_ports=[ports[port_key("thrift_port", i)] for i in every],
        thrift2_ports=[ports[port_key("thrift2_port", i)] for i in every],
        regionserver_ports=[ports[port_key("regionserver_port", i)] for i in every],
    )
    state._write_atomic(state.runtime_file(data_dir), rt.to_json())  # so `stop` finds a half-started one
    say(f"{len(procs)} JVMs started; waiting for a round trip through every Thrift server")
    try:
        _wait_usable(rt, procs, timeout_s)
    except BaseException:
        terminate(list(rt.pids.values()), data_dir, 10.0)
        state.forget(data_dir)
        raise
    rt = replace(rt, started_at=time.time())
    state.record(rt)
    log.info("HBase (%d RegionServer(s)) ready in %.1f s: thrift2 %s", n, time.monotonic() - t0,
             ", ".join(rt.thrift2_endpoints))
    return rt, False


def _spawn(proc: roles.Process, *, java: str, lib: Path, conf: Path, data_dir: Path,
           regionservers: int) -> subprocess.Popen[bytes]:
    """Start one JVM of the instance, logging to ``logs/<role>.log``."""
    cmd = jvm.command(proc.kind, java=java, lib=lib, conf_dir=conf, data_dir=data_dir, args=list(proc.args),
                      regionservers=regionservers)
    with open(log_path(data_dir, proc.role), "ab") as out:
        out.write(f"\n===== seqstore: starting {proc.role} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')} =====\n".encode())
        out.flush()
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=data_dir, start_new_session=True)


def _wait_usable(rt: Runtime, procs: dict[str, subprocess.Popen[bytes]], timeout_s: float,
                 check: Callable[[], None] | None = None) -> None:
    """Retry ``check`` (default: the whole-cluster probe) until it passes, a JVM exits or time is up."""
    data_dir = Path(rt.data_dir)
    idl = probe.load_thrift2_idl()
    check = check or (lambda: probe.probe_cluster(rt.host, rt.thrift_ports, rt.thrift2_ports,
                                                  rt.regionserver_ports, idl, timeout_s=20))
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        for role, proc in procs.items():
            if proc.poll() is not None:
                raise StartupError(
                    f"HBase {role} exited with code {proc.returncode} during start-up.",
                    hint=f"Full log: {log_path(data_dir, role)}",
                    log_tail=log_tail(data_dir, role),
                )
        if time.monotonic() > deadline:
            raise StartupError(
                f"HBase was not usable within {timeout_s:.0f} s (last probe error: {last_error!r}).",
                hint=f"Full logs: {data_dir / 'logs'}",
                log_tail=log_tail(data_dir, "master"),
            )
        try:
            check()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = exc
        time.sleep(0.5)


def stop(data_dir: Path | str | None = None, *, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> list[int]:
    """Stop the HBase of ``data_dir`` (default: the recorded endpoint's) and return the pids stopped.

    The Thrift servers go first; then the cluster is shut down the way ``stop-hbase.sh``
    does it (``HMaster stop --shutDownCluster``: regions are flushed and closed, the
    RegionServers and the master exit); ZooKeeper goes last. A JVM still alive after
    ``timeout_s`` gets SIGTERM, then SIGKILL. No JVM of this data dir is left running
    afterwards. Stopping a stopped instance is a no-op.
    """
    data_dir = resolve_data_dir(data_dir)
    rt = state.read_runtime(data_dir)
    pids = dict(rt.pids) if rt else {}
    thrift, cluster, zookeeper = roles.stop_order(pids)
    stray = [p for p in jvm_pids(data_dir) if p not in pids.values()]
    stopped = [p for p in [*pids.values(), *stray] if owned_alive(p, data_dir)]

    def end(wave: list[int]) -> None:
        terminate([p for p in wave if owned_alive(p, data_dir)], data_dir, timeout_s)

    end(thrift + stray)
    master = pids.get("master")
    if master is not None and owned_alive(master, data_dir):
        _shutdown_cluster(data_dir, master, timeout_s)
    end(cluster)
    end(zookeeper)
    state.forget(data_dir)
    return stopped


def _shutdown_cluster(data_dir: Path, master: int, timeout_s: float) -> None:
    """Ask the master for a clean cluster shutdown and wait for its JVM to exit."""
    lib = jars.cached()
    if lib is None:
        return
    try:
        java = jvm.find_java()
    except HBaseRuntimeError:
        return
    # The stopper is a short-lived client JVM: it must not carry the data dir's owner
    # marker, or stop() would count it among the instance's processes.
    cmd = jvm.command("master", java=java, lib=lib, conf_dir=data_dir / "conf",
                      data_dir=data_dir / "run" / "stopper", args=["stop", "--shutDownCluster"])
    deadline = time.monotonic() + timeout_s
    try:
        with open(log_path(data_dir, "stop"), "ab") as out:
            subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        log.warning("HMaster stop did not return within %.0f s", timeout_s)
        return
    while time.monotonic() < deadline and owned_alive(master, data_dir):
        time.sleep(0.2)  # the RegionServers exit before the master does


def _default_for_start() -> Path:
    """The recorded endpoint's data dir while it runs (so a second start finds it), else the default."""
    endpoint = state.read_endpoint()
    if endpoint is not None and running(Path(endpoint.data_dir)) is not None:
        return Path(endpoint.data_dir)
    return default_data_dir()


def restart_role(data_dir: Path | str, role: str, *, timeout_s: float = 120.0) -> Runtime:
    """(Re)start one Thrift server or RegionServer of a running instance on its recorded ports
    (``seqstore hbase restart ROLE``): the way back for a process that died, or a rolling restart.

    ``role`` is ``thrift`` or ``thrift2``, or with several RegionServers ``regionserver``,
    ``thrift_2``, ``regionserver_3``... (:func:`hbase.roles.role_key`). A live process of that
    role is stopped first (SIGTERM: a RegionServer closes its regions; SIGKILL after 60 s).
    Returns once the process serves: a Thrift server answers a round trip; a RegionServer
    holds a region of a new table (the whole-cluster probe passes).

    Raises:
        ValueError: ``role`` is not a process that can be restarted on its own.
        HBaseRuntimeError: no instance is recorded in ``data_dir``; StartupError: it did not
            come back within ``timeout_s``.
    """
    data_dir = Path(data_dir).resolve()
    rt = state.read_runtime(data_dir)
    lib = jars.cached()
    if rt is None or lib is None:
        raise HBaseRuntimeError(f"no runtime recorded in {data_dir}")
    every = range(1, rt.regionservers + 1)
    ports = {"zk_port": rt.zk_port, "master_port": rt.master_port,
             **{port_key(name, i): getattr(rt, f"{name}s")[i - 1] for name in PER_REGIONSERVER for i in every}}
    known = {proc.role: proc for proc in roles.layout(rt.regionservers, ports, rt.host, data_dir)}
    restartable = [r for r, proc in known.items() if proc.kind in ("regionserver", *roles.THRIFT_KINDS)]
    if role not in restartable:
        raise ValueError(f"only these processes can be restarted on their own: {', '.join(restartable)}; "
                         f"not {role!r}")
    proc = known[role]
    if owned_alive(rt.pids.get(role, -1), data_dir):
        terminate([rt.pids[role]], data_dir, timeout_s=60.0)
    conf = thrift_conf_dir(data_dir) if proc.is_thrift else data_dir / "conf"
    popen = _spawn(proc, java=jvm.find_java(), lib=lib, conf=conf, data_dir=data_dir, regionservers=rt.regionservers)
    rt = replace(rt, pids={**rt.pids, role: popen.pid})
    state.record(rt)
    idl = probe.load_thrift2_idl()
    port = int(proc.args[1]) if proc.is_thrift else 0
    check: Callable[[], None] | None = None  # a RegionServer: the whole-cluster probe
    if proc.kind == "thrift":
        check = lambda: probe.probe_thrift1(rt.host, port, timeout_s=20)  # noqa: E731
    elif proc.kind == "thrift2":
        check = lambda: probe.probe_thrift2(rt.host, port, idl, timeout_s=20)  # noqa: E731
    _wait_usable(rt, {role: popen}, timeout_s, check)
    return rt


def resolve_data_dir(data_dir: Path | str | None) -> Path:
    if data_dir:
        return Path(data_dir).expanduser().resolve()
    endpoint = state.read_endpoint()
    return Path(endpoint.data_dir) if endpoint else default_data_dir()


def status(data_dir: Path | str | None = None) -> dict[str, object]:
    """What is known about the instance of ``data_dir`` (default: the recorded endpoint's).

    ``alive`` maps every process's role to whether its JVM is alive; ``running`` is true only
    if all of them are and the first Thrift1 server answers.
    """
    data_dir = resolve_data_dir(data_dir)
    rt = state.read_runtime(data_dir)
    report: dict[str, object] = {"data_dir": str(data_dir), "running": False}
    if rt is None:
        return report
    report.update(rt.to_json())
    alive = {role: owned_alive(pid, data_dir) for role, pid in rt.pids.items()}
    report["alive"] = alive
    dead = sorted(role for role, up in alive.items() if not up)
    if dead:
        report["error"] = f"not running: {', '.join(dead)}"
        return report
    try:
        import happybase

        conn = happybase.Connection(rt.host, rt.thrift_port, timeout=10_000)
        try:
            report["tables"] = len(conn.tables())
        finally:
            conn.close()
        report["running"] = True
        report["uptime_s"] = round(time.time() - rt.started_at, 1)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        report["error"] = f"Thrift server not answering: {exc!r}"
    return report


def serve(data_dir: Path | str | None = None, **start_kwargs: object) -> int:
    """Run HBase in the foreground until SIGTERM/SIGINT or until one of its JVMs exits.

    What the Docker image runs. Returns the exit code for the process.
    """
    rt, _ = start(data_dir, **start_kwargs)  # type: ignore[arg-type]
    data_dir_path = Path(rt.data_dir)
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(json.dumps(rt.to_json()), flush=True)  # noqa: T201 - the container's start-up line
    while not stopping:
        dead = [role for role, pid in rt.pids.items() if not owned_alive(pid, data_dir_path)]
        if dead:
            log.error("HBase %s exited; stopping the rest", ", ".join(dead))
            stop(data_dir_path)
            return 1
        time.sleep(1.0)
    stop(data_dir_path)
    return 0


__all__ = [
    "HBaseRuntimeError",
    "jvm_pids",
    "resolve_data_dir",
    "running",
    "serve",
    "restart_role",
    "start",
    "status",
    "stop",
]
