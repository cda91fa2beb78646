"""The generic `hmac` type, configured exactly as docs/sources.md shows for each vendor.

Each request is signed the way the vendor's docs describe it, independently of the
gateway's code, so a wrong docs config or a wrong scheme fails here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import Clock, config, gateway_client

DOC = (Path(__file__).parents[2] / "docs" / "sources.md").read_text()
BLOCKS = dict(re.findall(r"```yaml\n# vendor: (\w+)\n(.*?)```", DOC, re.S))
NOW = 1_700_000_000
SECRET = "vendor-signing-secret"


def hmac256(content: bytes) -> bytes:
    return hmac.new(SECRET.encode(), content, hashlib.sha256).digest()


def paddle(body: bytes, ts: int) -> dict[str, str]:
    # https://developer.paddle.com/webhooks/signature-verification
    sig = hmac256(f"{ts}:".encode() + body).hex()
    return {"paddle-signature": f"ts={ts};h1={sig}"}


def linear(body: bytes, ts: int) -> dict[str, str]:
    # Linear-Signature: hex HMAC of the body; freshness from the body's webhookTimestamp.
    return {"linear-signature": hmac256(body).hex(), "linear-delivery": "234d1a4e-b617-4388"}


def typeform(body: bytes, ts: int) -> dict[str, str]:
    return {"typeform-signature": "sha256=" + base64.b64encode(hmac256(body)).decode()}


def zendesk(body: bytes, ts: int) -> dict[str, str]:
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sig = base64.b64encode(hmac256(stamp.encode() + body)).decode()
    return {
        "x-zendesk-webhook-signature": sig,
        "x-zendesk-webhook-signature-timestamp": stamp,
        "x-zendesk-webhook-invocation-id": "8350205582",
    }


def calendly(body: bytes, ts: int) -> dict[str, str]:
    sig = hmac256(f"{ts}.".encode() + body).hex()
    return {"calendly-webhook-signature": f"t={ts},v1={sig}"}


def hubspot(body: bytes, ts: int) -> dict[str, str]:
    # https://developers.hubspot.com/docs/api/webhooks/validating-requests (v3)
    ms = str(ts * 1000)
    content = b"POST" + b"https://hooks.example.com/webhooks/hubspot" + body + ms.encode()
    return {
        "x-hubspot-signature-v3": base64.b64encode(hmac256(content)).decode(),
        "x-hubspot-request-timestamp": ms,
    }


def body_for(vendor: str, ts: int) -> bytes:
    payloads = {
        "paddle": {
            "event_id": "evt_01h8bx8fmywym11t6swgzba704",
            "event_type": "transaction.completed",
            "occurred_at": "2023-11-14T22:13:20.000Z",
            "data": {"id": "txn_01"},
        },
        "linear": {
            "action": "create",
            "type": "Issue",
            "data": {"id": "iss_1"},
            "webhookTimestamp": ts * 1000,
            "webhookId": "wh_1",
        },
        "typeform": {
            "event_id": "01HF3Z1WB1RCZ8GJ1R3ZJ5SGYD",
            "event_type": "form_response",
            "form_response": {"form_id": "lT4Z3j"},
        },
        "zendesk": {"type": "zen:event-type:ticket.created", "id": "cbe4028c"},
        "hubspot": [
            {"eventId": 100, "subscriptionType": "contact.creation", "occurredAt": ts * 1000}
        ],
        "calendly": {
            "event": "invitee.created",
            "created_at": "2023-11-14T22:13:20.000000Z",
            "payload": {"email": "a@example.com"},
        },
    }
    return json.dumps(payloads[vendor]).encode()


VENDORS: dict[str, tuple[Callable[[bytes, int], dict[str, str]], str | None, bool]] = {
    # vendor: (sign, expected delivery id (None: body hash), signs a timestamp)
    "paddle": (paddle, "evt_01h8bx8fmywym11t6swgzba704", True),
    "linear": (linear, "234d1a4e-b617-4388", True),
    "typeform": (typeform, "01HF3Z1WB1RCZ8GJ1R3ZJ5SGYD", False),
    "zendesk": (zendesk, "8350205582", True),
    "calendly": (calendly, None, True),
    "hubspot": (hubspot, None, True),
}


def test_readme_shows_every_vendor():
    assert set(BLOCKS) == set(VENDORS)


@pytest.mark.parametrize("vendor", sorted(VENDORS))
async def test_vendor_as_configured_in_readme(store, vendor):
    sign, delivery_id, timed = VENDORS[vendor]
    env = {f"{vendor.upper()}_WEBHOOK_SECRET": SECRET, "HUBSPOT_CLIENT_SECRET": SECRET}
    cfg = config(BLOCKS[vendor], **env)
    body = body_for(vendor, NOW)
    async with gateway_client(cfg, store, Clock(NOW)) as client:
        url = f"/webhooks/{vendor}"
        tampered = body.replace(b"}", b" }", 1)
        assert (
            await client.post(url, content=tampered, headers=sign(body, NOW))
        ).status_code == 401
        ok = await client.post(url, content=body, headers=sign(body, NOW))
        assert ok.status_code == 200, ok.text
        # no delivery id from the vendor: the body's SHA-256 stands in
        delivery_id = delivery_id or "sha256:" + hashlib.sha256(body).hexdigest()
        assert ok.json() == {"status": "accepted", "delivery_id": delivery_id}
        dup = await client.post(url, content=body, headers=sign(body, NOW))
        assert dup.status_code == 200
        assert dup.json() == {"status": "duplicate", "delivery_id": delivery_id}
        if timed:
            stale = NOW - 3600
            old_body = body_for(vendor, stale)
            r = await client.post(url, content=old_body, headers=sign(old_body, stale))
            assert r.status_code == 401, r.text
            assert r.json()["detail"].startswith("the signature timestamp is 3600 s old;")
