"""Errors of the HBase runtime. Each says what went wrong and what to do about it."""

from __future__ import annotations


class HBaseRuntimeError(RuntimeError):
    """The local HBase runtime could not be fetched, started, probed or stopped.

    ``hint`` tells the user what to do; ``log_tail`` holds the last lines of the
    relevant log when there is one. ``str()`` includes both.
    """

    def __init__(self, message: str, hint: str = "", log_tail: str = "") -> None:
        super().__init__(message, hint, log_tail)
        self.message = message
        self.hint = hint
        self.log_tail = log_tail

    def __str__(self) -> str:
        parts = [self.message]
        if self.hint:
            parts.append(self.hint)
        if self.log_tail:
            parts.append("--- last log lines ---\n" + self.log_tail.rstrip())
        return "\n".join(parts)


class JavaNotFoundError(HBaseRuntimeError):
    """No usable JDK (17 or newer) was found."""


class MavenError(HBaseRuntimeError):
    """Maven is missing, or could not fetch the HBase jars."""


class PortBusyError(HBaseRuntimeError):
    """A port the runtime was asked to use is already taken."""


class StartupError(HBaseRuntimeError):
    """HBase or a Thrift server did not become usable."""
