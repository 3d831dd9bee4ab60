"""The one backoff policy: capped exponential delays with "equal jitter".

Used by the connection between retries of a call (:func:`store.io.connection.backoff_delays`)
and by the jobs' runner before re-running a failed unit.
"""

from __future__ import annotations

import random


def backoff_s(attempt: int, *, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Delay before retry ``attempt`` (0, 1, ...): a ceiling of ``base_s * 2**attempt`` capped at
    ``max_s``, of which a random half is jitter (the delay is between half and all of it), so
    callers that failed together do not all retry at the same instant, yet each waits."""
    ceiling = min(max_s, base_s * 2.0 ** max(0, attempt))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
