"""Structured logging: every line is a fact with fields, carrying the correlation id.

The correlation id is the invoice id wherever there is one, so one invoice can be followed
across the three services' logs (`invoice_id=…`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog


def configure_logging(service: str, level: str = "INFO", fmt: str = "console") -> None:
    """Set up structlog for a process; call once at start."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries log through the standard module; keep their warnings, drop their chatter.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def get_logger(name: str) -> Any:
    """A bound structlog logger."""
    return structlog.get_logger(name)


@contextmanager
def correlation(correlation_id: str | None, **fields: Any) -> Iterator[None]:
    """Bind the correlation id (and other fields) to every log line inside the block."""
    values = {k: v for k, v in {"correlation_id": correlation_id, **fields}.items() if v}
    with structlog.contextvars.bound_contextvars(**values):
        yield
