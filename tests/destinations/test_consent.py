"""Consent in the deliver path, on real Redis with a real deliver worker: an event whose
person denied ads (or analytics) is not sent to an ad platform (or analytics tool) but
logged as skipped and counted, or, under `consent: anonymize`, sent without personal data.

Consent mode's types: ad_storage, ad_user_data, ad_personalization, analytics_storage,
each granted or denied (https://support.google.com/analytics/answer/13802165); Segment's
consent object: context.consent.categoryPreferences, category -> true/false
(https://segment.com/docs/privacy/consent-management/consent-in-segment-connections/).
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

import msgspec
import pytest

from gateway.cli import _attempt_line
from gateway.errors import ConfigError
from gateway.metrics import Metrics
from tests.conftest import until
from tests.destinations.conftest import event
from tests.destinations.test_deliver import (
    DeliverWorker,
    config,
    dead_letters,
    idle,
    publish,
    samples,
)

META = "  meta:\n    type: meta-capi\n    pixel_id: '777'\n    access_token: t\n    host: {url}\n"
TIKTOK = (
    "  tt:\n    type: tiktok\n    pixel_code: PX1\n    access_token: t\n    endpoint: {url}/track\n"
)
POSTHOG = "  ph:\n    type: posthog\n    api_key: phc_test\n    host: {url}\n"
HTTP = "  hook:\n    type: http\n    url: {url}/hook\n"

DENY_ADS = {"ad_storage": "denied", "ad_user_data": "denied", "analytics_storage": "granted"}
DENY_ANALYTICS = {"ad_storage": "granted", "ad_user_data": "granted", "analytics_storage": "denied"}
GRANT_ALL = {k: "granted" for k in ("ad_storage", "ad_user_data", "analytics_storage")}


def person_event(n: int, consent: dict | None = None, **extra) -> dict:
    """A collected purchase with everything that says who the person is, timed now (Meta
    refuses events older than 7 days)."""
    e = event(n, userId=f"user-{n}", **extra)
    e["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    e["properties"].update(email=f"p{n}@example.com", phone="+1 415 555 0100", name="Jo Doe")
    e["properties"]["fbclid"] = f"IwAR{n}clickfromprops"
    e["context"].update(
        traits={"email": f"t{n}@example.com", "firstName": "Jo", "lastName": "Doe"},
        ip="203.0.113.7",
        userAgent="Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0",
        clickIds={"fbc": f"fb.1.1714564800000.IwAR{n}", "fbp": "fb.1.1714564800000.42"},
    )
    if consent is not None:
        e["context"]["consent"] = consent
    return e


async def deliver(store, destinations: str, *events: dict) -> tuple[DeliverWorker, Metrics]:
    """Run a real deliver worker until every event is settled for every destination."""
    metrics = Metrics()
    worker = DeliverWorker(config(store.keys.prefix, destinations), store, "t", metrics)
    for runner in worker.runners:
        await runner.ensure_group()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await publish(store, *events)
        await until(lambda: idle(store, *worker.runners), what="every event settled")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    return worker, metrics


async def attempts(store, e: dict) -> list[dict]:
    raw = await store.client.lrange(store.keys.attempts(e["messageId"]), 0, -1)
    return [msgspec.json.decode(x) for x in raw]


def counted(metrics: Metrics, destination: str, outcome: str) -> float:
    key = (
        "gateway_destination_events_total",
        frozenset({"destination": destination, "outcome": outcome}.items()),
    )
    return samples(metrics).get(key, 0)


def meta_events(vendor) -> list[dict]:
    return [d for r in vendor.requests for d in r.json()["data"]]


async def test_denied_ads_are_skipped_logged_and_counted_not_sent(redis_store, vendor):
    denied = person_event(1, DENY_ADS)
    # Segment's vocabulary: Advertising false denies ad_storage and ad_user_data alike
    segment_denied = person_event(2, {"categoryPreferences": {"Advertising": False}})
    granted = person_event(3, GRANT_ALL)
    unknown = person_event(4)  # no answer at all: sent as before
    worker, metrics = await deliver(
        redis_store, META.format(url=vendor.url), denied, segment_denied, granted, unknown
    )
    sent = {d["event_id"] for d in meta_events(vendor)}
    assert sent == {granted["messageId"], unknown["messageId"]}
    for e in (denied, segment_denied):
        [record] = await attempts(redis_store, e)
        assert record["outcome"] == "skipped"
        assert record["reason"] == "consent: ads denied (ad_user_data, ad_storage)"
        assert record["status"] is None
        line = _attempt_line(record)  # `events show` / `deliveries show`
        assert " skipped " in line and "HTTP" not in line and line.endswith(record["reason"])
    [record] = await attempts(redis_store, granted)
    assert (record["outcome"], record["status"]) == ("ok", 200)
    assert counted(metrics, "meta", "skipped") == 2
    assert counted(metrics, "meta", "sent") == 2
    assert await dead_letters(redis_store) == []
    runner = worker.runners[0]
    assert await redis_store.client.zcard(runner.retry_key) == 0
    assert (runner.stats.withheld, runner.stats.sent) == (2, 2)


async def test_one_denied_type_is_enough_and_named(redis_store, vendor):
    only_user_data = person_event(1, {"ad_storage": "granted", "ad_user_data": "denied"})
    only_storage = person_event(2, {"ad_storage": "denied", "ad_user_data": "granted"})
    _, metrics = await deliver(
        redis_store, META.format(url=vendor.url), only_user_data, only_storage
    )
    assert vendor.requests == []
    [a] = await attempts(redis_store, only_user_data)
    [b] = await attempts(redis_store, only_storage)
    assert a["reason"] == "consent: ads denied (ad_user_data)"
    assert b["reason"] == "consent: ads denied (ad_storage)"
    assert counted(metrics, "meta", "skipped") == 2


async def test_anonymize_sends_the_conversion_without_the_person(redis_store, vendor):
    # TikTok takes events without any match key (Meta and Google Ads do not: below)
    vendor.default = (200, {}, b'{"code": 0, "message": "OK"}')
    denied = person_event(1, DENY_ADS)
    granted = person_event(2, GRANT_ALL)
    # ad_storage granted, ad_user_data denied: TikTok would read a ttclid a sender put in
    # the properties (destinations/pii.py click_ids); anonymize drops it too
    user_data_denied = person_event(3, {"ad_storage": "granted", "ad_user_data": "denied"})
    for e in (denied, granted, user_data_denied):
        e["properties"]["ttclid"] = "E.C.P.ttclid-from-props"
        e["context"]["clickIds"]["ttp"] = "ttp-cookie-1"
    _, metrics = await deliver(
        redis_store,
        TIKTOK.format(url=vendor.url) + "    consent: anonymize\n",
        denied,
        granted,
        user_data_denied,
    )
    by_id = {d["event_id"]: d for d in meta_events(vendor)}
    anonymous, known = by_id[denied["messageId"]], by_id[granted["messageId"]]
    assert by_id[user_data_denied["messageId"]].get("user", {}) == {}
    # The conversion itself goes: value, currency, order id
    assert anonymous["properties"]["value"] == 11.0
    assert anonymous["properties"]["order_id"] == "o1"
    # No match key at all: email, phone, external_id, ip, user_agent, ttclid, ttp
    # (https://business-api.tiktok.com/portal/docs?id=1771101303285761)
    assert anonymous.get("user", {}) == {}
    body = msgspec.json.encode(anonymous)  # its part of the (shared) request
    for secret in (
        "p1@example.com",
        "t1@example.com",
        "415",
        "203.0.113.7",
        "Firefox",
        "ttclid-from-props",
        "ttp-cookie-1",
        "user-1",
        hashlib.sha256(b"t1@example.com").hexdigest(),
        hashlib.sha256(b"p1@example.com").hexdigest(),
        hashlib.sha256(b"user-1").hexdigest(),
    ):
        assert secret.encode() not in body, secret
    # The granted person in the same setting keeps their match keys
    assert {"email", "ip", "user_agent", "ttclid", "ttp"} <= set(known["user"])
    [record] = await attempts(redis_store, denied)
    assert record["outcome"] == "ok"
    assert counted(metrics, "tt", "sent") == 3
    assert counted(metrics, "tt", "skipped") == 0
    # The stored event is left whole (a retry or a replay judges consent again)
    assert denied["context"]["ip"] == "203.0.113.7"


@pytest.mark.parametrize(
    ("settings", "vendor_says"),
    [
        (META, "Meta refuses an event whose user_data has no customer information"),
        (
            "  gads:\n    type: google-ads\n    customer_id: '1234567890'\n"
            "    developer_token: d\n    client_id: c\n    client_secret: s\n"
            "    refresh_token: r\n    conversion_actions:\n"
            "      Order Completed: customers/1234567890/conversionActions/1\n",
            "Google refuses a conversion without a click id or a user identifier",
        ),
    ],
    ids=["meta-capi", "google-ads"],
)
def test_anonymize_is_a_config_error_where_the_vendor_needs_a_match_key(settings, vendor_says):
    with pytest.raises(ConfigError) as info:
        config("p", settings.format(url="http://127.0.0.1:9") + "    consent: anonymize\n")
    text = str(info.value)
    assert "consent" in text and vendor_says in text and "use skip" in text


async def test_analytics_storage_denied_skips_posthog_not_ads_consent(redis_store, vendor):
    no_analytics = person_event(1, DENY_ANALYTICS)
    no_ads = person_event(2, DENY_ADS)  # analytics granted: PostHog gets it
    _, metrics = await deliver(redis_store, POSTHOG.format(url=vendor.url), no_analytics, no_ads)
    body = b"".join(r.body for r in vendor.requests)
    assert no_ads["messageId"].encode() in body
    assert no_analytics["messageId"].encode() not in body
    [record] = await attempts(redis_store, no_analytics)
    assert (record["outcome"], record["reason"]) == (
        "skipped",
        "consent: analytics denied (analytics_storage)",
    )
    assert counted(metrics, "ph", "skipped") == 1
    assert counted(metrics, "ph", "sent") == 1


async def test_consent_ignore_sends_as_before(redis_store, vendor):
    denied = person_event(1, DENY_ADS)
    await deliver(redis_store, META.format(url=vendor.url) + "    consent: ignore\n", denied)
    [sent] = meta_events(vendor)
    assert sent["event_id"] == denied["messageId"] and sent["user_data"]["em"]


async def test_http_destination_ignores_consent(redis_store, vendor):
    denied = person_event(1, {**DENY_ADS, "analytics_storage": "denied"})
    _, metrics = await deliver(redis_store, HTTP.format(url=vendor.url), denied)
    [request] = vendor.requests
    got = request.json()
    # the operator's own system gets the event whole, personal data included
    assert got["messageId"] == denied["messageId"]
    assert got["context"]["ip"] == "203.0.113.7" and got["properties"]["email"]
    assert counted(metrics, "hook", "skipped") == 0


@pytest.mark.parametrize("kind", ["http", "postgres", "file"])
def test_consent_on_an_own_system_is_a_config_error(kind):
    settings = {
        "http": "    url: http://127.0.0.1:9/x\n",
        "postgres": "    dsn: postgresql://u@127.0.0.1/db\n    table: events\n",
        "file": "    path: /tmp/events.jsonl\n",
    }[kind]
    with pytest.raises(ConfigError) as info:
        config("p", f"  mine:\n    type: {kind}\n{settings}    consent: skip\n")
    text = str(info.value)
    assert "destinations.mine.consent" in text and "no consent setting" in text


def test_consent_takes_only_known_modes():
    with pytest.raises(ConfigError) as info:
        config("p", META.format(url="http://127.0.0.1:9") + "    consent: drop\n")
    assert "consent" in str(info.value)


def test_default_is_skip_for_vendors_and_ignore_for_own_systems():
    from destinations import DESTINATION_TYPES

    cfg = config(
        "p",
        META.format(url="http://x") + POSTHOG.format(url="http://x") + HTTP.format(url="http://x"),
    )
    modes = {
        name: DESTINATION_TYPES[d.__struct_config__.tag](name, d).consent
        for name, d in cfg.destinations.items()
    }
    assert modes == {"meta": "skip", "ph": "skip", "hook": "ignore"}
    ads = {"meta-capi", "tiktok", "google-ads"}
    analytics = {"ga4", "posthog", "mixpanel", "amplitude", "segment"}
    for tag, cls in DESTINATION_TYPES.items():
        expected = "ads" if tag in ads else "analytics" if tag in analytics else None
        assert cls.consent_purpose == expected, tag


# --- from a review of the consent gate ----------------------------------------------------


def test_anonymize_drops_the_landings_vendor_ids_and_posthogs_ip():
    from destinations.base import anonymize

    e = person_event(1, DENY_ANALYTICS)
    e["context"]["profile"] = {"id": "p1", "firstTouch": {"clickIds": {"gclid": "G-1"}}}
    e["context"]["externalIds"] = [{"id": "cus_1", "type": "stripe_customer_id"}]
    e["properties"]["$ip"] = "203.0.113.9"
    out = anonymize(e, keep_ids=True)
    assert "profile" not in out["context"] and "externalIds" not in out["context"]
    assert "$ip" not in out["properties"]
    assert "G-1" not in msgspec.json.encode(out).decode()


@pytest.mark.parametrize("value", ["DENIED", " denied ", False])
def test_consent_is_read_in_any_case_and_as_a_boolean(value):
    from destinations.base import consent_denied

    e = person_event(1, {"ad_user_data": value})
    assert consent_denied(e, "ads") == ["ad_user_data"]


@pytest.mark.parametrize(
    "context",
    [
        {"clickIds": "fb.1.1.x", "consent": "denied"},
        {"clickIds": ["gclid"], "consent": None},
        {"clickIds": None, "consent": {"ad_storage": "DENIED"}},
    ],
)
def test_click_ids_survive_odd_shapes(context):
    from destinations import pii

    e = {"event": "Order Completed", "context": context, "properties": {"fbclid": "IwAR1"}}
    found = pii.click_ids(e)
    denied = isinstance(context.get("consent"), dict)
    assert found == ({} if denied else {"fbc": found.get("fbc")})
    if not denied:
        assert found["fbc"].endswith(".IwAR1")
    assert pii.click_ids({"context": "not a dict", "properties": None}) == {}


async def test_a_destination_answering_the_wrong_number_of_results_is_retried_not_stranded(
    redis_store, vendor, monkeypatch
):
    """A destination bug (fewer results than events) must not leave the batch held by
    this process forever: every event is retried."""
    from destinations.meta_capi import MetaCapiDestination as MetaCapi

    async def short(self, batch, now):
        return []

    monkeypatch.setattr(MetaCapi, "send", short)
    e = person_event(1)
    worker = DeliverWorker(
        config(redis_store.keys.prefix, META.format(url=vendor.url)), redis_store, "t"
    )
    [runner] = worker.runners
    await runner.ensure_group()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await publish(redis_store, e)
        await until(lambda: runner.stats.retried >= 1, what="the batch settled as a retry")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert runner.holding == set()  # acknowledged into the retry set, not held
    [record] = await attempts(redis_store, e)
    assert record["outcome"] == "retry" and "1 events" in record["reason"]
