"""GA4, PostHog and Mixpanel: personal data, geolocation, refunds, engagement and profiles,
checked field by field on the requests a local vendor server receives. Expected values come
from each vendor's documentation or SDK (cited per test), not from the code under test."""

from __future__ import annotations

from typing import Any

from tests.destinations.conftest import event
from tests.destinations.test_vendors import make, send

GA4 = (
    "    type: ga4\n    measurement_id: G-ABC\n    api_secret: sec\n"
    "    endpoint: {url}/mp/collect\n"
)
POSTHOG = "    type: posthog\n    api_key: phc_test\n    host: {url}\n"
MIXPANEL = "    type: mixpanel\n    project_token: tok\n    secret: s\n    host: {url}\n"


def with_ip(e: dict[str, Any], ip: str) -> dict[str, Any]:
    e["context"]["ip"] = ip
    return e


def ga4_events(vendor) -> list[dict[str, Any]]:
    return [ev for r in vendor.requests for ev in r.json()["events"]]


# --- GA4 --------------------------------------------------------------------------------------


async def test_ga4_never_receives_personal_data(vendor):
    """Google forbids PII in Measurement Protocol parameters
    (https://support.google.com/analytics/answer/6366371): identify traits, properties
    named like an email, phone, name or address, and email-like values stay out."""
    dest = make(GA4.format(url=vendor.url))
    props = {
        "revenue": 5,
        "plan": "pro",
        "Plan Name": "Pro yearly",
        "email": "jenny@example.com",
        "customer_email": "jenny@example.com",
        "phone": "+16505550100",
        "billingPhone": "+16505550100",
        "firstName": "Jenny",
        "lastName": "Rosen",
        "name": "Jenny Rosen",
        "address": "1 Main St",
        "shipping_address": "1 Main St",
        "note": "contact jenny.rosen@example.com",
        "products": [{"product_id": "p1", "name": "Mug", "brand": "ops@example.com"}],
    }
    identify = event(
        2,
        kind="identify",
        anonymousId="a1",
        traits={"email": "jenny@example.com", "name": "Jenny Rosen", "plan": "pro"},
    )
    results = await send(dest, [event(1, anonymousId="a1", properties=props), identify])
    assert [r.outcome for r in results] == ["ok", "ok"]
    track, ident = ga4_events(vendor)
    p = track["params"]
    assert p["plan"] == "pro" and p["Plan_Name"] == "Pro yearly" and p["value"] == 5
    for key in ("email", "customer_email", "phone", "billingPhone", "firstName", "lastName",
                "name", "address", "shipping_address", "note"):  # fmt: skip
        assert key not in p, key
    assert p["items"] == [{"item_id": "p1", "item_name": "Mug"}]
    # the identify carries none of its traits
    assert ident["name"] == "identify"
    assert set(ident["params"]) == {"event_id", "engagement_time_msec"}
    assert "example.com" not in b"".join(r.body for r in vendor.requests).decode()


async def test_ga4_an_email_is_never_the_user_id(vendor):
    dest = make(GA4.format(url=vendor.url))
    await send(dest, [event(1, anonymousId="a1", userId="jenny@example.com")])
    [seen] = vendor.requests
    body = seen.json()
    assert "user_id" not in body and body["client_id"] == "a1"
    assert "jenny" not in seen.body.decode()


async def test_ga4_refund_value_is_positive(vendor):
    """Google's `refund` carries the refunded amount as a positive `value` (the reference's
    example: `value: 30.03`); GA4 subtracts refunds from revenue itself.
    https://developers.google.com/analytics/devguides/collection/ga4/reference/events#refund"""
    dest = make(GA4.format(url=vendor.url))
    refund = event(
        1,
        name="Order Refunded",
        anonymousId="a1",
        properties={"order_id": "o1", "revenue": -30.03, "currency": "USD"},
    )
    other = event(2, name="Balance Adjusted", anonymousId="a1",
                  properties={"revenue": -4.5})  # fmt: skip
    await send(dest, [refund, other])
    first, second = ga4_events(vendor)
    assert first["name"] == "refund"
    assert first["params"]["value"] == 30.03
    assert first["params"]["transaction_id"] == "o1" and first["params"]["currency"] == "USD"
    assert second["params"]["value"] == -4.5  # only refunds are turned around


async def test_ga4_events_carry_engagement_time(vendor):
    """ "In order for user activity to display in reports like Realtime,
    engagement_time_msec and session_id must be supplied as part of the params for an
    event." https://developers.google.com/analytics/devguides/collection/protocol/ga4/sending-events
    A positive value counts the user as active
    (https://support.google.com/analytics/answer/11109416); a webhook has no engagement of
    its own, so the least positive value, 1 ms."""
    dest = make(GA4.format(url=vendor.url))
    await send(dest, [event(1, anonymousId="a1"), event(2, kind="identify", anonymousId="a1")])
    assert [e["params"]["engagement_time_msec"] for e in ga4_events(vendor)] == [1, 1]


# --- PostHog ----------------------------------------------------------------------------------


async def test_posthog_ip_from_context_else_geoip_off(vendor):
    """PostHog geolocates from the `$ip` property, else from the sender's address (the
    gateway's data centre): https://posthog.com/docs/cdp/geoip-enrichment. Without an ip
    the event says `$geoip_disable: true`, as posthog-python does for disable_geoip
    (`msg["properties"]["$geoip_disable"] = True`, posthog/client.py)."""
    dest = make(POSTHOG.format(url=vendor.url))
    batch = [
        with_ip(event(1), "203.0.113.9"),
        event(2),
        with_ip(event(3, kind="identify", userId="u3"), "2001:db8::1"),
    ]
    assert all(r.ok for r in await send(dest, batch))
    [seen] = vendor.requests
    a, b, c = (e["properties"] for e in seen.json()["batch"])
    assert a["$ip"] == "203.0.113.9" and "$geoip_disable" not in a
    assert b["$geoip_disable"] is True and "$ip" not in b
    assert c["$ip"] == "2001:db8::1" and "$geoip_disable" not in c


# --- Mixpanel ---------------------------------------------------------------------------------


async def test_mixpanel_import_ip_from_context_and_no_geolocation_from_the_gateway(vendor):
    """/import: the `ip` query parameter "If present and equal to 0, Mixpanel will not
    perform geolocation parsing using the IP address of the request"
    (mixpanel/docs openapi/src/common/ingestion-api.yaml; mixpanel-node sends
    `ip: geolocate ? 1 : 0`, 0 by default), and "If you supply a property `ip` with an IP
    address, Mixpanel will automatically do a GeoIP lookup"
    (https://developer.mixpanel.com/reference/import-events, GeoIP Enrichment)."""
    dest = make(MIXPANEL.format(url=vendor.url))
    alias = {**event(3, kind="alias", userId="u3", previousId="stripe:cus_3")}
    alias.pop("traits")
    batch = [with_ip(event(1), "203.0.113.9"), event(2), with_ip(alias, "198.51.100.7")]
    assert all(r.ok for r in await send(dest, batch))
    [seen] = vendor.requests
    assert seen.path == "/import"
    assert dict(part.split("=") for part in seen.query.split("&")) == {"strict": "1", "ip": "0"}
    a, b, c = (r["properties"] for r in seen.json())
    assert a["ip"] == "203.0.113.9"
    assert "ip" not in b
    assert c["ip"] == "198.51.100.7"


async def test_mixpanel_profile_traits_use_reserved_properties(vendor):
    """Reserved profile properties: $email, $name, $first_name, $last_name, $phone,
    $avatar, $created
    (https://docs.mixpanel.com/docs/data-structure/property-reference/reserved-properties);
    `$ip` outside `$set`, "0" to ignore the sender's address
    (https://docs.mixpanel.com/docs/tracking-best-practices/geolocation#ignore-ip-address)."""
    dest = make(MIXPANEL.format(url=vendor.url))
    traits = {
        "email": "jenny@example.com",
        "name": "Jenny Rosen",
        "firstName": "Jenny",
        "last_name": "Rosen",
        "phone": "+16505550100",
        "avatar": "https://example.com/j.png",
        "createdAt": "2024-04-01T00:00:00Z",
        "plan": "pro",
    }
    batch = [
        with_ip(event(1, kind="identify", userId="u1", traits=traits), "203.0.113.9"),
        event(2, kind="identify", userId="u2", traits={"email": "a@x.com", "$email": "b@x.com"}),
    ]
    assert all(r.ok for r in await send(dest, batch))
    [seen] = vendor.requests
    assert seen.path == "/engage"
    assert seen.json() == [
        {
            "$token": "tok",
            "$distinct_id": "u1",
            "$set": {
                "$email": "jenny@example.com",
                "$name": "Jenny Rosen",
                "$first_name": "Jenny",
                "$last_name": "Rosen",
                "$phone": "+16505550100",
                "$avatar": "https://example.com/j.png",
                "$created": "2024-04-01T00:00:00Z",
                "plan": "pro",
            },
            "$ip": "203.0.113.9",
        },
        # a trait already under Mixpanel's name wins
        {"$token": "tok", "$distinct_id": "u2", "$set": {"$email": "b@x.com"}, "$ip": "0"},
    ]
