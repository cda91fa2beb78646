"""POST /webhooks/{source}: the front door every vendor sees.

size limit (while reading) -> verify signature on the raw bytes -> delivery id ->
atomic accept in Redis -> exactly `200`. Errors become status codes in one place
(`GatewayError.status`); responses never carry a stack trace.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
import structlog

from .errors import (
    BodyTooLarge,
    GatewayError,
    MethodNotAllowed,
    PayloadError,
    StoreUnavailable,
    UnknownSource,
)
from .metrics import Metrics
from .sources import Source
from .sources.catalog import QUERY, Reply
from .store import RawDelivery, Store

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON_HEADERS = [(b"content-type", b"application/json")]
_encode = msgspec.json.Encoder().encode


class ClientDisconnected(GatewayError):
    status = 400
    reason = "client_disconnected"


class WebhookEndpoint:
    """Handles one request to /webhooks/{name} (an ASGI app given the source name)."""

    def __init__(
        self,
        sources: Mapping[str, Source],
        store: Store,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.sources = sources
        self.store = store
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.log = structlog.get_logger("gateway.ingest")

    async def __call__(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        started = time.perf_counter()
        delivery_id = None
        try:
            source = self.sources.get(name)
            if source is None:
                if not name or "/" in name:
                    raise UnknownSource("webhooks are sent to /webhooks/<source name>")
                raise UnknownSource(f"no source named {name!r} is configured")
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            if scope["query_string"]:
                headers[QUERY] = scope["query_string"].decode("latin-1")
            now = self.clock()
            if scope["method"] != "POST":
                # Dropbox and Meta check an endpoint with a GET, Trello with a HEAD; nothing
                # else is a webhook.
                reply = None
                if source.has_challenge:
                    reply = source.challenge(scope["method"], b"", headers, now)
                if reply is None:
                    raise MethodNotAllowed("webhooks must be sent with POST")
                await self._reply(send, name, reply, started)
                return
            body = await read_body(receive, headers.get("content-length"), source.max_body)
            if source.has_challenge and (reply := source.challenge("POST", body, headers, now)):
                await self._reply(send, name, reply, started)
                return
            source.verify(body, headers, now)
            reply = source.handshake(body, headers)
            if reply is not None:
                if isinstance(reply, bytes):
                    reply = Reply(reply)
                await self._reply(send, name, reply, started)
                return
            delivery_id, dedupe_key = source.identify(body, headers)
            result = await self.store.accept(
                RawDelivery(
                    source=name,
                    delivery_id=delivery_id,
                    dedupe_key=dedupe_key,
                    received_at_ms=int(now * 1000),
                    headers=_encode(source.headers_to_store(headers)),
                    body=body,
                    ttl_ms=source.dedupe_ttl_ms,
                    retention=source.config.raw_retention,
                )
            )
        except GatewayError as e:
            status = e.status
            label = "unavailable" if isinstance(e, StoreUnavailable) else "rejected"
            await respond(
                send,
                status,
                _encode({"status": label, "reason": e.reason, "detail": e.detail}),
                e.headers,
            )
            self._log(
                label, name, delivery_id, started, status=status, reason=e.reason, detail=e.detail
            )
            return
        except Exception:
            # A bug, not the client's fault: 500 so the vendor retries, details only in logs.
            self.log.exception("delivery.failed", source=name, delivery_id=delivery_id)
            await respond(send, 500, b'{"status":"error","reason":"internal_error"}')
            return
        outcome = "accepted" if result.accepted else "duplicate"
        body_out = source.ack_body(headers)
        if body_out is None:
            await respond(send, 200, _encode({"status": outcome, "delivery_id": delivery_id}))
        else:
            status = source.ack_status()
            await respond(send, status, body_out, content_type=source.ack_content_type())
            self._log(outcome, name, delivery_id, started, status=status, entry_id=result.entry_id)
            return
        self._log(outcome, name, delivery_id, started, status=200, entry_id=result.entry_id)

    async def _reply(self, send: Send, name: str, reply: Reply, started: float) -> None:
        """Answer a handshake (or a notice such as Twitch's revocation) without storing it."""
        # Kept only while the source has no secret of its own: the set-up request is not
        # signed, so once one is configured a stranger's cannot plant another.
        if reply.secret is not None and not self.sources[name].config.secrets:
            await self.store.keep_handshake_secret(name, reply.secret, int(self.clock() * 1000))
        await respond(send, reply.status, reply.body, reply.headers, reply.content_type)
        self._log(reply.outcome, name, None, started, status=reply.status)

    def _log(
        self, outcome: str, source: str, delivery_id: str | None, started: float, **fields: Any
    ) -> None:
        """The one log line per request: `delivery.<outcome>` with source, id and duration."""
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        # Unknown names are not labels: a scan of random URLs must not grow the metrics.
        known = source in self.sources
        self.metrics.delivery(source if known else "_unknown", outcome)
        if known and outcome in _TURNED_AWAY:
            # What the console lists of requests that stored nothing (never a body).
            self.metrics.activity.turned_away(
                source,
                outcome,
                self.clock(),
                delivery_id=delivery_id,
                status=fields.get("status"),
                reason=fields.get("reason"),
                detail=fields.get("detail"),
            )
        warn = fields.get("status", 200) >= 500 or outcome in ("revocation", "lifecycle")
        log = self.log.warning if warn else self.log.info
        log(
            f"delivery.{outcome}",
            source=source,
            delivery_id=delivery_id,
            outcome=outcome,
            duration_ms=duration_ms,
            **fields,
        )


_TURNED_AWAY = frozenset({"rejected", "duplicate"})


async def read_body(receive: Receive, content_length: str | None, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed `limit` bytes."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise PayloadError("the Content-Length header is not a number") from None
        if declared > limit:
            raise BodyTooLarge(f"the body is {declared} bytes; this source accepts {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("the client went away before sending the whole body")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"the body is over {limit} bytes, the most this source accepts")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
) -> None:
    if status == 204:  # No Content: neither a body nor its headers (RFC 9110 8.6)
        raw, body = [], b""
    else:
        kind = _JSON_HEADERS if content_type is None else [(b"content-type", content_type.encode())]
        raw = [*kind, (b"content-length", str(len(body)).encode())]
    if headers:
        raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
