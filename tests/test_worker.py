"""The normalize worker against real Redis: raw streams -> events stream, crashes included."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgspec
import redis as sync_redis
import stripe

from gateway.config import parse_config
from gateway.store import RawDelivery, Store
from gateway.worker import GROUP, NormalizeWorker
from tests.conftest import (
    Clock,
    drop_keys,
    drop_prefix,
    expected_message_id,
    gateway_client,
    group_settled,
    pending_idle,
    until,
)

FIXTURES = Path(__file__).parent / "fixtures"
CFG = """
key_prefix: {prefix}
worker: {{batch: 50, claim_idle: 200ms}}
schema: {schema}
events:
  Charge Succeeded:
    properties:
      revenue: {{type: number, required: true}}
      currency: {{type: string}}
sources:
  stripe: {{type: stripe, secrets: [whsec_w]}}
  forms:
    type: hmac
    secrets: [x]
    signature_header: Sig
    mappings:
      - when: "kind == 'submit'"
        event: Form Submitted
        properties: {{form: form}}
"""


def make_config(prefix: str, schema: str = "off", redis_url: str = ""):
    text = CFG.format(prefix=prefix, schema=schema)
    if redis_url:
        text = f"redis_url: {redis_url}\n" + text
    return parse_config(text, "w.yaml", {})


def stripe_event(event_id: str, kind: str = "charge.succeeded") -> bytes:
    event = json.loads((FIXTURES / "stripe" / "charge.succeeded.json").read_text())
    event["id"] = event_id
    event["type"] = kind
    return json.dumps(event).encode()


async def put(store: Store, source: str, delivery_id: str, body: bytes) -> None:
    result = await store.accept(
        RawDelivery(
            source, delivery_id, delivery_id, 1_700_000_000_000, b"{}", body, 60_000, 100_000
        )
    )
    assert result.accepted


async def events(store: Store) -> list[dict]:
    return [
        {k.decode(): v for k, v in f.items()}
        for _, f in await store.client.xrange(store.keys.events())
    ]


async def pending(store: Store, source: str) -> int:
    info = await store.client.xpending(store.keys.raw(source), GROUP)
    return info["pending"]


async def test_deliveries_become_events_and_are_acknowledged(store):
    config = make_config(store.keys.prefix)
    worker = NormalizeWorker(config, store, "w1")
    await worker.ensure_groups()
    await put(store, "stripe", "evt_1", stripe_event("evt_1"))
    await put(store, "forms", "f1", b'{"kind": "submit", "form": "signup"}')
    assert await worker.read_once() == 2
    out = await events(store)
    names = sorted(e["event"].decode() for e in out)
    assert names == ["Charge Succeeded", "Form Submitted"]
    by_id = {e["message_id"].decode(): msgspec.json.decode(e["data"]) for e in out}
    assert expected_message_id("stripe", "evt_1", 0, "Charge Succeeded") in by_id
    form = by_id[expected_message_id("forms", "f1", 0, "Form Submitted")]
    assert form["properties"] == {"form": "signup"}
    assert await pending(store, "stripe") == 0 and await pending(store, "forms") == 0


async def test_through_the_front_door(redis_store):
    """A signed Stripe webhook in, the event out, with the original time and the same id."""
    config = make_config(redis_store.keys.prefix)
    worker = NormalizeWorker(config, redis_store, "w1")
    await worker.ensure_groups()
    body = stripe_event("evt_front")
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), "whsec_w", timestamp=1_700_000_050
    )
    async with gateway_client(config, redis_store, Clock(1_700_000_060)) as client:
        r = await client.post(
            "/webhooks/stripe", content=body, headers={"stripe-signature": header}
        )
    assert r.json()["status"] == "accepted"
    await worker.read_once()
    [event] = await events(redis_store)
    data = msgspec.json.decode(event["data"])
    assert data["messageId"] == expected_message_id("stripe", "evt_front", 0, "Charge Succeeded")
    assert data["timestamp"] == "2023-11-14T22:15:01.000Z"  # the Stripe event's `created`
    assert data["receivedAt"] == "2023-11-14T22:14:20.000Z"  # when the gateway took it


async def test_unmappable_delivery_goes_to_quarantine_and_the_worker_moves_on(store):
    config = make_config(store.keys.prefix)
    worker = NormalizeWorker(config, store, "w1")
    await worker.ensure_groups()
    await put(store, "stripe", "evt_bad", b'{"id": "evt_bad", "object": "not-an-event"}')
    await put(store, "stripe", "evt_ok", stripe_event("evt_ok"))
    await worker.read_once()
    assert [e["delivery_id"] for e in await events(store)] == [b"evt_ok"]
    [(_, q)] = await store.client.xrange(store.keys.quarantine())
    assert q[b"delivery_id"] == b"evt_bad" and q[b"stage"] == b"normalize"
    assert b"not a Stripe event" in q[b"reason"]
    assert await pending(store, "stripe") == 0


async def test_tracking_plan_enforce_quarantines_warn_passes(redis_store):
    body = stripe_event("evt_plan")
    event = json.loads(body)
    event["data"]["object"]["captured"] = False  # no revenue: breaks the plan
    for mode, expect_events in (("enforce", 0), ("warn", 1)):
        await drop_prefix(redis_store.client, redis_store.keys.prefix)
        worker = NormalizeWorker(make_config(redis_store.keys.prefix, mode), redis_store, "w")
        await worker.ensure_groups()
        await put(redis_store, "stripe", "evt_plan", json.dumps(event).encode())
        await worker.read_once()
        assert len(await events(redis_store)) == expect_events, mode
        quarantine = await redis_store.client.xrange(redis_store.keys.quarantine())
        if mode == "enforce":
            [(_, q)] = quarantine
            assert q[b"stage"] == b"schema"
            assert b"'revenue' is required" in q[b"reason"]
            assert msgspec.json.decode(q[b"event"])["event"] == "Charge Succeeded"
        else:
            assert quarantine == []


async def test_an_event_not_in_the_plan_is_refused_under_enforce(redis_store):
    worker = NormalizeWorker(make_config(redis_store.keys.prefix, "enforce"), redis_store, "w")
    await worker.ensure_groups()
    await put(redis_store, "forms", "f", b'{"kind": "submit", "form": "x"}')
    await worker.read_once()
    [(_, q)] = await redis_store.client.xrange(redis_store.keys.quarantine())
    assert b"'Form Submitted' is not in the tracking plan" in q[b"reason"]


async def test_a_crashed_workers_deliveries_are_reclaimed(redis_store):
    # claim_idle 1 s: long enough that "not yet" holds on a loaded machine.
    text = CFG.format(prefix=redis_store.keys.prefix, schema="off").replace("200ms", "1s")
    config = parse_config(text, "w.yaml", {})
    survivor = NormalizeWorker(config, redis_store, "survivor")
    await survivor.ensure_groups()
    for i in range(5):
        await put(redis_store, "stripe", f"evt_{i}", stripe_event(f"evt_{i}"))
    # A worker reads them and dies before appending events or acknowledging.
    taken = await redis_store.client.xreadgroup(
        GROUP, "crashed", {redis_store.keys.raw("stripe"): ">"}, count=10
    )
    assert len(taken[0][1]) == 5
    assert await survivor.reclaim() == 0  # not idle long enough yet
    assert await survivor.read_once() == 0  # nothing new for the others
    raw = redis_store.keys.raw("stripe")
    await until(
        lambda: pending_idle(redis_store.client, raw, GROUP, 1000),
        what="entries idle past claim_idle",
    )
    assert await survivor.reclaim() == 5
    ids = {e["message_id"].decode() for e in await events(redis_store)}
    assert ids == {
        expected_message_id("stripe", f"evt_{i}", 0, "Charge Succeeded") for i in range(5)
    }
    assert await pending(redis_store, "stripe") == 0


async def test_two_workers_share_the_work(redis_url):
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    config = make_config(prefix)
    stores = [Store.connect(redis_url, prefix) for _ in range(2)]
    try:
        workers = [NormalizeWorker(config, s, f"w{i}") for i, s in enumerate(stores)]
        await workers[0].ensure_groups()
        for i in range(300):
            await put(stores[0], "forms", f"f{i}", b'{"kind": "submit", "form": "x"}')
        stop = asyncio.Event()
        tasks = [asyncio.create_task(w.run(stop)) for w in workers]
        await until(
            lambda: group_settled(stores[0].client, stores[0].keys.raw("forms"), GROUP),
            20,
            what="every delivery normalized",
        )
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        out = await events(stores[0])
        assert len(out) == 300  # no crash: each delivery exactly once
        assert len({e["message_id"] for e in out}) == 300
        assert all(w.stats.deliveries > 0 for w in workers), [w.stats for w in workers]
    finally:
        await drop_prefix(stores[0].client, prefix)
        for s in stores:
            await s.close()


async def test_worker_in_embedded_mode(monkeypatch):
    store = Store.connect("", "emb")
    config = make_config("emb")
    stop = asyncio.Event()
    task = asyncio.create_task(NormalizeWorker(config, store, "w").run(stop))
    await put(store, "forms", "f1", b'{"kind": "submit", "form": "x"}')
    await until(lambda: events(store), what="the event")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert [e["event"] for e in await events(store)] == [b"Form Submitted"]
    await store.close()


def test_kill_dash_9_mid_batch_loses_nothing(redis_url, tmp_path):
    """A worker process killed with SIGKILL; a second one finishes; every event is there."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        f"redis_url: {redis_url}\n"
        + CFG.format(prefix=prefix, schema="off").replace("batch: 50", "batch: 20")
    )
    client = sync_redis.Redis.from_url(redis_url)
    store_keys = Store(None, prefix).keys  # type: ignore[arg-type]
    total = 3000
    raw = store_keys.raw("forms")
    client.xgroup_create(raw, GROUP, id="0", mkstream=True)
    pipe = client.pipeline(transaction=False)
    for i in range(total):
        pipe.xadd(
            raw,
            {
                "source": "forms",
                "delivery_id": f"f{i}",
                "received_at": 1,
                "headers": b"{}",
                "body": b'{"kind": "submit", "form": "x"}',
            },
        )
    pipe.execute()
    env = {**os.environ, "LOG_LEVEL": "warning"}
    cmd = [sys.executable, "-m", "gateway.cli", "worker", "--config", str(config_file)]
    try:
        first = subprocess.Popen(
            [*cmd, "--name", "first"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and client.xlen(store_keys.events()) < total // 10:
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait()
        done_before = client.xlen(store_keys.events())
        assert 0 < done_before < total, "kill the worker mid-way"
        second = subprocess.Popen(
            [*cmd, "--name", "second"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        expected = {
            expected_message_id("forms", f"f{i}", 0, "Form Submitted").encode()
            for i in range(total)
        }
        seen: set[bytes] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and seen != expected:
            seen = {f[b"message_id"] for _, f in client.xrange(store_keys.events())}
            time.sleep(0.2)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=10) == 0
        assert seen == expected  # every delivery's event, possibly some twice
        assert client.xpending(raw, GROUP)["pending"] == 0
    finally:
        drop_keys(redis_url, prefix)


async def test_a_poison_entry_is_quarantined_and_the_batch_goes_on(redis_store):
    config = make_config(redis_store.keys.prefix)
    worker = NormalizeWorker(config, redis_store, "w1")
    await worker.ensure_groups()
    raw = redis_store.keys.raw("forms")
    await redis_store.client.xadd(
        raw,
        {
            "source": "forms",
            "delivery_id": "bad",
            "received_at": "abc",
            "headers": "{}",
            "body": "{}",
        },
    )
    await put(redis_store, "forms", "good", b'{"kind": "submit", "form": "x"}')
    assert await worker.read_once() == 2
    assert [e["delivery_id"] for e in await events(redis_store)] == [b"good"]
    [(_, q)] = await redis_store.client.xrange(redis_store.keys.quarantine())
    assert q[b"delivery_id"] == b"bad" and b"unexpected ValueError" in q[b"reason"]
    assert await pending(redis_store, "forms") == 0


async def test_a_worker_rides_out_a_redis_restart(private_redis):
    """Redis dies under a running worker and comes back empty (no streams, no groups): the
    worker waits, recreates its groups and normalizes what arrives, without a restart."""
    from structlog.testing import capture_logs

    store = Store.connect(private_redis.url, "gw", timeout=0.5)
    worker = NormalizeWorker(make_config("gw"), store, "w1")
    stop = asyncio.Event()
    body = b'{"kind": "submit", "form": "x"}'
    try:
        with capture_logs() as logged:
            task = asyncio.create_task(worker.run(stop))
            await put(store, "forms", "before", body)
            await until(lambda: events(store), what="the first event")

            private_redis.stop()
            await until(
                lambda: any(e["event"] == "worker.redis_unavailable" for e in logged),
                what="the worker to notice Redis is gone",
            )
            assert not task.done()

            private_redis.start()
            # The test looks through a store of its own: the worker's pool must heal itself.
            probe = Store.connect(private_redis.url, "gw", timeout=0.5)
            await put(probe, "forms", "after", body)
            [event] = await until(lambda: events(probe), what="the event made after the restart")
            assert event["delivery_id"] == b"after"
            assert (
                event["message_id"]
                == expected_message_id("forms", "after", 0, "Form Submitted").encode()
            )
            await until(lambda: _no_pending(probe, "forms"), what="the delivery acknowledged")
            await probe.close()
            stop.set()
            await asyncio.wait_for(task, 5)
        assert not [e for e in logged if e["event"] == "worker.error"], "no bug on the way"
    finally:
        stop.set()
        await store.close()


async def test_a_worker_survives_a_failing_write_and_redoes_the_batch(redis_store):
    """An operator's mistake makes every write fail (the events key holds a string): the
    worker keeps running, and once the key is fixed the deliveries it had read become events."""
    config = make_config(redis_store.keys.prefix)
    worker = NormalizeWorker(config, redis_store, "w1")
    await worker.ensure_groups()
    await redis_store.client.set(redis_store.keys.events(), "not a stream")
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await put(redis_store, "forms", "f1", b'{"kind": "submit", "form": "x"}')
        await until(lambda: pending(redis_store, "forms"), what="the delivery read")
        assert not task.done()
        await redis_store.client.delete(redis_store.keys.events())
        [event] = await until(lambda: events(redis_store), what="the event after the fix")
        assert (
            event["message_id"] == expected_message_id("forms", "f1", 0, "Form Submitted").encode()
        )
        await until(lambda: _no_pending(redis_store, "forms"), what="the delivery acknowledged")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def _no_pending(store: Store, source: str) -> bool:
    return await pending(store, source) == 0


async def test_trimmed_before_read_is_reported(redis_store):
    from structlog.testing import capture_logs

    config = make_config(redis_store.keys.prefix)
    raw = redis_store.keys.raw("forms")
    with capture_logs() as logged:
        worker = NormalizeWorker(config, redis_store, "w1")
        await worker.ensure_groups()
        for i in range(5):
            await put(redis_store, "forms", f"f{i}", b'{"kind": "submit", "form": "x"}')
        await worker.reclaim()
        assert not [e for e in logged if e["event"] == "worker.deliveries_lost"]
        await redis_store.client.xtrim(raw, maxlen=2, approximate=False)
        await worker.reclaim()
    [lost] = [e for e in logged if e["event"] == "worker.deliveries_lost"]
    assert lost["source"] == "forms" and lost["count"] == 3
    assert "raise raw_retention" in lost["reason"]
