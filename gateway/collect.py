"""/v1/...: the collect API, compatible with Segment's HTTP Tracking API.

Segment's own clients (analytics.js, analytics-node, analytics-python) work against it
with only their host changed: POST /v1/track|identify|page|screen|group|alias|batch|import
(and analytics.js's /v1/t|i|p|s|g|a|b), a write key as the Basic username or `writeKey`
in the body, JSON sent as application/json or text/plain, gzip or not. Each message is
stored as one raw delivery of its collect source (delivery id = its messageId), with the
same guarantees as a webhook: `200 {"success": true}` only once stored, a resent
messageId is a duplicate, `503` + Retry-After while Redis is away. A message that cannot
become an event (no userId/anonymousId, a track without `event`, over 32 KB) is stored
too, marked with its reason, so the worker puts it in the quarantine; the answer counts
it, so a client does not retry a batch forever for one bad message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import structlog
from redis.exceptions import RedisError

from normalizers.collect import validate_message

from . import identity
from .config import IdentityConfig
from .errors import (
    BodyTooLarge,
    GatewayError,
    MethodNotAllowed,
    PayloadError,
    RateLimited,
    StoreUnavailable,
    Unauthorized,
    UnknownSource,
)
from .identity import Visitors
from .ingest import Receive, Scope, Send, read_body, respond
from .metrics import Metrics
from .ratelimit import RateLimiter, client_bucket
from .sources.base import body_hash
from .sources.collect import CollectSource, key_id
from .store import RawDelivery, Store

# The path's last segment -> the message type it implies (None: a batch).
PATHS: dict[str, str | None] = {
    "track": "track", "t": "track",
    "identify": "identify", "i": "identify",
    "page": "page", "p": "page",
    "screen": "screen", "s": "screen",
    "group": "group", "g": "group",
    "alias": "alias", "a": "alias",
    "batch": None, "b": None, "import": None,
}  # fmt: skip

REFUSED = "x-collect-refused"
"""Stored with a message the front door refused: the worker quarantines it with this."""

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class CollectEndpoint:
    """Everything under /v1/ (an ASGI app given the rest of the path)."""

    def __init__(
        self,
        sources: Mapping[str, CollectSource],
        store: Store,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        identity: IdentityConfig | None = None,
    ) -> None:
        self.sources = sources
        self.store = store
        self.identity = identity or IdentityConfig()
        self.visitors = Visitors(store, self.identity)
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.by_key = {k: s for s in sources.values() for k in s.write_keys}
        self.limiter = RateLimiter(store, clock)
        self.origins = {o for s in sources.values() for o in s.origins}
        self.max_body = max((s.max_body for s in sources.values()), default=0)
        self.log = structlog.get_logger("gateway.collect")

    async def __call__(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        cors = self._cors(headers.get("origin"))
        if cors and path.rstrip("/") == "id":
            # The id endpoint reads and sets the visitor's cookie: credentials allowed.
            cors["access-control-allow-credentials"] = "true"
        try:
            if scope["method"] == "OPTIONS":
                await self._preflight(send, cors)
                return
            if path.rstrip("/") == "id":
                if scope["method"] != "POST":
                    raise MethodNotAllowed("POST /v1/id with the page's URL")
                await self._id(scope, receive, send, headers, cors)
                return
            if scope["method"] == "GET" and path.startswith("projects/"):
                await self._settings(scope, send, path, headers, cors)
                return
            kind = path.rstrip("/")
            if kind not in PATHS:
                raise UnknownSource(
                    "no such collect endpoint: POST /v1/track, /v1/identify, /v1/page, "
                    "/v1/screen, /v1/group, /v1/alias or /v1/batch"
                )
            if scope["method"] != "POST":
                raise MethodNotAllowed("the collect API takes POST")
            answer = await self._collect(scope, receive, headers, PATHS[kind])
        except GatewayError as e:
            await _respond(
                send,
                e.status,
                {"success": False, "reason": e.reason, "detail": e.detail},
                {**cors, **e.headers},
            )
            if e.status >= 500:
                self.log.warning("collect.unavailable", reason=e.reason, detail=e.detail)
            return
        await _respond(send, 200, answer, cors)

    # --- POST /v1/<type> and /v1/batch --------------------------------------------------

    async def _collect(
        self, scope: Scope, receive: Receive, headers: dict[str, str], implied: str | None
    ) -> dict[str, Any]:
        started = time.perf_counter()
        raw = await read_body(receive, headers.get("content-length"), self.max_body)
        body = self._inflate(raw, headers.get("content-encoding", ""))
        try:
            payload = _decode(body)
        except (msgspec.DecodeError, RecursionError):
            raise PayloadError("the body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise PayloadError("the body must be a JSON object")
        write_key = self._write_key(headers, payload)
        source = self.by_key.get(write_key)
        if source is None:
            raise Unauthorized("unknown write key")
        if len(body) > source.max_body:
            raise BodyTooLarge(f"the body is over {source.max_body} bytes")
        peer = (scope.get("client") or (None,))[0]
        ip = source.client_ip(peer, headers.get("x-forwarded-for"))
        kid = key_id(write_key)
        wait = await self.limiter.check(
            source.name,
            (client_bucket(ip) if ip else "", source.config.limit_per_ip if ip else None),
            (f"key:{kid}", source.config.limit_per_write_key),
        )
        if wait is not None:
            self.metrics.delivery(source.name, "rate_limited")
            raise RateLimited(wait)
        messages = self._messages(payload, implied)
        now = self.clock()
        stored_headers = {"content-type": "application/json"}
        if headers.get("user-agent"):
            stored_headers["user-agent"] = headers["user-agent"]
        if ip:
            stored_headers["x-collect-ip"] = ip
        deliveries, reasons = [], []
        for i, message in enumerate(messages):
            encoded = _encode(message)
            reason = (
                f"message {i}: over {source.max_message} bytes ({len(encoded)})"
                if len(encoded) > source.max_message
                else _numbered(i, validate_message(message))
            )
            these = stored_headers
            if reason is not None:
                reasons.append(reason)
                these = {**stored_headers, REFUSED: reason}
            mid = message.get("messageId") if isinstance(message, dict) else None
            if not (isinstance(mid, str) and mid and len(mid) <= 100 and mid.isprintable()):
                mid = body_hash(encoded)
            deliveries.append(
                RawDelivery(
                    source=source.name,
                    delivery_id=mid,
                    dedupe_key=f"{kid}:{mid}",
                    received_at_ms=int(now * 1000),
                    headers=_encode(these),
                    body=encoded,
                    ttl_ms=source.dedupe_ttl_ms,
                    retention=source.config.raw_retention,
                )
            )
        results = await asyncio.gather(
            *(self.store.accept(d) for d in deliveries), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            # Some may be stored: the client retries the batch, and those are duplicates.
            error = failed[0]
            if isinstance(error, GatewayError):
                raise error
            raise StoreUnavailable("the store failed; retry later") from error
        accepted = sum(1 for r in results if r.accepted)  # type: ignore[union-attr]
        # Per message, as webhooks are counted per delivery.
        self.metrics.delivery(source.name, "accepted", accepted)
        self.metrics.delivery(source.name, "duplicate", len(messages) - accepted)
        self.log.info(
            "collect.batch",
            source=source.name,
            messages=len(messages),
            accepted=accepted,
            duplicate=len(messages) - accepted,
            refused=len(reasons),
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        answer: dict[str, Any] = {"success": True}
        if reasons:
            answer["refused"] = len(reasons)
            answer["reasons"] = reasons[:10]
        return answer

    def _inflate(self, raw: bytes, encoding: str) -> bytes:
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            return raw
        if encoding not in ("gzip", "deflate"):
            raise PayloadError(f"unsupported Content-Encoding {encoding!r} (gzip is)")
        # Inflate in bounded steps: a gzip bomb is refused at the limit, never in memory.
        inflater = zlib.decompressobj(wbits=47 if encoding == "gzip" else 15)
        try:
            out = inflater.decompress(raw, self.max_body + 1)
        except zlib.error:
            raise PayloadError(f"the body is not valid {encoding}") from None
        if len(out) > self.max_body or inflater.unconsumed_tail:
            raise BodyTooLarge(f"the inflated body is over {self.max_body} bytes")
        return out

    def _write_key(self, headers: dict[str, str], payload: dict[str, Any]) -> str:
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "basic" and value:
            try:
                user, _, _ = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, ValueError):
                raise Unauthorized("the Basic credentials are not base64") from None
            if user:
                return user
        key = payload.get("writeKey")
        if isinstance(key, str) and key:
            return key
        raise Unauthorized(
            "no write key: send it as the HTTP Basic username (empty password) or as "
            "`writeKey` in the body"
        )

    @staticmethod
    def _messages(payload: dict[str, Any], implied: str | None) -> list[Any]:
        if implied is not None:
            # The write key is a credential of the request, not part of the message.
            message = {k: v for k, v in payload.items() if k != "writeKey"}
            return [{**message, "type": implied}]
        batch = payload.get("batch")
        if not isinstance(batch, list):
            raise PayloadError("a batch needs `batch`: a list of messages")
        shared = {k: payload[k] for k in ("sentAt", "context", "integrations") if k in payload}
        out = []
        for message in batch:
            if isinstance(message, dict) and "writeKey" in message:
                message = {k: v for k, v in message.items() if k != "writeKey"}
            if isinstance(message, dict) and shared:
                merged = dict(message)
                if "sentAt" in shared:
                    merged.setdefault("sentAt", shared["sentAt"])
                for key in ("context", "integrations"):
                    top = shared.get(key)
                    if isinstance(top, dict) and isinstance(merged.get(key, {}), dict):
                        merged[key] = {**top, **merged.get(key, {})}
                message = merged
            out.append(message)
        return out

    # --- POST /v1/id: the first-party visitor id --------------------------------------

    async def _id(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str],
        cors: dict[str, str],
    ) -> None:  # fmt: skip
        if not cors:
            raise Unauthorized(
                "POST /v1/id is called by your site's pages: the request's Origin must be "
                "in a collect source's `origins:`"
            )
        # The limit per client of the (first) source that allows this origin.
        origin = headers.get("origin")
        source = next(s for s in self.sources.values() if origin in s.origins or "*" in s.origins)
        peer = (scope.get("client") or (None,))[0]
        ip = source.client_ip(peer, headers.get("x-forwarded-for"))
        if ip:
            wait = await self.limiter.check(
                source.name, (client_bucket(ip), source.config.limit_per_ip)
            )
            if wait is not None:
                self.metrics.delivery(source.name, "rate_limited")
                raise RateLimited(wait)
        raw = await read_body(receive, headers.get("content-length"), 16 * 1024)
        try:
            payload = _decode(raw) if raw.strip() else {}
        except (msgspec.DecodeError, RecursionError):
            raise PayloadError("the body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise PayloadError("the body must be a JSON object: {url, referrer, consent}")
        config = self.identity
        cookie = headers.get("cookie")
        anonymous_id = identity.visitor_id(cookie, config.cookie_name) or identity.mint()
        now = identity.now_ms(self.clock)
        landing = identity.touch(payload.get("url"), payload.get("referrer"), cookie, now)
        consent = identity.consent_of(payload.get("consent"))
        try:
            kept = await asyncio.wait_for(
                self.visitors.record(anonymous_id, landing, consent, now), self.store.timeout
            )
        except (RedisError, OSError, TimeoutError) as e:
            raise StoreUnavailable("the store did not answer in time") from e
        answer: dict[str, Any] = {"anonymousId": anonymous_id}
        if "clickIds" in kept:
            answer["clickIds"] = kept["clickIds"]
        if not identity.ads_allowed(config.consent, consent):
            answer["ads"] = "denied"
        await _respond(
            send,
            200,
            answer,
            {**cors, "set-cookie": identity.set_cookie(config, anonymous_id),
             "cache-control": "no-store"},
        )  # fmt: skip

    # --- CORS and analytics.js's settings --------------------------------------------

    def _cors(self, origin: str | None) -> dict[str, str]:
        if not origin or not (origin in self.origins or "*" in self.origins):
            return {}
        # Retry-After is not a CORS-safelisted response header: without this, analytics.js
        # cannot read it on a 429 and retries on its own backoff instead.
        return {
            "access-control-allow-origin": origin,
            "access-control-expose-headers": "Retry-After",
            "vary": "Origin",
        }

    async def _preflight(self, send: Send, cors: dict[str, str]) -> None:
        if not cors:
            await _respond(
                send, 403, {"success": False, "reason": "origin_not_allowed",
                            "detail": "this origin is not in any collect source's `origins:`"},
            )  # fmt: skip
            return
        headers = {
            **cors,
            "access-control-allow-methods": "POST, OPTIONS",
            # analytics.js adds X-Retry-Count when it resends a message: without it allowed,
            # the browser blocks every resend after a 503 or 429 and the message is lost.
            "access-control-allow-headers": (
                "Content-Type, Authorization, Content-Encoding, X-Retry-Count"
            ),
            "access-control-max-age": "86400",
        }
        await respond(send, 204, b"", headers)

    async def _settings(
        self, scope: Scope, send: Send, path: str, headers: dict[str, str], cors: dict[str, str]
    ) -> None:
        parts = path.split("/")
        if len(parts) != 3 or parts[2] != "settings" or parts[1] not in self.by_key:
            raise UnknownSource("no collect source has this write key")
        key = parts[1]
        host = headers.get("host") or "localhost"
        protocol = "https" if scope.get("scheme") == "https" else "http"
        settings = {
            "integrations": {
                "Segment.io": {
                    "apiKey": key,
                    "apiHost": f"{host}/v1",
                    "protocol": protocol,
                    "unbundledIntegrations": [],
                    "addBundledMetadata": True,
                    "maybeBundledConfigIds": {},
                }
            },
            "plan": {"track": {"__default": {"enabled": True, "integrations": {}}}},
            "edgeFunction": {},
            "analyticsNextEnabled": True,
            "middlewareSettings": {},
            "enabledMiddleware": {},
            "metrics": {"sampleRate": 0},
            "legacyVideoPluginsEnabled": False,
            "remotePlugins": [],
        }
        await _respond(send, 200, settings, {**cors, "cache-control": "max-age=300"})


def _numbered(index: int, reason: str | None) -> str | None:
    return None if reason is None else f"message {index}: {reason}"


async def _respond(
    send: Send, status: int, body: Any, headers: Mapping[str, str] | None = None
) -> None:
    await respond(send, status, _encode(body), headers)
