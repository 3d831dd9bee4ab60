"""Ray Data integration: write Datasets of events into a table (:mod:`~ray_jobs.data.sink`),
assemble sequences inside ``map_batches`` (:mod:`~ray_jobs.data.assemble`), and build
point-in-time training Datasets (:mod:`~ray_jobs.data.training`). Needs ``ray[data]``.

Writing: any Dataset of events — ``user_id``, ``event_ts`` (int64 ms UTC), the table's payload
fields and optionally ``event_id`` — goes through the store's writer, bad rows quarantined
(what numpy batches do to nullable integers: :mod:`ray_jobs.data.sink`)::

    import ray
    from ray_jobs.data import SequenceDatasink

    sink = SequenceDatasink("clicks", quarantine_dir="quarantine/")
    ray.data.read_parquet("data/events").map_batches(clean).write_datasink(sink)
    sink.result.written, sink.result.quarantined, sink.result.by_reason   # counts of the whole job

Scoring: a callable class for ``map_batches``; each actor holds its own connection pool (how
sequences travel in Ray blocks: :mod:`ray_jobs.data.assemble`)::

    from ray_jobs.data import AssembleSequences

    scores = (ray.data.read_parquet("requests/")          # user_id, as_of_ts
              .map_batches(AssembleSequences, fn_constructor_kwargs={"table": "clicks", "max_len": 100},
                           concurrency=4, batch_format="pyarrow")
              .map_batches(Model, concurrency=2))

Training: labels (``user_id``, ``ts`` and label columns) in, one row per label out, with the
sequence and the feature versions strictly before ``ts``::

    from ray_jobs.data import training_dataset

    train = training_dataset("labels/", "clicks", max_len=100)
    for batch in train.select_columns(["label", "lengths", "item_id"]).iter_torch_batches(batch_size=256):
        ...
"""

from ray_jobs.data.assemble import AssembleSequences
from ray_jobs.data.sink import SequenceDatasink, SinkResult
from ray_jobs.data.training import training_dataset

__all__ = ["AssembleSequences", "SequenceDatasink", "SinkResult", "training_dataset"]
