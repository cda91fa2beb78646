"""structlog, configured once at start-up: JSON lines in production, readable on a terminal."""

from __future__ import annotations

import logging
import os
import sys

import msgspec
import structlog

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def configure(level: str | None = None, json: bool | None = None) -> None:
    """Set up structlog; `level` defaults to $LOG_LEVEL (info), `json` to "not a terminal"."""
    name = (level or os.environ.get("LOG_LEVEL") or "info").lower()
    if name not in _LEVELS:
        raise ValueError(f"LOG_LEVEL must be one of {', '.join(_LEVELS)}, not {name!r}")
    if json is None:
        json = not sys.stderr.isatty()
    shared = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        encoder = msgspec.json.Encoder(enc_hook=str)
        processors = [
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=lambda obj, **_: encoder.encode(obj)),
        ]
        factory = structlog.BytesLoggerFactory(sys.stderr.buffer)
    else:
        processors = [*shared, structlog.dev.ConsoleRenderer()]
        factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[name]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # Libraries that log through the standard library (uvicorn) follow the same level.
    logging.basicConfig(
        level=max(_LEVELS[name], logging.WARNING),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
