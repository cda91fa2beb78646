"""The front door: status codes, what is stored, concurrency, limits."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import pytest

from gateway.app import create_app
from gateway.store import Store
from tests.conftest import Clock, config, gateway_client, raw_entries

SECRET = "s3cret"
CFG = f"""
sources:
  acme:
    type: hmac
    secrets: [{SECRET}]
    signature_header: X-Acme-Signature
    delivery_id_header: X-Acme-Delivery
    keep_headers: [X-Acme-Event]
    max_body: 64KiB
    dedupe_ttl: 1h
"""


def signed(body: bytes, delivery: str = "d-1", **extra: str) -> dict[str, str]:
    sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"x-acme-signature": sig, "x-acme-delivery": delivery, **extra}


async def test_accepted_delivery_is_stored_exactly(store):
    body = bytes(range(256)) * 3  # not UTF-8, not JSON: stored byte for byte
    headers = signed(
        body,
        "d-42",
        **{
            "x-acme-event": "order.paid",
            "content-type": "x/y",
            "authorization": "Bearer never-stored",
        },
    )
    async with gateway_client(CFG, store, Clock(1_700_000_000.123)) as client:
        r = await client.post("/webhooks/acme", content=body, headers=headers)
    assert r.status_code == 200
    assert r.json() == {"status": "accepted", "delivery_id": "d-42"}
    [entry] = await raw_entries(store, "acme")
    assert entry["body"] == body
    assert entry["source"] == "acme"
    assert entry["delivery_id"] == "d-42"
    assert entry["received_at"] == "1700000000123"
    assert json.loads(entry["headers"]) == {
        "content-type": "x/y",
        "x-acme-signature": headers["x-acme-signature"],
        "x-acme-delivery": "d-42",
        "x-acme-event": "order.paid",
    }


async def test_seen_mark_lives_for_dedupe_ttl(store):
    body = b"{}"
    async with gateway_client(CFG, store) as client:
        await client.post("/webhooks/acme", content=body, headers=signed(body))
    ttl = await store.client.pttl(store.keys.seen("acme", "d-1"))
    assert 3_590_000 < ttl <= 3_600_000


async def test_fifty_concurrent_copies_one_accepted(store):
    body = b'{"n": 1}'
    async with gateway_client(CFG, store) as client:
        replies = await asyncio.gather(
            *(client.post("/webhooks/acme", content=body, headers=signed(body)) for _ in range(50))
        )
    statuses = [r.json()["status"] for r in replies]
    assert {r.status_code for r in replies} == {200}
    assert statuses.count("accepted") == 1
    assert statuses.count("duplicate") == 49
    assert len(await raw_entries(store, "acme")) == 1


async def test_two_gateway_processes_share_the_seen_set(redis_url, redis_store):
    """Two apps, each with its own connection pool (as two processes would have)."""
    other = Store.connect(redis_url, redis_store.keys.prefix)
    body = b"{}"
    try:
        async with gateway_client(CFG, redis_store) as a, gateway_client(CFG, other) as b:
            replies = await asyncio.gather(
                *(
                    (a if i % 2 else b).post("/webhooks/acme", content=body, headers=signed(body))
                    for i in range(50)
                )
            )
    finally:
        await other.close()
    assert [r.json()["status"] for r in replies].count("accepted") == 1
    assert len(await raw_entries(redis_store, "acme")) == 1


async def test_many_deliveries_at_once_are_all_stored(store):
    async with gateway_client(CFG, store) as client:
        replies = await asyncio.gather(
            *(
                client.post("/webhooks/acme", content=b"{}", headers=signed(b"{}", f"d-{i}"))
                for i in range(600)  # more than one script call's batch
            )
        )
    assert all(r.json()["status"] == "accepted" for r in replies)
    entries = await raw_entries(store, "acme")
    assert sorted(e["delivery_id"] for e in entries) == sorted(f"d-{i}" for i in range(600))


async def test_raw_stream_is_trimmed_to_about_raw_retention(redis_store):
    cfg = CFG + "    raw_retention: 10\n"
    async with gateway_client(cfg, redis_store) as client:
        for i in range(400):
            await client.post("/webhooks/acme", content=b"{}", headers=signed(b"{}", f"d-{i}"))
    length = await redis_store.client.xlen(redis_store.keys.raw("acme"))
    assert 10 <= length < 400  # MAXLEN ~ trims whole stream nodes, so "about"


@pytest.mark.parametrize(
    ("method", "path", "status", "reason"),
    [
        ("GET", "/webhooks/acme", 405, "method_not_allowed"),
        ("PUT", "/webhooks/acme", 405, "method_not_allowed"),
        ("POST", "/webhooks/nobody", 404, "unknown_source"),
    ],
)
async def test_wrong_method_or_source(store, method, path, status, reason):
    async with gateway_client(CFG, store) as client:
        r = await client.request(method, path, content=b"{}")
    assert r.status_code == status
    assert r.json()["reason"] == reason
    if status == 405:
        assert r.headers["allow"] == "POST"


async def test_declared_oversize_body_is_413(store):
    async with gateway_client(CFG, store) as client:
        r = await client.post(
            "/webhooks/acme", content=b"x" * (64 * 1024 + 1), headers=signed(b"x")
        )
    assert r.status_code == 413
    assert "65536" in r.json()["detail"]


async def test_streamed_oversize_body_is_413(store):
    async def chunks():
        for _ in range(100):
            yield b"x" * 4096

    async with gateway_client(CFG, store) as client:
        r = await client.post("/webhooks/acme", content=chunks(), headers=signed(b"x"))
    assert r.status_code == 413


async def test_body_at_the_limit_is_fine(store):
    body = b"x" * (64 * 1024)
    async with gateway_client(CFG, store) as client:
        r = await client.post("/webhooks/acme", content=body, headers=signed(body))
    assert r.status_code == 200


async def test_bad_content_length_is_400(store):
    app = create_app(config(CFG), store=store)
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/webhooks/acme",
        "raw_path": b"",
        "root_path": "",
        "query_string": b"",
        "scheme": "http",
        "server": ("x", 80),
        "headers": [(b"content-length", b"lots")],
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert b"Content-Length" in sent[1]["body"]


async def test_missing_delivery_id_is_400(store):
    body = b"{}"
    headers = signed(body)
    del headers["x-acme-delivery"]
    async with gateway_client(CFG, store) as client:
        r = await client.post("/webhooks/acme", content=body, headers=headers)
    assert r.status_code == 400
    assert "x-acme-delivery" in r.json()["detail"]
    assert await raw_entries(store, "acme") == []


async def test_health_and_readiness(store):
    async with gateway_client(CFG, store) as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"
        ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
