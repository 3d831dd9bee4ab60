"""Start, probe, stop and inspect a standalone HBase plus its Thrift servers.

One data directory holds one instance (its layout: :mod:`hbase.datadir`).
Three JVMs run per instance: the standalone master (ZooKeeper + master + RegionServer),
the Thrift1 server (what happybase speaks) and the Thrift2 server (per-cell timestamps,
time ranges, multi-gets). Everything listens on 127.0.0.1 except the Thrift servers, which
bind to ``bind`` (127.0.0.1 unless asked otherwise, e.g. 0.0.0.0 inside Docker).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from hbase import jars, jvm, probe, state
from hbase.datadir import choose_ports, default_data_dir, log_path, log_tail, render_config, thrift_conf_dir
from hbase.errors import HBaseRuntimeError, StartupError
from hbase.processes import jvm_pids, owned_alive, terminate, wait_gone
from hbase.state import Runtime

log = logging.getLogger(__name__)

ROLES = ("master", "thrift", "thrift2")
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
    bind: str = "127.0.0.1",
    thrift_port: int | None = None,
    thrift2_port: int | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
    on_progress: Callable[[str], None] | None = None,
) -> tuple[Runtime, bool]:
    """Start HBase in ``data_dir`` and return once a real round trip works on both Thrift servers.

    Returns ``(runtime, already_running)``: if this data dir's HBase is already up, it is
    returned as is and nothing is started. The runtime is recorded as the default endpoint.

    Raises:
        JavaNotFoundError, MavenError, PortBusyError: before anything is started.
        StartupError: a JVM exited or HBase was not usable within ``timeout_s``; every JVM
            started here is stopped again and the error carries the tail of the failing log.
    """
    data_dir = Path(data_dir).expanduser().resolve() if data_dir else _default_for_start()
    say = on_progress or (lambda _msg: None)
    current = running(data_dir)
    if current is not None:
        state.record(current)
        return current, True
    terminate(jvm_pids(data_dir), data_dir, DEFAULT_STOP_TIMEOUT_S)  # leftovers of a crash

    java, _ = jvm.check_java()
    say("fetching HBase jars" if jars.cached() is None else "HBase jars cached")
    lib = jars.fetch()
    ports = choose_ports(data_dir, bind, thrift_port, thrift2_port)
    conf = render_config(data_dir, ports)
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)

    args = {
        "master": ["start"],
        "thrift": ["-p", str(ports["thrift_port"]), "-b", bind, "start"],
        "thrift2": ["-p", str(ports["thrift2_port"]), "-b", bind, "start"],
    }
    t0 = time.monotonic()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for role in ROLES:
        role_conf = conf if role == "master" else thrift_conf_dir(data_dir)
        cmd = jvm.command(role, java=java, lib=lib, conf_dir=role_conf, data_dir=data_dir, args=args[role])
        with open(log_path(data_dir, role), "ab") as out:
            out.write(f"\n===== seqstore: starting {role} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')} =====\n".encode())
            out.flush()
            procs[role] = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=data_dir, start_new_session=True,
            )
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
    )
    state._write_atomic(state.runtime_file(data_dir), rt.to_json())  # so `stop` finds a half-started one
    say(f"JVMs started (pids {', '.join(f'{r}={p.pid}' for r, p in procs.items())}); waiting for a round trip")
    try:
        _wait_usable(rt, procs, timeout_s)
    except BaseException:
        terminate(list(rt.pids.values()), data_dir, 10.0)
        state.forget(data_dir)
        raise
    rt = replace(rt, started_at=time.time())
    state.record(rt)
    log.info("HBase ready in %.1f s: thrift %s:%d, thrift2 %s:%d", time.monotonic() - t0,
             rt.host, rt.thrift_port, rt.host, rt.thrift2_port)
    return rt, False


def _wait_usable(rt: Runtime, procs: dict[str, subprocess.Popen[bytes]], timeout_s: float,
                 roles: tuple[str, ...] = ("thrift", "thrift2")) -> None:
    data_dir = Path(rt.data_dir)
    idl = probe.load_thrift2_idl()
    deadline = time.monotonic() + timeout_s
    ports = {"thrift": rt.thrift_port, "thrift2": rt.thrift2_port}
    pending = {role: ports[role] for role in roles}
    last_error: BaseException | None = None
    while pending:
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
        for role, port in list(pending.items()):
            try:
                if role == "thrift":
                    probe.probe_thrift1(rt.host, port, timeout_s=20)
                else:
                    probe.probe_thrift2(rt.host, port, idl, timeout_s=20)
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last_error = exc
                break
            del pending[role]
        else:
            continue
        time.sleep(0.5)


def stop(data_dir: Path | str | None = None, *, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> list[int]:
    """Stop the HBase of ``data_dir`` (default: the recorded endpoint's) and return the pids stopped.

    The Thrift servers go first; then the cluster is shut down the way ``stop-hbase.sh``
    does it (``HMaster stop --shutDownCluster``: regions are flushed and closed, then the
    JVM exits). A JVM still alive after ``timeout_s`` gets SIGTERM, then SIGKILL. No JVM of
    this data dir is left running afterwards. Stopping a stopped instance is a no-op.
    """
    data_dir = resolve_data_dir(data_dir)
    rt = state.read_runtime(data_dir)
    pids = dict(rt.pids) if rt else {}
    master = pids.pop("master", None)
    stray = [p for p in jvm_pids(data_dir) if p not in pids.values() and p != master]
    first = [p for p in [*pids.values(), *stray] if owned_alive(p, data_dir)]
    terminate(first, data_dir, timeout_s)
    stopped = list(first)
    if master is not None and owned_alive(master, data_dir):
        _shutdown_cluster(data_dir, master, timeout_s)
        terminate([master], data_dir, timeout_s)
        stopped.append(master)
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
        time.sleep(0.2)


def _default_for_start() -> Path:
    """The recorded endpoint's data dir while it runs (so a second start finds it), else the default."""
    endpoint = state.read_endpoint()
    if endpoint is not None and running(Path(endpoint.data_dir)) is not None:
        return Path(endpoint.data_dir)
    return default_data_dir()


def kill_role(data_dir: Path | str, role: str) -> None:
    """Kill one JVM of a running instance with SIGKILL, as a crash would (for fault tests)."""
    data_dir = Path(data_dir).resolve()
    rt = state.read_runtime(data_dir)
    if rt is None or role not in rt.pids:
        raise HBaseRuntimeError(f"no running {role} recorded in {data_dir}")
    pid = rt.pids[role]
    if owned_alive(pid, data_dir):
        os.kill(pid, signal.SIGKILL)
    wait_gone([pid], data_dir)


def start_role(data_dir: Path | str, role: str, *, timeout_s: float = 60.0) -> Runtime:
    """(Re)start one Thrift server of a running instance on its recorded port; wait until usable."""
    if role not in ("thrift", "thrift2"):
        raise ValueError("only the Thrift servers can be restarted on their own")
    data_dir = Path(data_dir).resolve()
    rt = state.read_runtime(data_dir)
    lib = jars.cached()
    if rt is None or lib is None:
        raise HBaseRuntimeError(f"no runtime recorded in {data_dir}")
    if owned_alive(rt.pids.get(role, -1), data_dir):
        kill_role(data_dir, role)
    port = rt.thrift_port if role == "thrift" else rt.thrift2_port
    cmd = jvm.command(role, java=jvm.find_java(), lib=lib, conf_dir=thrift_conf_dir(data_dir), data_dir=data_dir,
                      args=["-p", str(port), "-b", rt.host, "start"])
    with open(log_path(data_dir, role), "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=data_dir, start_new_session=True)
    rt = replace(rt, pids={**rt.pids, role: proc.pid})
    state.record(rt)
    _wait_usable(rt, {role: proc}, timeout_s, roles=(role,))
    return rt


def resolve_data_dir(data_dir: Path | str | None) -> Path:
    if data_dir:
        return Path(data_dir).expanduser().resolve()
    endpoint = state.read_endpoint()
    return Path(endpoint.data_dir) if endpoint else default_data_dir()


def status(data_dir: Path | str | None = None) -> dict[str, object]:
    """What is known about the instance of ``data_dir`` (default: the recorded endpoint's).

    ``running`` is true only if every JVM is alive and the Thrift1 server answers.
    """
    data_dir = resolve_data_dir(data_dir)
    rt = state.read_runtime(data_dir)
    report: dict[str, object] = {"data_dir": str(data_dir), "running": False}
    if rt is None:
        return report
    report.update(rt.to_json())
    alive = {role: owned_alive(pid, data_dir) for role, pid in rt.pids.items()}
    report["alive"] = alive
    if all(alive.values()):
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
    "kill_role",
    "resolve_data_dir",
    "running",
    "serve",
    "start_role",
    "start",
    "status",
    "stop",
]
