"""A local HTTP server that behaves like a vendor's API: it records requests and answers
from a script (200s, 4xx with bodies, 429 with Retry-After, 500, or hanging)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import free_port

HANG = "hang"


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


@dataclass
class VendorServer:
    """Answers come from `script` in order (then `default`); a callable answer gets the
    request and returns (status, headers, body)."""

    port: int = field(default_factory=free_port)
    requests: list[Seen] = field(default_factory=list)
    script: deque[Any] = field(default_factory=deque)
    default: Any = (200, {}, b'{"status": 1}')

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, *answers: Any) -> None:
        self.script.extend(answers)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        seen = Seen(
            request.method,
            request.url.path,
            request.url.query,
            {k.lower(): v for k, v in request.headers.items()},
            body,
            time.time(),
        )
        self.requests.append(seen)
        answer = self.script.popleft() if self.script else self.default
        if callable(answer):
            answer = answer(seen)
        if answer == HANG:
            # Hang like a stuck vendor until the client gives up, but not past stop():
            # a hung handler would otherwise hold the server's shutdown for seconds.
            deadline = time.monotonic() + 30
            while not self.server.should_exit and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            answer = (200, {}, b"")
        status, headers, content = answer
        if isinstance(content, dict | list):
            content = msgspec.json.encode(content)
        return Response(content, status_code=status, headers=headers, media_type="application/json")

    def start(self) -> None:
        app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["POST", "GET"])])
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            if not self.thread.is_alive():
                break  # it failed to start (its port taken, say)
            time.sleep(0.01)
        if not self.server.started:
            raise RuntimeError(f"the vendor server on port {self.port} did not start")

    def stop(self, wait: bool = True) -> None:
        """Stop serving; `wait=False` lets uvicorn's shutdown (0.1-0.2 s of its own sleeps)
        finish in the background, for a server nothing will call again."""
        self.server.should_exit = True
        if wait:
            self.thread.join(timeout=5)


def event(
    n: int = 0, name: str = "Order Completed", kind: str = "track", **extra: Any
) -> dict[str, Any]:
    """A Segment-shaped event as it sits in the events stream."""
    body = {
        "type": kind,
        "messageId": f"00000000-0000-5000-8000-{n:012d}",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "receivedAt": "2024-05-01T12:00:01.000Z",
        "context": {
            "source": {
                "name": "stripe",
                "type": "stripe",
                "deliveryId": f"evt_{n}",
                "eventType": "charge.succeeded",
            },
            "library": {"name": "webhook-gateway", "version": "0.1.0"},
        },
        "anonymousId": f"stripe:cus_{n}",
        "properties": {"order_id": f"o{n}", "revenue": 10.0 + n, "currency": "USD"},
    }
    if kind == "track":
        body["event"] = name
    else:
        body.pop("properties")
        body["traits"] = {"email": f"u{n}@example.com"}
    body.update(extra)
    return body


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
