"""Shopify, Intercom and the generic (Standard Webhooks, hmac, Slack) normalizers."""

from __future__ import annotations

import pytest

from normalizers import NormalizeError
from tests.normalizers.conftest import fixture, run, subset


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
    import json

    order = json.loads(fixture("shopify", "orders-paid")) | extra
    [out] = run("shopify", order, {"x-shopify-topic": topic})
    assert out["timestamp"] == timestamp


def test_shopify_refund_rounds_with_the_currency_exponent_and_stays_on_its_order():
    import json

    refund = json.loads(fixture("shopify", "refunds-create"))
    refund["transactions"][0].update(amount="1.235", currency="KWD")
    [out] = run("shopify", refund, {"x-shopify-topic": "refunds/create"})
    assert out["properties"]["revenue"] == -1.235
    assert out["anonymousId"] == "shopify:order-450789469"
