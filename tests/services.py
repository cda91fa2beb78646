"""The real services the suite talks to, and what happens when one is missing.

Outside CI a missing service skips the tests that need it, with the command that starts
it. In CI (`CI=true`, which `.ci/run` sets) it fails them instead: a green run must mean
that every test ran against the real thing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import NoReturn

import pytest
import redis as sync_redis

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")

PG_DSN = os.environ.get("POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")

START = {
    "redis": "start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 "
    "--save '' --appendonly no (or set REDIS_URL)",
    "redis-server": "install it: apt-get install redis-server (the tests start private "
    "redis-server processes on free ports)",
    "postgres": "start it with: pg_ctlcluster --skip-systemctl-redirect "
    "$(ls /etc/postgresql) main start (or set POSTGRES_DSN)",
    "postgres-db": "create the database: createdb -h 127.0.0.1 -U postgres test "
    "(or set POSTGRES_DSN)",
    "nats": "start it with: nats-server -a 127.0.0.1 -p 4222 -js (JetStream on; or set NATS_URL)",
    "tools": "install them: apt-get install curl openssl (the README's quick start uses them)",
    "js": "install Segment's JavaScript clients: npm ci --prefix tests/js (node 20 and npm)",
    "chromium": "install Debian's Chromium: apt-get install -y chromium (Playwright's own "
    "browser download is not used)",
    "playwright": "install the dev extra: pip install -e '.[dev]' (playwright drives Chromium)",
}


def unavailable(service: str, problem: str) -> NoReturn:
    """Skip (outside CI) or fail (in CI) the current test: `service` is not there."""
    message = f"{problem}; {START[service]}"
    if IN_CI:
        pytest.fail(f"CI=true and a service the suite needs is missing: {message}", pytrace=False)
    pytest.skip(message)


def _in_a_thread(coro_fn) -> Exception | None:
    """Run an async check on a loop of its own (callable from sync and async tests)."""
    error: list[Exception] = []

    def run() -> None:
        try:
            asyncio.run(coro_fn())
        except Exception as e:  # reported to the caller, who says what is missing
            error.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        return TimeoutError("no answer within 10 s")
    return error[0] if error else None


def require_redis(url: str) -> str:
    try:
        sync_redis.Redis.from_url(url, socket_timeout=2).ping()
    except (sync_redis.RedisError, OSError, ValueError) as e:
        unavailable("redis", f"no Redis answers at {url}: {e}")
    return url


def require_postgres(dsn: str = PG_DSN) -> str:
    import asyncpg

    async def check() -> None:
        conn = await asyncpg.connect(dsn, timeout=3)
        await conn.close()

    error = _in_a_thread(check)
    if isinstance(
        error, asyncpg.InvalidCatalogNameError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        # The server is up: what is missing is the database or the role, not a start.
        unavailable("postgres-db", f"PostgreSQL at {dsn} refused: {error}")
    if error is not None:
        unavailable("postgres", f"no PostgreSQL at {dsn}: {type(error).__name__}: {error}")
    return dsn


def require_nats(url: str = NATS_URL) -> str:
    """NATS answers its INFO line with JetStream on (the nats destination needs it)."""
    host, _, port = url.removeprefix("nats://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2) as sock:
            line = sock.makefile("rb").readline(65536)
    except (OSError, ValueError) as e:
        unavailable("nats", f"no NATS at {url}: {e}")
    if not line.startswith(b"INFO "):
        unavailable("nats", f"{url} did not answer like NATS: {line[:60]!r}")
    if not json.loads(line[5:]).get("jetstream"):
        unavailable("nats", f"NATS at {url} runs without JetStream")
    return url


def require_binary(name: str, service: str = "redis-server") -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(service, f"no `{name}` on PATH")
    return path


JS = Path(__file__).resolve().parent / "js"


def require_js(package: str) -> Path:
    """tests/js/, with node on PATH and `package` installed there by npm."""
    require_binary("node", "js")
    if not (JS / "node_modules" / package / "package.json").is_file():
        unavailable("js", f"{package} is not installed in tests/js")
    return JS


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def require_chromium() -> str:
    """Debian's Chromium and the playwright package that drives it; returns its path."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError as e:
        unavailable("playwright", f"the playwright package is missing ({e})")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        unavailable("chromium", f"no Chromium at {CHROMIUM}")
    return CHROMIUM


class RedisServer:
    """A private redis-server on a free port, to stop, restart and stall."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = require_binary("redis-server")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "yes",
                # A replica writes the RDB it syncs from its primary to disk: not into
                # the working directory (the checkout)
                "--dir",
                tempfile.gettempdir(),
                "--dbfilename",
                f"test-redis-{self.port}.rdb",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = sync_redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except sync_redis.ConnectionError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"private redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        Path(tempfile.gettempdir(), f"test-redis-{self.port}.rdb").unlink(missing_ok=True)
