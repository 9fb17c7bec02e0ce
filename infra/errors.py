"""What can go wrong while starting or stopping the local infrastructure."""

from __future__ import annotations


class InfraError(RuntimeError):
    """Base of every infrastructure failure; the message says what to do."""


class PortInUse(InfraError):
    """A configured port is already taken by another process."""


class StartFailed(InfraError):
    """A server did not become healthy before its deadline."""
