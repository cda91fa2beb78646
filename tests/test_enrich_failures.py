"""Enrichment under failure, pinned from a review: a failed round trip redoes its links,
merge events survive a write that fails, NOSCRIPT, pending ids bounded by the ext cap."""

from __future__ import annotations

import hashlib
import uuid

import pytest
import redis as sync_redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from gateway.errors import StoreUnavailable
from gateway.store import Store
from gateway.worker import NormalizeWorker
from tests.conftest import Clock, drop_prefix, gateway_client
from tests.test_enrich import (
    NOW,
    Site,
    _cfg,
    _customer,
    _drain,
    _events,
    _setup,
    _stripe,
)


async def _raw_entries(store: Store, worker: NormalizeWorker):
    out = []
    for key, source in worker.streams.items():
        for eid, fields in await store.client.xrange(key):
            out.append((source, eid.decode(), fields))
    return out


# G ------------------------------------------------------------------------------------
async def test_a_failed_round_trip_does_not_skip_the_link_on_redo(redis_store):
    cfg, worker = await _setup(redis_store)
    async with gateway_client(cfg, redis_store, Clock(NOW)) as c:
        site = Site(c, cfg)
        aid = await site.visit()
        await site.collect(
            "identify", {"anonymousId": aid, "userId": "u-g", "traits": {"email": "g@x.io"}}
        )
    entries = await _raw_entries(redis_store, worker)
    execute = redis_store.execute
    failed = []

    async def flaky(commands, **options):
        if not failed and any(c[0] == "EVALSHA" for c in commands):
            failed.append(1)
            raise RedisConnectionError("Redis went away for a moment")
        return await execute(commands, **options)

    redis_store.execute = flaky  # type: ignore[method-assign]
    try:
        # The worker loop logs this and reclaims the entries later.
        with pytest.raises(StoreUnavailable):
            await worker.handle(entries)
        await worker.handle(entries)  # the redo (reclaim) by the same worker
    finally:
        redis_store.execute = execute  # type: ignore[method-assign]
    graph = worker.pipeline.enricher.graph
    profile = await graph.profile("user:u-g")
    assert len([e for e in await _events(redis_store) if e["type"] == "identify"]) == 1
    assert profile is not None, "the identify's link was skipped on the redo (link cache)"


# H ------------------------------------------------------------------------------------
async def test_pending_merges_survive_a_write_that_fails(private_redis):
    """Memory crosses maxmemory between the observe and the write round trip: XADD is
    refused (denyoom), HDEL is not. The redo must still emit the alias."""
    prefix = f"review-{uuid.uuid4().hex[:8]}"
    store = Store.connect(private_redis.url, prefix, timeout=2.0)
    admin = sync_redis.Redis(port=private_redis.port)
    try:
        cfg = _cfg()
        worker = NormalizeWorker(cfg, store, "w1")
        await worker.ensure_groups()
        async with gateway_client(cfg, store, Clock(NOW)) as c:
            site = Site(c, cfg)
            await site.stripe(_stripe("evt_h1", "customer.created", _customer("cus_h", "h@x.io")))
            await _drain(worker)
            # Linked later on the server side (no web session: no a:anon on the profile).
            await site.collect("identify", {"userId": "u-h", "traits": {"email": "h@x.io"}})
        execute = store.execute
        calls = []

        async def squeeze(commands, **options):
            calls.append(1)
            if len(calls) == 2:  # the write round trip
                admin.config_set("maxmemory", 1)
            try:
                return await execute(commands, **options)
            finally:
                admin.config_set("maxmemory", 0)

        store.execute = squeeze  # type: ignore[method-assign]
        try:
            with pytest.raises(ResponseError, match="maxmemory"):
                await worker.read_once()
        finally:
            store.execute = execute  # type: ignore[method-assign]
        profile = await worker.pipeline.enricher.graph.profile("user:u-h")
        assert profile is not None and profile["pending"]  # not cleared by the failed write
        # The redo (the entry is still pending): read our own pending entries again.
        reply = await store.client.xreadgroup("normalize", "w1", {store.keys.raw("web"): "0"})
        entries = [("web", eid.decode(), f) for _, items in reply for eid, f in items]
        await worker.handle(entries)
        aliases = [e for e in await _events(store) if e["type"] == "alias"]
        assert aliases, "the history join was lost: pending cleared by a write that failed"
    finally:
        admin.config_set("maxmemory", 0)
        await drop_prefix(store.client, prefix)
        await store.close()
        admin.close()


# I ------------------------------------------------------------------------------------
async def test_scripts_forgotten_by_redis_are_loaded_and_the_batch_rerun(private_redis):
    prefix = f"review-{uuid.uuid4().hex[:8]}"
    store = Store.connect(private_redis.url, prefix, timeout=2.0)
    admin = sync_redis.Redis(port=private_redis.port)
    try:
        cfg = _cfg()
        worker = NormalizeWorker(cfg, store, "w1")
        await worker.ensure_groups()
        async with gateway_client(cfg, store, Clock(NOW)) as c:
            site = Site(c, cfg)
            aid = await site.visit()
            await site.collect(
                "identify", {"anonymousId": aid, "userId": "u-i", "traits": {"email": "i@x.io"}}
            )
            await _drain(worker)
            admin.script_flush()
            await site.stripe(_stripe("evt_i1", "customer.created", _customer("cus_i", "i@x.io")))
            await _drain(worker)
        [ident] = [e for e in await _events(store) if e["context"]["source"]["name"] == "stripe"]
        assert ident.get("userId") == "u-i"
    finally:
        await drop_prefix(store.client, prefix)
        await store.close()
        admin.close()


# J ------------------------------------------------------------------------------------
async def test_pending_merges_are_bounded_by_the_ext_limit(redis_store):
    cfg, worker = await _setup(redis_store)
    async with gateway_client(cfg, redis_store, Clock(NOW)) as c:
        site = Site(c, cfg)
        for i in range(60):  # 60 Stripe customers, one email (guest checkouts, signups)
            await site.stripe(
                _stripe(f"evt_j{i}", "customer.created", _customer(f"cus_j{i}", "j@x.io"))
            )
        await _drain(worker)
        graph = worker.pipeline.enricher.graph
        profile = await graph.profile("email:" + hashlib.sha256(b"j@x.io").hexdigest())
        ext = [x for x in profile["identifiers"] if x.startswith("ext:")]
        await site.collect("identify", {"userId": "u-j", "traits": {"email": "j@x.io"}})
        await _drain(worker)
    aliases = [e for e in await _events(redis_store) if e["type"] == "alias"]
    linked = {x.rpartition(":")[2] for x in ext}
    outside = [a["previousId"] for a in aliases if a["previousId"].partition(":")[2] not in linked]
    assert len(profile["pending"]) <= 50 and not outside
