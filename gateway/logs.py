"""structlog, configured once at start-up: JSON lines in production, readable on a terminal."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import time
from typing import Any, BinaryIO

import msgspec
import structlog

from .errors import ConfigError

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class CoalescingLogger:
    """Writes JSON lines, gathering those logged in one event-loop turn into one write.

    The gateway logs a line per delivery, and deliveries finish in groups (one Redis
    reply answers many); a write per line was a system call per webhook. Lines are
    written at the end of the loop turn that logged them, so nothing waits longer.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lines: list[bytes] = []
        self._scheduled = False
        atexit.register(self.flush)

    def msg(self, message: bytes) -> None:
        self._lines.append(message + b"\n")
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg

    def flush(self) -> None:
        self._scheduled = False
        if self._lines:
            lines, self._lines = self._lines, []
            try:
                self._stream.write(b"".join(lines))
                self._stream.flush()
            except (OSError, ValueError):
                pass  # stderr closed (e.g. at interpreter exit): nothing else to tell


class _Timestamp:
    """structlog processor: `timestamp` in ISO 8601 UTC with microseconds.

    Same output as TimeStamper(fmt="iso", utc=True) at a third of the cost: the text up to
    the second is formatted once per second (this runs for every webhook).
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["timestamp"] = f"{self._prefix}.{int((now - second) * 1e6):06d}Z"
        return event


def configure(level: str | None = None, json: bool | None = None) -> None:
    """Set up structlog; `level` defaults to $LOG_LEVEL (info), `json` to "not a terminal"."""
    name = (level or os.environ.get("LOG_LEVEL") or "info").lower()
    if name not in _LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(_LEVELS)}, not {name!r}")
    if json is None:
        json = not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.processors.add_log_level,
        _Timestamp(),
    ]
    if json:
        encoder = msgspec.json.Encoder(enc_hook=str)
        processors = [
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=lambda obj, **_: encoder.encode(obj)),
        ]
        output = CoalescingLogger(sys.stderr.buffer)
        factory: Any = lambda *args: output  # noqa: E731
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
