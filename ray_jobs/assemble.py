"""Turning ``(user_id, as_of)`` requests into model inputs: padded numpy arrays plus features.

Shared by batch scoring and training export, so both see exactly the same sequences.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from store import SequenceTable, to_numpy
from store.format import vector_rows


def feature_rule(features: Sequence[str], inclusive: bool) -> dict[str, str]:
    """The time rule of feature reads, for a job's settings when it reads ``features`` (so parts
    made when features were read with ``valid_from <= as_of`` are not trusted)."""
    return {"feature_rule": "valid_from <= as_of" if inclusive else "valid_from < as_of"} if features else {}


def model_inputs(table: SequenceTable, requests: pa.Table, *, max_len: int, features: Sequence[str] = (),
                 inclusive: bool = False, allow_any_ts: bool = False) -> tuple[dict[str, np.ndarray], pa.Table]:
    """The batch a model receives, and the Arrow sequences it was built from.

    ``requests`` is an explicit table of ``user_id`` (any id type the writer accepts) and
    ``as_of_ts`` (:func:`store.inputs.requests.request_table`).

    Keys of the dict: ``user_id`` (object, the ids as given), ``as_of_ts`` (int64),
    ``lengths`` (int32), ``history_complete`` (bool), one ``[batch, max_len]`` array per event
    field (``event_ts``, ``event_id``, ``item_id``, ...; newest event first, padded with 0 /
    None), and one array per feature as of the same time (``[batch]`` for scalars,
    ``[batch, width]`` for vectors; NaN/None where unknown).

    ``inclusive`` is the one time rule of both reads: events and feature versions strictly
    before ``as_of_ts`` (default), or at it too.
    """
    seqs = table.read_sequences(requests, max_len=max_len, inclusive=inclusive, allow_any_ts=allow_any_ts)
    arrays, lengths = to_numpy(seqs, max_len=max_len)
    batch: dict[str, np.ndarray] = {
        "user_id": np.asarray(seqs.column("user_id").to_pylist(), dtype=object),
        "as_of_ts": np.asarray(seqs.column("as_of_ts").to_numpy(), dtype=np.int64),
        "lengths": lengths,
        "history_complete": np.asarray(seqs.column("history_complete").to_numpy(zero_copy_only=False), dtype=bool),
        **arrays,
    }
    if features:
        feats = table.read_features(requests, list(features), inclusive=inclusive,
                              allow_any_ts=allow_any_ts)
        for name in features:
            column = feats.column(name)
            if pa.types.is_fixed_size_list(column.type):
                rows, valid = vector_rows(column)
                values = rows.astype(np.float32)
                values[~valid] = np.nan
                batch[name] = values
            elif pa.types.is_string(column.type):
                batch[name] = np.asarray(column.to_pylist(), dtype=object)
            else:
                batch[name] = column.to_numpy(zero_copy_only=False)
    return batch, seqs
