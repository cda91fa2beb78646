"""Redis outages: a private redis-server on a free port is stopped, restarted and stalled.

Nothing a vendor sent may be lost: while Redis is away the answer is 503 with Retry-After
(the vendor retries), and the retry of a delivery that got 503 is accepted afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time

import redis as sync_redis

from gateway.store import Store
from tests.conftest import Clock, gateway_client, raw_entries

CFG = """
redis_timeout: 500ms
sources:
  acme:
    type: hmac
    secrets: [s]
    signature_header: X-Sig
    delivery_id_header: X-Id
"""


def signed(delivery: str, body: bytes = b"{}") -> dict[str, str]:
    return {"x-sig": hmac.new(b"s", body, hashlib.sha256).hexdigest(), "x-id": delivery}


async def test_outage_gives_503_and_the_retry_is_accepted(private_redis):
    store = Store.connect(private_redis.url, "gw", timeout=0.5)
    async with gateway_client(CFG, store, Clock()) as client:
        assert (
            await client.post("/webhooks/acme", content=b"{}", headers=signed("before"))
        ).status_code == 200

        private_redis.stop()
        started = time.monotonic()
        r = await client.post("/webhooks/acme", content=b"{}", headers=signed("during"))
        assert r.status_code == 503
        assert r.headers["retry-after"] == "5"
        assert r.json()["reason"] == "store_unavailable"
        assert "Traceback" not in r.text
        assert time.monotonic() - started < 3
        assert (await client.get("/readyz")).status_code == 503

        private_redis.start()  # a fresh, empty Redis: its script cache is empty too
        retry = await client.post("/webhooks/acme", content=b"{}", headers=signed("during"))
        assert retry.status_code == 200
        assert retry.json()["status"] == "accepted"  # not mistaken for a duplicate
        assert (await client.get("/readyz")).status_code == 200
    [entry] = await raw_entries(store, "acme")
    assert entry["delivery_id"] == "during"
    await store.close()


async def test_redis_down_at_start_then_up(private_redis):
    private_redis.stop()
    store = Store.connect(private_redis.url, "gw", timeout=0.5)
    async with gateway_client(CFG, store, Clock()) as client:
        assert (
            await client.post("/webhooks/acme", content=b"{}", headers=signed("x"))
        ).status_code == 503
        private_redis.start()
        assert (
            await client.post("/webhooks/acme", content=b"{}", headers=signed("x"))
        ).status_code == 200
    await store.close()


async def test_slow_redis_gives_503_within_the_timeout_and_nothing_is_lost(private_redis):
    store = Store.connect(private_redis.url, "gw", timeout=0.5)
    async with gateway_client(CFG, store, Clock()) as client:
        assert (
            await client.post("/webhooks/acme", content=b"{}", headers=signed("warm"))
        ).status_code == 200
        stall = threading.Thread(
            target=lambda: sync_redis.Redis(port=private_redis.port).execute_command(
                "DEBUG", "SLEEP", "1.5"
            )
        )
        stall.start()
        await asyncio.sleep(0.1)
        started = time.monotonic()
        r = await client.post("/webhooks/acme", content=b"{}", headers=signed("slow"))
        waited = time.monotonic() - started
        assert r.status_code == 503
        assert waited < 1.2
        stall.join()
        # Redis ran the queued write once it woke up: the vendor's retry finds it stored.
        retry = await client.post("/webhooks/acme", content=b"{}", headers=signed("slow"))
        assert retry.status_code == 200
        assert retry.json()["status"] == "duplicate"
    ids = [e["delivery_id"] for e in await raw_entries(store, "acme")]
    assert ids.count("slow") == 1
    await store.close()


async def test_script_cache_flush_is_survived(private_redis):
    store = Store.connect(private_redis.url, "gw", timeout=0.5)
    async with gateway_client(CFG, store, Clock()) as client:
        assert (
            await client.post("/webhooks/acme", content=b"{}", headers=signed("a"))
        ).status_code == 200
        await store.client.script_flush()
        r = await client.post("/webhooks/acme", content=b"{}", headers=signed("b"))
        assert r.json()["status"] == "accepted"
    await store.close()


async def test_requests_arriving_after_a_deadline_get_their_own(private_redis):
    """While one call hangs, later requests still get their answer within redis_timeout."""
    store = Store.connect(private_redis.url, "gw", timeout=0.5)
    async with gateway_client(CFG, store, Clock()) as client:
        assert (
            await client.post("/webhooks/acme", content=b"{}", headers=signed("w"))
        ).status_code == 200
        await store.client.execute_command("CLIENT", "PAUSE", "2500", "ALL")
        in_flight = asyncio.create_task(
            client.post("/webhooks/acme", content=b"{}", headers=signed("one"))
        )
        await asyncio.sleep(0.1)
        waiting = asyncio.create_task(  # queued behind the hanging call
            client.post("/webhooks/acme", content=b"{}", headers=signed("two"))
        )
        await asyncio.sleep(1.4)  # both deadlines have passed
        started = time.monotonic()
        late = await client.post("/webhooks/acme", content=b"{}", headers=signed("three"))
        waited = time.monotonic() - started
        assert (await in_flight).status_code == 503
        assert (await waiting).status_code == 503
        assert late.status_code == 503
        assert waited < 1.3, waited  # its own deadline (1 s), not the hanging call's
    await store.close()
