"""The operator surfaces: GET /metrics and the console, kept off the webhook port.

By default they answer only on a listener of their own (`operator.listen`, 127.0.0.1:9180),
which `serve` binds beside the webhook port: a stranger who can post webhooks cannot read
every source's name and volume. With `operator.listen: public` they answer on the webhook
port instead, /metrics behind `operator.metrics_token` (a bearer token) and the console
behind its login.

GatewayApp sends a request here when it arrived on the operator listener's port (the
ASGI scope's `server`, the local address of the connection: not a header a client sets),
or, with `public`, when its path is /metrics or under /console.
"""

from __future__ import annotations

import hmac
import socket
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from . import __version__
from .config import Config
from .metrics import Metrics
from .store import Store


async def healthz(request: Request) -> JSONResponse:
    """GET /healthz: the process answers (on the webhook port and the operator listener)."""
    return JSONResponse({"status": "ok", "version": __version__})


def is_operator_path(path: str) -> bool:
    return path == "/metrics" or path == "/console" or path.startswith("/console/")


def create_operator_app(
    config: Config,
    store: Store,
    metrics: Metrics,
    refresh: Callable[[], Awaitable[None]],
    clock: Callable[[], float],
) -> Starlette:
    """/metrics (after `refresh`, which reads the streams' lag), /healthz, and the console
    at /console/ when it is enabled."""
    token = config.operator.metrics_token
    expected = f"Bearer {token.reveal()}".encode() if token is not None else None

    async def metrics_endpoint(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return JSONResponse(
                    {
                        "status": "rejected",
                        "reason": "unauthorized",
                        "detail": "send Authorization: Bearer <operator.metrics_token>",
                    },
                    status_code=401,
                    headers={"www-authenticate": 'Bearer realm="metrics"'},
                )
        await refresh()
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [Route("/metrics", metrics_endpoint)]
    if config.operator.address() is not None:
        # Its own listener: a health check for it, and the console at its root.
        routes.append(Route("/healthz", healthz))
        if config.console.enabled:
            routes.append(Route("/", lambda request: RedirectResponse("/console/")))
    if config.console.enabled:
        from .console import create_console

        routes.append(Mount("/console", create_console(config, store, metrics, clock=clock)))
    return Starlette(routes=routes)


def bind_listener(host: str, port: int) -> socket.socket:
    """The operator listener's socket (as uvicorn binds its own); OSError says which
    setting to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(
            f"operator.listen {host}:{port}: {e.strerror or e}: the console and /metrics "
            "listen there; choose a free port (or 0 for any) in operator.listen"
        ) from None
    sock.set_inheritable(True)
    return sock
