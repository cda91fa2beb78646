"""Enrichment review findings, pinned: consent (a denial anywhere wins, in either
vocabulary, at a tie too), no click ids in landings without ad consent, `<source>:system`
events, two people's identifiers on one event. Real Redis, own key prefix."""

from __future__ import annotations

import json

from tests.conftest import Clock, gateway_client
from tests.test_enrich import (
    GRANTED,
    NOW,
    SITE,
    Site,
    _charge,
    _customer,
    _drain,
    _events,
    _setup,
    _stripe,
)


def _iso(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


async def _known_person(site: Site, worker, user: str, email: str) -> str:
    aid = await site.visit(consent=GRANTED)
    await site.collect("identify", {"anonymousId": aid, "userId": user, "traits": {"email": email}})
    await _drain(worker)
    return aid


# 1 ------------------------------------------------------------------------------------
async def test_a_denial_at_v1_id_keeps_click_ids_off_later_webhooks(redis_store):
    cfg, worker = await _setup(redis_store)
    clock = Clock(NOW)
    async with gateway_client(cfg, redis_store, clock) as c:
        site = Site(c, cfg)
        aid = await _known_person(site, worker, "u-a", "a@x.io")
        clock.now += 60
        # The person withdraws ad consent in the CMP (same browser, same cookie).
        r = await c.post(
            "/v1/id",
            content=json.dumps({"url": SITE, "consent": {"ad_storage": "denied"}}),
            headers={"Content-Type": "text/plain", "Origin": SITE, "Cookie": f"gw_aid={aid}"},
        )
        assert r.json()["anonymousId"] == aid
        # No collected event follows (a consent-aware site stops analytics.js); Stripe pays.
        clock.now += 60
        await site.stripe(_stripe("evt_ca", "customer.created", _customer("cus_a", "a@x.io")))
        await site.stripe(_stripe("evt_pa", "charge.succeeded", _charge("ch_a", "cus_a")))
        await _drain(worker)
    charge = next(e for e in await _events(redis_store) if e.get("event") == "Charge Succeeded")
    assert "clickIds" not in charge["context"], "click ids sent after the person denied"


# 2 ------------------------------------------------------------------------------------
async def test_an_events_own_category_preferences_denial_is_kept(redis_store):
    cfg, worker = await _setup(redis_store)
    gw = gateway_client
    async with gw(cfg, redis_store, Clock(NOW)) as c:
        site = Site(c, cfg)
        await _known_person(site, worker, "u-b", "b@x.io")
        # analytics.js (Segment consent wrapper) says Advertising: false on this event,
        # queued a minute before (older than the /v1/id grant).
        await site.collect(
            "track",
            {
                "userId": "u-b",
                "event": "Viewed",
                "timestamp": _iso(NOW - 60),
                "context": {"consent": {"categoryPreferences": {"Advertising": False}}},
            },
        )
        await _drain(worker)
    ev = next(e for e in await _events(redis_store) if e.get("event") == "Viewed")
    assert "clickIds" not in ev["context"], "the event's own Advertising:false was overridden"


async def test_a_denial_at_the_same_moment_as_a_grant_wins(redis_store):
    cfg, worker = await _setup(redis_store)
    gw = gateway_client
    async with gw(cfg, redis_store, Clock(NOW)) as c:
        site = Site(c, cfg)
        await _known_person(site, worker, "u-t", "t@x.io")  # granted at NOW (ms)
        # Denied in the same millisecond as the grant.
        await site.collect(
            "track",
            {"userId": "u-t", "event": "Deny", "context": {"consent": {"ad_storage": "denied"}}},
        )
        await site.stripe(_stripe("evt_ct", "customer.created", _customer("cus_t", "t@x.io")))
        await _drain(worker)
    ev = next(
        e
        for e in await _events(redis_store)
        if e.get("event") is None and e["context"]["source"]["name"] == "stripe"
    )
    assert "clickIds" not in ev["context"], "a tie between grant and denial kept the grant"


# 3 ------------------------------------------------------------------------------------
async def test_without_ad_consent_the_profile_shows_no_landing_urls(redis_store):
    cfg, worker = await _setup(redis_store)  # consent: required (default)
    gw = gateway_client
    async with gw(cfg, redis_store, Clock(NOW)) as c:
        site = Site(c, cfg)
        await _known_person(site, worker, "u-c", "c@x.io")
        await site.collect(
            "track",
            {
                "userId": "u-c",
                "event": "Viewed",
                "timestamp": _iso(NOW - 60),
                "context": {"consent": {"ad_storage": "denied"}},
            },
        )
        await _drain(worker)
    ev = next(e for e in await _events(redis_store) if e.get("event") == "Viewed")
    assert "clickIds" not in ev["context"]
    assert "gclid" not in json.dumps(ev), "click ids reach the event in context.profile.*.url"


# 4 ------------------------------------------------------------------------------------
async def test_a_system_event_given_a_user_id_loses_the_shared_catch_all_id(redis_store):
    """A guest's free checkout (no customer, no PaymentIntent) is `stripe:system`."""
    cfg, worker = await _setup(redis_store)
    gw = gateway_client
    async with gw(cfg, redis_store, Clock(NOW)) as c:
        site = Site(c, cfg)
        await _known_person(site, worker, "u-d", "d@x.io")
        session = {
            "id": "cs_test_free",
            "object": "checkout.session",
            "mode": "payment",
            "customer": None,
            "payment_intent": None,
            "payment_status": "no_payment_required",
            "amount_total": 0,
            "currency": "eur",
            "customer_details": {"email": "d@x.io"},
            "metadata": {},
        }
        await site.stripe(_stripe("evt_cs", "checkout.session.completed", session))
        await _drain(worker)
    ev = next(e for e in await _events(redis_store) if e.get("event") == "Order Completed")
    assert not (ev.get("userId") and ev.get("anonymousId") == "stripe:system"), (
        "a person's userId next to the catch-all anonymousId every guest event shares"
    )


# 5 ------------------------------------------------------------------------------------
async def test_a_profile_with_two_user_ids_gives_neither(redis_store):
    cfg, worker = await _setup(redis_store, limits={"user": 2})
    gw = gateway_client
    async with gw(cfg, redis_store, Clock(NOW)) as c:
        site = Site(c, cfg)
        aid = await site.visit()
        await site.collect("identify", {"anonymousId": aid, "userId": "alice"})
        await site.collect("identify", {"anonymousId": aid, "userId": "bob"})
        await site.stripe(_stripe("evt_ce", "customer.created", _customer("cus_e", "e@x.io")))
        await site.collect("identify", {"anonymousId": aid, "traits": {"email": "e@x.io"}})
        await _drain(worker)
        await site.stripe(_stripe("evt_pe", "charge.succeeded", _charge("ch_e", "cus_e")))
        await _drain(worker)
    out = await _events(redis_store)
    charge = next(e for e in out if e.get("event") == "Charge Succeeded")
    assert "userId" not in charge


async def test_an_event_naming_two_peoples_ids_is_not_given_either(redis_store):
    """cus_f is bob's (Stripe metadata.user_id); its email is then changed to alice's."""
    cfg, worker = await _setup(redis_store)
    gw = gateway_client
    async with gw(cfg, redis_store, Clock(NOW)) as c:
        site = Site(c, cfg)
        await _known_person(site, worker, "alice", "alice@x.io")
        bob = {**_customer("cus_f", "bob@x.io"), "metadata": {"user_id": "bob"}}
        await site.stripe(_stripe("evt_f1", "customer.created", bob))
        await _drain(worker)
        await site.stripe(_stripe("evt_f2", "customer.updated", _customer("cus_f", "alice@x.io")))
        await site.stripe(_stripe("evt_f3", "charge.succeeded", _charge("ch_f", "cus_f")))
        await _drain(worker)
    out = await _events(redis_store)
    upd = next(e for e in out if e["context"]["source"]["deliveryId"] == "evt_f2")
    charge = next(e for e in out if e.get("event") == "Charge Succeeded")
    assert upd.get("userId") != "alice"
    assert charge.get("userId") != "alice"  # bob's customer's charge is not alice's
