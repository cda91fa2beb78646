"""Redis outages: a private redis-server on a free port is stopped, restarted and stalled.

Nothing a vendor sent may be lost: while Redis is away the answer is 503 with Retry-After
(the vendor retries), and the retry of a delivery that got 503 is accepted afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading

import redis as sync_redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway.errors import StoreUnavailable
from gateway.store import RawDelivery, Store
from tests.conftest import Clock, gateway_client, raw_entries, until

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
        r = await answered(client, "during")
        assert r.status_code == 503
        assert r.headers["retry-after"] == "5"
        assert r.json() == {
            "status": "unavailable",
            "reason": "store_unavailable",
            "detail": "Redis is unavailable (ConnectionError); retry later",
        }
        assert "Traceback" not in r.text
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
    admin = sync_redis.Redis(port=private_redis.port)
    async with gateway_client(CFG, store, Clock()) as client:
        assert (await answered(client, "warm")).status_code == 200
        admin.execute_command("CLIENT", "PAUSE", "30000", "WRITE")  # Redis stops writing
        r = await answered(client, "slow")
        assert r.status_code == 503
        # The client gave up on the call and closed its connection; Redis drops the
        # held write with it (the call never ran, so the vendor's retry must be stored).
        await until(lambda: blocked_writes(admin) == 0, what="the abandoned call to go")
        admin.execute_command("CLIENT", "UNPAUSE")
        retry = await answered(client, "slow")
        assert retry.status_code == 200
        assert retry.json()["status"] == "accepted"
    ids = [e["delivery_id"] for e in await raw_entries(store, "acme")]
    assert ids.count("slow") == 1
    await store.close()


async def test_a_write_that_lands_after_its_503_makes_the_retry_a_duplicate(private_redis):
    """Redis stalls (DEBUG SLEEP) with the write already sent: the vendor gets 503, Redis
    runs the write when it wakes, and the vendor's retry is a duplicate, stored once."""
    store = Store.connect(private_redis.url, "gw", timeout=0.5)
    async with gateway_client(CFG, store, Clock()) as client:
        assert (await answered(client, "warm")).status_code == 200
        stall = threading.Thread(
            target=lambda: sync_redis.Redis(port=private_redis.port).execute_command(
                "DEBUG", "SLEEP", "3"
            )
        )
        stall.start()
        await until(lambda: not _answers(private_redis.port), what="Redis to fall asleep")
        assert (await answered(client, "slow")).status_code == 503
        await asyncio.to_thread(stall.join)
        await until(lambda: _has(store, "slow"), what="Redis to run the write it held while asleep")
        retry = await answered(client, "slow")
        assert retry.status_code == 200
        assert retry.json()["status"] == "duplicate"
    ids = [e["delivery_id"] for e in await raw_entries(store, "acme")]
    assert ids.count("slow") == 1
    await store.close()


def _answers(port: int) -> bool:
    try:
        # No answer in 0.25 s: asleep (a PING under load is slower, but not that slow; the
        # 3 s sleep leaves the request that follows time to land inside it).
        probe = sync_redis.Redis(port=port, socket_timeout=0.25, retry=Retry(NoBackoff(), 0))
        return bool(probe.ping())
    except sync_redis.TimeoutError:
        return False


async def _has(store: Store, delivery: str) -> bool:
    return delivery in [e["delivery_id"] for e in await raw_entries(store, "acme")]


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
    admin = sync_redis.Redis(port=private_redis.port)
    async with gateway_client(CFG, store, Clock()) as client:
        assert (await answered(client, "w")).status_code == 200
        admin.execute_command("CLIENT", "PAUSE", "30000", "WRITE")
        try:
            in_flight = asyncio.create_task(answered(client, "one"))
            await until(lambda: blocked_writes(admin) == 1, what="the first call to hang")
            waiting = asyncio.create_task(answered(client, "two"))  # queued behind it
            assert (await in_flight).status_code == 503
            assert (await waiting).status_code == 503
            # Redis stays paused for another ~30 s: an answer now is this request's own
            # deadline's, not a wait for Redis or for the calls before it.
            late = await answered(client, "three")
            assert late.status_code == 503
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
    await store.close()


def blocked_writes(admin: sync_redis.Redis) -> int:
    """Commands Redis holds back (here: script calls waiting out a CLIENT PAUSE WRITE)."""
    return admin.info("clients")["blocked_clients"]


async def answered(client, delivery: str):
    """POST one delivery. The gateway must answer within redis_timeout (0.5 s) plus its
    own work; 10 s of slack keeps a slow machine from failing this, while a request that
    waits on a hung Redis (paused for 30 s in these tests) still fails it."""
    return await asyncio.wait_for(
        client.post("/webhooks/acme", content=b"{}", headers=signed(delivery)), 10
    )


async def test_accept_many_answers_each_delivery_in_order(private_redis):
    """A collected batch's messages share the store's script calls without a task each:
    each gets its own answer (a copy is a duplicate), and with Redis gone each gets 503."""
    store = Store.connect(private_redis.url, "gw", timeout=0.5)
    try:

        def delivery(i: str) -> RawDelivery:
            return RawDelivery("web", i, i, 1_700_000_000_000, b"{}", b"{}", 60_000, 1000)

        await store.accept(delivery("m-1"))
        results = await store.accept_many([delivery("m-0"), delivery("m-1"), delivery("m-2")])
        assert [r.accepted for r in results] == [True, False, True]  # type: ignore[union-attr]
        assert await store.client.xlen(store.keys.raw("web")) == 3
        private_redis.stop()
        down = await store.accept_many([delivery("m-3"), delivery("m-4")])
        assert all(isinstance(r, StoreUnavailable) for r in down), down
    finally:
        await store.close()


async def test_replicated_durability_answers_503_while_no_replica_confirms(private_redis):
    """A Redis without a replica cannot confirm a write: `durability: replicated` answers
    503 (the vendor retries; the write did land on the primary, so the retry is a
    duplicate), `memory` answers 200."""
    replicated = Store.connect(private_redis.url, "gw", timeout=1.0, durability="replicated")
    async with gateway_client(CFG, replicated, Clock()) as client:
        r = await client.post("/webhooks/acme", content=b"{}", headers=signed("d1"))
        assert r.status_code == 503
        assert r.headers["retry-after"] == "5"
        assert "no replica confirmed the write" in r.json()["detail"]
    memory = Store.connect(private_redis.url, "gw", timeout=0.5)
    async with gateway_client(CFG, memory, Clock()) as client:
        r = await client.post("/webhooks/acme", content=b"{}", headers=signed("d1"))
        assert (r.status_code, r.json()["status"]) == (200, "duplicate")
        r = await client.post("/webhooks/acme", content=b"{}", headers=signed("d2"))
        assert (r.status_code, r.json()["status"]) == (200, "accepted")
    await replicated.close()
    await memory.close()


async def test_a_workers_replicated_write_waits_for_a_replica_instead_of_failing(private_redis):
    """The workers' writes before an acknowledgement (execute_durably) wait on the same
    connection until a replica has them, instead of failing and being redone (which
    would add copies of events): here until a replica is attached at all."""
    from tests.conftest import free_port
    from tests.services import RedisServer

    store = Store.connect(private_redis.url, "gw", timeout=1.0, durability="replicated")
    write = asyncio.create_task(store.execute_durably([("SET", "gw:durable", "v")]))
    # longer than a webhook's WAIT (0.4 s at this timeout), which would have failed by now
    done, _ = await asyncio.wait({write}, timeout=1.5)
    assert not done, write.result()
    replica = RedisServer(free_port())
    replica.start()
    try:
        sync_redis.Redis(port=replica.port).replicaof("127.0.0.1", private_redis.port)
        assert await asyncio.wait_for(write, 30) == [b"OK"]
        assert sync_redis.Redis(port=replica.port).get("gw:durable") == b"v"
    finally:
        replica.stop()
        await store.close()


async def test_a_full_redis_still_answers_duplicates(private_redis):
    """Redis at maxmemory (noeviction) refuses new deliveries (503: the vendor retries)
    but a vendor's retry of a stored one is still answered duplicate: that path writes
    nothing under `durability: memory`."""
    store = Store.connect(private_redis.url, "gw", timeout=1.0)
    admin = sync_redis.Redis(port=private_redis.port)
    try:
        async with gateway_client(CFG, store, Clock()) as client:
            first = await client.post("/webhooks/acme", content=b"{}", headers=signed("d1"))
            assert first.json()["status"] == "accepted"
            admin.config_set("maxmemory", 1)
            again = await client.post("/webhooks/acme", content=b"{}", headers=signed("d1"))
            assert (again.status_code, again.json()["status"]) == (200, "duplicate")
            new = await client.post("/webhooks/acme", content=b"{}", headers=signed("d2"))
            assert new.status_code == 503
    finally:
        admin.config_set("maxmemory", 0)
        await store.close()


async def test_a_connection_lost_during_the_patient_wait_does_not_write_again(private_redis):
    """The writes were made before the wait: losing the connection then must not send
    them again (a second XADD would be a copy of the event)."""
    store = Store.connect(private_redis.url, "gw", timeout=1.0, durability="replicated")
    admin = sync_redis.Redis(port=private_redis.port)
    write = asyncio.create_task(store.execute_durably([("XADD", "gw:s", "*", "k", "v")]))
    try:
        # waiting: the XADD is in, the connection sits in WAIT (no replica to confirm)
        await until(lambda: admin.xlen("gw:s") == 1 and not write.done(), what="the wait")
        admin.client_kill_filter(_type="normal", skipme=True)
        try:
            await asyncio.wait_for(write, 10)
            raise AssertionError("confirmed without a replica")
        except StoreUnavailable as e:
            assert "lost while waiting" in str(e)
        assert admin.xlen("gw:s") == 1
    finally:
        admin.delete("gw:s")
        await store.close()
