"""Meta CAPI and TikTok get the event's ad-matching data exactly as each documents it.

Golden values are SHA-256 of the normalized text written out here, as the vendors define
the normalization (not as our code computes it):
- Meta: https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters
  (em trimmed lower-case; ph digits with country code; fn/ln lower-case letters; ct
  lower-case no spaces; st two-letter lower-case; zp US first 5 digits; country ISO 3166-1
  alpha-2 lower-case; fbc, fbp, client_ip_address, client_user_agent not hashed) and
  https://developers.facebook.com/docs/marketing-api/conversions-api/parameters (website
  events need event_source_url and client_user_agent).
- TikTok: https://business-api.tiktok.com/portal/docs?id=1771101303285761 (phone E.164
  with its `+`, e.g. "+12133734253"; ttclid, ttp, ip, user_agent not hashed; page.url;
  properties.contents content_id/quantity/price). external_id lower-cased before hashing
  as Segment's TikTok destination does: https://github.com/segmentio/action-destinations/
  blob/main/packages/destination-actions/src/destinations/tiktok-conversions/reportWebEvent/formatter.ts
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.destinations.conftest import event
from tests.destinations.test_vendors import make, send


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


URL = "https://shop.example.com/checkout?step=2"
REFERRER = "https://www.tiktok.com/"
AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"
CLICKS = {
    "fbc": "fb.1.1714564000000.IwAR2xyz",
    "fbp": "fb.1.1714560000000.1098115397",
    "ttclid": "E.C.P.v3abc",
    "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
    "gclid": "Cj0KCQ",
}
PRODUCTS = [
    {"product_id": "p1", "sku": "SKU-1", "price": 10.0, "quantity": 2},
    {"sku": "sku-9", "price": 5},
]
ORDER = {"order_id": "o1", "revenue": 25.0, "currency": "USD", "products": PRODUCTS}


def meta(vendor) -> Any:
    return make(
        f"    type: meta-capi\n    pixel_id: '777'\n    access_token: t\n    host: {vendor.url}\n"
    )


def tiktok(vendor) -> Any:
    return make(
        f"    type: tiktok\n    pixel_code: PX\n    access_token: t\n"
        f"    endpoint: {vendor.url}/open_api/v1.3/event/track/\n"
    )


def web_event() -> dict[str, Any]:
    """A purchase collected from the site: the client's library and page, enriched by the
    identity layer (clickIds, traits)."""
    e = event(1, userId="  User_42 ", properties=dict(ORDER))
    e["context"] = {
        "source": {"name": "site", "type": "collect", "deliveryId": "m1"},
        "library": {"name": "analytics.js", "version": "5.2.0"},
        "page": {"url": URL, "referrer": REFERRER},
        "ip": "198.51.100.7",
        "userAgent": AGENT,
        "clickIds": dict(CLICKS),
        "traits": {
            "email": " Jenny.Rosen@Example.COM ",
            "phone": "(650) 555-0100",
            "firstName": "Jenny",
            "lastName": "Rosen-Smith",
            "address": {
                "city": "San Francisco",
                "state": "California",
                "postalCode": "94107-1234",
                "country": "United States",
            },
        },
    }
    return e


def webhook_event() -> dict[str, Any]:
    """A Stripe charge (no page) the identity layer joined to the person's web session."""
    e = event(2, userId="CUS-7", properties={"revenue": 9.5, "currency": "EUR"})
    e["context"].update(
        ip="203.0.113.9",
        userAgent=AGENT,
        clickIds={"fbc": CLICKS["fbc"], "ttclid": CLICKS["ttclid"]},
        traits={
            "email": "max@example.de",
            "phone": "+49 151 12345678",
            "name": "Max Mustermann",
            "address": {"city": "Berlin", "postalCode": "10115", "country": "Germany"},
        },
    )
    return e


async def sent(dest, vendor, e: dict[str, Any]) -> dict[str, Any]:
    [result] = await send(dest, [e])
    assert result.ok, result.reason
    [seen] = vendor.requests
    [data] = seen.json()["data"]
    return data


async def test_meta_web_event(vendor):
    data = await sent(meta(vendor), vendor, web_event())
    assert data["action_source"] == "website"
    assert data["event_source_url"] == URL
    assert data["user_data"] == {
        "em": [sha("jenny.rosen@example.com")],
        "ph": [sha("16505550100")],
        "fn": [sha("jenny")],
        "ln": [sha("rosensmith")],
        "ct": [sha("sanfrancisco")],
        "st": [sha("ca")],
        "zp": [sha("94107")],
        "country": [sha("us")],
        "external_id": [sha("user_42")],
        "client_ip_address": "198.51.100.7",
        "client_user_agent": AGENT,
        "fbc": "fb.1.1714564000000.IwAR2xyz",
        "fbp": "fb.1.1714560000000.1098115397",
    }
    # https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/custom-data
    assert data["custom_data"] == {
        "value": 25.0,
        "currency": "USD",
        "order_id": "o1",
        "content_ids": ["p1", "sku-9"],
        "contents": [
            {"id": "p1", "quantity": 2, "item_price": 10.0},
            {"id": "sku-9", "quantity": 1, "item_price": 5},
        ],
        "num_items": 3,
    }


async def test_meta_webhook_event(vendor):
    data = await sent(meta(vendor), vendor, webhook_event())
    assert data["action_source"] == "system_generated"
    assert "event_source_url" not in data
    user = data["user_data"]
    assert user["country"] == [sha("de")]  # "Germany", as its ISO 3166-1 alpha-2 code
    assert user["fn"] == [sha("max")] and user["ln"] == [sha("mustermann")]
    assert user["ph"] == [sha("4915112345678")]
    assert user["ct"] == [sha("berlin")] and user["zp"] == [sha("10115")]
    assert user["external_id"] == [sha("cus-7")]
    assert user["fbc"] == "fb.1.1714564000000.IwAR2xyz" and "fbp" not in user
    assert user["client_ip_address"] == "203.0.113.9" and user["client_user_agent"] == AGENT
    assert "st" not in user
    assert data["custom_data"] == {"value": 9.5, "currency": "EUR"}


async def test_tiktok_web_event(vendor):
    data = await sent(tiktok(vendor), vendor, web_event())
    assert data["user"] == {
        "email": sha("jenny.rosen@example.com"),
        "phone": sha("+16505550100"),
        "external_id": sha("user_42"),
        "ttclid": "E.C.P.v3abc",
        "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
        "ip": "198.51.100.7",
        "user_agent": AGENT,
    }
    assert data["page"] == {"url": URL, "referrer": REFERRER}
    assert data["properties"] == {
        "value": 25.0,
        "currency": "USD",
        "order_id": "o1",
        "contents": [
            {"content_id": "p1", "quantity": 2, "price": 10.0},
            {"content_id": "sku-9", "quantity": 1, "price": 5},
        ],
    }


async def test_tiktok_webhook_event(vendor):
    data = await sent(tiktok(vendor), vendor, webhook_event())
    assert "page" not in data
    assert data["user"] == {
        "email": sha("max@example.de"),
        "phone": sha("+4915112345678"),
        "external_id": sha("cus-7"),
        "ttclid": "E.C.P.v3abc",
        "ip": "203.0.113.9",
        "user_agent": AGENT,
    }
    assert data["properties"] == {"value": 9.5, "currency": "EUR"}


def standalone_event(**props: Any) -> dict[str, Any]:
    """No identity layer: the sender put the click ids on the properties."""
    return event(3, userId="u3", properties={"revenue": 1, "currency": "USD", **props})


async def test_meta_click_ids_from_properties_without_the_identity_layer(vendor):
    # fbc from a bare fbclid: fb.<subdomain index>.<creation ms>.<fbclid>, the creation
    # time being the event's (2024-05-01T12:00:00Z).
    # https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/fbp-and-fbc
    e = standalone_event(fbclid="IwAR9", fbp="fb.1.1714000000000.55")
    user = (await sent(meta(vendor), vendor, e))["user_data"]
    assert user["fbc"] == "fb.1.1714564800000.IwAR9"
    assert user["fbp"] == "fb.1.1714000000000.55"


async def test_meta_fbc_property_wins_over_fbclid_and_context_over_properties(vendor):
    e = standalone_event(fbc="fb.1.1714000000000.OWN", fbclid="IwAR9", fbp="fb.1.1.prop")
    e["context"]["clickIds"] = {"fbp": "fb.1.1714560000000.CTX"}
    user = (await sent(meta(vendor), vendor, e))["user_data"]
    assert user["fbc"] == "fb.1.1714000000000.OWN"
    assert user["fbp"] == "fb.1.1714560000000.CTX"


async def test_tiktok_click_ids_from_properties_without_the_identity_layer(vendor):
    e = standalone_event(ttclid="E.C.P.prop", ttp="ttp-prop")
    user = (await sent(tiktok(vendor), vendor, e))["user"]
    assert user["ttclid"] == "E.C.P.prop" and user["ttp"] == "ttp-prop"


async def test_no_click_ids_from_properties_when_ad_storage_is_denied(vendor):
    e = standalone_event(fbclid="IwAR9", fbp="fb.1.1.x")
    e["context"]["consent"] = {"ad_storage": "denied"}
    user = (await sent(meta(vendor), vendor, e))["user_data"]
    assert "fbc" not in user and "fbp" not in user


async def test_meta_collected_event_without_agent_keeps_configured_source(vendor):
    """A server library's collected message has no person's agent: sending it as
    `website` without client_user_agent would be refused."""
    e = web_event()
    del e["context"]["userAgent"]
    data = await sent(meta(vendor), vendor, e)
    assert data["action_source"] == "system_generated" and "event_source_url" not in data


async def test_a_page_on_a_webhook_event_is_not_a_web_event(vendor):
    e = webhook_event()
    e["context"]["page"] = {"url": URL}
    data = await sent(meta(vendor), vendor, e)
    assert data["action_source"] == "system_generated"


@pytest.mark.parametrize(
    ("given", "code"),
    [
        ("Germany", "de"),
        ("United States", "us"),
        ("united kingdom", "gb"),
        ("DE", "de"),
        (" us ", "us"),
        ("Atlantis", None),
    ],
)
async def test_meta_country_is_iso_alpha_2(vendor, given, code):
    e = event(4, properties={"email": "a@example.com", "address": {"country": given}})
    user = (await sent(meta(vendor), vendor, e))["user_data"]
    if code is None:
        assert "country" not in user  # never a hash of the name itself
    else:
        assert user["country"] == [sha(code)]
