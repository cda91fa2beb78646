"""Shopify, Intercom and the generic (Standard Webhooks, hmac, Slack) normalizers."""

from __future__ import annotations

import json

import msgspec
import pytest

from gateway.config import parse_config
from normalizers import Delivery, Mapper, NormalizeError, normalize
from tests.normalizers.conftest import RECEIVED_MS, assert_same, expected_event, fixture, run


def shopify(name, topic):
    return run("shopify", fixture("shopify", name), {"x-shopify-topic": topic})


# Order #1234 of tests/fixtures/shopify/orders-paid.json, as Segment's e-commerce spec
# has it (its two line items are the same iPod).
IPOD_PINK = {
    "product_id": "632910392",
    "variant": "808950810",
    "sku": "IPOD2008PINK",
    "name": "IPod Nano - 8GB",
    "price": 199.0,
    "quantity": 1,
}
ORDER_820 = {
    "order_id": "820982911946154508",
    "order_number": 1234,
    "checkout_id": "901414060",
    "total": 409.94,
    "subtotal": 398.0,
    "tax": 0.0,
    "discount": 0.0,
    "shipping": 11.94,
    "coupon": "SPRING30",
    "currency": "USD",
    "financial_status": "paid",
    "products": [IPOD_PINK, IPOD_PINK],
}
JOHN = ("anonymousId", "shopify:115310627314723954")
JOHN_EXTERNAL_IDS = [{"id": "115310627314723954", "type": "shopify_customer_id"}]
# The buyer's match keys in orders-paid.json: the order's own email (its customer's
# account email, john@example.com, is the fallback), the customer's names; its phone is
# null, it has no billing address, and the customer's `state` ("disabled") is the
# account's, not an address.
JOHN_CONTEXT_TRAITS = {
    "email": "jon@example.com",
    "firstName": "John",
    "lastName": "Smith",
    "name": "John Smith",
}


def test_paid_order_is_order_completed_with_segment_products():
    [out] = shopify("orders-paid", "orders/paid")
    expected = expected_event(
        "shopify",
        "orders/paid",
        JOHN,
        "2022-01-01T00:00:00.000Z",  # processed_at, 2021-12-31T19:00:00-05:00
        event="Order Completed",
        properties=ORDER_820 | {"revenue": 398.0},  # the subtotal after discounts
        external_ids=JOHN_EXTERNAL_IDS,
        context_traits=JOHN_CONTEXT_TRAITS,
    )
    assert_same(out, expected)


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
    expected = expected_event(
        "shopify",
        "refunds/create",
        ("anonymousId", "shopify:order-450789469"),  # a refund names no customer
        "2024-01-10T17:55:51.000Z",  # created_at, 2024-01-10T12:55:51-05:00
        event="Order Refunded",
        properties={
            "order_id": "450789469",
            "refund_id": "929361462",
            "total": 41.94,
            "revenue": -41.94,
            "currency": "USD",
            "reason": "wrong size",
            "products": [
                {
                    "product_id": "632910392",
                    "variant": "39072856",
                    "sku": "IPOD2008GREEN",
                    "name": "IPod Nano - 8gb",
                    "price": 199.0,
                    "quantity": 1,
                }
            ],
        },
    )
    assert_same(out, expected)


BOB = ("anonymousId", "shopify:706405506930370084")  # Shopify's id is not his own id
BOB_EXTERNAL_IDS = [{"id": "706405506930370084", "type": "shopify_customer_id"}]
BOB_ADDRESS = {
    "street": "123 Elm St.",
    "city": "Ottawa",
    "state": "ON",
    "postalCode": "K2H7A8",
    "country": "CA",
}


def test_customer_create_is_identify_with_traits():
    [out] = shopify("customers-create", "customers/create")
    expected = expected_event(
        "shopify",
        "customers/create",
        BOB,
        "2024-01-10T17:55:51.000Z",  # created_at, 2024-01-10T12:55:51-05:00
        traits={
            "email": "bob@biller.com",
            "firstName": "Bob",
            "lastName": "Biller",
            "name": "Bob Biller",
            "createdAt": "2024-01-10T17:55:51.000Z",
            "state": "disabled",
            "ordersCount": 0,
            "totalSpent": 0.0,
            "acceptsMarketing": False,  # email_marketing_consent: not_subscribed
            "address": BOB_ADDRESS,
            "shopifyCustomerId": "706405506930370084",
        },
        external_ids=BOB_EXTERNAL_IDS,
        # Match keys only: not `state` ("disabled", the account's), phone null.
        context_traits={
            "email": "bob@biller.com",
            "firstName": "Bob",
            "lastName": "Biller",
            "name": "Bob Biller",
            "address": BOB_ADDRESS,
        },
    )
    assert_same(out, expected)


def test_other_topics_follow_the_rule():
    [out] = run("shopify", {"id": 1, "title": "Hat"}, {"x-shopify-topic": "products/update"})
    assert out["event"] == "Product Updated"


def test_shopify_without_topic_is_an_error():
    with pytest.raises(NormalizeError, match="X-Shopify-Topic"):
        run("shopify", {"id": 1})


# Intercom: the person is the contact (never the teammate), by their external_id, else
# intercom:<contact id>; the time is the notification's `created_at`.
JENNY = ("userId", "u_4821")
JENNY_EXTERNAL_IDS = [{"id": "65a1b2c3d4e5f6a7b8c9d0e1", "type": "intercom_contact_id"}]
LEAD = ("anonymousId", "intercom:65b7e0f1a2b3c4d5e6f7a8b9")
LEAD_EXTERNAL_IDS = [{"id": "65b7e0f1a2b3c4d5e6f7a8b9", "type": "intercom_contact_id"}]
# Conversation 147 as the notifications show it (created 2023-11-14T22:15:00Z).
CONVERSATION_147 = {
    "conversation_id": "147",
    "state": "open",
    "open": True,
    "priority": "not_priority",
    "channel": "customer_initiated",
    "created_at": "2023-11-14T22:15:00.000Z",
}


JENNY_CONTACT = {"email": "jenny@example.com", "name": "Jenny Rosen"}  # phone null


@pytest.mark.parametrize(
    ("topic", "who", "timestamp", "what"),
    [
        pytest.param(
            "contact.user.created",
            JENNY,
            "2023-11-14T22:13:22.000Z",
            {
                "traits": {
                    "email": "jenny@example.com",
                    "name": "Jenny Rosen",
                    "role": "user",
                    "createdAt": "2023-11-14T22:13:20.000Z",
                    # Intercom's location: its country_code is ISO 3166 alpha-3.
                    "address": {"city": "San Francisco", "state": "California", "country": "USA"},
                    "unsubscribedFromEmails": False,
                    "intercomContactId": "65a1b2c3d4e5f6a7b8c9d0e1",
                    "plan": "pro",  # custom attributes
                    "seats": 3,
                },
                "context_traits": JENNY_CONTACT,
            },
            id="contact-created-is-identify-with-custom-attributes",
        ),
        pytest.param(
            "conversation.user.created",
            JENNY,
            "2023-11-14T22:15:01.000Z",
            {
                "event": "Conversation Started",
                "properties": CONVERSATION_147,
                # The contacts list holds ids only; the message's author is that contact.
                "context_traits": JENNY_CONTACT,
            },
            id="user-created-conversation-is-started",
        ),
        pytest.param(
            "contact.user.tag.created",
            JENNY,
            "2023-11-14T22:16:41.000Z",
            {
                "event": "Contact Tagged",
                "properties": {"tag": "VIP", "tag_id": "2391"},
                "context_traits": {"email": "jenny@example.com"},
            },
            id="user-tagged",
        ),
    ],
)
def test_intercom(topic, who, timestamp, what):
    [out] = run("intercom", fixture("intercom", topic))
    expected = expected_event(
        "intercom", topic, who, timestamp, external_ids=JENNY_EXTERNAL_IDS, **what
    )
    assert_same(out, expected)


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
    expected = expected_event(
        "clerk",
        "user.created",
        ("anonymousId", "clerk:system"),
        "2024-01-02T03:04:05.000Z",
        event="User Created",
        properties={"id": "user_29w83sxmDNGwOuEthce5gg56FcC", "email": "a@example.com"},
        source_type=source_type,
    )
    assert_same(out, expected)


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
    expected = expected_event(
        "slack",
        "app_mention",
        ("anonymousId", "slack:system"),
        "2023-11-14T22:13:20.000Z",  # event_time
        event="App Mention",
        properties={"type": "app_mention", "user": "U1", "text": "hi"},
    )
    assert_same(out, expected)


def test_clerk_user_created_fixture():
    [out] = run(
        "standard-webhooks", fixture("standard-webhooks", "clerk-user.created"), source="clerk"
    )
    # `data` as it is, its nulls left out (docs/events.md: "`data` as properties").
    expected = expected_event(
        "clerk",
        "user.created",
        ("anonymousId", "clerk:system"),
        "2022-05-31T15:56:31.835Z",  # timestamp 1654012591835 (ms)
        event="User Created",
        properties={
            "birthday": "",
            "created_at": 1654012591514,
            "email_addresses": [
                {
                    "email_address": "example@example.org",
                    "id": "idn_29w83yL7CwVlJXylYLxcslromF1",
                    "linked_to": [],
                    "object": "email_address",
                    "verification": {"status": "verified", "strategy": "ticket"},
                }
            ],
            "external_accounts": [],
            "external_id": "567772",
            "first_name": "Example",
            "gender": "",
            "id": "user_29w83sxmDNGwOuEthce5gg56FcC",
            "image_url": "https://img.clerk.com/xxxxxx",
            "last_name": "Example",
            "last_sign_in_at": 1654012591514,
            "object": "user",
            "password_enabled": True,
            "phone_numbers": [],
            "primary_email_address_id": "idn_29w83yL7CwVlJXylYLxcslromF1",
            "private_metadata": {},
            "profile_image_url": "https://www.gravatar.com/avatar?d=mp",
            "public_metadata": {},
            "two_factor_enabled": False,
            "unsafe_metadata": {},
            "updated_at": 1654012591835,
            "web3_wallets": [],
        },
        source_type="standard-webhooks",
    )
    assert_same(out, expected)


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
    "createdAt": "2024-01-10T17:55:51.000Z",  # 2024-01-10T12:55:51-05:00
    "state": "enabled",
    "ordersCount": 3,
    "totalSpent": 249.5,
    "tags": "newsletter, vip",
    "acceptsMarketing": True,  # email_marketing_consent: subscribed
    "address": BOB_ADDRESS,
    "shopifyCustomerId": "706405506930370084",
}
# customers-update.json's match keys: its `state` is "enabled", which is no address.
BOB_CONTEXT_TRAITS = {
    "email": "bob@biller.com",
    "phone": "+16135551111",
    "firstName": "Bob",
    "lastName": "Biller",
    "name": "Bob Biller",
    "address": BOB_ADDRESS,
}


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
    expected = expected_event(
        "shop",
        "customers/update",
        BOB,  # Shopify's id is Shopify's, not the customer's own: no userId
        "2024-02-01T14:30:00.000Z",  # updated_at, 2024-02-01T09:30:00-05:00
        traits=BOB_TRAITS,
        external_ids=BOB_EXTERNAL_IDS,
        context_traits=BOB_CONTEXT_TRAITS,
        source_type="shopify",
    )
    assert_same(out, expected)


def test_shopify_user_id_customer_id_makes_identify_and_orders_share_the_user_id():
    """docs/events.md: `user_id: customer.id` makes Shopify's customer id the userId; the
    customer's identify (whose payload is the customer itself) must get it too."""
    events = shopify_source("customer.id")
    [identify] = events(fixture("shopify", "customers-update"), "customers/update")
    order = json.loads(fixture("shopify", "orders-paid"))
    order["customer"]["id"] = 706405506930370084
    [paid] = events(json.dumps(order).encode(), "orders/paid")
    bob = ("userId", "706405506930370084")
    assert_same(
        identify,
        expected_event(
            "shop",
            "customers/update",
            bob,
            "2024-02-01T14:30:00.000Z",
            traits=BOB_TRAITS,
            external_ids=BOB_EXTERNAL_IDS,
            context_traits=BOB_CONTEXT_TRAITS,
            source_type="shopify",
        ),
    )
    assert_same(
        paid,
        expected_event(
            "shop",
            "orders/paid",
            bob,
            "2022-01-01T00:00:00.000Z",
            event="Order Completed",
            properties=ORDER_820 | {"revenue": 398.0},
            external_ids=BOB_EXTERNAL_IDS,
            context_traits=JOHN_CONTEXT_TRAITS,  # the order's buyer, as the order says
            source_type="shopify",
        ),
    )


# Intercom conversations and tags, one fixture each.
@pytest.mark.parametrize(
    ("topic", "event", "timestamp", "who", "external_ids", "properties"),
    [
        pytest.param(
            "conversation.user.replied",
            "Conversation Replied",
            "2023-11-14T22:30:00.000Z",
            JENNY,
            JENNY_EXTERNAL_IDS,
            CONVERSATION_147,
            id="user-replied",
        ),
        pytest.param(
            "conversation.admin.replied",
            "Conversation Admin Replied",
            "2023-11-14T22:46:40.000Z",
            LEAD,
            LEAD_EXTERNAL_IDS,
            {
                "conversation_id": "148",
                "state": "open",
                "open": True,
                "priority": "not_priority",
                "channel": "customer_initiated",
                "assignee_id": 814860,
                "created_at": "2023-11-14T22:15:00.000Z",
            },
            id="admin-replied-to-a-lead-is-about-the-lead",
        ),
        pytest.param(
            "conversation.admin.closed",
            "Conversation Closed",
            "2023-11-14T23:03:20.000Z",
            JENNY,
            JENNY_EXTERNAL_IDS,
            CONVERSATION_147
            | {"state": "closed", "open": False, "assignee_id": 814860, "tags": ["login"]},
            id="admin-closed",
        ),
        pytest.param(
            "conversation.admin.assigned",
            "Conversation Assigned",
            "2023-11-14T23:20:00.000Z",
            JENNY,
            JENNY_EXTERNAL_IDS,
            CONVERSATION_147 | {"assignee_id": 991267, "team_assignee_id": "5017691"},
            id="admin-assigned",
        ),
        pytest.param(
            "conversation.rating.added",
            "Conversation Rated",
            "2023-11-14T23:36:40.000Z",
            JENNY,
            JENNY_EXTERNAL_IDS,
            CONVERSATION_147
            | {"state": "closed", "open": False, "assignee_id": 814860, "rating": 5},
            id="rating-added",
        ),
        pytest.param(
            "contact.user.tag.deleted",
            "Contact Untagged",
            "2023-11-14T23:53:20.000Z",
            JENNY,
            JENNY_EXTERNAL_IDS,
            {"tag": "VIP", "tag_id": "2391"},
            id="user-untagged",
        ),
        pytest.param(
            "contact.lead.tag.deleted",
            "Contact Untagged",
            "2023-11-15T00:10:00.000Z",
            LEAD,
            LEAD_EXTERNAL_IDS,
            {"tag": "Trial lead", "tag_id": "7702"},
            id="lead-untagged",
        ),
    ],
)
def test_intercom_topic_becomes(topic, event, timestamp, who, external_ids, properties):
    [out] = run("intercom", fixture("intercom", topic))
    expected = expected_event(
        "intercom",
        topic,
        who,
        timestamp,
        event=event,
        properties=properties,
        external_ids=external_ids,
        context_traits=INTERCOM_CONTACTS.get(topic),
    )
    assert_same(out, expected)


# The contact's email where the notification gives it (tags carry the contact; these
# conversations' authors have null email and name).
INTERCOM_CONTACTS = {
    "contact.user.tag.deleted": {"email": "jenny@example.com"},
    "contact.lead.tag.deleted": {"email": "visitor@example.org"},
}
