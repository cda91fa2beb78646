"""Slack: url_verification handshake, Events API retries, slash commands."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

from tests.conftest import Clock, gateway_client, raw_entries

SECRET = "slack-signing-secret"
CFG = f"sources:\n  slack:\n    type: slack\n    secrets: [{SECRET}]\n"


def signed(body: bytes, ts: int, content_type="application/json", **extra):
    base = f"v0:{ts}:".encode() + body
    sig = "v0=" + hmac.new(SECRET.encode(), base, hashlib.sha256).hexdigest()
    return {
        "x-slack-signature": sig,
        "x-slack-request-timestamp": str(ts),
        "content-type": content_type,
        **extra,
    }


async def test_url_verification_is_answered_and_not_stored(store):
    now = int(time.time())
    body = json.dumps(
        {
            "token": "t",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    ).encode()
    async with gateway_client(CFG, store, Clock(now)) as client:
        r = await client.post("/webhooks/slack", content=body, headers=signed(body, now))
    assert r.status_code == 200
    assert r.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    assert await raw_entries(store, "slack") == []


async def test_unsigned_url_verification_is_refused(store):
    body = b'{"type":"url_verification","challenge":"x"}'
    async with gateway_client(CFG, store) as client:
        r = await client.post("/webhooks/slack", content=body)
    assert r.status_code == 401
    assert r.json()["detail"] == "the X-Slack-Signature header is missing"
    assert await raw_entries(store, "slack") == []


async def test_event_retry_is_a_duplicate(store):
    now = int(time.time())
    body = json.dumps(
        {
            "type": "event_callback",
            "event_id": "Ev08MFMKH6",
            "event": {"type": "app_mention", "user": "U1"},
        }
    ).encode()
    async with gateway_client(CFG, store, Clock(now)) as client:
        first = await client.post("/webhooks/slack", content=body, headers=signed(body, now))
        retry = await client.post(
            "/webhooks/slack",
            content=body,
            headers=signed(
                body, now + 60, **{"x-slack-retry-num": "1", "x-slack-retry-reason": "http_timeout"}
            ),
        )
    assert first.json() == {"status": "accepted", "delivery_id": "Ev08MFMKH6"}
    assert retry.json()["status"] == "duplicate"


async def test_stale_timestamp_is_refused(store):
    now = int(time.time())
    body = b'{"type":"event_callback","event_id":"Ev1"}'
    async with gateway_client(CFG, store, Clock(now)) as client:
        r = await client.post("/webhooks/slack", content=body, headers=signed(body, now - 301))
    assert r.status_code == 401
    assert r.json()["detail"] == "the signature timestamp is 301 s old; this source accepts 300 s"


async def test_interactive_payload_uses_its_trigger_id(store):
    now = int(time.time())
    payload = json.dumps({"type": "block_actions", "trigger_id": "123.456.abc"})
    body = urlencode({"payload": payload}).encode()
    headers = signed(body, now, "application/x-www-form-urlencoded")
    async with gateway_client(CFG, store, Clock(now)) as client:
        r = await client.post("/webhooks/slack", content=body, headers=headers)
    assert r.status_code == 200 and r.content == b""
    [entry] = await raw_entries(store, "slack")
    assert entry["delivery_id"] == "123.456.abc"
