"""The exceptions seqstore raises. Catch :class:`SeqStoreError` for all of them.

Each subclass also inherits the builtin it resembles, so ``except ValueError`` and
``except ConnectionError`` work too. All of them pickle with their attributes (Ray ships
exceptions between processes).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "HBaseError",
    "InvalidEventError",
    "InvalidRequestError",
    "SchemaError",
    "SeqStoreError",
    "StoreClosedError",
    "StoreUnavailableError",
    "TableExistsError",
    "TableNotFoundError",
]


class SeqStoreError(Exception):
    """Root of every error seqstore raises."""


class ConfigError(SeqStoreError, ValueError):
    """A configuration value is missing, unknown or malformed."""


class InvalidRequestError(SeqStoreError, ValueError):
    """A request's arguments cannot be sent or answered as given (not retried)."""


class StoreUnavailableError(SeqStoreError, ConnectionError):
    """HBase could not be reached or did not answer in time. Retryable.

    ``unavailable_after_s`` is the failing call's budget (``Config.unavailable_after_ms``),
    so that a job retrying it knows how long to keep trying; 0 when not known.
    """

    def __init__(self, message: str, endpoint: str = "", unavailable_after_s: float = 0.0) -> None:
        super().__init__(message, endpoint, unavailable_after_s)
        self.message = message
        self.endpoint = endpoint
        self.unavailable_after_s = unavailable_after_s

    def __str__(self) -> str:
        return f"{self.message} ({self.endpoint})" if self.endpoint else self.message


class StoreClosedError(SeqStoreError, RuntimeError):
    """The store (its connection pool) was closed; open a new :class:`SequenceStore`. Not retryable."""


class SchemaError(SeqStoreError, ValueError):
    """Data or a schema change does not fit a table's registered schema."""


class TableNotFoundError(SeqStoreError, LookupError):
    """The table (or its registration in the metadata table) does not exist."""


class TableExistsError(SeqStoreError, ValueError):
    """A table of that name exists already (drop it first, or pick another name)."""


class InvalidEventError(SeqStoreError, ValueError):
    """One input row was rejected. ``reason`` is a :class:`~store.inputs.rows.Reason` code."""

    def __init__(self, reason: str, field: str, position: int, detail: str = "") -> None:
        super().__init__(reason, field, position, detail)
        self.reason = reason
        self.field = field
        self.position = position
        self.detail = detail

    def __str__(self) -> str:
        text = f"row {self.position}: {self.reason} in field {self.field!r}"
        return f"{text}: {self.detail}" if self.detail else text


class HBaseError(SeqStoreError):
    """HBase refused an operation for a reason that retrying cannot fix (not retried)."""
