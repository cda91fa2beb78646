"""Shared fixtures: a real Redis (REDIS_URL) or the embedded store, isolated by key prefix."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio as redis

from gateway.app import create_app
from gateway.config import Config, parse_config
from gateway.store import Store
from tests.services import RedisServer, require_redis

REDIS_URL = os.environ.get("REDIS_URL", "")

# The documented messageId namespace, written out here rather than imported: if the code's
# namespace or input format ever changes, every destination would take replays as new
# events, and the tests must notice.
MESSAGE_ID_NAMESPACE = uuid.UUID("6c1b7e36-3f7e-5a38-9d2f-2b0f1c6a8e51")


def expected_message_id(
    source: str, delivery_id: str, index: int, event: str | None, type: str = "track"
) -> str:
    """The messageId docs/events.md documents, computed with the standard library: `event` is
    the track event's name (None for the other types)."""
    name = f"{source}\n{delivery_id}\n{index}\n{type}\n{event or ''}"
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, name))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis the tests use; CI sets REDIS_URL. Skips if none answers (fails in CI)."""
    return require_redis(REDIS_URL or "redis://127.0.0.1:6379/0")


@pytest.fixture
def private_redis():
    """A redis-server of the test's own on a free port, to stop and start at will."""
    server = RedisServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def vendor():
    """A local server that answers like a vendor's API (tests/destinations/conftest.py)."""
    from tests.destinations.conftest import VendorServer

    server = VendorServer()
    server.start()
    yield server
    server.stop(wait=False)  # its port is its own: the next test does not wait for it


async def group_settled(client: redis.Redis, stream: str, group: str) -> bool:
    """`group` has read up to the stream's last entry and acknowledged all it read."""
    last = (await client.xinfo_stream(stream))["last-generated-id"]
    [info] = [g for g in await client.xinfo_groups(stream) if g["name"] == group.encode()]
    return info["last-delivered-id"] == last and info["pending"] == 0


async def pending_idle(client: redis.Redis, stream: str, group: str, ms: int) -> bool:
    """`group` has pending entries and every one has been idle (unacknowledged) `ms`."""
    entries = await client.xpending_range(stream, group, "-", "+", 1000)
    return bool(entries) and all(e["time_since_delivered"] >= ms for e in entries)


async def until(
    condition: Callable[[], Any], seconds: float = 10, what: str = "the condition"
) -> Any:
    """Wait for `condition()` (sync or async) to be truthy; fail after `seconds`.

    The way to synchronise with a worker or a server: never a fixed sleep.
    """
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {seconds} s for {what}; last value: {result!r}")
        await asyncio.sleep(0.02)


def drop_keys(redis_url: str, prefix: str) -> None:
    """Delete every key under `prefix` (the sync twin of drop_prefix, for process tests)."""
    import redis as sync_redis

    client = sync_redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


async def drop_prefix(client: redis.Redis, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)


@pytest.fixture(params=["redis", "embedded"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """A Store on the real Redis (own key prefix, cleaned up) and on the embedded one."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        st = Store.connect(url, prefix, timeout=2.0)
    else:
        st = Store.connect("", prefix, timeout=2.0)
    yield st
    await drop_prefix(st.client, prefix)
    await st.close()


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[Store]:
    """A Store on the real Redis only."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    st = Store.connect(redis_url, prefix, timeout=2.0)
    yield st
    await drop_prefix(st.client, prefix)
    await st.close()


class Clock:
    """A settable clock for signature windows."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


def config(text: str, **env: str) -> Config:
    return parse_config(text, "test.yaml", env)


def _app(
    cfg: Config | str, store: Store, clock: Callable[[], float] | None, env: dict[str, str]
) -> Any:
    if isinstance(cfg, str):
        cfg = config(cfg, **env)
    if clock is None:
        return create_app(cfg, store=store)
    return create_app(cfg, store=store, clock=clock)


# GET /metrics (and the console) answer on the operator listener: the default config's
# port 9180, as an ASGI client's URL sets the connection's port.
OPERATOR = "http://127.0.0.1:9180"


@asynccontextmanager
async def gateway_client(
    cfg: Config | str, store: Store, clock: Callable[[], float] | None = None, **env: str
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to a gateway app built from `cfg` over `store`."""
    transport = httpx.ASGITransport(app=_app(cfg, store, clock, env))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


@asynccontextmanager
async def served_gateway(
    cfg: Config | str, store: Store, clock: Callable[[], float] | None = None, **env: str
) -> AsyncIterator[str]:
    """The gateway app behind a real uvicorn server on a free port, in this event loop
    (so the test shares its store); yields the base URL. For tests where the HTTP layer
    matters: real sockets, real parsing, what a vendor's client really sends."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            _app(cfg, store, clock, env),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",  # the test owns the store and closes it
        )
    )
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started or task.done(), what="uvicorn to start")
    if task.done():
        task.result()  # raises why it did not start
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def raw_entries(store: Store, source: str) -> list[dict[str, Any]]:
    """The raw stream of a source, decoded for assertions (body stays bytes)."""
    out = []
    for entry_id, fields in await store.client.xrange(store.keys.raw(source)):
        row = {k.decode(): v for k, v in fields.items()}
        for key in ("source", "delivery_id", "received_at", "headers"):
            row[key] = row[key].decode()
        row["id"] = entry_id.decode()
        out.append(row)
    return out
