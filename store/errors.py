"""The exceptions seqstore raises. Catch :class:`SeqStoreError` for all of them.

Each subclass also inherits the builtin it resembles, so ``except ValueError`` and
``except ConnectionError`` work too. All of them pickle with their attributes (Ray ships
exceptions between processes).
"""

from __future__ import annotations


class SeqStoreError(Exception):
    """Root of every error seqstore raises."""


class ConfigError(SeqStoreError, ValueError):
    """A configuration value is missing, unknown or malformed."""


class StoreUnavailableError(SeqStoreError, ConnectionError):
    """HBase could not be reached or did not answer in time. Retryable."""

    def __init__(self, message: str, *, endpoint: str = "") -> None:
        super().__init__(message, endpoint)
        self.message = message
        self.endpoint = endpoint

    def __str__(self) -> str:
        return f"{self.message} ({self.endpoint})" if self.endpoint else self.message
