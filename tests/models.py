"""Models the tests score with, importable by Ray workers as ``tests.models:NAME`` (Ray puts the
driver's working directory, the repository, on its workers' ``sys.path``)."""

from __future__ import annotations

import numpy as np


def failing_model(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Always raises: how a model error is reported."""
    raise ValueError(f"this model always fails ({len(batch['lengths'])} requests)")
