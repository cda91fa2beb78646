"""The person's match keys in context.traits: what finish() does with them, what the
Shopify, Intercom and catalog (Spec) normalizers read, and that the identity graph links
on them. Stripe's are in test_stripe.py (MATCH_KEYS)."""

from __future__ import annotations

import json

import msgspec
import pytest

from gateway.config import parse_config
from gateway.graph import email_id, identifiers_of
from gateway.sources.catalog import VENDORS, render_sample
from normalizers import Delivery, normalize
from normalizers.base import Draft, Person, finish
from normalizers.generic import Spec
from tests.normalizers.conftest import RECEIVED_MS, fixture, run


def _finish(*drafts: Draft) -> list[dict]:
    delivery = Delivery("src", "hmac", "d-1", RECEIVED_MS, {}, b"{}")
    return [msgspec.json.decode(msgspec.json.encode(e)) for e in finish(delivery, list(drafts))]


# --- finish() ------------------------------------------------------------------------------


def test_empty_match_keys_are_left_out_and_text_is_trimmed_not_changed():
    person = Person(
        vendor_id="c1",
        id_type="x_id",
        traits={
            "email": " Ada@Example.COM ",
            "phone": "",
            "name": None,
            "firstName": "   ",
            "lastName": True,
            "address": {"street": None, "city": " ", "postalCode": "K2H 7A8", "country": "CA"},
        },
    )
    [out] = _finish(Draft(event="E", person=person))
    assert out["context"]["traits"] == {
        "email": "Ada@Example.COM",
        "address": {"postalCode": "K2H 7A8", "country": "CA"},
    }


def test_no_match_keys_no_traits_key_in_context():
    person = Person(vendor_id="c1", id_type="x_id", traits={"email": None, "address": {}})
    [out] = _finish(Draft(event="E", person=person))
    assert "traits" not in out["context"]


def test_a_drafts_own_context_traits_win_over_the_vendors():
    person = Person(traits={"email": "vendor@example.com", "phone": "+1555"})
    draft = Draft(event="E", person=person, context={"traits": {"email": "own@example.com"}})
    [out] = _finish(draft)
    assert out["context"]["traits"] == {"email": "own@example.com", "phone": "+1555"}
    # A draft's context without traits keeps the vendor's.
    [out] = _finish(Draft(event="E", person=person, context={"ip": "192.0.2.1"}))
    assert out["context"]["traits"] == {"email": "vendor@example.com", "phone": "+1555"}
    assert out["context"]["ip"] == "192.0.2.1"


def test_the_graph_links_a_stripe_checkout_to_the_email_the_visitor_gave():
    """What this is for: the identity graph reads context.traits.email, so the paid
    checkout joins whoever else gave the same email (a website visitor's identify)."""
    [checkout] = run("stripe", fixture("stripe", "checkout.session.completed"))
    found = identifiers_of(checkout)
    # One person: the Stripe customer and the email (graph-normalized, hashed).
    assert found == [
        email_id("JennyRosen@example.com"),
        "ext:stripe_customer_id:cus_NffrFeUfNV2Hib",
    ]


# --- Shopify -------------------------------------------------------------------------------

# Shopify's REST Order reference example billing_address (shopify.dev, Order resource).
GORSKI_BILLING = {
    "address1": "2259 Park Ct",
    "address2": "Apartment 5",
    "city": "Drayton Valley",
    "company": None,
    "country": "Canada",
    "first_name": "Christopher",
    "last_name": "Gorski",
    "phone": "(555)555-5555",
    "province": "Alberta",
    "zip": "T0E 0M0",
    "name": "Christopher Gorski",
    "province_code": "AB",
    "country_code": "CA",
}
SHIPPING_ELSEWHERE = {
    "address1": "123 Amoebobacterium St",
    "city": "Ottawa",
    "province": "Ontario",
    "province_code": "ON",
    "country": "Canada",
    "country_code": "CA",
    "zip": "K2P0V6",
    "first_name": "Bob",
    "last_name": "Bobsen",
    "phone": "555-555-SHIP",
}


def _order(topic: str = "orders/paid", **fields) -> dict:
    order = json.loads(fixture("shopify", "orders-paid")) | fields
    [out] = run("shopify", order, {"x-shopify-topic": topic})
    return out["context"].get("traits")


@pytest.mark.parametrize("topic", ["orders/paid", "orders/create", "checkouts/create"])
def test_shopify_billing_address_is_the_buyers_shipping_is_not(topic):
    traits = _order(
        topic,
        billing_address=GORSKI_BILLING,
        shipping_address=SHIPPING_ELSEWHERE,
        phone="+15145550199",
    )
    assert traits == {
        "email": "jon@example.com",
        "phone": "+15145550199",
        "firstName": "John",  # the order's customer
        "lastName": "Smith",
        "name": "John Smith",
        "address": {
            "street": "2259 Park Ct, Apartment 5",
            "city": "Drayton Valley",
            "state": "AB",
            "postalCode": "T0E 0M0",
            "country": "CA",
        },
    }


def test_shopify_order_email_falls_back_to_contact_email_then_the_customers():
    assert _order(email=None)["email"] == "jon@example.com"  # contact_email
    assert _order(email=None, contact_email=None)["email"] == "john@example.com"
    order = json.loads(fixture("shopify", "orders-paid"))
    order["customer"]["phone"] = "+16135550000"
    [out] = run("shopify", order, {"x-shopify-topic": "orders/paid"})
    assert out["context"]["traits"]["phone"] == "+16135550000"


def test_shopify_customers_account_state_is_not_an_address_state():
    customer = json.loads(fixture("shopify", "customers-update"))
    del customer["default_address"]
    assert customer["state"] == "enabled"
    [out] = run("shopify", customer, {"x-shopify-topic": "customers/update"})
    assert out["context"]["traits"] == {
        "email": "bob@biller.com",
        "phone": "+16135551111",
        "firstName": "Bob",
        "lastName": "Biller",
        "name": "Bob Biller",
    }


def test_shopify_refunds_and_products_carry_no_match_keys():
    [refund] = run(
        "shopify", fixture("shopify", "refunds-create"), {"x-shopify-topic": "refunds/create"}
    )
    product = {"id": 1, "title": "Hat", "email": "vendor@example.com"}
    [updated] = run("shopify", product, {"x-shopify-topic": "products/update"})
    assert "traits" not in refund["context"] and "traits" not in updated["context"]


# --- Intercom ------------------------------------------------------------------------------


def _conversation(author: dict, contacts: list | None = None) -> dict | None:
    note = json.loads(fixture("intercom", "conversation.user.created"))
    note["data"]["item"]["source"]["author"] = author
    if contacts is not None:
        note["data"]["item"]["contacts"]["contacts"] = contacts
    [out] = run("intercom", note)
    return out["context"].get("traits")


def test_intercom_a_teammates_or_another_contacts_details_are_not_the_contacts():
    teammate = {"type": "admin", "id": "814860", "email": "agent@acme.example", "name": "Ann"}
    assert _conversation(teammate) is None
    assert _conversation(teammate, contacts=[]) is None  # a teammate-started conversation
    other = {"type": "user", "id": "someone-else", "email": "x@example.com", "name": "X"}
    assert _conversation(other) is None
    same = {"type": "user", "id": "65a1b2c3d4e5f6a7b8c9d0e1", "email": "j@example.com"}
    assert _conversation(same) == {"email": "j@example.com"}


# --- the catalog's generic normalizer (Spec.traits) ----------------------------------------


def _generic(spec: Spec, payload: dict) -> dict | None:
    class Config:
        normalize_spec = spec

    body = json.dumps(payload).encode()
    [out] = normalize(Delivery("v", "hmac", "d-1", RECEIVED_MS, {}, body, Config()))
    decoded = msgspec.json.decode(msgspec.json.encode(out))
    return decoded["context"].get("traits")


def test_spec_traits_paths_alternatives_and_address_parts():
    spec = Spec(
        traits=(
            ("email", "data.billing.email|data.email"),
            ("phone", "data.phone"),
            ("address.city", "data.billing.city"),
            ("address.country", "data.billing.country"),
        )
    )
    payload = {
        "type": "order.paid",
        "data": {"email": "a@example.com", "billing": {"city": "Oslo"}},
    }
    assert _generic(spec, payload) == {"email": "a@example.com", "address": {"city": "Oslo"}}
    payload["data"]["billing"]["email"] = "billing@example.com"
    assert _generic(spec, payload)["email"] == "billing@example.com"
    assert _generic(Spec(), payload) is None  # no `traits`: nothing read


def test_spec_traits_when_reads_only_about_the_customer():
    spec = Spec(
        traits=(("email", "data.email"),), traits_when=("data.type", ("orders", "customers"))
    )
    assert _generic(spec, {"data": {"type": "orders", "email": "c@example.com"}}) == {
        "email": "c@example.com"
    }
    assert _generic(spec, {"data": {"type": "affiliates", "email": "aff@example.com"}}) is None


def _vendor(name: str, payload: bytes, headers: dict[str, str] | None = None) -> list[dict]:
    secret = "user:pass" if name == "chargebee" else "s"
    text = f"sources:\n  {name}:\n    type: {name}\n    secrets: ['{secret}']\n"
    config = parse_config(text, "c.yaml", {}).sources[name]
    delivery = Delivery(name, name, "d-1", RECEIVED_MS, headers or {}, payload, config)
    return [msgspec.json.decode(msgspec.json.encode(e)) for e in normalize(delivery)]


def _sample(name: str) -> bytes:
    [(_, path)] = VENDORS[name].samples().items()
    return render_sample(path, RECEIVED_MS / 1000, seed="traits")


# Written out from gateway/sources/samples/<vendor>/.
@pytest.mark.parametrize(
    ("name", "headers", "traits"),
    [
        pytest.param(
            "chargebee",
            {},
            {"email": "john@user.com", "firstName": "John", "lastName": "Doe"},
            id="chargebee-content-customer",
        ),
        pytest.param(
            "lemon-squeezy",
            {},
            {"email": "gernser@yahoo.com", "name": "Darlene Daugherty"},
            id="lemon-squeezy-order-user-fields",
        ),
        pytest.param(
            "woocommerce",
            {"x-wc-webhook-topic": "order.created"},
            {
                "email": "john.doe@example.com",
                "phone": "(555) 555-5555",
                "firstName": "John",
                "lastName": "Doe",
                "address": {
                    "street": "969 Market",
                    "city": "San Francisco",
                    "state": "CA",
                    "postalCode": "94103",
                    "country": "US",
                },
            },
            id="woocommerce-order-billing",
        ),
    ],
)
def test_catalog_vendor_sample_carries_the_customers_match_keys(name, headers, traits):
    [out] = _vendor(name, _sample(name), headers)
    assert out["context"]["traits"] == traits


def test_lemon_squeezy_affiliates_user_email_is_not_a_customers():
    payload = json.loads(_sample("lemon-squeezy"))
    payload["meta"]["event_name"] = "affiliate_activated"
    payload["data"]["type"] = "affiliates"
    [out] = _vendor("lemon-squeezy", json.dumps(payload).encode())
    assert "traits" not in out["context"]


def test_chargebee_customer_billing_address():
    payload = json.loads(_sample("chargebee"))
    payload["content"]["customer"]["phone"] = "+1 650 555 0100"
    payload["content"]["customer"]["billing_address"] = {
        "first_name": "John",
        "last_name": "Doe",
        "line1": "340 S Lemon Ave",
        "city": "Walnut",
        "state_code": "CA",
        "state": "California",
        "country": "US",
        "zip": "91789",
        "validation_status": "not_validated",
        "object": "billing_address",
    }
    [out] = _vendor("chargebee", json.dumps(payload).encode())
    assert out["context"]["traits"] == {
        "email": "john@user.com",
        "phone": "+1 650 555 0100",
        "firstName": "John",
        "lastName": "Doe",
        "address": {
            "street": "340 S Lemon Ave",
            "city": "Walnut",
            "state": "CA",
            "postalCode": "91789",
            "country": "US",
        },
    }
