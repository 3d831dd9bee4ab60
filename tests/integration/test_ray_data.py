"""The Ray Data integration (``ray_jobs/data/``) on real Ray and real HBase."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from ray_jobs.assemble import model_inputs
from ray_jobs.backfill import run_backfill
from ray_jobs.data import AssembleSequences, SequenceDatasink, training_dataset
from ray_jobs.examples.models import recency_similarity
from ray_jobs.verify import verify
from store import SequenceTable, TableNotFoundError
from store.inputs.requests import request_table
from store.inputs.rows import QUARANTINE_SCHEMA
from store.tiers import RAW
from tests.conftest import HBaseServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = 1_767_225_600_000  # 2026-01-01
STEP = 60_000  # user u<k> has an event every minute from T0; event i has item_id i
EVENTS = 30


def _numpy(dataset: Any) -> dict[str, np.ndarray]:
    """Every row of a (small) Dataset as one numpy batch."""
    batches = list(dataset.iter_batches(batch_size=100_000, batch_format="numpy"))
    assert len(batches) == 1
    return dict(batches[0])


def _identity_in_numpy(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # A transform in Ray's default (numpy) batch format: nullable integer columns arrive as
    # floats with NaN, which the sink must read as the nulls they were.
    assert batch["dwell_ms"].dtype == np.float64
    return batch


def _source_rows(quarantine: pa.Table) -> Counter[tuple[str, Any, int]]:
    """(reason, user_id, event_ts) of each row of a backfill quarantine file, read from its source."""
    files = {path: pq.read_table(path) for path in set(quarantine.column("source").to_pylist())}
    out: Counter[tuple[str, Any, int]] = Counter()
    for q in quarantine.to_pylist():
        row = files[q["source"]].slice(q["position"], 1).to_pylist()[0]
        out[(q["reason"], row["user_id"], row["event_ts"])] += 1
    return out


def _sink_rows(quarantine: pa.Table) -> Counter[tuple[str, Any, int]]:
    return Counter((q["reason"], q["row"]["user_id"], q["row"]["event_ts"]) for q in quarantine.to_pylist())


def test_datasink_stores_exactly_what_backfill_stores(
    ray_local: None, small_log: Path, make_table: Callable[..., SequenceTable], hbase_server: HBaseServer,
    tmp_path: Path,
) -> None:
    config = hbase_server.config()
    by_backfill, by_sink = make_table("bf", salt_buckets=4), make_table("ds", salt_buckets=4)
    report = run_backfill(str(small_log), by_backfill.name, workers=2, config=config, report_dir=tmp_path / "r")
    assert report.completed, report.error

    sink = SequenceDatasink(by_sink.name, config=config, quarantine_dir=tmp_path / "q")
    ray.data.read_parquet(str(small_log)).map_batches(_identity_in_numpy).write_datasink(sink)
    r = sink.result
    assert r is not None
    # The writer's rules, whatever the path: the same rows in, the same rows quarantined for the same reasons.
    assert r.rows_in == report.events_in == 30_000
    assert r.rows_in == r.written + r.merged + r.quarantined
    assert r.quarantined == report.events_quarantined == 300
    assert r.by_reason == report.quarantine_by_reason
    assert r.written + r.merged == report.events_written + report.events_merged
    assert r.quarantine_files and r.quarantine_omitted == 0 and r.quarantine.num_rows == 0
    files = pa.concat_tables([pq.read_table(f) for f in r.quarantine_files])
    # One quarantine record: the backfill's file has the writer's schema; the Datasink's adds the row.
    assert pq.read_table(report.quarantine_path).schema.names == QUARANTINE_SCHEMA.names == files.schema.names[:-1]
    assert _sink_rows(files) == _source_rows(pq.read_table(report.quarantine_path))

    # The same table: verify's event-by-event check, and every user's whole sequence read back.
    checked = verify(str(small_log), by_sink)
    assert checked.ok and checked.events_extra == 0 and checked.events_found == checked.events_expected
    users = sorted({u for u in pq.read_table(small_log, columns=["user_id"]).column(0).to_pylist()
                    if u and len(u) <= 1024})
    requests = request_table(users, [int(time.time() * 1000)] * len(users))
    assert by_sink.read_sequences(requests, max_len=20_000).equals(by_backfill.read_sequences(requests,
                                                                                              max_len=20_000))

    # Idempotent: the same Dataset again changes nothing. Without a quarantine_dir the bad rows come
    # back in memory, up to max_quarantine_rows; the others are counted, not kept.
    again = SequenceDatasink(by_sink.name, config=config, max_quarantine_rows=50)
    ray.data.read_parquet(str(small_log)).write_datasink(again)
    a = again.result
    assert a is not None and a.written == r.written and a.quarantined == 300
    assert a.quarantine.num_rows == 50 and a.quarantine_omitted == 250 and not a.quarantine_files
    assert set(a.quarantine.column("reason").to_pylist()) <= set(report.quarantine_by_reason)
    assert verify(str(small_log), by_sink).ok


def test_datasink_into_chunks_stores_what_writes_and_compaction_store(
    ray_local: None, small_log: Path, make_table: Callable[..., SequenceTable], hbase_server: HBaseServer,
    tmp_path: Path,
) -> None:
    """The sink's bulk path (``into="chunks"``) against its raw path followed by a compaction:
    the same reads, the same quarantined rows with the same reasons, verify clean, and no raw
    cell left; exact again when users' rows are spread over tasks (not grouped), and idempotent."""
    config = hbase_server.config()
    live, bulk = make_table("dsraw", salt_buckets=4), make_table("dschunks", salt_buckets=4)
    raw_sink = SequenceDatasink(live.name, config=config, quarantine_dir=tmp_path / "qr")
    ray.data.read_parquet(str(small_log)).write_datasink(raw_sink)
    for start, stop in live.salt_ranges():
        live.compact_range(start, stop)

    grouped = ray.data.read_parquet(str(small_log)).repartition(3, keys=["user_id"])
    sink = SequenceDatasink(bulk.name, config=config, quarantine_dir=tmp_path / "qc", into="chunks",
                            rows_per_write=5_000)
    grouped.write_datasink(sink)
    r, w = sink.result, raw_sink.result
    assert r is not None and w is not None
    assert (r.rows_in, r.written + r.merged, r.quarantined) == (w.rows_in, w.written + w.merged, w.quarantined)
    assert r.rows_in == r.written + r.merged + r.quarantined and r.quarantined == 300
    assert r.by_reason == w.by_reason and r.write_tasks >= 2
    chunks_bad = pa.concat_tables([pq.read_table(f) for f in r.quarantine_files])
    raw_bad = pa.concat_tables([pq.read_table(f) for f in w.quarantine_files])
    assert _sink_rows(chunks_bad) == _sink_rows(raw_bad)  # each bad row, as received, with its reason

    users = sorted({u for u in pq.read_table(small_log, columns=["user_id"]).column(0).to_pylist()
                    if u and len(u) <= 1024})
    requests = request_table(users, [int(time.time() * 1000)] * len(users))
    want = live.read_sequences(requests, max_len=20_000)
    assert bulk.read_sequences(requests, max_len=20_000).equals(want)
    tiers = [t for c in bulk.stored_copies(b"", b"") for t in c.table().column("tier").to_pylist()]
    assert tiers and RAW not in tiers, "a bulk-written table holds raw cells"
    checked = verify(str(small_log), bulk)
    assert checked.ok and checked.events_extra == 0 and checked.events_found == checked.events_expected

    # Ungrouped (Parquet blocks as read, a user's rows in several tasks) and again: nothing doubled.
    again = SequenceDatasink(bulk.name, config=config, into="chunks", rows_per_write=2_000)
    ray.data.read_parquet(str(small_log)).repartition(6).write_datasink(again)
    a = again.result
    assert a is not None and a.write_tasks >= 2 and a.quarantined == 300
    assert a.written + a.merged == r.written + r.merged
    assert bulk.read_sequences(requests, max_len=20_000).equals(want)
    assert verify(str(small_log), bulk).ok


def test_datasink_refuses_a_missing_table_before_writing(ray_local: None, hbase_server: HBaseServer,
                                                         table_prefix: str) -> None:
    sink = SequenceDatasink(f"{table_prefix}nothing", config=hbase_server.config())
    rows = ray.data.from_items([{"user_id": "u1", "event_ts": T0, "event_type": "view", "item_id": 1}])
    with pytest.raises(TableNotFoundError, match="no seqstore table"):
        rows.write_datasink(sink)
    assert sink.result is None


@pytest.fixture
def history(make_table: Callable[..., SequenceTable]) -> SequenceTable:
    """Users u0..u3, one event a minute from T0 (item_id = the event's index), two feature versions of u1."""
    table = make_table(salt_buckets=2, features=pa.schema([pa.field("emb", pa.list_(pa.float16(), 4)),
                                                            pa.field("segment", pa.string())]))
    rows = [(f"u{u}", T0 + i * STEP, "click" if i % 3 else "view", i, None if i % 4 == 0 else 100 * i)
            for u in range(4) for i in range(EVENTS)]
    table.write(pa.table({"user_id": [r[0] for r in rows], "event_ts": [r[1] for r in rows],
                          "event_type": [r[2] for r in rows], "item_id": [r[3] for r in rows],
                          "dwell_ms": pa.array([r[4] for r in rows], pa.int32())}))
    table.write_features(pa.table({"user_id": ["u1", "u1"], "valid_from_ts": [T0, T0 + 10 * STEP],
                                   "emb": [[1, 0, 0, 0], [0, 1, 0, 0]], "segment": ["new", "regular"]}))
    return table


class ScoreModel:
    """A model stage as users write one: a callable class on its own actors."""

    def __init__(self) -> None:
        self.model = recency_similarity

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert batch["item_id"].shape == (len(batch["lengths"]), 8)
        return {"request_id": batch["request_id"], "score": self.model(batch)["score"]}


def test_assemble_sequences_gives_map_batches_what_scoring_sees(
    ray_local: None, history: SequenceTable, hbase_server: HBaseServer,
) -> None:
    users = [f"u{i % 5}" for i in range(12)]  # u4 is unknown
    as_of = [T0 + (3 * i % 35 - 2) * STEP for i in range(12)]  # before any event, on events, after all
    requests = ray.data.from_arrow(pa.table({"user_id": users, "as_of_ts": as_of, "request_id": list(range(12))}))
    expected, _ = model_inputs(history, request_table(users, as_of), max_len=8, features=["emb", "segment"])
    kwargs = {"table": history.name, "max_len": 8, "features": ["emb", "segment"], "config": hbase_server.config()}
    for batch_format in ("pyarrow", "pandas", "numpy"):
        assembled = requests.map_batches(AssembleSequences, fn_constructor_kwargs=kwargs, concurrency=1,
                                         batch_size=5, batch_format=batch_format)
        got = _numpy(assembled)
        order = np.argsort(got["request_id"])
        assert got["request_id"][order].tolist() == list(range(12))
        assert got["user_id"][order].tolist() == users and got["as_of_ts"][order].tolist() == as_of
        for name in ("lengths", "history_complete", "event_ts", "event_id", "item_id", "dwell_ms", "emb"):
            assert got[name].shape == expected[name].shape, (batch_format, name)
            np.testing.assert_array_equal(got[name][order], expected[name], err_msg=f"{batch_format} {name}")
        # Strings travel as one fixed-size list per row; stacked, they are model_inputs' [batch, max_len].
        assert np.stack(got["event_type"][order]).tolist() == expected["event_type"].tolist()
        assert got["segment"][order].tolist() == expected["segment"].tolist()
    assert expected["lengths"].tolist()[:3] == [0, 1, 4] and expected["event_type"][1].tolist()[:2] == ["view", None]

    scored = _numpy(requests.map_batches(AssembleSequences, fn_constructor_kwargs=kwargs, concurrency=1,
                                         batch_format="pyarrow").map_batches(ScoreModel, concurrency=1))
    order = np.argsort(scored["request_id"])
    np.testing.assert_allclose(scored["score"][order], recency_similarity(expected)["score"])


def _labels(path: Path) -> list[tuple[str, int, float]]:
    """Label times on an event's time (that event must not be seen), between events, before the first and
    after the last."""
    labels = [(f"u{u}", T0 + k * STEP + (STEP // 2 if k % 3 == 0 else 0), float(k % 2))
              for u in range(5) for k in range(-1, EVENTS + 2, 4)]
    pq.write_table(pa.table({"user_id": [x[0] for x in labels], "ts": [x[1] for x in labels],
                             "label": [x[2] for x in labels]}), path, row_group_size=8)
    return labels


LATE = [(T0 + 7 * STEP, 900), (T0 + 7 * STEP + 1, 901)]  # u2's late events: at one label's time, and after it


def _assert_no_leakage(user: str, ts: int, lengths: int, event_ts: np.ndarray, items: np.ndarray) -> None:
    """The row holds exactly the user's newest 16 events strictly before ``ts``, whatever was written later."""
    events = [] if user == "u4" else [(T0 + i * STEP, i) for i in range(EVENTS)] + (LATE if user == "u2" else [])
    seen = sorted((e for e in events if e[0] < ts), reverse=True)[:16]
    assert lengths == len(seen)
    assert (event_ts[:lengths] < ts).all(), "leakage: an event at or after the label time"
    assert event_ts[:lengths].tolist() == [e[0] for e in seen]
    assert sorted(items[:lengths].tolist()) == sorted(e[1] for e in seen)
    assert (items[lengths:] == 0).all() and (event_ts[lengths:] == 0).all()


def test_training_dataset_never_leaks_an_event_at_or_after_the_label_time(
    ray_local: None, history: SequenceTable, hbase_server: HBaseServer, tmp_path: Path,
) -> None:
    labels = _labels(tmp_path / "labels.parquet")
    assert ("u2", T0 + 7 * STEP, 1.0) in labels
    history.write(pa.table({"user_id": ["u2", "u2"], "event_ts": [t for t, _ in LATE],
                            "event_type": ["late", "late"], "item_id": [i for _, i in LATE]}))
    train = training_dataset(str(tmp_path / "labels.parquet"), history.name, max_len=16, features=["segment"],
                             config=hbase_server.config(), batch_size=7).materialize()  # read once, train 3 epochs
    assert {"user_id", "ts", "label", "lengths", "history_complete", "item_id", "event_type", "segment"} <= set(
        train.columns())

    # A training loop: logistic regression on (recency of the last event, length), numpy only.
    w, seen_labels, losses = np.zeros(3), 0, []
    for _epoch in range(3):
        epoch_loss, rows = 0.0, 0
        for batch in train.iter_batches(batch_size=8, batch_format="numpy"):
            n = len(batch["label"])
            for i in range(n):
                _assert_no_leakage(str(batch["user_id"][i]), int(batch["ts"][i]), int(batch["lengths"][i]),
                                   batch["event_ts"][i], batch["item_id"][i])
                if batch["ts"][i] <= LATE[1][0]:
                    assert "late" not in np.stack(batch["event_type"])[i].tolist()
                if batch["user_id"][i] == "u1":
                    ts = int(batch["ts"][i])
                    assert batch["segment"][i] == (None if ts <= T0 else "new" if ts <= T0 + 10 * STEP else "regular")
            recency = np.where(batch["lengths"] > 0, (batch["ts"] - batch["event_ts"][:, 0]) / STEP, 0.0)
            x = np.stack([np.ones(n), recency, batch["lengths"] / 16.0], axis=1)
            p = 1.0 / (1.0 + np.exp(-x @ w))
            y = batch["label"]
            epoch_loss += float(-(y * np.log(p + 1e-9) + (1 - y) * np.log(1 - p + 1e-9)).sum())
            w -= 0.5 * x.T @ (p - y) / n
            rows += n
        assert rows == len(labels)
        seen_labels += rows
        losses.append(epoch_loss / rows)
    assert seen_labels == 3 * len(labels) and losses[-1] < losses[0] and np.isfinite(w).all()


def test_training_dataset_refuses_label_times_in_seconds(
    ray_local: None, history: SequenceTable, hbase_server: HBaseServer, tmp_path: Path,
) -> None:
    labels = ray.data.from_arrow(pa.table({"user_id": ["u1", "u2"], "ts": [T0, T0 // 1000], "label": [1, 0]}))
    train = training_dataset(labels, history.name, max_len=4, config=hbase_server.config())
    with pytest.raises(Exception, match=r"label ts of request 1 is 1767225600: .*seconds") as raised:
        train.take_all()
    assert "allow_any_ts" in str(raised.value)
    # Ray Data re-raises what a UDF raised as its UserCodeException: the type is lost, the message kept.
    assert "InvalidRequestError" in str(raised.value)
    rows = training_dataset(labels, history.name, max_len=4, config=hbase_server.config(),
                            allow_any_ts=True).take_all()
    assert sorted(r["lengths"] for r in rows) == [0, 0]
    with pytest.raises(TableNotFoundError):
        training_dataset(labels, f"{history.name}_missing", max_len=4, config=hbase_server.config())


def test_training_dataset_feeds_iter_torch_batches(
    ray_local: None, history: SequenceTable, hbase_server: HBaseServer, tmp_path: Path,
) -> None:
    torch = pytest.importorskip("torch", reason="the optional torch extra is not installed")
    labels = _labels(tmp_path / "labels.parquet")
    train = training_dataset(str(tmp_path / "labels.parquet"), history.name, max_len=16,
                             config=hbase_server.config())
    numeric = train.select_columns(["label", "ts", "lengths", "item_id", "event_ts"])
    torch.manual_seed(0)
    embed, head = torch.nn.EmbeddingBag(EVENTS, 4, mode="mean"), torch.nn.Linear(4, 1)
    opt = torch.optim.SGD([*embed.parameters(), *head.parameters()], lr=0.1)
    rows = 0
    for batch in numeric.iter_torch_batches(batch_size=8):
        n = len(batch["label"])
        assert batch["item_id"].shape == (n, 16) and batch["item_id"].dtype == torch.int64
        for i in range(n):
            length = int(batch["lengths"][i])
            assert (batch["event_ts"][i, :length] < batch["ts"][i]).all(), "leakage"
            assert not (batch["item_id"][i, :length] * STEP + T0 >= batch["ts"][i]).any(), "leakage"
        mask = torch.arange(16)[None, :] < batch["lengths"][:, None]
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), mask.sum(1).cumsum(0)[:-1]])
        logits = head(embed(batch["item_id"][mask], offsets)).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["label"].float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        rows += n
    assert rows == len(labels) and torch.isfinite(loss)
