"""Activity: each process's counts, added up in Redis per 5 s, minute and hour; what
was turned away; the index of deliveries that did not simply become events."""

from __future__ import annotations

import hashlib
import hmac

from gateway.activity import series, turned_away
from gateway.metrics import Metrics
from gateway.store import Store
from gateway.worker import NormalizeWorker
from tests.conftest import free_port, gateway_client

NOW = 1_800_000_123.0  # a fixed moment: buckets 360000024 (5 s), 30000002 (min), 500000 (h)


async def test_two_processes_counts_add_up_in_each_bucket(redis_store):
    first, second = Metrics(), Metrics()
    first.delivery("stripe", "accepted", 3)
    second.delivery("stripe", "accepted", 4)
    second.delivery("stripe", "rejected")
    first.destination("posthog", "dead_lettered", 2)
    assert await first.activity.flush(redis_store, NOW)
    assert await second.activity.flush(redis_store, NOW)
    # The same counts in the bucket of each unit that holds NOW, and nothing before it.
    for unit in ("s", "m", "h"):
        got = await series(redis_store, unit, 3, NOW)
        assert got.of("source", "stripe", "accepted") == [0, 0, 7], unit
        assert got.of("source", "stripe", "rejected") == [0, 0, 1], unit
        assert got.total("destination", "posthog", "dead_lettered") == 2
    # A flush carries only what was counted since the last one.
    first.delivery("stripe", "accepted")
    await first.activity.flush(redis_store, NOW + 5)
    steps = await series(redis_store, "s", 2, NOW + 5)
    assert steps.of("source", "stripe", "accepted") == [7, 1]
    assert (await series(redis_store, "m", 1, NOW + 5)).total("source", "stripe", "accepted") == 8


async def test_a_flush_redis_refused_is_carried_to_the_next(redis_store):
    away = Store.connect(f"redis://127.0.0.1:{free_port()}/0", redis_store.keys.prefix, 0.5)
    metrics = Metrics()
    metrics.delivery("shop", "accepted", 5)
    try:
        assert not await metrics.activity.flush(away, NOW)
    finally:
        await away.close()
    metrics.delivery("shop", "accepted", 1)
    assert await metrics.activity.flush(redis_store, NOW)
    got = await series(redis_store, "m", 1, NOW)
    assert got.total("source", "shop", "accepted") == 6


CFG = """\
sources:
  acme:
    type: hmac
    secrets: [s]
    signature_header: Sig
    delivery_id_header: Id
    mappings:
      - when: "kind == 'ok'"
        event: Thing Happened
      - when: "kind == 'other'"
        drop: true
"""


def _signed(body: bytes, delivery: str) -> dict[str, str]:
    return {"sig": hmac.new(b"s", body, hashlib.sha256).hexdigest(), "id": delivery}


async def test_turned_away_and_indexed_deliveries(redis_store):
    async with gateway_client(CFG, redis_store) as client:
        app = client._transport.app  # type: ignore[attr-defined]
        for delivery, body in (("d-ok", b'{"kind":"ok"}'), ("d-none", b'{"kind":"other"}')):
            r = await client.post("/webhooks/acme", content=body, headers=_signed(body, delivery))
            assert r.status_code == 200
        dup = await client.post(
            "/webhooks/acme", content=b'{"kind":"ok"}', headers=_signed(b'{"kind":"ok"}', "d-ok")
        )
        bad = await client.post(
            "/webhooks/acme", content=b'{"secret":"pii@x"}', headers={"sig": "00", "id": "d-x"}
        )
        assert dup.json()["status"] == "duplicate" and bad.status_code == 401
        worker = NormalizeWorker(app.state.config, redis_store, "w", app.state.metrics)
        await worker.ensure_groups()
        assert await worker.read_once() == 2
        await app.state.metrics.activity.flush(redis_store)
    rejected = await turned_away(redis_store, "acme", "rejected")
    assert [(r.get("delivery_id"), r["status"]) for r in rejected] == [(None, "401")]
    assert rejected[0]["reason"] == "bad_signature"
    assert all("pii@x" not in value for value in rejected[0].values())  # never a body
    duplicates = await turned_away(redis_store, "acme", "duplicate")
    assert [d["delivery_id"] for d in duplicates] == ["d-ok"]
    # The delivery that became no event is in the `ignored` index, scored by when it came;
    # the one that became an event is in none, and the log says where its body is.
    keys = redis_store.keys
    ignored = await redis_store.client.zrange(keys.delivery_index("acme", "ignored"), 0, -1)
    assert ignored == [b"d-none"]
    log = await redis_store.client.hgetall(keys.delivery_log("acme", "d-ok"))
    raw = await redis_store.client.xrange(keys.raw("acme"), log[b"_raw"], log[b"_raw"])
    assert raw[0][1][b"delivery_id"] == b"d-ok"
    assert int(log[b"_at"]) == int(raw[0][1][b"received_at"])
    got = await series(redis_store, "m", 2)
    assert got.total("source", "acme", "accepted") == 2
    assert got.total("source", "acme", "duplicate") == 1
    assert got.total("events", "acme", "produced") == 1


async def test_a_flush_redis_partly_refused_resends_only_what_failed(redis_store):
    """One command refused (the errors hash is a string here: WRONGTYPE; on a cluster, a
    bucket's node down): the counts that were written are not written again, the refused
    command is, for its own bucket, once Redis takes it."""
    errors_key = redis_store.keys.destination_errors()
    await redis_store.client.set(errors_key, "not a hash")
    metrics = Metrics()
    metrics.destination("crm", "dead_lettered", 5)
    metrics.activity.destination_error("crm", NOW, "HTTP 500")
    assert not await metrics.activity.flush(redis_store, NOW)
    await redis_store.client.delete(errors_key)
    assert await metrics.activity.flush(redis_store, NOW + 60)
    for unit in ("s", "m", "h"):
        got = await series(redis_store, unit, 1, NOW)
        assert got.total("destination", "crm", "dead_lettered") == 5, unit
    assert await metrics.activity.flush(redis_store, NOW + 120)  # nothing left to send
    assert (await redis_store.client.hget(errors_key, "crm")) is not None
