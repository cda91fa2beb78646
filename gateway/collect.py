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

A write key sent as the Basic username is known before the body: the rate limits (per
client and per write key) are then counted before the body is read, so a flood is
answered 429 without reading up to 500 KB per request. A batch's messages are stored as
the client sent them (with the batch's `sentAt` added where one has none); only what the
checks read of them is decoded (`_Head`), not every property and context object.
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
from .graph import Graph
from .identity import Visitors
from .ingest import Receive, Scope, Send, read_body, respond
from .metrics import Metrics
from .ratelimit import RateLimiter, client_bucket
from .sources.base import body_hash
from .sources.collect import CollectSource, key_id
from .store import CLUSTER_ERRORS, AcceptResult, RawDelivery, Store

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
_decode_object = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode_list = msgspec.json.Decoder(list[msgspec.Raw]).decode


class _Head(msgspec.Struct):
    """What validate_message reads of a batch's message, decoded without the rest: of the
    objects (properties, context, ...) only their keys, as only their kind is checked (one
    that is not an object fails the decode, and the message is then checked whole). (A
    test holds the answers to those of validate_message on the whole message.)"""

    type: Any = None
    event: Any = None
    userId: Any = None
    anonymousId: Any = None
    previousId: Any = None
    groupId: Any = None
    messageId: Any = None
    timestamp: Any = None
    sentAt: Any = msgspec.UNSET
    originalTimestamp: Any = None
    properties: dict[str, msgspec.Raw] | None = None
    traits: dict[str, msgspec.Raw] | None = None
    context: dict[str, msgspec.Raw] | None = None
    integrations: dict[str, msgspec.Raw] | None = None
    writeKey: Any = msgspec.UNSET


_decode_head = msgspec.json.Decoder(_Head).decode


class _Batch(msgspec.Struct):
    """A batch request's body as one decode reads it: the messages stay bytes."""

    batch: list[msgspec.Raw]
    writeKey: msgspec.Raw = msgspec.UNSET  # type: ignore[assignment]
    sentAt: msgspec.Raw = msgspec.UNSET  # type: ignore[assignment]
    context: msgspec.Raw = msgspec.UNSET  # type: ignore[assignment]
    integrations: msgspec.Raw = msgspec.UNSET  # type: ignore[assignment]


_decode_batch = msgspec.json.Decoder(_Batch).decode


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
        self.visitors = Visitors(
            store, self.identity, Graph.of(store, self.identity) if self.identity.graph else None
        )
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.by_key = {k: s for s in sources.values() for k in s.write_keys}
        self.key_ids = {k: key_id(k) for k in self.by_key}
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
        peer = (scope.get("client") or (None,))[0]
        write_key = self._basic_key(headers)
        if write_key is not None:
            # The key is known before the body: a flood with it (or from one client) over
            # a limit is refused with 429 before up to 500 KB of it are read and parsed.
            source = self._source(write_key)
            ip = await self._check_limits(source, write_key, peer, headers)
            limit = source.max_body
        else:
            limit = self.max_body
        raw = await read_body(receive, headers.get("content-length"), limit)
        body = self._inflate(raw, headers.get("content-encoding", ""), limit)
        body_key, messages = _messages(body, implied)
        limits = None
        if write_key is None:
            write_key = self._body_key(body_key)
            source = self._source(write_key)
            if len(body) > source.max_body:
                raise BodyTooLarge(f"the body is over {source.max_body} bytes")
            if len(messages) == 1:
                # analytics.js's one message: its request's limits are checked in the
                # store's script call that stores it (one round trip, not two), or from
                # the process's leases (a lease that ran out is waited for first).
                ip, limits = await self._limits(source, write_key, peer, headers)
            else:
                ip = await self._check_limits(source, write_key, peer, headers)
        received_at_ms = int(self.clock() * 1000)
        stored_headers = {"content-type": "application/json"}
        if headers.get("user-agent"):
            stored_headers["user-agent"] = headers["user-agent"]
        if ip:
            stored_headers["x-collect-ip"] = ip
        plain_headers = _encode(stored_headers)  # the same for every message not refused
        kid = self.key_ids[write_key]
        deliveries, reasons = [], []
        for i, (message, stored) in enumerate(messages):
            if len(stored) > source.max_message:
                # Measured as the message is sent compactly, whatever its spacing: then
                # stored so, when that is small enough.
                stored = _encode(_parse(stored))
            reason = (
                f"message {i}: over {source.max_message} bytes ({len(stored)})"
                if len(stored) > source.max_message
                else _numbered(i, validate_message(message))
            )
            these = plain_headers
            if reason is not None:
                reasons.append(reason)
                these = _encode({**stored_headers, REFUSED: reason})
            mid = message.get("messageId") if isinstance(message, dict) else None
            if not (isinstance(mid, str) and mid and len(mid) <= 100 and mid.isprintable()):
                mid = body_hash(stored)
            deliveries.append(
                RawDelivery(
                    source=source.name,
                    delivery_id=mid,
                    dedupe_key=f"{kid}:{mid}",
                    received_at_ms=received_at_ms,
                    headers=these,
                    body=stored,
                    ttl_ms=source.dedupe_ttl_ms,
                    retention=source.config.raw_retention,
                )
            )
        if limits is not None:
            keys, args, settle = limits
            deliveries[0].limits = (keys, args)
            result = await self._store_one(deliveries[0])
            self._refuse(source, settle(list(result.waits)) if result.waits else None)
            accepted = int(result.accepted)
        else:
            accepted = await self._store(deliveries)
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

    async def _store_one(self, delivery: RawDelivery) -> AcceptResult:
        try:
            return await self.store.accept(delivery)
        except GatewayError:
            raise
        except Exception as e:
            raise StoreUnavailable("the store failed; retry later") from e

    async def _store(self, deliveries: list[RawDelivery]) -> int:
        """Store the messages (each its own atomic accept); how many were not duplicates.
        Raises only once every write has an answer."""
        if len(deliveries) == 1:  # one message: no list of answers to gather
            return int((await self._store_one(deliveries[0])).accepted)
        results = await self.store.accept_many(deliveries)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            # Some may be stored: the client retries the batch, and those are duplicates.
            error = failed[0]
            if isinstance(error, GatewayError):
                raise error
            raise StoreUnavailable("the store failed; retry later") from error
        return sum(1 for r in results if r.accepted)  # type: ignore[union-attr]

    def _source(self, write_key: str) -> CollectSource:
        source = self.by_key.get(write_key)
        if source is None:
            raise Unauthorized("unknown write key")
        return source

    async def _check_limits(
        self, source: CollectSource, write_key: str, peer: str | None, headers: dict[str, str]
    ) -> str | None:
        """Count the request in its client's and its write key's buckets (429 when over);
        the client's address (None when the server gives none)."""
        ip, prepared = await self._limits(source, write_key, peer, headers)
        if prepared is not None:
            keys, args, settle = prepared
            self._refuse(source, settle(await self.limiter.run(keys, args)))
        return ip

    async def _limits(
        self, source: CollectSource, write_key: str, peer: str | None, headers: dict[str, str]
    ) -> tuple[str | None, tuple[list[str], list[int], Any] | None]:
        """The client's address and the request's limit check, ready to send (None when
        no limit applies); 429 at once if this process knows a bucket refuses."""
        ip = source.client_ip(peer, headers.get("x-forwarded-for"))
        prepared = await self.limiter.prepare(
            source.name,
            (client_bucket(ip) if ip else "", source.config.limit_per_ip if ip else None),
            (f"key:{self.key_ids[write_key]}", source.config.limit_per_write_key),
        )
        if isinstance(prepared, int):
            self._refuse(source, prepared)
        return ip, prepared  # type: ignore[return-value]

    def _refuse(self, source: CollectSource, wait: int | None) -> None:
        if wait is not None:
            self.metrics.delivery(source.name, "rate_limited")
            raise RateLimited(wait)

    def _inflate(self, raw: bytes, encoding: str, limit: int) -> bytes:
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            return raw
        if encoding not in ("gzip", "deflate"):
            raise PayloadError(f"unsupported Content-Encoding {encoding!r} (gzip is)")
        # Inflate in bounded steps: a gzip bomb is refused at the limit, never in memory.
        inflater = zlib.decompressobj(wbits=47 if encoding == "gzip" else 15)
        try:
            out = inflater.decompress(raw, limit + 1)
        except zlib.error:
            raise PayloadError(f"the body is not valid {encoding}") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise BodyTooLarge(f"the inflated body is over {limit} bytes")
        return out

    @staticmethod
    def _basic_key(headers: dict[str, str]) -> str | None:
        """The write key given as the Basic username, if any (before the body is read)."""
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic" or not value:
            return None
        try:
            user, _, _ = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, ValueError):
            raise Unauthorized("the Basic credentials are not base64") from None
        return user or None

    @staticmethod
    def _body_key(key: Any) -> str:
        if isinstance(key, str) and key:
            return key
        raise Unauthorized(
            "no write key: send it as the HTTP Basic username (empty password) or as "
            "`writeKey` in the body"
        )

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
        except (*CLUSTER_ERRORS, OSError, TimeoutError) as e:
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


def _merged(message: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """A batch message with the batch's `sentAt`, `context` and `integrations` as defaults."""
    merged = dict(message)
    if "sentAt" in shared:
        merged.setdefault("sentAt", shared["sentAt"])
    for key in ("context", "integrations"):
        top = shared.get(key)
        if isinstance(top, dict) and isinstance(merged.get(key, {}), dict):
            merged[key] = {**top, **merged.get(key, {})}
    return merged


def _messages(body: bytes, implied: str | None) -> tuple[Any, list[tuple[Any, bytes]]]:
    """The body's `writeKey`, and each message: what validate_message is to check, and
    the bytes to store (what the worker reads). A batch's messages are stored as sent
    (with the batch's `sentAt` added), not decoded and encoded again.

    PayloadError (400) for a body that is not a JSON object (or a batch without a list of
    messages), as a decode of the whole body would say. One difference: a number too
    large for a float (1e999) inside a message's objects is not looked at here; that
    message is stored, and the worker quarantines it as not JSON.
    """
    if implied is not None:
        payload = _parse(body)
        if not isinstance(payload, dict):
            raise PayloadError("the body must be a JSON object")
        # The write key is a credential of the request, not part of the message.
        message = {k: v for k, v in payload.items() if k != "writeKey"}
        message = {**message, "type": implied}
        return payload.get("writeKey"), [(message, _encode(message))]
    if not body.isascii():
        try:  # the strings left undecoded (in messages' objects) must be UTF-8 too
            body.decode()
        except UnicodeDecodeError:
            raise PayloadError("the body is not valid JSON (not UTF-8)") from None
    try:
        top = _decode_batch(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        _refuse_batch(body)  # which is wrong with it, as a decode of the whole would say
        raise PayloadError("the body is not valid JSON") from None
    given = {k: _parse(v) for k in ("writeKey", "sentAt", "context", "integrations")
             if (v := getattr(top, k)) is not msgspec.UNSET}  # fmt: skip
    batch = top.batch
    shared = {k: given[k] for k in ("sentAt", "context", "integrations") if k in given}
    objects = any(isinstance(shared.get(k), dict) for k in ("context", "integrations"))
    sent_at = _encode(shared["sentAt"]) if "sentAt" in shared else None
    out: list[tuple[Any, bytes]] = []
    for raw in batch:
        stored = bytes(raw)
        head = _head(stored) if stored[:1] == b"{" else None
        if head is None or head.writeKey is not msgspec.UNSET or objects:
            # Not an object (refused), or one to change: analytics.js's batches repeat
            # the write key in each message; the batch may give context defaults.
            message = _parse(stored)
            if isinstance(message, dict):
                message = _merged({k: v for k, v in message.items() if k != "writeKey"}, shared)
                stored = _encode(message)
            out.append((message, stored))
            continue
        check = msgspec.structs.asdict(head)
        del check["writeKey"]
        if head.sentAt is msgspec.UNSET:
            check["sentAt"] = None
            if sent_at is not None:
                check["sentAt"] = shared["sentAt"]
                stored = _with_sent_at(stored, sent_at)
        out.append((check, stored))
    return given.get("writeKey"), out


def _head(message: bytes) -> _Head | None:
    """What the checks read of a message, or None when one of its objects is not an object
    (it is then decoded whole, and validate_message says why)."""
    try:
        return _decode_head(message)
    except msgspec.ValidationError:
        return None
    except (msgspec.DecodeError, RecursionError):
        raise PayloadError("the body is not valid JSON") from None


def _refuse_batch(body: bytes) -> None:
    """PayloadError (400) saying what is wrong with a batch request's body that does not
    decode as one: not JSON, not an object, or no list of messages."""
    try:
        top = _decode_object(body)
    except msgspec.ValidationError:
        raise PayloadError("the body must be a JSON object") from None
    except (msgspec.DecodeError, RecursionError):
        raise PayloadError("the body is not valid JSON") from None
    try:
        _decode_list(top["batch"])
    except (KeyError, msgspec.ValidationError):
        raise PayloadError("a batch needs `batch`: a list of messages") from None


def _parse(data: bytes | msgspec.Raw) -> Any:
    try:
        return _decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        # (msgspec raises UnicodeDecodeError for a string that is not UTF-8)
        raise PayloadError("the body is not valid JSON") from None


def _with_sent_at(message: bytes, sent_at: bytes) -> bytes:
    """A JSON object's bytes (as sent) with `"sentAt": <sent_at>` added as its first key."""
    rest = message[1:]  # after the `{` the object starts with
    if rest.lstrip().startswith(b"}"):
        return b'{"sentAt":' + sent_at + rest
    return b'{"sentAt":' + sent_at + b"," + rest


def _numbered(index: int, reason: str | None) -> str | None:
    return None if reason is None else f"message {index}: {reason}"


async def _respond(
    send: Send, status: int, body: Any, headers: Mapping[str, str] | None = None
) -> None:
    await respond(send, status, _encode(body), headers)
