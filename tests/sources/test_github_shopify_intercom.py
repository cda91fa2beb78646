"""GitHub, Shopify and Intercom: HMAC over the raw body, delivery ids from headers or body."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from tests.conftest import gateway_client, raw_entries

CFG = """
sources:
  github: {type: github, secrets: [gh-secret]}
  shopify: {type: shopify, secrets: [shp-secret]}
  intercom: {type: intercom, secrets: [ic-secret]}
"""


def gh(body: bytes, delivery="d-1", hook="111", event="push"):
    sig = hmac.new(b"gh-secret", body, hashlib.sha256).hexdigest()
    headers = {
        "x-hub-signature-256": f"sha256={sig}",
        "x-github-event": event,
        "x-github-delivery": delivery,
        "content-type": "application/json",
    }
    if hook:
        headers["x-github-hook-id"] = hook
    return headers


async def test_github_ping_is_accepted(store):
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 111}).encode()
    async with gateway_client(CFG, store) as client:
        r = await client.post("/webhooks/github", content=body, headers=gh(body, event="ping"))
    assert r.json() == {"status": "accepted", "delivery_id": "d-1"}
    [entry] = await raw_entries(store, "github")
    assert json.loads(entry["headers"])["x-github-event"] == "ping"


async def test_github_dedupes_on_hook_and_delivery(store):
    body = b'{"ref":"refs/heads/main"}'
    async with gateway_client(CFG, store) as client:
        first = await client.post("/webhooks/github", content=body, headers=gh(body, hook="1"))
        redelivery = await client.post("/webhooks/github", content=body, headers=gh(body, hook="1"))
        other_hook = await client.post("/webhooks/github", content=body, headers=gh(body, hook="2"))
    assert [r.json()["status"] for r in (first, redelivery, other_hook)] == [
        "accepted",
        "duplicate",
        "accepted",
    ]


async def test_github_legacy_sha1_only_is_refused(store):
    body = b"{}"
    sig = hmac.new(b"gh-secret", body, hashlib.sha1).hexdigest()
    headers = {"x-hub-signature": f"sha1={sig}", "x-github-delivery": "d"}
    async with gateway_client(CFG, store) as client:
        r = await client.post("/webhooks/github", content=body, headers=headers)
    assert r.status_code == 401
    assert "X-Hub-Signature-256" in r.json()["detail"]


async def test_github_without_delivery_header_is_400(store):
    body = b"{}"
    headers = gh(body)
    del headers["x-github-delivery"]
    async with gateway_client(CFG, store) as client:
        r = await client.post("/webhooks/github", content=body, headers=headers)
    assert r.status_code == 400
    assert "X-GitHub-Delivery" in r.json()["detail"]


def shopify(body: bytes, webhook_id: str | None = "wh-1"):
    sig = base64.b64encode(hmac.new(b"shp-secret", body, hashlib.sha256).digest()).decode()
    headers = {
        "x-shopify-hmac-sha256": sig,
        "x-shopify-topic": "orders/paid",
        "x-shopify-shop-domain": "shop.myshopify.com",
        "x-unrelated": "dropped",
    }
    if webhook_id:
        headers["x-shopify-webhook-id"] = webhook_id
    return headers


async def test_shopify_keeps_its_headers_and_the_exact_body(store):
    body = b'{"id": 820982911946154508, "email": "jon@example.com"}'
    async with gateway_client(CFG, store) as client:
        r = await client.post("/webhooks/shopify", content=body, headers=shopify(body))
    assert r.json() == {"status": "accepted", "delivery_id": "wh-1"}
    [entry] = await raw_entries(store, "shopify")
    assert entry["body"] == body
    kept = json.loads(entry["headers"])
    assert kept["x-shopify-topic"] == "orders/paid"
    assert kept["x-shopify-shop-domain"] == "shop.myshopify.com"
    assert "x-unrelated" not in kept


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        (
            {"x-shopify-hmac-sha256": "not-base64"},
            "the X-Shopify-Hmac-Sha256 signature is not an HMAC-SHA256 digest in base64 "
            "(44 characters): it is 10 characters, neither hex nor base64 of a digest",
        ),
        ({"x-shopify-hmac-sha256": "A" * 43 + "="}, "no signature matched"),
        ({}, "the X-Shopify-Hmac-Sha256 header is missing"),
    ],
    ids=["not-base64", "wrong", "missing"],
)
async def test_shopify_bad_signature_is_401(store, headers, detail):
    async with gateway_client(CFG, store) as client:
        r = await client.post(
            "/webhooks/shopify", content=b"{}", headers={**headers, "x-shopify-webhook-id": "w"}
        )
    assert r.status_code == 401
    assert r.json()["detail"].startswith(detail)


async def test_shopify_without_webhook_id_is_400(store):
    async with gateway_client(CFG, store) as client:
        r = await client.post("/webhooks/shopify", content=b"{}", headers=shopify(b"{}", None))
    assert r.status_code == 400
    assert r.json()["detail"] == "no delivery id: the X-Shopify-Webhook-Id header is missing"


def intercom(body: bytes):
    return {"x-hub-signature": "sha1=" + hmac.new(b"ic-secret", body, hashlib.sha1).hexdigest()}


async def test_intercom_delivery_id_comes_from_the_body(store):
    body = json.dumps(
        {
            "type": "notification_event",
            "id": "notif_ccd8a4d0",
            "topic": "contact.user.created",
            "created_at": 1700000000,
            "data": {"item": {"type": "contact", "id": "6543"}},
        }
    ).encode()
    async with gateway_client(CFG, store) as client:
        r = await client.post("/webhooks/intercom", content=body, headers=intercom(body))
    assert r.json() == {"status": "accepted", "delivery_id": "notif_ccd8a4d0"}


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"notification_event"}',
        b"[1,2]",
        b'{"id": {"a": 1}}',
        b'{"id": ""}',
        b'{"id": true}',
    ],
)
async def test_intercom_without_usable_id_is_400(store, body):
    async with gateway_client(CFG, store) as client:
        r = await client.post("/webhooks/intercom", content=body, headers=intercom(body))
    assert r.status_code == 400, r.text
    assert r.json()["reason"] == "bad_payload"
