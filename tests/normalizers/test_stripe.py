"""Stripe events from tests/fixtures/stripe/ (shaped like the events Stripe sends)."""

from __future__ import annotations

import json

import pytest

from normalizers import NormalizeError
from normalizers.money import stripe_amount, to_major
from tests.normalizers.conftest import fixture, run, subset

CASES = [
    pytest.param(
        "customer.created",
        [
            {
                "type": "identify",
                "userId": "u_4821",
                "timestamp": "2023-11-14T22:13:20.000Z",
                "traits": {
                    "email": "jennyrosen@example.com",
                    "name": "Jenny Rosen",
                    "address": {"city": "South San Francisco", "postalCode": "94080"},
                    "createdAt": "2023-11-14T22:13:10.000Z",
                    "stripeCustomerId": "cus_NffrFeUfNV2Hib",
                },
                "context": {
                    "externalIds": [{"id": "cus_NffrFeUfNV2Hib", "type": "stripe_customer_id"}]
                },
            }
        ],
        id="customer-identify",
    ),
    pytest.param(
        "checkout.session.completed",
        [
            {
                "type": "track",
                "event": "Order Completed",
                "anonymousId": "stripe:cus_NffrFeUfNV2Hib",
                "properties": {
                    "order_id": "cs_test_a1b2c3d4e5f6g7h8i9j0",
                    "total": 54.5,
                    "subtotal": 50.0,
                    "tax": 4.5,
                    "currency": "USD",
                    "payment_status": "paid",
                },
            }
        ],
        id="paid-checkout-is-order-completed",
    ),
    pytest.param(
        "charge.succeeded",
        [
            {
                "event": "Charge Succeeded",
                "userId": "u_4821",
                "properties": {
                    "revenue": 54.5,
                    "amount": 54.5,
                    "currency": "USD",
                    "order_id": "pi_3OkLmN2eZvKYlo2C1abcdefg",
                    "payment_method_type": "card",
                },
            }
        ],
        id="captured-charge-carries-revenue",
    ),
    pytest.param(
        "charge.refunded",
        [
            {
                "event": "Order Refunded",
                "properties": {"revenue": -20.0, "total": 20.0, "amount_refunded": 30.0},
            }
        ],
        id="refund-revenue-is-this-refund-only",
    ),
    pytest.param(
        "customer.subscription.created",
        [
            {
                "event": "Subscription Created",
                "properties": {
                    "subscription_id": "sub_1OkSub2eZvKYlo2Cabcdefgh",
                    "status": "trialing",
                    "plan_name": "Pro monthly",
                    "interval": "month",
                    "amount": 87.0,
                    "quantity": 3,
                    "currency": "EUR",
                    "trial_end": "2023-11-28T22:16:40.000Z",
                },
            },
            {"event": "Trial Started"},
        ],
        id="trialing-subscription-starts-a-trial",
    ),
    pytest.param(
        "invoice.paid",
        [
            {
                "event": "Invoice Paid",
                "properties": {
                    "amount_paid": 870000,
                    "total": 870000,
                    "currency": "JPY",
                    "billing_reason": "subscription_cycle",
                },
            }
        ],
        id="invoice-in-a-zero-decimal-currency",
    ),
    pytest.param(
        "issuing_card.created",
        [
            {
                "event": "Issuing Card Created",
                "anonymousId": "stripe:system",
                "properties": {
                    "id": "ic_1OkIss2eZvKYlo2Cabcdefgh",
                    "currency": "USD",
                    "last4": "4242",
                },
            }
        ],
        id="unknown-type-is-a-generic-event",
    ),
]


@pytest.mark.parametrize(("name", "expected"), CASES)
def test_fixture_becomes(name, expected):
    events = run("stripe", fixture("stripe", name))
    assert len(events) == len(expected), events
    for want, got in zip(expected, events, strict=True):
        assert subset(want, got), (want, got)
        assert got["context"]["source"]["eventType"] == name
        assert got["receivedAt"] == "2023-11-14T22:21:40.123Z"


def test_revenue_is_never_on_order_completed_or_invoices():
    """A payment is counted once, on its charge, whichever Stripe events a team enables."""
    for name in ("checkout.session.completed", "invoice.paid"):
        assert all("revenue" not in e["properties"] for e in run("stripe", fixture("stripe", name)))


def test_unpaid_checkout_is_not_an_order_yet():
    event = json.loads(fixture("stripe", "checkout.session.completed"))
    event["data"]["object"]["payment_status"] = "unpaid"
    [out] = run("stripe", event)
    assert out["event"] == "Checkout Completed"


def test_subscription_leaving_trial_ends_it():
    event = json.loads(fixture("stripe", "customer.subscription.created"))
    event["type"] = "customer.subscription.updated"
    event["data"]["object"]["status"] = "active"
    event["data"]["previous_attributes"] = {"status": "trialing"}
    assert [e["event"] for e in run("stripe", event)] == ["Subscription Updated", "Trial Ended"]


def test_uncaptured_charge_has_no_revenue_until_captured():
    event = json.loads(fixture("stripe", "charge.succeeded"))
    event["data"]["object"].update(captured=False, amount_captured=0)
    [held] = run("stripe", event)
    assert "revenue" not in held["properties"]
    event["type"] = "charge.captured"
    event["data"]["object"].update(captured=True, amount_captured=5450)
    event["data"]["previous_attributes"] = {"amount_captured": 0, "captured": False}
    [captured] = run("stripe", event)
    assert captured["properties"]["revenue"] == 54.5


@pytest.mark.parametrize(
    ("amount", "currency", "major"),
    [
        (1999, "usd", 19.99),
        (500, "jpy", 500),
        (500, "JPY", 500),
        (12345, "krw", 12345),
        (50000, "vnd", 50000),
        (1234, "kwd", 1.234),
        (1005, "bhd", 1.005),
        (1000, "tnd", 1.0),
        (100, "isk", 1.0),  # Stripe sends ISK as a two-decimal amount
        (100, "huf", 1.0),
        (9900, "twd", 99.0),
        (2500, "ugx", 2500),
        (1, "eur", 0.01),
    ],
)
def test_stripe_currency_exponents(amount, currency, major):
    assert stripe_amount(amount, currency) == major


@pytest.mark.parametrize(
    ("amount", "currency", "major"),
    [
        (1999, "USD", 19.99),
        (500, "JPY", 500),
        (100, "ISK", 100),
        (1234, "KWD", 1.234),
        (12345, "CLF", 1.2345),
        (None, "USD", None),
        ("12", "USD", 0.12),
    ],
)
def test_iso_currency_exponents(amount, currency, major):
    assert to_major(amount, currency) == major


def test_currency_in_events_is_upper_case_iso():
    event = json.loads(fixture("stripe", "charge.succeeded"))
    event["data"]["object"].update(currency="kwd", amount=1234, amount_captured=1234)
    [out] = run("stripe", event)
    assert out["properties"]["currency"] == "KWD"
    assert out["properties"]["revenue"] == 1.234


@pytest.mark.parametrize(
    "body",
    [b'{"object": "charge"}', b'{"object": "event", "type": "x"}', b"[]", b"not json"],
)
def test_broken_payloads_raise_normalize_error(body):
    with pytest.raises(NormalizeError):
        run("stripe", body)


@pytest.mark.parametrize(
    ("charge", "previous", "revenue"),
    [
        ({"captured": False, "amount_captured": 0, "amount_refunded": 5000}, {}, None),
        ({"captured": True, "amount_captured": 3000, "amount_refunded": 2000}, {}, -20.0),
        (
            {"captured": True, "amount_captured": 3000, "amount_refunded": 5000},
            {"amount_refunded": 0},
            -30.0,
        ),  # the released uncaptured rest is not a refund
        (
            {"captured": True, "amount_captured": 5450, "amount_refunded": 5450},
            {"amount_refunded": 3000},
            -24.5,
        ),
    ],
    ids=["released-authorization", "partial", "capped-at-captured", "second-refund"],
)
def test_refund_revenue_counts_only_captured_money(charge, previous, revenue):
    event = json.loads(fixture("stripe", "charge.refunded"))
    event["data"]["object"].update(charge)
    event["data"]["previous_attributes"] = previous
    [out] = run("stripe", event)
    assert out["properties"].get("revenue") == revenue


def test_guest_payment_is_attributed_to_its_payment_not_a_catch_all():
    event = json.loads(fixture("stripe", "charge.succeeded"))
    event["data"]["object"].update(customer=None, metadata={})
    [out] = run("stripe", event)
    assert out["anonymousId"] == "stripe:pi_3OkLmN2eZvKYlo2C1abcdefg"
    assert out["context"]["externalIds"] == [
        {"id": "pi_3OkLmN2eZvKYlo2C1abcdefg", "type": "stripe_payment_intent_id"}
    ]
