"""What a vendor gets back when the gateway says no (docs/sources.md, "What a vendor sees").

Every refusal is JSON with exactly `status`, `reason` and `detail`: a message a person
can act on, never a stack trace, never a secret. The secrets below are in the config;
no response body (and no log line of the served gateway) may contain them in any form.

A refusal is `{"status":"rejected",...}`; a 503 (Redis away) is
`{"status":"unavailable",...}`, as docs/sources.md says.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis as sync_redis
import stripe
from standardwebhooks.webhooks import Webhook

from gateway.store import Store
from tests.conftest import Clock, drop_keys, gateway_client, until
from tests.test_cli import Server

NOW = 1_700_000_000
ACME_SECRET = "acme-NEVER-ECHO-3c9f1e"
STRIPE_SECRET = "whsec_stripe_NEVER_ECHO_8d2a"
SW_KEY = b"svix-NEVER-ECHO-key-51b7"
SW_SECRET = "whsec_" + base64.b64encode(SW_KEY).decode()
REDIS_PASSWORD = "redis-NEVER-ECHO-0e44"
PADDLE_SECRET = "pdl_ntfset_NEVER-ECHO-77a1"
GITHUB_SECRET = "gh-NEVER-ECHO-5d0c"
SECRETS = [
    ACME_SECRET,
    PADDLE_SECRET,
    GITHUB_SECRET,
    STRIPE_SECRET,
    STRIPE_SECRET.removeprefix("whsec_"),
    SW_SECRET,
    SW_SECRET.removeprefix("whsec_"),
    SW_KEY.decode(),
    REDIS_PASSWORD,
]

SOURCES = f"""\
sources:
  acme:
    type: hmac
    secrets: ["{ACME_SECRET}"]
    signature_header: X-Acme-Signature
    timestamp_header: X-Acme-Timestamp
    signed_content: "{{timestamp}}.{{body}}"
    delivery_id_header: X-Acme-Delivery
    max_body: 1KiB
  stripe:
    type: stripe
    secrets: ["{STRIPE_SECRET}"]
  clerk:
    type: standard-webhooks
    secrets: ["{SW_SECRET}"]
  paddle:
    type: hmac
    secrets: ["{PADDLE_SECRET}"]
    signature_header: Paddle-Signature
    signature_format: pairs
    timestamp_key: ts
    signature_key: h1
    signed_content: "{{timestamp}}:{{body}}"
  github:
    type: github
    secrets: ["{GITHUB_SECRET}"]
"""
NO_MATCH = (
    "no signature matched: the signature is there and readable, but none of this source's "
    "secrets gives it; check that the secret is the one the vendor signs with (and, while "
    "rotating, that both are listed)"
)
# A generic `hmac` source's refusals name the scheme it tried: the user wrote it, and a
# mistake in it must not pass for a wrong secret.
ACME_SCHEME = (
    "; scheme tried: HMAC-SHA256 hex of {timestamp}.{body} in X-Acme-Signature, "
    "timestamp in X-Acme-Timestamp"
)
PADDLE_SCHEME = (
    "; scheme tried: HMAC-SHA256 hex of {timestamp}:{body} in Paddle-Signature (pairs ts/h1)"
)
BODY = b'{"type":"order.paid","id":"ord_1"}'

Request = dict[str, Any]  # httpx.request keyword arguments


def acme(
    now: int, ts: int | str | None = None, secret: str = ACME_SECRET, **headers: str
) -> Request:
    ts = now if ts is None else ts
    # The generic `hmac` type (docs/sources.md): hex HMAC-SHA256 of signed_content,
    # "{timestamp}.{body}".
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + BODY, hashlib.sha256).hexdigest()
    return {
        "method": "POST",
        "url": "/webhooks/acme",
        "content": BODY,
        "headers": {
            "x-acme-timestamp": str(ts),
            "x-acme-signature": sig,
            "x-acme-delivery": "dlv_1",
            **headers,
        },
    }


def without(request: Request, header: str) -> Request:
    request["headers"].pop(header)
    return request


def with_signature(request: Request, signature: str) -> Request:
    request["headers"]["x-acme-signature"] = signature
    return request


def acme_digest(now: int) -> bytes:
    return hmac.new(ACME_SECRET.encode(), f"{now}.".encode() + BODY, hashlib.sha256).digest()


def paddle(now: int, key: str = "h1") -> Request:
    # Paddle Billing: `Paddle-Signature: ts=<unix>;h1=<hex HMAC-SHA256 of "ts:body">`.
    # https://developer.paddle.com/webhooks/signature-verification
    sig = hmac.new(PADDLE_SECRET.encode(), f"{now}:".encode() + BODY, hashlib.sha256).hexdigest()
    return {
        "method": "POST",
        "url": "/webhooks/paddle",
        "content": BODY,
        "headers": {"paddle-signature": f"ts={now};{key}={sig}"},
    }


def github(now: int, header: str) -> Request:
    return {
        "method": "POST",
        "url": "/webhooks/github",
        "content": BODY,
        "headers": {"x-hub-signature-256": header, "x-github-delivery": "d-1"},
    }


def stripe_signed(now: int, body: str, secret: str) -> Request:
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=now)
    return {
        "method": "POST",
        "url": "/webhooks/stripe",
        "content": body.encode(),
        "headers": {"stripe-signature": header},
    }


def clerk_signed_by_another(now: int) -> Request:
    other = "whsec_" + base64.b64encode(b"someone else's key").decode()
    body = '{"type":"user.created"}'
    sig = Webhook(other).sign("msg_1", datetime.fromtimestamp(now, tz=UTC), body)
    return {
        "method": "POST",
        "url": "/webhooks/clerk",
        "content": body.encode(),
        "headers": {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": sig},
    }


async def streamed(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // 256):
        yield b"x" * 256


def too_large_streamed(now: int) -> Request:
    return {**acme(now), "content": streamed(2048)}  # chunked: no Content-Length


REFUSALS = [
    # id, request at `now`, status, `status` field, reason, detail
    (
        "no-delivery-id",
        lambda now: without(acme(now), "x-acme-delivery"),
        400,
        "rejected",
        "bad_payload",
        "no delivery id: the x-acme-delivery header is missing",
    ),
    (
        "body-not-json",
        lambda now: stripe_signed(now, "not json", STRIPE_SECRET),
        400,
        "rejected",
        "bad_payload",
        "the body is not valid JSON",
    ),
    (
        "signature-missing",
        lambda now: without(acme(now), "x-acme-signature"),
        401,
        "rejected",
        "bad_signature",
        "the X-Acme-Signature header is missing",
    ),
    (
        "signature-wrong",
        lambda now: acme(now, secret="not-the-secret"),
        401,
        "rejected",
        "bad_signature",
        NO_MATCH + ACME_SCHEME,
    ),
    # When no signature matches, the detail says which part failed: the header, its form,
    # the timestamp, or (only then) the digest, i.e. the secret.
    (
        "signature-base64-not-hex",
        lambda now: with_signature(acme(now), base64.b64encode(acme_digest(now)).decode()),
        401,
        "rejected",
        "bad_signature",
        "the X-Acme-Signature signature is not an HMAC-SHA256 digest in hex (64 hex digits): "
        "it is base64 of 32 bytes, an HMAC-SHA256 digest's length" + ACME_SCHEME,
    ),
    (
        "signature-sha1-length",
        lambda now: with_signature(acme(now), "ab" * 20),
        401,
        "rejected",
        "bad_signature",
        "the X-Acme-Signature signature is not an HMAC-SHA256 digest in hex (64 hex digits): "
        "it is 40 hex digits, an HMAC-SHA1 digest's length" + ACME_SCHEME,
    ),
    (
        "signature-neither-hex-nor-base64",
        lambda now: with_signature(acme(now), "v1,not*a*digest"),
        401,
        "rejected",
        "bad_signature",
        "the X-Acme-Signature signature is not an HMAC-SHA256 digest in hex (64 hex digits): "
        "it is 2 characters, neither hex nor base64 of a digest" + ACME_SCHEME,
    ),
    (
        "timestamp-missing",
        lambda now: without(acme(now), "x-acme-timestamp"),
        401,
        "rejected",
        "bad_signature",
        "the signature timestamp (X-Acme-Timestamp) is missing",
    ),
    (
        "timestamp-malformed",
        lambda now: acme(now, ts="yesterday"),
        401,
        "rejected",
        "bad_signature",
        "the signature timestamp (X-Acme-Timestamp) is malformed: expected unix seconds or "
        "milliseconds, or ISO 8601",
    ),
    (
        "pairs-without-the-signature-key",
        lambda now: paddle(now, key="v1"),
        401,
        "rejected",
        "bad_signature",
        "the Paddle-Signature header has no `h1=` signature (found: ts, v1)" + PADDLE_SCHEME,
    ),
    (
        "pairs-signature-wrong",
        lambda now: {**paddle(now), "content": BODY + b" "},
        401,
        "rejected",
        "bad_signature",
        NO_MATCH + PADDLE_SCHEME,
    ),
    (
        "prefix-not-the-expected-one",
        lambda now: github(now, "sha1=" + "ab" * 20),
        401,
        "rejected",
        "bad_signature",
        "the X-Hub-Signature-256 signature does not start with `sha256=`",
    ),
    (
        "stripe-no-v1",
        lambda now: {
            **stripe_signed(now, '{"id":"evt_1"}', STRIPE_SECRET),
            "headers": {"stripe-signature": f"t={now},v0={'ab' * 32}"},
        },
        401,
        "rejected",
        "bad_signature",
        "the Stripe-Signature header has no `v1=` signature (found: t, v0)",
    ),
    (
        "stripe-signature-wrong",
        lambda now: stripe_signed(now, '{"id":"evt_1"}', "whsec_not_the_secret"),
        401,
        "rejected",
        "bad_signature",
        NO_MATCH,
    ),
    (
        "standard-webhooks-signature-wrong",
        clerk_signed_by_another,
        401,
        "rejected",
        "bad_signature",
        NO_MATCH,
    ),
    (
        "timestamp-old",
        lambda now: acme(now, ts=now - 3600),
        401,
        "rejected",
        "bad_signature",
        "the signature timestamp is 3600 s old; this source accepts 300 s",
    ),
    (
        "timestamp-future",
        lambda now: acme(now, ts=now + 3600),
        401,
        "rejected",
        "bad_signature",
        "the signature timestamp is 3600 s in the future; this source accepts 300 s "
        "(check the clocks)",
    ),
    (
        "unknown-source",
        lambda now: {**acme(now), "url": "/webhooks/nobody"},
        404,
        "rejected",
        "unknown_source",
        "no source named 'nobody' is configured",
    ),
    (
        "wrong-method",
        lambda now: {**acme(now), "method": "GET"},
        405,
        "rejected",
        "method_not_allowed",
        "webhooks must be sent with POST",
    ),
    (
        "too-large",
        lambda now: {**acme(now), "content": b"x" * 2048},
        413,
        "rejected",
        "body_too_large",
        "the body is 2048 bytes; this source accepts 1024",
    ),
    (
        "too-large-streamed",
        too_large_streamed,
        413,
        "rejected",
        "body_too_large",
        "the body is over 1024 bytes, the most this source accepts",
    ),
]
OUTSIDE_THE_ROUTE = [
    pytest.param(
        lambda now, path=path: {**acme(now), "url": path},
        404,
        "rejected",
        "unknown_source",
        "webhooks are sent to /webhooks/<source name>",
        id=name,
    )
    for name, path in [
        ("no-source-name", "/webhooks/"),
        ("source-name-with-slash", "/webhooks/a/b"),
    ]
]
EXTRA_HEADERS = {405: {"allow": "POST"}, 503: {"retry-after": "5"}}


def check_refusal(
    r: httpx.Response, status: int, label: str, reason: str, detail: str | set[str] | None
) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    for name, value in EXTRA_HEADERS.get(status, {}).items():
        assert r.headers[name] == value
    body = r.json()
    assert set(body) == {"status", "reason", "detail"}
    assert body["status"] == label
    assert body["reason"] == reason
    if detail is None:
        assert body["detail"]
    elif isinstance(detail, set):
        assert body["detail"] in detail
    else:
        assert body["detail"] == detail
    assert "Traceback" not in r.text and 'File "' not in r.text
    for secret in SECRETS:
        assert secret not in r.text


@pytest.mark.parametrize(
    ("send", "status", "label", "reason", "detail"),
    [pytest.param(*row[1:], id=row[0]) for row in REFUSALS] + OUTSIDE_THE_ROUTE,
)
async def test_refusal_is_json_with_status_reason_and_detail(
    redis_store, send, status, label, reason, detail
):
    async with gateway_client(SOURCES, redis_store, Clock(NOW)) as client:
        r = await client.request(**send(NOW))
    check_refusal(r, status, label, reason, detail)
    assert await redis_store.client.keys(f"{redis_store.keys.prefix}:*") == []


@pytest.mark.parametrize(
    "signature",
    [
        "0" * 64,  # well-formed, wrong: the digest part failed
        "ab" * 20,  # the form failed
        lambda now: base64.b64encode(acme_digest(now)).decode(),  # the right digest, base64
    ],
    ids=["wrong", "malformed", "right-digest-wrong-encoding"],
)
async def test_no_refusal_shows_the_expected_digest(redis_store, signature):
    """The digest the gateway computed would let anyone forge this delivery: never shown."""
    text = signature(NOW) if callable(signature) else signature
    async with gateway_client(SOURCES, redis_store, Clock(NOW)) as client:
        r = await client.request(**with_signature(acme(NOW), text))
    assert r.status_code == 401
    digest = acme_digest(NOW)
    for form in (digest.hex(), digest.hex().upper(), base64.b64encode(digest).decode()):
        assert form not in r.text


async def test_redis_away_is_503_unavailable_with_retry_after(private_redis):
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{private_redis.port}/0"
    store = Store.connect(url, "gw", timeout=0.5)
    private_redis.stop()
    try:
        async with gateway_client(SOURCES, store, Clock(NOW)) as client:
            r = await client.request(**acme(NOW))
    finally:
        await store.close()
    check_refusal(
        r,
        503,
        "unavailable",
        "store_unavailable",
        # a stopped Redis refuses the connection at once, well within redis_timeout
        "Redis is unavailable (ConnectionError); retry later",
    )


# --- the same through `webhook-gateway serve` ------------------------------------------------


@pytest.fixture(scope="module")
def served_gateway(tmp_path_factory, redis_url):
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    server = Server(
        tmp_path_factory.mktemp("refusals"),
        {"REDIS_URL": redis_url, "PREFIX": prefix, "LOG_LEVEL": "info"},
        "--no-workers",
        config="redis_url: ${REDIS_URL}\nkey_prefix: ${PREFIX}\n" + SOURCES,
    )
    yield server, prefix
    server.stop()
    drop_keys(redis_url, prefix)


def log_since(server: Server, offset: int) -> str:
    """What the server logged after `offset` bytes (each row checks its own lines)."""
    return server.log.read_bytes()[offset:].decode()


def either_side(detail: str) -> set[str] | str:
    """A detail naming a skew of 3600 s, as a server on the real clock may round it."""
    if "3600 s" not in detail:
        return detail
    return {detail.replace("3600 s", f"{n} s") for n in range(3590, 3611)}


@pytest.mark.parametrize(
    ("send", "status", "label", "reason", "detail"),
    [pytest.param(*row[1:], id=row[0]) for row in REFUSALS] + OUTSIDE_THE_ROUTE,
)
async def test_served_refusal_is_json_and_its_log_line_has_no_secret(
    served_gateway, redis_url, send, status, label, reason, detail
):
    server, prefix = served_gateway
    offset = server.log.stat().st_size
    request = send(int(time.time()))
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.request(**request)
    check_refusal(r, status, label, reason, detail and either_side(detail))

    def logged() -> list[dict[str, Any]]:
        return [
            line
            for line in map(json.loads, re.findall(r"^\{.*$", log_since(server, offset), re.M))
            if line.get("event") == "delivery.rejected" and line.get("detail") == r.json()["detail"]
        ]

    [line, *_] = await until(logged, what="the refusal's log line")
    assert line["status"] == status and line["reason"] == reason
    logged_text = log_since(server, offset)
    for secret in SECRETS:
        assert secret not in logged_text
    assert sync_redis.Redis.from_url(redis_url).keys(f"{prefix}:*") == []


def test_served_redis_away_is_503_unavailable(serve, private_redis):
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{private_redis.port}/0"
    server = serve(
        "redis_url: ${REDIS_URL}\nkey_prefix: ${PREFIX}\nredis_timeout: 500ms\n" + SOURCES,
        redis=url,
    )
    private_redis.stop()
    r = httpx.request(**{**acme(int(time.time())), "url": server.url + "/webhooks/acme"})
    check_refusal(
        r,
        503,
        "unavailable",
        "store_unavailable",
        # a stopped Redis refuses the connection at once, well within redis_timeout
        "Redis is unavailable (ConnectionError); retry later",
    )
    log = server.stop()
    assert "delivery.unavailable" in log
    for secret in SECRETS:
        assert secret not in log
