"""Who is looking: the console's login, sessions, roles, CSRF tokens and audit log.

- Users and their passwords come from the config (the passwords from the environment);
  a password is compared in constant time, and a name with LOCK_AFTER failed logins in
  LOCK_FOR is refused for that long (counted in Redis: every process agrees).
- A login sets one cookie: the user, role and a random nonce, signed (itsdangerous, as
  Starlette's SessionMiddleware signs) with console.session_secret (default: derived
  from every user's password, so the processes agree and a changed password ends the
  sessions). HttpOnly, SameSite=Strict, Secure over HTTPS, Path=/console, and refused
  once older than console.session_ttl. The role is read again from the config on every
  request: a user removed or demoted loses access at once.
- Every action (POST) needs the operator role, the CSRF token of the session (an HMAC
  of its nonce) in the form, and `confirm` set by the form's confirmation step. Each is
  written to the audit log (Redis stream, and the structured log) with who did it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any
from urllib.parse import quote

import structlog
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ..config import Config
from ..store import Store

COOKIE = "gw_console"
ROLES = {"read-only": 0, "operator": 1}
LOCK_AFTER = 10
LOCK_FOR = 15 * 60
AUDIT_KEPT = 100_000

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class User:
    name: str
    role: str
    nonce: str

    @property
    def operator(self) -> bool:
        return self.role == "operator"


class Forbidden(Exception):
    """An action refused: the message says why (shown to the user, status 403)."""


class Auth:
    def __init__(self, config: Config, store: Store, clock: Callable[[], float]) -> None:
        self.config = config.console
        self.store = store
        self.clock = clock
        self.secret = b""
        self.serializer: URLSafeTimedSerializer | None = None
        self.ttl = max(60, int(float(config.console.session_ttl)))
        self.log = structlog.get_logger("gateway.console")

    async def ready(self) -> URLSafeTimedSerializer:
        """The cookie signer, with console.session_secret, or else a random secret made
        once and kept in Redis (SET NX: every process takes the first one made). Never a
        key derived from the passwords: a user could test guesses of another's password
        against their own cookie, offline."""
        if self.serializer is None:
            if self.config.session_secret is not None:
                secret = self.config.session_secret.reveal().encode()
            else:
                key = self.store.keys.console_secret()
                await self.store.client.set(key, secrets.token_hex(32), nx=True)
                secret = await self.store.client.get(key)
            self.secret = secret
            self.serializer = URLSafeTimedSerializer(secret, salt="console-session")
        return self.serializer

    # --- sessions -------------------------------------------------------------------------

    async def user(self, request: Request) -> User | None:
        """The logged-in user of the request: a cookie this gateway signed, younger than
        session_ttl, of a user still configured with the same password, not logged out."""
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return None
        serializer = await self.ready()
        try:
            data = serializer.loads(cookie, max_age=self.ttl)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict):
            return None
        name, nonce = data.get("u"), str(data.get("n", ""))
        configured = self.config.users.get(name) if isinstance(name, str) else None
        if configured is None or not hmac.compare_digest(
            str(data.get("p", "")), self._password_tag(name, configured.password.reveal())
        ):
            return None  # removed, or its password changed since
        if await self.store.client.exists(self.store.keys.console_logout(nonce)):
            return None
        return User(name, configured.role, nonce)

    def _password_tag(self, name: str, password: str) -> str:
        return hmac.new(self.secret, f"pw:{name}:{password}".encode(), hashlib.sha256).hexdigest()

    def csrf_token(self, user: User) -> str:
        return hmac.new(self.secret, f"csrf:{user.nonce}".encode(), hashlib.sha256).hexdigest()

    def sign(self, text: str) -> str:
        """A tag of `text` only this gateway can make (the notice after an action)."""
        return hmac.new(self.secret, f"notice:{text}".encode(), hashlib.sha256).hexdigest()[:32]

    async def login(self, name: str, password: str) -> User | str:
        """The user, or why the login was refused (the same words for a wrong name and a
        wrong password). A failure is counted before the password is compared, so that
        concurrent guesses cannot all slip in under the limit."""
        await self.ready()
        name = name[:100]
        key = self.store.keys.logins(name)
        configured = self.config.users.get(name)
        expected = configured.password.reveal() if configured else secrets.token_hex(16)
        right = configured is not None and hmac.compare_digest(
            hashlib.sha256(password.encode()).digest(), hashlib.sha256(expected.encode()).digest()
        )
        # The window starts at the first failure (SET NX EX): more failures do not prolong it.
        _, failures = await self.store.execute(
            [("SET", key, 0, "EX", LOCK_FOR, "NX"), ("INCR", key)]
        )
        if int(failures) > LOCK_AFTER:
            return f"too many failed logins: try again in {LOCK_FOR // 60} minutes"
        if not right:
            self.log.warning("console.login_failed", user=name)
            return "wrong name or password"
        await self.store.execute([("DEL", key)])
        assert configured is not None
        self.log.info("console.login", user=name, role=configured.role)
        return User(name, configured.role, secrets.token_urlsafe(16))

    async def logout(self, user: User) -> None:
        """The session's cookie stops working now, not at the end of its session_ttl."""
        await self.store.execute(
            [("SET", self.store.keys.console_logout(user.nonce), 1, "EX", self.ttl)]
        )
        self.log.info("console.logout", user=user.name)

    def set_cookie(self, response: Response, request: Request, user: User) -> None:
        assert self.serializer is not None  # (login made it)
        configured = self.config.users[user.name]
        tag = self._password_tag(user.name, configured.password.reveal())
        value = self.serializer.dumps({"u": user.name, "n": user.nonce, "p": tag})
        response.set_cookie(
            COOKIE,
            value,
            max_age=self.ttl,
            path="/console",
            httponly=True,
            samesite="strict",
            secure=(
                request.url.scheme == "https"
                if self.config.cookie_secure is None
                else self.config.cookie_secure
            ),
        )

    # --- checks ---------------------------------------------------------------------------

    def check_action(self, user: User, form: Any) -> None:
        """An action's form: operator role, the session's CSRF token, confirmed."""
        if not user.operator:
            raise Forbidden(
                f"{user.name} has the read-only role: replay, purge and rerun need an operator"
            )
        self.check_csrf(user, form)
        if str(form.get("confirm", "")) != "yes":
            raise Forbidden("not confirmed: tick the confirmation and submit again")

    def check_csrf(self, user: User, form: Any) -> None:
        """The form carries this session's CSRF token (every POST of a logged-in user)."""
        given = str(form.get("csrf", ""))
        if not given or not hmac.compare_digest(given, self.csrf_token(user)):
            raise Forbidden(
                "the form's CSRF token is missing or not this session's: reload the page and "
                "try again"
            )

    async def audit(self, user: User, action: str, target: str, result: str) -> None:
        """Who did what: the audit log (console page Audit) and the structured log."""
        self.log.info("console.action", user=user.name, action=action, target=target, result=result)
        await self.store.execute(
            [
                (
                    "XADD", self.store.keys.audit(), "MAXLEN", "~", AUDIT_KEPT, "*",
                    "at", int(self.clock() * 1000), "user", user.name, "role", user.role,
                    "action", action, "target", target[:500], "result", result[:500],
                )
            ]
        )  # fmt: skip


def page(auth: Auth, handler: Callable[[Request, User], Awaitable[Response]]) -> Handler:
    """A page for any logged-in user; others are sent to the login page (or get a 401,
    for requests that are not a browser's page load)."""

    @wraps(handler)
    async def endpoint(request: Request) -> Response:
        user = await auth.user(request)
        if user is None:
            if "text/html" not in request.headers.get("accept", ""):
                return JSONResponse({"error": "log in at /console/login"}, status_code=401)
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/console/login?next={quote(target)}", status_code=303)
        return await handler(request, user)

    return endpoint


def action(
    auth: Auth,
    handler: Callable[[Request, User, Any], Awaitable[Response]],
    refused: Callable[[Request, User | None, str], Awaitable[Response]],
) -> Handler:
    """A POST that changes something: a logged-in operator, with the session's CSRF
    token and the confirmation; `handler` gets the form. Refusals go to `refused` (403,
    or 401 without a session) and change nothing."""

    @wraps(handler)
    async def endpoint(request: Request) -> Response:
        user = await auth.user(request)
        if user is None:
            return await refused(request, None, "log in first: your session is missing or over")
        form = await request.form()
        try:
            auth.check_action(user, form)
        except Forbidden as e:
            auth.log.warning("console.refused", user=user.name, path=request.url.path, why=str(e))
            return await refused(request, user, str(e))
        return await handler(request, user, form)

    return endpoint
