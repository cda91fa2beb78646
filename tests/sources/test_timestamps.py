"""Timestamps ahead of the gateway's clock: every source type with a timestamp refuses one
beyond its tolerance (docs/sources.md: "timestamp too old or too far in the future" is 401) and
takes one at or inside it.

Stripe and Standard Webhooks requests are signed by the vendors' own libraries, the
others with Python's `hmac` as the vendor's docs describe. "Now" is pinned with `Clock`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest
import stripe
from standardwebhooks.webhooks import Webhook

from tests.conftest import Clock, gateway_client

NOW = 1_700_000_000
SECRET = "timestamp-test-secret"
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def stripe_request(ts: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"id": f"evt_{ts}", "object": "event", "type": "charge.succeeded"})
    header = stripe.WebhookSignature.generate_signature_header(body, "whsec_ts", timestamp=ts)
    return body.encode(), {"stripe-signature": header}


def standard_webhooks_request(ts: int) -> tuple[bytes, dict[str, str]]:
    body = '{"type":"user.created","data":{"id":"user_1"}}'
    msg_id = f"msg_{ts}"
    sig = Webhook(SW_SECRET).sign(msg_id, datetime.fromtimestamp(ts, tz=UTC), body)
    return body.encode(), {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sig,
    }


def hexmac(content: bytes) -> str:
    return hmac.new(SECRET.encode(), content, hashlib.sha256).hexdigest()


def slack_request(ts: int) -> tuple[bytes, dict[str, str]]:
    # https://api.slack.com/authentication/verifying-requests-from-slack
    body = json.dumps({"type": "event_callback", "event_id": f"Ev{ts}"}).encode()
    return body, {
        "x-slack-request-timestamp": str(ts),
        "x-slack-signature": "v0=" + hexmac(f"v0:{ts}:".encode() + body),
    }


def hmac_header_request(ts: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"type": "order.paid", "n": ts}).encode()
    return body, {"x-acme-timestamp": str(ts), "x-acme-signature": hexmac(f"{ts}.".encode() + body)}


def hmac_field_request(ts: int) -> tuple[bytes, dict[str, str]]:
    # Linear: the body's webhookTimestamp, in milliseconds, not part of the signed content
    body = json.dumps({"type": "Issue", "webhookTimestamp": ts * 1000}).encode()
    return body, {"x-acme-signature": hexmac(body)}


def hmac_pairs_request(ts: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"type": "invitee.created", "n": ts}).encode()
    return body, {"x-acme-signature": f"t={ts},v1={hexmac(f'{ts}.'.encode() + body)}"}


HMAC = f"type: hmac\n    secrets: [{SECRET}]\n    signature_header: X-Acme-Signature\n"
TYPES: dict[str, tuple[str, Callable[[int], tuple[bytes, dict[str, str]]], int]] = {
    # name: (source settings, request signed at a timestamp, tolerance in seconds)
    "stripe": ("type: stripe\n    secrets: [whsec_ts]\n", stripe_request, 300),
    "standard-webhooks": (
        f"type: standard-webhooks\n    secrets: [{SW_SECRET}]\n",
        standard_webhooks_request,
        300,
    ),
    "slack": (f"type: slack\n    secrets: [{SECRET}]\n", slack_request, 300),
    "hmac-timestamp_header": (
        HMAC + "    timestamp_header: X-Acme-Timestamp\n    signed_content: '{timestamp}.{body}'\n",
        hmac_header_request,
        300,
    ),
    "hmac-timestamp_field": (
        HMAC + "    timestamp_field: webhookTimestamp\n    tolerance: 60s\n",
        hmac_field_request,
        60,
    ),
    "hmac-pairs": (
        HMAC + "    signature_format: pairs\n    signed_content: '{timestamp}.{body}'\n",
        hmac_pairs_request,
        300,
    ),
}


@pytest.mark.parametrize("source_type", list(TYPES))
@pytest.mark.parametrize(
    ("ahead", "status"),
    [(-1, 200), (0, 200), (1, 401), (3600, 401)],
    ids=["just-inside", "at-the-tolerance", "just-beyond", "an-hour-beyond"],
)
async def test_future_timestamp_beyond_the_tolerance_is_401(store, source_type, ahead, status):
    settings, request, tolerance = TYPES[source_type]
    body, headers = request(NOW + tolerance + ahead)
    async with gateway_client(f"sources:\n  s:\n    {settings}", store, Clock(NOW)) as client:
        r = await client.post("/webhooks/s", content=body, headers=headers)
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json()["status"] == "accepted"
    else:
        assert r.json() == {
            "status": "rejected",
            "reason": "bad_signature",
            "detail": f"the signature timestamp is {tolerance + ahead} s in the future; "
            f"this source accepts {tolerance} s (check the clocks)",
        }


def test_served_stripe_refuses_a_future_timestamp_and_takes_a_near_one(serve):
    """A real server process and its real clock: an hour ahead is 401, 4 minutes is 200."""
    server = serve(
        "redis_url: ${REDIS_URL}\nkey_prefix: ${PREFIX}\n"
        "sources:\n  stripe:\n    type: stripe\n    secrets: ['${STRIPE_SECRET}']\n",
        env={"STRIPE_SECRET": "whsec_ts"},
    )
    now = int(time.time())
    body, headers = stripe_request(now + 3600)
    ahead = httpx.post(server.url + "/webhooks/stripe", content=body, headers=headers)
    assert ahead.status_code == 401
    assert ahead.json()["reason"] == "bad_signature"
    # 3600 s less the moments that passed since `now` was read, rounded
    assert ahead.json()["detail"] in {
        f"the signature timestamp is {s} s in the future; this source accepts 300 s "
        "(check the clocks)"
        for s in range(3590, 3601)
    }
    body, headers = stripe_request(now + 240)
    near = httpx.post(server.url + "/webhooks/stripe", content=body, headers=headers)
    assert near.status_code == 200, near.text
    assert near.json() == {"status": "accepted", "delivery_id": f"evt_{now + 240}"}
