"""A real `webhook-gateway serve` process for the front-door tests that need one."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import drop_keys
from tests.test_cli import Server


@pytest.fixture
def serve(tmp_path, redis_url) -> Iterator[Callable[..., Server]]:
    """Start `webhook-gateway serve --no-workers` with a config; stopped and cleaned after.

    The config reads `${REDIS_URL}` and `${PREFIX}` (a fresh key prefix); `redis` points
    the process at another Redis (a private one), `env` adds variables (the secrets).
    """
    started: list[tuple[Server, str, str]] = []

    def start(config: str, env: dict[str, str] | None = None, redis: str = "") -> Server:
        prefix = f"test-{uuid.uuid4().hex[:12]}"
        where = tmp_path / f"server-{len(started)}"
        where.mkdir()
        variables = {
            "REDIS_URL": redis or redis_url,
            "PREFIX": prefix,
            "LOG_LEVEL": "info",
            **(env or {}),
        }
        server = Server(where, variables, "--no-workers", config=config)
        started.append((server, prefix, redis or redis_url))
        return server

    yield start
    for server, prefix, url in started:
        server.stop()
        if url == redis_url:  # a private Redis is the test's own, gone with it
            drop_keys(url, prefix)
