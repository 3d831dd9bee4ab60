"""Concurrent `evolve_schema` calls against real HBase: one registers each version, none is overwritten."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

from store import DEFAULT_SCHEMA, EventSchema, SchemaError, SequenceStore, SequenceTable
from store.table import registry as _table
from tests.conftest import HBaseServer

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
T0 = NOW - 86_400_000


def with_fields(*names: str) -> EventSchema:
    return EventSchema.of([*DEFAULT_SCHEMA.payload, *(pa.field(n, pa.string()) for n in names)])


def write_one(store: SequenceStore, name: str, user: str, **extra: str) -> None:
    """Write one event through a freshly opened table, i.e. encoded with the newest registered version."""
    table = store.table(name)
    result = table.write(pa.table({"user_id": [user], "event_ts": [T0], "event_type": ["view"], "item_id": [7],
                                   "dwell_ms": [100], **{k: [v] for k, v in extra.items()}}))
    assert result.written == 1


def event_of(store: SequenceStore, name: str, user: str) -> dict[str, Any]:
    (event,) = store.table(name).read_sequences([(user, NOW)], max_len=10).column("sequence")[0].as_py()
    assert event.pop("event_ts") == T0
    return {k: v for k, v in event.items() if v is not None and k != "event_id"}


def registered(store: SequenceStore, name: str) -> list[list[str]]:
    return [list(s.payload.names[3:]) for s in _table.load(store.pool, name).versions]


@pytest.fixture
def rival(hbase_server: HBaseServer) -> Any:
    with SequenceStore(hbase_server.config(), pool_size=2) as s:
        yield s


def registers_between_load_and_put(monkeypatch: pytest.MonkeyPatch, step: Callable[[], None]) -> None:
    """Run ``step`` (another caller's evolution) right after the next registration load: the race, every time."""
    real_load = _table.load
    fired = False

    def load(pool: Any, name: str) -> _table.Registration:
        nonlocal fired
        reg = real_load(pool, name)
        if not fired:
            fired = True
            step()
        return reg

    monkeypatch.setattr(_table, "load", load)


@pytest.mark.parametrize("loser_fields, outcome", [
    (("campaign",), "winner's version"),
    (("campaign", "region"), "next version"),
    (("region",), "error"),
])
def test_the_loser_of_a_race_gets_the_documented_result_and_every_event_decodes(
    store: SequenceStore, rival: SequenceStore, make_table: Callable[..., SequenceTable],
    monkeypatch: pytest.MonkeyPatch, loser_fields: tuple[str, ...], outcome: str,
) -> None:
    name = make_table().name

    def winner() -> None:
        assert rival.evolve_schema(name, with_fields("campaign")).version == 2
        write_one(rival, name, "w", campaign="spring")

    registers_between_load_and_put(monkeypatch, winner)
    if outcome == "error":
        with pytest.raises(SchemaError, match=r"version 2 .*registered concurrently.*'campaign' cannot be dropped"):
            store.evolve_schema(name, with_fields(*loser_fields))
        assert registered(store, name) == [[], ["campaign"]]
    else:
        got = store.evolve_schema(name, with_fields(*loser_fields))
        assert list(got.payload.names[3:]) == list(loser_fields)
        if outcome == "winner's version":
            assert got.version == 2 and registered(store, name) == [[], ["campaign"]]
        else:
            assert got.version == 3 and registered(store, name) == [[], ["campaign"], ["campaign", "region"]]
        write_one(store, name, "l", **{f: f"{f}-value" for f in loser_fields})
        assert event_of(store, name, "l") == {"event_type": "view", "item_id": 7, "dwell_ms": 100,
                                              **{f: f"{f}-value" for f in loser_fields}}
    assert event_of(store, name, "w") == {"event_type": "view", "item_id": 7, "dwell_ms": 100, "campaign": "spring"}


def test_concurrent_evolutions_register_one_version_and_the_others_agree_or_fail(
    hbase_server: HBaseServer, make_table: Callable[..., SequenceTable]
) -> None:
    name = make_table().name
    wanted = ["a", "a", "a", "b", "b", "b"]  # two rival changes, each asked for by three callers
    start = threading.Barrier(len(wanted))
    results: list[EventSchema | BaseException | None] = [None] * len(wanted)

    def evolve(i: int) -> None:
        with SequenceStore(hbase_server.config(), pool_size=1) as s:
            _table.load(s.pool, name)  # connect first, so the calls below start together
            start.wait(timeout=30)
            try:
                results[i] = s.evolve_schema(name, with_fields(wanted[i]))
            except SchemaError as exc:
                results[i] = exc

    threads = [threading.Thread(target=evolve, args=(i,)) for i in range(len(wanted))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    with SequenceStore(hbase_server.config(), pool_size=1) as s:
        versions = registered(s, name)
        assert len(versions) == 2, versions
        (won,) = versions[1]
        for field, result in zip(wanted, results, strict=True):
            if field == won:
                assert isinstance(result, EventSchema) and result.version == 2, result
            else:
                # A loser that read the registration before the winner's put says it raced; one
                # that read it after sees the winner's version, which its request would drop from.
                message = str(result)
                assert isinstance(result, SchemaError) and (
                    "registered concurrently" in message or f"field {won!r} cannot be dropped" in message), result
        write_one(s, name, "u", **{won: "x"})
        assert event_of(s, name, "u") == {"event_type": "view", "item_id": 7, "dwell_ms": 100, won: "x"}
