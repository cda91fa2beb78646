"""Enrichment in the normalize worker: webhook and collected events meet the identity
graph (gateway/enrich.py), through the real front door, worker and Redis."""

from __future__ import annotations

import base64
import json
import uuid

import msgspec
import stripe

from gateway.replay import replay
from gateway.store import Store
from gateway.worker import NormalizeWorker
from tests.conftest import Clock, config, expected_message_id, gateway_client

SITE = "https://shop.example.com"
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SECRET = "whsec_enrich"
LANDING = SITE + "/?utm_source=google&utm_medium=cpc&utm_campaign=spring&gclid=G-1&fbclid=FB-1"
GRANTED = {"ad_storage": "granted", "ad_user_data": "granted", "analytics_storage": "granted"}
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
MERGE_NAMESPACE = uuid.UUID("6c1b7e36-3f7e-5a38-9d2f-2b0f1c6a8e51")


def _cfg(**identity):
    return config(
        json.dumps(
            {
                "sources": {
                    "web": {"type": "collect", "write_keys": ["wk"], "origins": [SITE]},
                    "stripe": {"type": "stripe", "secrets": [SECRET]},
                },
                "identity": identity,
            }
        )
    )


def _basic() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(b"wk:").decode()}


def _stripe(event_id: str, kind: str, obj: dict, created: int = int(NOW) - 60) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": kind,
            "created": created,
            "livemode": False,
            "data": {"object": obj},
        }
    ).encode()


def _customer(cid: str, email: str) -> dict:
    return {"id": cid, "object": "customer", "email": email, "name": "Jane Doe", "metadata": {}}


def _charge(charge_id: str, cid: str) -> dict:
    return {
        "id": charge_id,
        "object": "charge",
        "amount": 4999,
        "amount_captured": 4999,
        "captured": True,
        "currency": "eur",
        "customer": cid,
        "status": "succeeded",
        "metadata": {},
    }


class Site:
    """The site's visitor, the site's server, and Stripe, against one gateway."""

    def __init__(self, client, cfg) -> None:
        self.client = client
        self.cfg = cfg

    async def visit(self, consent=GRANTED, url=LANDING) -> str:
        r = await self.client.post(
            "/v1/id",
            content=json.dumps({"url": url, "consent": consent}),
            headers={"Content-Type": "text/plain", "Origin": SITE},
        )
        assert r.status_code == 200, r.text
        return r.json()["anonymousId"]

    async def collect(self, kind: str, message: dict) -> None:
        # As a browser sends them: its user agent; the client address is the test's.
        headers = {**_basic(), "User-Agent": BROWSER}
        r = await self.client.post(f"/v1/{kind}", json=message, headers=headers)
        assert r.status_code == 200 and r.json() == {"success": True}, r.text

    async def stripe(self, body: bytes) -> None:
        header = stripe.WebhookSignature.generate_signature_header(
            body.decode(), SECRET, timestamp=int(NOW)
        )
        r = await self.client.post(
            "/webhooks/stripe", content=body, headers={"stripe-signature": header}
        )
        assert r.json()["status"] == "accepted", r.text


async def _drain(worker: NormalizeWorker) -> None:
    while await worker.read_once():
        pass


async def _events(store: Store) -> list[dict]:
    return [
        msgspec.json.decode(f[b"data"]) for _, f in await store.client.xrange(store.keys.events())
    ]


async def _setup(store: Store, **identity):
    cfg = _cfg(**identity)
    worker = NormalizeWorker(cfg, store, "w1")
    await worker.ensure_groups()
    return cfg, worker


async def test_a_payment_after_identify_carries_the_visitors_ids_and_click(redis_store):
    cfg, worker = await _setup(redis_store)
    async with gateway_client(cfg, redis_store, Clock(NOW)) as client:
        site = Site(client, cfg)
        aid = await site.visit()
        await site.collect(
            "page",
            {
                "anonymousId": aid,
                "name": "Pricing",
                "context": {"ip": "203.0.113.9"},
            },
        )
        await site.collect(
            "identify",
            {
                "anonymousId": aid,
                "userId": "u-1",
                "traits": {"email": " Jane@Example.com "},
                "context": {"ip": "203.0.113.9"},
            },
        )
        await _drain(worker)
        # Stripe knows the customer by email only; then a charge names the customer.
        await site.stripe(
            _stripe("evt_c1", "customer.created", _customer("cus_1", "jane@example.com"))
        )
        await site.stripe(_stripe("evt_p1", "charge.succeeded", _charge("ch_1", "cus_1")))
        await _drain(worker)
    charge = next(e for e in await _events(redis_store) if e.get("event") == "Charge Succeeded")
    # Enrichment never changes the id destinations dedupe on.
    assert charge["messageId"] == expected_message_id("stripe", "evt_p1", 0, "Charge Succeeded")
    assert charge["userId"] == "u-1"
    assert charge["anonymousId"] == aid  # the web id replaced `stripe:cus_1` ...
    assert charge["context"]["externalIds"] == [{"id": "cus_1", "type": "stripe_customer_id"}]
    ctx = charge["context"]
    assert ctx["clickIds"] == {"gclid": "G-1", "fbc": f"fb.1.{int(NOW * 1000)}.FB-1"}
    assert ctx["campaign"] == {"source": "google", "medium": "cpc", "name": "spring"}
    assert ctx["consent"] == GRANTED
    assert ctx["traits"]["email"] == "Jane@Example.com"  # as the person wrote it, trimmed
    assert ctx["ip"] == "203.0.113.9"
    assert ctx["userAgent"] == BROWSER
    assert ctx["profile"]["lastTouch"]["url"] == LANDING
    assert ctx["profile"]["firstTouch"]["clickIds"]["gclid"] == "G-1"
    assert ctx["profile"]["lastTouch"]["at"] == "2026-01-01T00:00:00.000Z"
    # The person was known all along: no history to join.
    assert [e for e in await _events(redis_store) if e["type"] == "alias"] == []


async def test_a_payment_before_identify_is_joined_to_the_person_once(redis_store):
    cfg, worker = await _setup(redis_store)
    async with gateway_client(cfg, redis_store, Clock(NOW)) as client:
        site = Site(client, cfg)
        await site.stripe(_stripe("evt_c2", "customer.created", _customer("cus_2", "b@x.io")))
        await site.stripe(_stripe("evt_p2", "charge.succeeded", _charge("ch_2", "cus_2")))
        await _drain(worker)
        first = await _events(redis_store)
        # Unknown person: the events go out under the vendor's id, untouched.
        assert {e["anonymousId"] for e in first} == {"stripe:cus_2"}
        assert all("userId" not in e for e in first)
        aid = await site.visit()
        await site.collect(
            "identify", {"anonymousId": aid, "userId": "u-2", "traits": {"email": "B@x.io"}}
        )
        await _drain(worker)
        await site.collect(
            "identify", {"anonymousId": aid, "userId": "u-2", "traits": {"email": "b@x.io"}}
        )
        await site.stripe(_stripe("evt_p3", "charge.succeeded", _charge("ch_3", "cus_2")))
        await _drain(worker)
    out = await _events(redis_store)
    aliases = [e for e in out if e["type"] == "alias"]
    assert len(aliases) == 1, aliases
    [alias] = aliases
    assert (alias["userId"], alias["previousId"]) == ("u-2", "stripe:cus_2")
    assert alias["messageId"] == str(
        uuid.uuid5(MERGE_NAMESPACE, "identity\nstripe:cus_2\nu-2\n0\nalias\n")
    )
    assert alias["context"]["source"]["eventType"] == "identity.merge"
    later = next(e for e in out if e["context"]["source"]["deliveryId"] == "evt_p3")
    assert (later["userId"], later["anonymousId"]) == ("u-2", aid)


async def test_denied_ad_consent_keeps_click_ids_off_the_event(redis_store):
    cfg, worker = await _setup(redis_store)
    denied = {"ad_storage": "denied", "ad_user_data": "denied", "analytics_storage": "granted"}
    async with gateway_client(cfg, redis_store, Clock(NOW)) as client:
        site = Site(client, cfg)
        aid = await site.visit(consent=denied)
        await site.collect(
            "identify", {"anonymousId": aid, "userId": "u-3", "traits": {"email": "c@x.io"}}
        )
        await _drain(worker)
        await site.stripe(_stripe("evt_c4", "customer.created", _customer("cus_4", "c@x.io")))
        await site.stripe(_stripe("evt_p4", "charge.succeeded", _charge("ch_4", "cus_4")))
        await _drain(worker)
    charge = next(e for e in await _events(redis_store) if e.get("event") == "Charge Succeeded")
    assert charge["userId"] == "u-3"
    assert charge["context"]["consent"] == denied  # the destinations are told
    assert "clickIds" not in charge["context"]
    assert "gclid" not in json.dumps(charge)
    # Under `required` consent with ad_storage denied the landing was not kept at all.
    assert "campaign" not in charge["context"]


async def test_the_latest_consent_of_the_person_counts_across_browsers(redis_store):
    cfg, worker = await _setup(redis_store, consent="implied")
    clock = Clock(NOW)
    async with gateway_client(cfg, redis_store, clock) as client:
        site = Site(client, cfg)
        phone = await site.visit(consent={"ad_storage": "denied"})
        clock.now += 60
        laptop = await site.visit(consent=GRANTED)
        assert phone != laptop
        for aid in (phone, laptop):
            await site.collect(
                "identify", {"anonymousId": aid, "userId": "u-5", "traits": {"email": "e@x.io"}}
            )
        await site.collect("track", {"userId": "u-5", "event": "Signed Up"})
        await _drain(worker)
        track = next(e for e in await _events(redis_store) if e.get("event") == "Signed Up")
        assert track["context"]["clickIds"]["gclid"] == "G-1"
        assert track["context"]["consent"] == GRANTED  # the laptop's answer is the latest
        # Then the person denies on the phone: the click ids are dropped for good.
        clock.now += 60
        r = await client.post(
            "/v1/id",
            content=json.dumps({"url": SITE, "consent": {"ad_storage": "denied"}}),
            headers={"Content-Type": "text/plain", "Origin": SITE, "Cookie": f"gw_aid={phone}"},
        )
        assert r.json()["anonymousId"] == phone
        await site.collect("track", {"anonymousId": phone, "userId": "u-5", "event": "Paid"})
        await _drain(worker)
    paid = next(e for e in await _events(redis_store) if e.get("event") == "Paid")
    assert paid["context"]["consent"] == {"ad_storage": "denied"}
    assert "clickIds" not in paid["context"]
    profile = await worker.pipeline.enricher.graph.profile("user:u-5")
    assert "lt" not in profile["attributes"] and "ft" not in profile["attributes"]


async def test_enrichment_is_one_round_trip_per_batch(redis_store):
    cfg, worker = await _setup(redis_store)
    async with gateway_client(cfg, redis_store, Clock(NOW)) as client:
        site = Site(client, cfg)
        for i in range(20):
            await site.stripe(
                _stripe(f"evt_r{i}", "customer.created", _customer(f"cus_r{i}", f"r{i}@x.io"))
            )
        calls = []
        execute = redis_store.execute

        async def counting(commands, **options):
            calls.append([c[0] for c in commands])
            return await execute(commands, **options)

        redis_store.execute = counting  # type: ignore[method-assign]
        try:
            assert await worker.read_once() == 20
        finally:
            redis_store.execute = execute  # type: ignore[method-assign]
    # 1: the links and the observe script; 2: events, delivery log; 3: XACK.
    assert len(calls) == 3, calls
    assert calls[0].count("EVALSHA") == 21  # 20 links + 1 observe for the batch
    assert calls[1].count("XADD") == 20
    assert calls[2] == ["XACK"]


async def test_graph_off_leaves_events_as_normalized(redis_store):
    cfg, worker = await _setup(redis_store, graph=False)
    async with gateway_client(cfg, redis_store, Clock(NOW)) as client:
        site = Site(client, cfg)
        aid = await site.visit()
        await site.collect(
            "identify", {"anonymousId": aid, "userId": "u-6", "traits": {"email": "f@x.io"}}
        )
        await site.stripe(_stripe("evt_c6", "customer.created", _customer("cus_6", "f@x.io")))
        await _drain(worker)
    [customer] = [
        e
        for e in await _events(redis_store)
        if e["type"] == "identify" and e["context"]["source"]["name"] == "stripe"
    ]
    assert customer["anonymousId"] == "stripe:cus_6" and "userId" not in customer
    assert "profile" not in customer["context"]
    assert [
        k
        async for k in redis_store.client.scan_iter(
            f"{redis_store.keys.prefix}:{{idg}}:p:*", count=1000
        )
    ] == []


async def test_two_user_ids_on_one_browser_stay_apart_and_are_counted(redis_store):
    cfg, worker = await _setup(redis_store)
    async with gateway_client(cfg, redis_store, Clock(NOW)) as client:
        site = Site(client, cfg)
        aid = await site.visit()
        await site.collect("identify", {"anonymousId": aid, "userId": "alice"})
        await _drain(worker)
        await site.collect("identify", {"anonymousId": aid, "userId": "bob"})
        await site.collect("track", {"userId": "bob", "event": "Clicked"})
        await _drain(worker)
    conflicts = worker.metrics.identity.labels("conflict")._value.get()
    assert conflicts >= 1
    track = next(e for e in await _events(redis_store) if e.get("event") == "Clicked")
    assert track["userId"] == "bob"  # never turned into alice
    graph = worker.pipeline.enricher.graph
    assert "user:bob" not in (await graph.profile("user:alice"))["identifiers"]
    assert (await graph.profile(f"anon:{aid}"))["id"] == (await graph.profile("user:alice"))["id"]


async def test_a_replay_after_the_graph_learned_more_keeps_message_ids(redis_store):
    cfg, worker = await _setup(redis_store)
    async with gateway_client(cfg, redis_store, Clock(NOW)) as client:
        site = Site(client, cfg)
        await site.stripe(_stripe("evt_c7", "customer.created", _customer("cus_7", "g@x.io")))
        await _drain(worker)
        aid = await site.visit()
        await site.collect(
            "identify", {"anonymousId": aid, "userId": "u-7", "traits": {"email": "g@x.io"}}
        )
        await _drain(worker)
    before = [e for e in await _events(redis_store) if e["context"]["source"]["name"] == "stripe"]
    await replay(cfg, redis_store, "stripe")
    after = [e for e in await _events(redis_store) if e["context"]["source"]["name"] == "stripe"]
    assert len(after) == 2 * len(before) == 2
    first, again = after
    assert first["messageId"] == again["messageId"]
    assert "userId" not in first
    assert (again["userId"], again["anonymousId"]) == ("u-7", aid)
