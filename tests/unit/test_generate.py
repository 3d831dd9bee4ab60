"""The data generator: same seed, same bytes; Zipf activity, ties, disorder, every kind of bad row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_jobs.generate import generate
from store import DEFAULT_SCHEMA, TableSpec
from store.format.payload import PayloadCodec
from store.inputs.rows import conform


def test_generate_is_reproducible_and_has_every_ingredient(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", users=50, events=5_000, seed=3, bad_fraction=0.02, files=2, row_group_rows=1_000)
    b = generate(tmp_path / "b", users=50, events=5_000, seed=3, bad_fraction=0.02, files=2, row_group_rows=1_000)
    assert [Path(f).read_bytes() for f in a.files] == [Path(f).read_bytes() for f in b.files]
    assert pq.ParquetFile(a.files[0]).metadata.num_row_groups == 3
    table = pq.read_table(a.files)
    ts = table.column("event_ts").to_numpy()
    assert (ts[1:] < ts[:-1]).any(), "some rows out of order"
    _, per_user = np.unique(table.column("user_id").drop_null().to_numpy(zero_copy_only=False), return_counts=True)
    assert per_user.max() > 10 * np.median(per_user), "a few users dominate (Zipf)"
    pairs = list(zip(table.column("user_id").to_pylist(), ts.tolist(), strict=True))
    assert len(pairs) > len(set(pairs)), "same-millisecond ties"
    assert a.bad_rows == 100 and len(set(table.column("event_type").to_pylist())) >= 4

    # Every malformed row is one the writer's validation rejects, and every kind is there.
    reasons: dict[str, int] = {}
    limit = TableSpec("t").max_payload_bytes
    for batch in table.to_batches():
        batch, verdicts = conform(batch, DEFAULT_SCHEMA)
        values, _ = PayloadCodec([DEFAULT_SCHEMA]).encode(batch)  # the writer's size check
        too_large = np.array([len(v) > limit for v in values]) & verdicts.valid
        for reason in [*verdicts.reason[~verdicts.valid].tolist(), *["payload_too_large"] * int(too_large.sum())]:
            reasons[reason] = reasons.get(reason, 0) + 1
    assert sum(reasons.values()) == a.bad_rows
    assert set(reasons) == {"missing_user", "user_id_too_long", "negative_timestamp", "seconds_not_ms",
                            "future_timestamp", "wrong_type", "missing_field", "payload_too_large"}, reasons


def test_every_user_keeps_its_drawn_events_and_heavy_users_get_exactly_theirs(tmp_path: Path) -> None:
    log = generate(tmp_path / "h", users=300, events=3_000, seed=5, files=2, row_group_rows=500,
                   heavy_users=[5_000, 20_000])
    table = pq.read_table(log.files)
    ids, counts = np.unique(table.column("user_id").to_numpy(zero_copy_only=False), return_counts=True)
    by_user = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    assert by_user.pop("heavy0000000") == 5_000 and by_user.pop("heavy0000001") == 20_000
    assert len(by_user) == 300 and sum(by_user.values()) == 3_000, "every Zipf user is there, no row twice"
    assert (log.events, log.users, log.max_user_events) == (28_000, 302, 20_000)
    heavy = table.filter(pc.equal(table.column("user_id"), "heavy0000001")).column("event_ts").to_numpy()
    assert np.unique(heavy).size > 0.9 * heavy.size, "a deep history spreads over time, with some ties"
