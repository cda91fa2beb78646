"""The operator console: server-rendered pages (Starlette + Jinja2) over what the gateway
stores, at /console/ on the operator listener (docs/console.md).

Each page module (overview, deliveries, dead letters, quarantine, profiles, playground)
exposes `routes(console) -> list[Route]`; they share the `Console` context: the config,
the store, the login (auth.py), rendering and masking. Nothing here is built at import.
"""

from __future__ import annotations

import contextlib
import hmac
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..config import Config
from ..errors import StoreUnavailable
from ..metrics import Metrics
from ..store import CLUSTER_ERRORS, Store
from .auth import COOKIE, Auth, User, page
from .mask import masked

HERE = Path(__file__).parent


class Console:
    """What every page needs."""

    def __init__(
        self, config: Config, store: Store, metrics: Metrics, clock: Callable[[], float]
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.auth = Auth(config, store, clock)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        env = self.templates.env
        env.filters["ms_time"] = _ms_time
        env.filters["ago"] = lambda ms: _ago(ms, self.clock())
        env.globals["quote"] = lambda text: quote(str(text), safe="")

    def render(
        self, request: Request, user: User | None, template: str, status: int = 200, **context: Any
    ) -> Response:
        return self.templates.TemplateResponse(
            request,
            template,
            {
                "user": user,
                "csrf": self.auth.csrf_token(user) if user else "",
                "config": self.config,
                "show_bodies": self.config.console.show_bodies,
                "show_personal_data": self.config.console.show_personal_data,
                "notice": self.notice(request),
                **context,
            },
            status_code=status,
            headers=_NO_STORE,
        )

    def notice(self, request: Request) -> str:
        """What an action did, carried by the redirect after it (`done`): shown only with
        the tag this gateway made, so a link from elsewhere cannot put words there."""
        done = request.query_params.get("done", "")
        tag = request.query_params.get("tag", "")
        if done and hmac.compare_digest(tag, self.auth.sign(done)):
            return done
        return ""

    def after(self, path: str, query: dict[str, str], done: str) -> RedirectResponse:
        """The redirect after an action: back to `path` with its query and the notice."""
        done = done[:1500]
        params = {**query, "done": done, "tag": self.auth.sign(done)}
        return RedirectResponse(f"{path}?{urlencode(params)}", status_code=303)

    def body(self, value: Any) -> Any:
        """A stored body or event as the console may show it (console.show_bodies)."""
        return value if self.config.console.show_bodies else masked(value)

    def personal(self, value: Any) -> Any:
        """Personal data of the identity graph (console.show_personal_data)."""
        return value if self.config.console.show_personal_data else masked(value)

    async def refused(self, request: Request, user: User | None, why: str) -> Response:
        status = 401 if user is None else 403
        return self.render(request, user, "refused.html", status=status, why=why)


_DOWN: tuple[type[Exception], ...] = (
    StoreUnavailable, ConnectionError, TimeoutError, RedisConnectionError, RedisTimeoutError,
    *CLUSTER_ERRORS,
)  # fmt: skip

# Pages hold what the gateway received: never kept by a browser or a proxy cache.
_NO_STORE = {"cache-control": "no-store", "x-frame-options": "DENY"}


def create_console(
    config: Config, store: Store, metrics: Metrics, clock: Callable[[], float] = time.time
) -> Starlette:
    from . import actions, deliveries, overview, playground, profiles

    console = Console(config, store, metrics, clock)
    routes: list[BaseRoute] = [
        Route("/login", _login(console), methods=["GET", "POST"]),
        Route("/logout", _logout(console), methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    for module in (overview, deliveries, actions, profiles, playground):
        routes += module.routes(console)

    async def redis_down(request: Request, error: Exception) -> Response:
        # Any page, when Redis does not answer: say so (503), not a bare 500.
        user = None
        with contextlib.suppress(*_DOWN):
            user = await console.auth.user(request)
        why = f"Redis does not answer ({type(error).__name__}): try again in a moment"
        return console.render(
            request, user, "refused.html", status=503, why=why, title="Unavailable"
        )

    return Starlette(routes=routes, exception_handlers={e: redis_down for e in _DOWN})


def _login(console: Console) -> Callable[[Request], Any]:
    async def login(request: Request) -> Response:
        target = _safe_next(request.query_params.get("next", ""))
        if request.method == "GET":
            return console.render(request, None, "login.html", next=target, error="")
        form = await request.form()
        outcome = await console.auth.login(str(form.get("name", "")), str(form.get("password", "")))
        if isinstance(outcome, str):
            return console.render(
                request, None, "login.html", status=401, next=target, error=outcome
            )
        response = RedirectResponse(target, status_code=303)
        console.auth.set_cookie(response, request, outcome)
        return response

    return login


def _logout(console: Console) -> Callable[[Request], Any]:
    async def logout(request: Request) -> Response:
        user = await console.auth.user(request)
        if user is not None:
            await console.auth.logout(user)
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(COOKIE, path="/console")
        return response

    return logout


def _safe_next(target: str) -> str:
    """Only a path of the console itself (never another site) after a login."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/console/") or "\\" in target:
        return "/console/"
    return target


def _ms_time(ms: Any) -> str:
    try:
        value = int(ms)
    except (TypeError, ValueError):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value / 1000)) + f".{value % 1000:03d}Z"


def _ago(ms: Any, now: float) -> str:
    try:
        seconds = now - int(ms) / 1000
    except (TypeError, ValueError):
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{max(0, int(seconds))}s ago"


__all__ = ["Console", "create_console", "page"]
