"""The exceptions of the shared machinery, named for what went wrong."""

from __future__ import annotations


class DwsimError(Exception):
    """Base of dwsim's own errors."""


class MigrationFailed(DwsimError):
    """A migration file could not be applied; nothing of it remains."""

    def __init__(self, path: str, cause: BaseException) -> None:
        super().__init__(f"migration {path} failed: {cause}")
        self.path = path


class InvalidEvent(DwsimError):
    """A message that does not validate against its topic's schema."""
