"""Shopify, Intercom and the generic (Standard Webhooks, hmac, Slack) normalizers."""

from __future__ import annotations

import json

import msgspec
import pytest

from gateway.config import parse_config
from normalizers import Delivery, Mapper, NormalizeError, normalize
from tests.normalizers.conftest import RECEIVED_MS, fixture, run, subset


def shopify(name, topic):
    return run("shopify", fixture("shopify", name), {"x-shopify-topic": topic})


def test_paid_order_is_order_completed_with_segment_products():
    [out] = shopify("orders-paid", "orders/paid")
    assert subset(
        {
            "event": "Order Completed",
            "anonymousId": "shopify:115310627314723954",
            "timestamp": "2022-01-01T00:00:00.000Z",
            "properties": {
                "order_id": "820982911946154508",
                "total": 409.94,
                "subtotal": 398.0,
                "revenue": 398.0,
                "shipping": 11.94,
                "tax": 0.0,
                "coupon": "SPRING30",
                "currency": "USD",
                "products": [
                    {
                        "product_id": "632910392",
                        "sku": "IPOD2008PINK",
                        "name": "IPod Nano - 8GB",
                        "price": 199.0,
                        "quantity": 1,
                        "variant": "808950810",
                    },
                    {
                        "product_id": "632910392",
                        "sku": "IPOD2008PINK",
                        "price": 199.0,
                        "quantity": 1,
                    },
                ],
            },
        },
        out,
    ), out


@pytest.mark.parametrize(
    ("topic", "name"),
    [
        ("orders/create", "Order Created"),
        ("orders/cancelled", "Order Cancelled"),
        ("orders/fulfilled", "Order Fulfilled"),
        ("orders/updated", "Order Updated"),
        ("checkouts/create", "Checkout Started"),
        ("checkouts/update", "Checkout Updated"),
    ],
)
def test_order_topics(topic, name):
    [out] = shopify("orders-paid", topic)
    assert out["event"] == name
    assert "revenue" not in out["properties"]  # only a paid order earns it


def test_refund_is_negative_revenue():
    [out] = shopify("refunds-create", "refunds/create")
    assert subset(
        {
            "event": "Order Refunded",
            "properties": {
                "order_id": "450789469",
                "revenue": -41.94,
                "total": 41.94,
                "currency": "USD",
                "products": [{"sku": "IPOD2008GREEN"}],
            },
        },
        out,
    ), out


def test_customer_create_is_identify_with_traits():
    [out] = shopify("customers-create", "customers/create")
    assert subset(
        {
            "type": "identify",
            "anonymousId": "shopify:706405506930370084",
            "traits": {
                "email": "bob@biller.com",
                "firstName": "Bob",
                "address": {"city": "Ottawa", "country": "CA"},
            },
        },
        out,
    ), out
    assert "userId" not in out  # Shopify's id is not the customer's own id


def test_other_topics_follow_the_rule():
    [out] = run("shopify", {"id": 1, "title": "Hat"}, {"x-shopify-topic": "products/update"})
    assert out["event"] == "Product Updated"


def test_shopify_without_topic_is_an_error():
    with pytest.raises(NormalizeError, match="X-Shopify-Topic"):
        run("shopify", {"id": 1})


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "contact.user.created",
            {
                "type": "identify",
                "userId": "u_4821",
                "traits": {
                    "email": "jenny@example.com",
                    "plan": "pro",
                    "intercomContactId": "65a1b2c3d4e5f6a7b8c9d0e1",
                },
            },
        ),
        (
            "conversation.user.created",
            {
                "event": "Conversation Started",
                "userId": "u_4821",
                "properties": {"conversation_id": "147", "channel": "customer_initiated"},
            },
        ),
        ("contact.user.tag.created", {"event": "Contact Tagged", "properties": {"tag": "VIP"}}),
    ],
)
def test_intercom(name, expected):
    [out] = run("intercom", fixture("intercom", name))
    assert subset(expected, out), out


def test_intercom_contact_without_external_id_is_anonymous():
    note = {
        "topic": "contact.lead.created",
        "created_at": 1,
        "data": {"item": {"type": "contact", "id": "abc", "role": "lead"}},
    }
    [out] = run("intercom", note)
    assert out["anonymousId"] == "intercom:abc" and "userId" not in out


def test_intercom_ping_is_nothing():
    assert run("intercom", {"topic": "ping", "data": {"item": {}}}) == []


@pytest.mark.parametrize("source_type", ["standard-webhooks", "hmac"])
def test_generic_uses_type_and_data(source_type):
    body = {
        "type": "user.created",
        "timestamp": "2024-01-02T03:04:05Z",
        "data": {"id": "user_29w83sxmDNGwOuEthce5gg56FcC", "email": "a@example.com"},
    }
    [out] = run(source_type, body, source="clerk")
    assert subset(
        {
            "event": "User Created",
            "timestamp": "2024-01-02T03:04:05.000Z",
            "anonymousId": "clerk:system",
            "properties": {"id": "user_29w83sxmDNGwOuEthce5gg56FcC"},
            "context": {"source": {"name": "clerk", "eventType": "user.created"}},
        },
        out,
    ), out


def test_generic_without_type_is_webhook_received():
    [out] = run("hmac", {"form_response": {"form_id": "x"}})
    assert out["event"] == "Webhook Received"
    assert out["properties"] == {"form_response": {"form_id": "x"}}


def test_slack_event_callback_is_named_after_the_inner_event():
    body = {
        "type": "event_callback",
        "event_id": "Ev1",
        "event_time": 1700000000,
        "event": {"type": "app_mention", "user": "U1", "text": "hi"},
    }
    [out] = run("slack", body)
    assert subset(
        {
            "event": "App Mention",
            "timestamp": "2023-11-14T22:13:20.000Z",
            "properties": {"user": "U1"},
        },
        out,
    ), out


def test_clerk_user_created_fixture():
    [out] = run(
        "standard-webhooks", fixture("standard-webhooks", "clerk-user.created"), source="clerk"
    )
    assert subset(
        {
            "event": "User Created",
            "timestamp": "2022-05-31T15:56:31.835Z",
            "properties": {"id": "user_29w83sxmDNGwOuEthce5gg56FcC", "external_id": "567772"},
        },
        out,
    ), out


def test_slack_app_mention_fixture():
    [out] = run("slack", fixture("slack", "app_mention"))
    assert out["event"] == "App Mention"
    assert out["properties"]["channel"] == "C123ABC456"
    assert out["context"]["source"]["eventType"] == "app_mention"


@pytest.mark.parametrize(
    ("topic", "extra", "timestamp"),
    [
        (
            "orders/cancelled",
            {"cancelled_at": "2024-06-01T10:00:00Z", "updated_at": "2024-06-01T10:00:05Z"},
            "2024-06-01T10:00:00.000Z",
        ),
        ("orders/updated", {"updated_at": "2024-06-02T10:00:00Z"}, "2024-06-02T10:00:00.000Z"),
        ("orders/paid", {"updated_at": "2024-06-02T10:00:00Z"}, "2022-01-01T00:00:00.000Z"),
        ("orders/create", {"updated_at": "2024-06-02T10:00:00Z"}, "2022-01-01T00:00:00.000Z"),
    ],
)
def test_shopify_time_is_when_the_topic_happened(topic, extra, timestamp):
    order = json.loads(fixture("shopify", "orders-paid")) | extra
    [out] = run("shopify", order, {"x-shopify-topic": topic})
    assert out["timestamp"] == timestamp


def test_shopify_refund_rounds_with_the_currency_exponent_and_stays_on_its_order():
    refund = json.loads(fixture("shopify", "refunds-create"))
    refund["transactions"][0].update(amount="1.235", currency="KWD")
    [out] = run("shopify", refund, {"x-shopify-topic": "refunds/create"})
    assert out["properties"]["revenue"] == -1.235
    assert out["anonymousId"] == "shopify:order-450789469"


BOB_TRAITS = {
    "email": "bob@biller.com",
    "firstName": "Bob",
    "lastName": "Biller",
    "name": "Bob Biller",
    "phone": "+16135551111",
    "createdAt": "2024-01-10T17:55:51.000Z",
    "state": "enabled",
    "ordersCount": 3,
    "totalSpent": 249.5,
    "tags": "newsletter, vip",
    "acceptsMarketing": True,
    "address": {
        "street": "123 Elm St.",
        "city": "Ottawa",
        "state": "ON",
        "postalCode": "K2H7A8",
        "country": "CA",
    },
    "shopifyCustomerId": "706405506930370084",
}
BOB_EXTERNAL_IDS = [{"id": "706405506930370084", "type": "shopify_customer_id"}]


def shopify_source(user_id: str | None):
    """A shopify source as a config file declares it, and the events a payload becomes
    through it (the worker's path: the source's config and its `user_id:`)."""
    extra = f"    user_id: {user_id}\n" if user_id else ""
    text = f"sources:\n  shop:\n    type: shopify\n    secrets: [s]\n{extra}"
    config = parse_config(text, "shop.yaml", {}).sources["shop"]

    def events(body: bytes, topic: str) -> list[dict]:
        delivery = Delivery(
            "shop", "shopify", "d-1", RECEIVED_MS, {"x-shopify-topic": topic}, body, config
        )
        mapper = Mapper(config.mappings, config.user_id)
        return [msgspec.json.decode(msgspec.json.encode(e)) for e in normalize(delivery, mapper)]

    return events


def test_shopify_customer_update_is_identify_with_traits_and_no_user_id_by_default():
    [out] = shopify_source(None)(fixture("shopify", "customers-update"), "customers/update")
    assert out["type"] == "identify"
    assert "event" not in out
    assert out["timestamp"] == "2024-02-01T14:30:00.000Z"  # updated_at, in UTC
    assert out["traits"] == BOB_TRAITS
    assert out["anonymousId"] == "shopify:706405506930370084"
    assert "userId" not in out  # Shopify's id is Shopify's, not the customer's own
    assert out["context"]["externalIds"] == BOB_EXTERNAL_IDS
    assert out["context"]["source"]["eventType"] == "customers/update"


def test_shopify_user_id_customer_id_makes_identify_and_orders_share_the_user_id():
    """README: `user_id: customer.id` makes Shopify's customer id the userId; the
    customer's identify (whose payload is the customer itself) must get it too."""
    events = shopify_source("customer.id")
    [identify] = events(fixture("shopify", "customers-update"), "customers/update")
    order = json.loads(fixture("shopify", "orders-paid"))
    order["customer"]["id"] = 706405506930370084
    [paid] = events(json.dumps(order).encode(), "orders/paid")
    for out in (identify, paid):
        assert out["userId"] == "706405506930370084"
        assert "anonymousId" not in out
        assert out["context"]["externalIds"] == BOB_EXTERNAL_IDS
    assert identify["type"] == "identify"
    assert identify["traits"] == BOB_TRAITS
    assert paid["event"] == "Order Completed"


# Intercom conversations and tags: the person is the contact (never the teammate), by
# their external_id, else intercom:<contact id>; the time is the notification's.
JENNY = ("userId", "u_4821", "65a1b2c3d4e5f6a7b8c9d0e1")
LEAD = ("anonymousId", "intercom:65b7e0f1a2b3c4d5e6f7a8b9", "65b7e0f1a2b3c4d5e6f7a8b9")


@pytest.mark.parametrize(
    ("topic", "event", "timestamp", "who", "properties"),
    [
        pytest.param(
            "conversation.user.replied",
            "Conversation Replied",
            "2023-11-14T22:30:00.000Z",
            JENNY,
            {"conversation_id": "147", "state": "open", "channel": "customer_initiated"},
            id="user-replied",
        ),
        pytest.param(
            "conversation.admin.replied",
            "Conversation Admin Replied",
            "2023-11-14T22:46:40.000Z",
            LEAD,
            {"conversation_id": "148", "assignee_id": 814860},
            id="admin-replied-to-a-lead-is-about-the-lead",
        ),
        pytest.param(
            "conversation.admin.closed",
            "Conversation Closed",
            "2023-11-14T23:03:20.000Z",
            JENNY,
            {"conversation_id": "147", "state": "closed", "open": False, "tags": ["login"]},
            id="admin-closed",
        ),
        pytest.param(
            "conversation.admin.assigned",
            "Conversation Assigned",
            "2023-11-14T23:20:00.000Z",
            JENNY,
            {"conversation_id": "147", "assignee_id": 991267, "team_assignee_id": "5017691"},
            id="admin-assigned",
        ),
        pytest.param(
            "conversation.rating.added",
            "Conversation Rated",
            "2023-11-14T23:36:40.000Z",
            JENNY,
            {"conversation_id": "147", "rating": 5},
            id="rating-added",
        ),
        pytest.param(
            "contact.user.tag.deleted",
            "Contact Untagged",
            "2023-11-14T23:53:20.000Z",
            JENNY,
            {"tag": "VIP", "tag_id": "2391"},
            id="user-untagged",
        ),
        pytest.param(
            "contact.lead.tag.deleted",
            "Contact Untagged",
            "2023-11-15T00:10:00.000Z",
            LEAD,
            {"tag": "Trial lead", "tag_id": "7702"},
            id="lead-untagged",
        ),
    ],
)
def test_intercom_topic_becomes(topic, event, timestamp, who, properties):
    [out] = run("intercom", fixture("intercom", topic))
    assert out["type"] == "track"
    assert out["event"] == event
    assert out["timestamp"] == timestamp
    key, value, contact_id = who
    other = "anonymousId" if key == "userId" else "userId"
    assert (out.get(key), out.get(other)) == (value, None), out
    assert out["context"]["externalIds"] == [{"id": contact_id, "type": "intercom_contact_id"}]
    assert out["context"]["source"]["eventType"] == topic
    assert subset(properties, out["properties"]), out["properties"]
