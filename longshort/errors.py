"""The few exception types longshort raises, each carrying the facts needed to act on it."""

from __future__ import annotations


class LongShortError(Exception):
    """Base class: catch this to handle any longshort failure."""


class BackendError(LongShortError):
    """A generation backend failed and the caller asked for errors to be raised."""

    def __init__(self, message: str, *, agent: str | None = None) -> None:
        super().__init__(message)
        self.agent = agent


class ChecksumError(LongShortError):
    """A shipped file does not match its manifest."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path
