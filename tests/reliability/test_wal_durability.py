"""A write HBase acknowledged survives a SIGKILL of the JVM that holds its region.

Small single-cell puts from a few threads go through Thrift2; every put that returned is
recorded; the JVM holding the table's region is killed with SIGKILL while puts are in flight;
the rest of the instance is stopped and started again on the same data dir (the WAL is split
and replayed); every acknowledged put must then be readable. Repeated ``KILLS`` times on one
data dir, each check covering the acknowledged puts of all rounds so far.

Single small puts are the hardest case: each WAL sync then carries a few hundred bytes, so any
layer that keeps a tail of the WAL inside the JVM (the 512-byte checksum chunk of Hadoop's
``ChecksumFileSystem``, a ``BufferedOutputStream``) holds acknowledged edits when the kill lands.
See hbase/DURABILITY.md for the source facts and the measurements.

The steps are small functions so that another runtime can reuse them: :func:`start_instance`,
:func:`kill_region_holder` (standalone: the master JVM, which also runs the RegionServer),
:func:`restart_after_kill`, :func:`write_until_killed` and :func:`missing_writes`.

Also runnable as an experiment that prints one JSON line per kill:
``SEQSTORE_STATE_DIR=... python -m tests.reliability.test_wal_durability --data-dir DIR --kills 10``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hbase import launcher
from hbase.state import Runtime
from store.config import Config, Endpoint
from store.errors import SeqStoreError
from store.io.connection import Thrift2Client, idl
from tests.cluster_faults import kill_role

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.slow]

KILLS = int(os.environ.get("SEQSTORE_WAL_KILLS", "3"))
WRITERS = 4
FAMILY = b"e"
TABLE = "wal_durability"
# The kill lands after a random number of acknowledged puts in this range, so that it falls at
# a different offset of the WAL's buffers each round.
ACKS_BEFORE_KILL = (150, 600)
ROUND_DEADLINE_S = 300.0  # generous: the machine is shared; only a hang should reach it
VERIFY_BATCH = 500


# ---------------------------------------------------------------- the instance's lifecycle


def start_instance(data_dir: Path) -> Runtime:
    """Start (or find running) the instance of ``data_dir``; return once Thrift2 answers."""
    rt, _ = launcher.start(data_dir)
    return rt


def kill_region_holder(data_dir: Path) -> None:
    """SIGKILL the JVM that holds the regions (standalone: ZooKeeper + master + RegionServer)."""
    kill_role(data_dir, "master")


def restart_after_kill(data_dir: Path) -> Runtime:
    """Stop what is left of the instance and start it again on the same data dir.

    The new master finds the dead server's WAL, splits it and replays it into the regions
    before they open: what the old JVM acknowledged must be back.
    """
    launcher.stop(data_dir)
    return start_instance(data_dir)


# ---------------------------------------------------------------- clients, table, writes


def writer_config(rt: Runtime) -> Config:
    """One attempt per put: a put that returned is acknowledged, one that raised is not."""
    return Config(thrift2=(Endpoint(rt.host, rt.thrift2_port),), timeout_ms=60_000, retries=0)


def reader_config(rt: Runtime) -> Config:
    """Patient reads: after a restart the regions may still be opening."""
    return Config(thrift2=(Endpoint(rt.host, rt.thrift2_port),), timeout_ms=60_000, retries=20,
                  unavailable_after_ms=240_000)


def create_table(rt: Runtime, name: str) -> None:
    t = idl()
    client = Thrift2Client(reader_config(rt).thrift2, reader_config(rt))
    try:
        family = t.TColumnFamilyDescriptor(name=FAMILY, maxVersions=1)
        client.call("createTable", t.TTableDescriptor(tableName=t.TTableName(ns=b"default", qualifier=name.encode()),
                                                      columns=[family]), None)
    finally:
        client.close()


def value_of(row: bytes) -> bytes:
    return hashlib.sha256(row).digest()[:16]


@dataclass
class KillRound:
    """What one round wrote and what the kill caught."""

    round: int
    acked: int = 0  # puts acknowledged in this round
    acked_after_kill: int = 0  # acknowledged by the RegionServer before it died, answer read after
    failed: int = 0  # puts that raised (unknown outcome: not checked)
    in_flight_at_kill: int = 0  # puts sent and not yet answered when the SIGKILL was sent
    acked_last_100ms: int = 0  # acknowledged in the 100 ms before the kill
    lost: int = 0  # acknowledged puts (of all rounds so far) missing after the restart
    lost_this_round: int = 0  # of those, acknowledged in this round
    total_acked: int = 0  # acknowledged puts of all rounds so far
    lost_rows: list[str] = field(default_factory=list)


class _Acks:
    """Acknowledged puts and in-flight puts, shared by the writer threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: dict[bytes, float] = {}  # row -> monotonic time of its acknowledgement
        self.in_flight = 0
        self.failed = 0


def write_until_killed(rt: Runtime, table: str, round_no: int, kill: Callable[[], None], *,
                       acks_before_kill: int, writers: int = WRITERS) -> tuple[dict[bytes, bytes], KillRound]:
    """Put single small cells from ``writers`` threads; call ``kill`` after ``acks_before_kill``
    acknowledgements, while the threads keep writing; return the acknowledged rows and values.

    ``kill`` must leave no server able to answer (kill the region holder, then stop the rest),
    so that every in-flight put ends with an error.
    """
    t = idl()
    acks = _Acks()
    killed = threading.Event()
    config = writer_config(rt)
    tname = table.encode()

    def writer(slot: int) -> None:
        client = Thrift2Client(config.thrift2, config)
        seq = 0
        try:
            while not killed.is_set():
                row = f"{round_no:03d}-{slot}-{seq:08d}".encode()
                seq += 1
                cell = t.TColumnValue(FAMILY, b"q", value_of(row))
                acked = False
                with acks.lock:
                    acks.in_flight += 1
                try:
                    client.call("put", tname, t.TPut(row=row, columnValues=[cell]))
                    acked = True
                except SeqStoreError:
                    pass  # outcome unknown: not checked
                finally:
                    with acks.lock:
                        acks.in_flight -= 1
                        if acked:
                            acks.rows[row] = time.monotonic()
                        else:
                            acks.failed += 1
                if not acked and not killed.is_set():
                    time.sleep(0.05)  # a put failing before the kill: keep writing
        finally:
            client.close()

    threads = [threading.Thread(target=writer, args=(i,), name=f"wal-writer-{i}", daemon=True) for i in range(writers)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + ROUND_DEADLINE_S
    while len(acks.rows) < acks_before_kill:
        if time.monotonic() > deadline or not any(th.is_alive() for th in threads):
            killed.set()
            raise AssertionError(f"round {round_no}: only {len(acks.rows)} puts acknowledged "
                                 f"in {ROUND_DEADLINE_S:.0f} s ({acks.failed} failed)")
        time.sleep(0.002)
    with acks.lock:
        in_flight = acks.in_flight
        acked_before = len(acks.rows)
        kill_at = time.monotonic()
    kill()
    killed.set()
    for th in threads:
        th.join(timeout=ROUND_DEADLINE_S)
    assert not any(th.is_alive() for th in threads), "a writer thread is stuck after the kill"
    stats = KillRound(
        round=round_no, acked=len(acks.rows), acked_after_kill=len(acks.rows) - acked_before,
        failed=acks.failed, in_flight_at_kill=in_flight,
        acked_last_100ms=sum(1 for at in acks.rows.values() if kill_at - 0.1 <= at <= kill_at),
    )
    return {row: value_of(row) for row in acks.rows}, stats


def missing_writes(rt: Runtime, table: str, expected: dict[bytes, bytes]) -> list[bytes]:
    """The rows of ``expected`` that HBase does not return with their value."""
    t = idl()
    config = reader_config(rt)
    client = Thrift2Client(config.thrift2, config)
    missing: list[bytes] = []
    rows = sorted(expected)
    try:
        for i in range(0, len(rows), VERIFY_BATCH):
            batch = rows[i:i + VERIFY_BATCH]
            results = client.call("getMultiple", table.encode(), [t.TGet(row=r) for r in batch])
            for row, result in zip(batch, results, strict=True):
                values = {(cv.family, cv.qualifier): cv.value for cv in (result.columnValues or [])}
                if values.get((FAMILY, b"q")) != expected[row]:
                    missing.append(row)
    finally:
        client.close()
    return missing


def run_kill_cycles(data_dir: Path, kills: int, *, seed: int = 0,
                    on_round: Callable[[KillRound], None] | None = None) -> list[KillRound]:
    """Start an instance, then ``kills`` times: write, kill mid-write, restart, check every
    acknowledged put so far. Leaves the instance running (the caller stops it)."""
    rng = random.Random(seed)
    rt = start_instance(data_dir)
    create_table(rt, TABLE)
    acked: dict[bytes, bytes] = {}
    rounds: list[KillRound] = []

    def kill() -> None:
        kill_region_holder(data_dir)
        launcher.stop(data_dir)  # the Thrift servers too: every in-flight put now fails

    for n in range(kills):
        written, stats = write_until_killed(rt, TABLE, n, kill, acks_before_kill=rng.randint(*ACKS_BEFORE_KILL))
        acked.update(written)
        rt = restart_after_kill(data_dir)
        lost = missing_writes(rt, TABLE, acked)
        stats.lost, stats.total_acked = len(lost), len(acked)
        stats.lost_this_round = sum(1 for r in lost if r in written)
        stats.lost_rows = [r.decode() for r in lost[:20]]
        rounds.append(stats)
        if on_round is not None:
            on_round(stats)
    return rounds


# ---------------------------------------------------------------- the test


@pytest.fixture
def own_hbase(isolated_state: Path, tmp_path: Path) -> Iterator[Path]:
    """A data dir of this test's own (the suite's HBase is never killed); no JVM is left afterwards."""
    data_dir = tmp_path / "hbase"
    try:
        yield data_dir
    finally:
        launcher.stop(data_dir)
        assert not launcher.jvm_pids(data_dir), "JVMs left running"


def test_acknowledged_puts_survive_sigkill_of_the_region_holder_mid_write(own_hbase: Path) -> None:
    rounds = run_kill_cycles(own_hbase, KILLS, seed=KILLS)
    assert len(rounds) == KILLS
    for r in rounds:
        # The kill must have caught puts on the wire, or the round proved nothing.
        assert r.in_flight_at_kill >= 1, r
        assert r.acked > 0, r
    assert [r.lost for r in rounds] == [0] * KILLS, [asdict(r) for r in rounds]
    assert rounds[-1].total_acked == sum(r.acked for r in rounds)


def main(argv: list[str] | None = None) -> int:
    """The experiment: ``--kills`` rounds on ``--data-dir``; one JSON line per round, then a total."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data_dir: Path = args.data_dir.resolve()

    def show(r: KillRound) -> None:
        print(json.dumps(asdict(r)), flush=True)  # the experiment's output

    started = time.monotonic()
    try:
        rounds = run_kill_cycles(data_dir, args.kills, seed=args.seed, on_round=show)
    finally:
        launcher.stop(data_dir)
    total: dict[str, Any] = {
        "kills": len(rounds), "acked": sum(r.acked for r in rounds),
        "lost_after_last_restart": rounds[-1].lost if rounds else 0,
        "rounds_with_loss": sum(1 for r in rounds if r.lost),
        "lost_per_round": [r.lost_this_round for r in rounds],
        "in_flight_at_kill": [r.in_flight_at_kill for r in rounds],
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps({"total": total}), flush=True)  # the experiment's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
