"""Structured logging: every line is a fact with fields, carrying the correlation id.

The correlation id is the invoice id wherever there is one, so one invoice can be followed
across the three services' logs (`invoice_id=…`); while a trace is current every line also
carries its `trace_id` (services/common/tracing.py).
"""

from __future__ import annotations

import logging
import logging.config
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from services.common.tracing import add_trace_id


def configure_logging(service: str, level: str = "INFO", fmt: str = "console") -> None:
    """Set up structlog for a process, and the standard `logging` module's root (where
    aiokafka, faust/mode, uvicorn and asyncpg log) through the same renderer; call once at
    start. With `fmt="json"` every line the process logs is one JSON object."""
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _renderer(fmt),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    logging.config.dictConfig(stdlib_logging_config(fmt))
    # `warnings.warn` output too, else it reaches stderr as bare text.
    logging.captureWarnings(True)


def stdlib_logging_config(fmt: str, level: str = "WARNING") -> dict[str, Any]:
    """A `logging.config.dictConfig` for the root logger: one stderr handler rendering each
    record as structlog renders its own lines. Libraries keep their warnings; their chatter is
    dropped. Also what the bridge gives faust's worker, which otherwise replaces the root's
    handlers with its own colored one on stdout."""
    return {
        "version": 1,
        # Loggers the libraries created at import stay enabled (the default would mute them).
        "disable_existing_loggers": False,
        "formatters": {
            "dwsim": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": [
                    structlog.stdlib.add_logger_name,
                    *_shared_processors(),
                    structlog.stdlib.ExtraAdder(),
                ],
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    _renderer(fmt),
                ],
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "dwsim",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
    }


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        add_trace_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _renderer(fmt: str) -> Any:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())


def get_logger(name: str) -> Any:
    """A bound structlog logger."""
    return structlog.get_logger(name)


@contextmanager
def correlation(correlation_id: str | None, **fields: Any) -> Iterator[None]:
    """Bind the correlation id (and other fields) to every log line inside the block."""
    values = {k: v for k, v in {"correlation_id": correlation_id, **fields}.items() if v}
    with structlog.contextvars.bound_contextvars(**values):
        yield
