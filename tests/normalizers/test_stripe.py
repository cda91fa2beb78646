"""Stripe events from tests/fixtures/stripe/ (shaped like the events Stripe sends)."""

from __future__ import annotations

import json

import pytest

from normalizers import NormalizeError
from normalizers.money import stripe_amount, to_major
from tests.normalizers.conftest import assert_same, expected_event, fixture, run

# Who an event is about: ("userId", <the customer's own id>) or ("anonymousId", <stripe:id>),
# and the vendor id that goes to context.externalIds.
CUSTOMER_U4821 = ("userId", "u_4821")
CUS_NFFR = [{"id": "cus_NffrFeUfNV2Hib", "type": "stripe_customer_id"}]
CUS_PQ2 = [{"id": "cus_Pq2Rs3Tu4Vw5Xy", "type": "stripe_customer_id"}]
PI_3OKLMN = [{"id": "pi_3OkLmN2eZvKYlo2C1abcdefg", "type": "stripe_payment_intent_id"}]
# tests/fixtures/stripe/customer.created.json's address, as Segment's address trait.
JENNY_CUSTOMER_ADDRESS = {
    "street": "354 Oyster Point Blvd",
    "city": "South San Francisco",
    "state": "CA",
    "postalCode": "94080",
    "country": "US",
}
SUBSCRIPTION_SUB_1OKSUB = {
    "subscription_id": "sub_1OkSub2eZvKYlo2Cabcdefgh",
    "status": "trialing",
    "plan_id": "price_1OkPro2eZvKYlo2C",
    "plan_name": "Pro monthly",
    "product_id": "prod_OkPro",
    "interval": "month",
    "amount": 87.0,  # 3 seats x 29.00 EUR
    "quantity": 3,
    "currency": "EUR",
    "trial_start": "2023-11-14T22:16:40.000Z",
    "trial_end": "2023-11-28T22:16:40.000Z",
    "current_period_end": "2023-11-28T22:16:40.000Z",
    "cancel_at_period_end": False,
}


def stripe(name, who, timestamp, *, external_ids=None, index=0, **what):
    """The whole event a Stripe fixture must become (docs/events.md)."""
    return expected_event(
        "stripe", name, who, timestamp, external_ids=external_ids, index=index, **what
    )


CASES = [
    pytest.param(
        "customer.created",
        [
            stripe(
                "customer.created",
                CUSTOMER_U4821,
                "2023-11-14T22:13:20.000Z",
                external_ids=CUS_NFFR,
                traits={
                    "email": "jennyrosen@example.com",
                    "name": "Jenny Rosen",
                    "createdAt": "2023-11-14T22:13:10.000Z",
                    "address": JENNY_CUSTOMER_ADDRESS,
                    "stripeCustomerId": "cus_NffrFeUfNV2Hib",
                },
                # The customer's match keys (phone is null: left out).
                context_traits={
                    "email": "jennyrosen@example.com",
                    "name": "Jenny Rosen",
                    "address": JENNY_CUSTOMER_ADDRESS,
                },
            )
        ],
        id="customer-identify",
    ),
    pytest.param(
        "checkout.session.completed",
        [
            stripe(
                "checkout.session.completed",
                ("anonymousId", "stripe:cus_NffrFeUfNV2Hib"),
                "2023-11-14T22:15:00.000Z",
                external_ids=CUS_NFFR,
                event="Order Completed",
                properties={
                    "order_id": "cs_test_a1b2c3d4e5f6g7h8i9j0",
                    "checkout_id": "cs_test_a1b2c3d4e5f6g7h8i9j0",
                    "total": 54.5,
                    "subtotal": 50.0,
                    "tax": 4.5,
                    "discount": 0.0,
                    "shipping": 0.0,
                    "currency": "USD",
                    "payment_status": "paid",
                    "mode": "payment",
                    "payment_intent": "pi_3OkLmN2eZvKYlo2C1abcdefg",
                    "client_reference_id": "order_8812",
                },  # no revenue: it is counted on the charge
                # customer_details: what the buyer entered at checkout.
                context_traits={
                    "email": "jennyrosen@example.com",
                    "name": "Jenny Rosen",
                    "address": {
                        "street": "1 Main St",
                        "city": "Austin",
                        "state": "TX",
                        "postalCode": "78701",
                        "country": "US",
                    },
                },
            )
        ],
        id="paid-checkout-is-order-completed",
    ),
    pytest.param(
        "charge.succeeded",
        [
            stripe(
                "charge.succeeded",
                CUSTOMER_U4821,
                "2023-11-14T22:15:01.000Z",
                external_ids=CUS_NFFR,
                event="Charge Succeeded",
                properties={
                    "order_id": "pi_3OkLmN2eZvKYlo2C1abcdefg",
                    "charge_id": "ch_3OkLmN2eZvKYlo2C1xyzabcd",
                    "amount": 54.5,
                    "amount_captured": 54.5,
                    "amount_refunded": 0.0,
                    "currency": "USD",
                    "status": "succeeded",
                    "paid": True,
                    "captured": True,
                    "refunded": False,
                    "payment_intent": "pi_3OkLmN2eZvKYlo2C1abcdefg",
                    "payment_method_type": "card",
                    "revenue": 54.5,
                },
                # billing_details: only the postal code and country of its address are set.
                context_traits={
                    "email": "jennyrosen@example.com",
                    "name": "Jenny Rosen",
                    "address": {"postalCode": "78701", "country": "US"},
                },
            )
        ],
        id="captured-charge-carries-revenue",
    ),
    pytest.param(
        "charge.refunded",
        [
            stripe(
                "charge.refunded",
                CUSTOMER_U4821,
                "2023-11-15T23:13:20.000Z",
                external_ids=CUS_NFFR,
                event="Order Refunded",
                properties={
                    "order_id": "pi_3OkLmN2eZvKYlo2C1abcdefg",
                    "charge_id": "ch_3OkLmN2eZvKYlo2C1xyzabcd",
                    "amount": 54.5,
                    "amount_captured": 54.5,
                    "amount_refunded": 30.0,  # all refunds so far: 10.00 before, 20.00 now
                    "currency": "USD",
                    "status": "succeeded",
                    "paid": True,
                    "captured": True,
                    "refunded": False,
                    "payment_intent": "pi_3OkLmN2eZvKYlo2C1abcdefg",
                    "payment_method_type": "card",
                    "revenue": -20.0,  # this refund only
                    "total": 20.0,
                },
            )
        ],
        id="refund-revenue-is-this-refund-only",
    ),
    pytest.param(
        "customer.subscription.created",
        [
            stripe(
                "customer.subscription.created",
                ("anonymousId", "stripe:cus_NffrFeUfNV2Hib"),
                "2023-11-14T22:16:40.000Z",
                external_ids=CUS_NFFR,
                event="Subscription Created",
                properties=SUBSCRIPTION_SUB_1OKSUB,
            ),
            stripe(
                "customer.subscription.created",
                ("anonymousId", "stripe:cus_NffrFeUfNV2Hib"),
                "2023-11-14T22:16:40.000Z",
                external_ids=CUS_NFFR,
                event="Trial Started",
                properties=SUBSCRIPTION_SUB_1OKSUB,
                index=1,
            ),
        ],
        id="trialing-subscription-starts-a-trial",
    ),
    pytest.param(
        "invoice.paid",
        [
            stripe(
                "invoice.paid",
                ("anonymousId", "stripe:cus_NffrFeUfNV2Hib"),
                "2023-11-28T22:18:20.000Z",
                external_ids=CUS_NFFR,
                event="Invoice Paid",
                properties={
                    "invoice_id": "in_1OkInv2eZvKYlo2Cabcdefgh",
                    "number": "0759376C-0002",
                    "total": 870000,  # JPY has no minor unit
                    "subtotal": 870000,
                    "amount_due": 870000,
                    "amount_paid": 870000,
                    "currency": "JPY",
                    "status": "paid",
                    "billing_reason": "subscription_cycle",
                    "subscription": "sub_1OkSub2eZvKYlo2Cabcdefgh",
                    "attempt_count": 1,
                    "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1/test_abc",
                },  # no revenue: it is counted on the charge
            )
        ],
        id="invoice-in-a-zero-decimal-currency",
    ),
    pytest.param(
        "issuing_card.created",
        [
            stripe(
                "issuing_card.created",
                ("anonymousId", "stripe:system"),
                "2023-11-14T22:18:20.000Z",
                event="Issuing Card Created",
                properties={
                    "id": "ic_1OkIss2eZvKYlo2Cabcdefgh",
                    "brand": "Visa",
                    "created": 1700000300,
                    "currency": "USD",
                    "exp_month": 8,
                    "exp_year": 2027,
                    "last4": "4242",
                    "livemode": False,
                    "status": "active",
                    "type": "virtual",
                },
            )
        ],
        id="unknown-type-is-a-generic-event",
    ),
]


@pytest.mark.parametrize(("name", "expected"), CASES)
def test_fixture_becomes(name, expected):
    assert_same(run("stripe", fixture("stripe", name)), expected)


@pytest.mark.parametrize(
    ("name", "event"),
    [("checkout.session.completed", "Order Completed"), ("invoice.paid", "Invoice Paid")],
)
def test_revenue_is_never_on_order_completed_or_invoices(name, event):
    """A payment is counted once, on its charge, whichever Stripe events a team enables."""
    [out] = run("stripe", fixture("stripe", name))
    assert out["event"] == event
    assert "revenue" not in out["properties"], out["properties"]


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
    ("body", "message"),
    [
        (b'{"object": "charge"}', r'not a Stripe event \(no "object": "event"\)'),
        (b'{"object": "event", "type": "x"}', "a Stripe event needs a `type` and a `data.object`"),
        (b"[]", "not a Stripe event"),
        (b"not json", "the body is not JSON"),
    ],
    ids=["not-an-event", "no-data-object", "not-an-object", "not-json"],
)
def test_broken_payloads_raise_normalize_error(body, message):
    with pytest.raises(NormalizeError, match=message):
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


DISPUTE_DP_1OKDSP = {
    "dispute_id": "dp_1OkDsp2eZvKYlo2Cdispute1",
    "charge_id": "ch_3OkLmN2eZvKYlo2C1xyzabcd",
    "order_id": "pi_3OkLmN2eZvKYlo2C1abcdefg",
    "amount": 54.5,
    "currency": "USD",
    "status": "needs_response",
    "reason": "fraudulent",
}
PI_GUEST = ("anonymousId", "stripe:pi_3OkLmN2eZvKYlo2C1abcdefg")

LIFECYCLE = [
    pytest.param(
        "charge.dispute.created",
        "Dispute Created",
        "2023-11-16T02:00:00.000Z",
        PI_GUEST,
        PI_3OKLMN,
        DISPUTE_DP_1OKDSP,  # no revenue: no money has moved yet
        id="dispute-opened-moves-no-money-yet",
    ),
    pytest.param(
        "charge.dispute.funds_withdrawn",
        "Dispute Funds Withdrawn",
        "2023-11-17T05:46:40.000Z",
        PI_GUEST,
        PI_3OKLMN,
        DISPUTE_DP_1OKDSP | {"revenue": -54.5},
        id="dispute-withdrawal-is-negative-revenue",
    ),
    pytest.param(
        "charge.dispute.closed",
        "Dispute Closed",
        "2023-11-18T09:33:20.000Z",
        PI_GUEST,
        PI_3OKLMN,
        # No revenue: the money left on funds_withdrawn; counting it again would be twice.
        DISPUTE_DP_1OKDSP | {"status": "lost"},
        id="lost-dispute-closing-counts-nothing-again",
    ),
    pytest.param(
        "charge.dispute.funds_reinstated",
        "Dispute Funds Reinstated",
        "2023-11-19T13:20:00.000Z",
        ("anonymousId", "stripe:ch_1OkJpy2eZvKYlo2Clegacy01"),
        [{"id": "ch_1OkJpy2eZvKYlo2Clegacy01", "type": "stripe_charge_id"}],
        {
            "dispute_id": "dp_1OkJpy2eZvKYlo2Cdispute2",
            "charge_id": "ch_1OkJpy2eZvKYlo2Clegacy01",
            "order_id": "ch_1OkJpy2eZvKYlo2Clegacy01",
            "amount": 8000,
            "currency": "JPY",
            "status": "won",
            "reason": "product_not_received",
            "revenue": 8000,
        },
        id="won-dispute-reinstates-revenue-jpy-charges-api",
    ),
    pytest.param(
        "checkout.session.async_payment_succeeded",
        "Order Completed",
        "2023-11-20T17:06:40.000Z",
        ("userId", "u_7310"),
        [{"id": "cus_OkEuro2eZvKYlo", "type": "stripe_customer_id"}],
        {
            "order_id": "cs_test_b1SEPAasync0000000000",
            "checkout_id": "cs_test_b1SEPAasync0000000000",
            "total": 130.9,
            "subtotal": 120.0,
            "tax": 20.9,
            "discount": 10.0,
            "shipping": 0.0,
            "currency": "EUR",
            "payment_status": "paid",
            "mode": "payment",
            "payment_intent": "pi_3OkEur2eZvKYlo2C0sepa001",
            "client_reference_id": "order_9921",
        },  # no revenue: it is counted on the charge
        id="delayed-payment-succeeded-is-order-completed",
    ),
    pytest.param(
        "checkout.session.async_payment_failed",
        "Checkout Payment Failed",
        "2023-11-21T20:53:20.000Z",
        ("anonymousId", "stripe:pi_3OkEur2eZvKYlo2C0sepa002"),
        [{"id": "pi_3OkEur2eZvKYlo2C0sepa002", "type": "stripe_payment_intent_id"}],
        {
            "order_id": "cs_test_b1SEPAfailed000000000",
            "checkout_id": "cs_test_b1SEPAfailed000000000",
            "total": 130.9,
            "subtotal": 120.0,
            "tax": 20.9,
            "discount": 10.0,
            "shipping": 0.0,
            "currency": "EUR",
            "payment_status": "unpaid",
            "mode": "payment",
            "payment_intent": "pi_3OkEur2eZvKYlo2C0sepa002",
        },
        id="delayed-payment-failed-guest",
    ),
    pytest.param(
        "checkout.session.expired",
        "Checkout Expired",
        "2023-11-23T00:40:00.000Z",
        ("userId", "u_5523"),
        None,  # no customer and no payment: no vendor id, but the userId
        {
            "order_id": "cs_test_c1EXPIRED00000000000",
            "checkout_id": "cs_test_c1EXPIRED00000000000",
            "total": 49.0,
            "subtotal": 49.0,
            "tax": 0.0,
            "discount": 0.0,
            "shipping": 0.0,
            "currency": "USD",
            "payment_status": "unpaid",
            "mode": "payment",
        },
        id="expired-checkout",
    ),
    pytest.param(
        "charge.failed",
        "Charge Failed",
        "2023-11-24T04:26:40.000Z",
        ("anonymousId", "stripe:cus_Pq2Rs3Tu4Vw5Xy"),
        CUS_PQ2,
        {
            "order_id": "pi_3OkFai2eZvKYlo2C1intent",
            "charge_id": "ch_3OkFai2eZvKYlo2C1declin",
            "amount": 19.99,
            "amount_captured": 0.0,
            "amount_refunded": 0.0,
            "currency": "USD",
            "status": "failed",
            "paid": False,
            "captured": False,
            "refunded": False,
            "payment_intent": "pi_3OkFai2eZvKYlo2C1intent",
            "payment_method_type": "card",
            "failure_code": "card_declined",
            "failure_message": "Your card was declined.",
        },  # no revenue: nothing was earned
        id="failed-charge-earns-nothing",
    ),
    pytest.param(
        "refund.created",
        "Refund Created",
        "2023-11-25T08:13:20.000Z",
        CUSTOMER_U4821,
        PI_3OKLMN,
        {
            "refund_id": "re_3OkLmN2eZvKYlo2C1refund2",
            "charge_id": "ch_3OkLmN2eZvKYlo2C1xyzabcd",
            "order_id": "pi_3OkLmN2eZvKYlo2C1abcdefg",
            "amount": 20.0,
            "currency": "USD",
            "status": "succeeded",
            "reason": "requested_by_customer",
        },  # no revenue: counted once, on charge.refunded (Order Refunded)
        id="refund-created-leaves-revenue-to-order-refunded",
    ),
    pytest.param(
        "refund.updated",
        "Refund Updated",
        "2023-11-26T12:00:00.000Z",
        ("anonymousId", "stripe:pi_3OkJpR2eZvKYlo2C1konbin"),
        [{"id": "pi_3OkJpR2eZvKYlo2C1konbin", "type": "stripe_payment_intent_id"}],
        {
            "refund_id": "re_3OkJpR2eZvKYlo2C1konbini",
            "charge_id": "ch_3OkJpR2eZvKYlo2C1konbin",
            "order_id": "pi_3OkJpR2eZvKYlo2C1konbin",
            "amount": 1500,
            "currency": "JPY",
            "status": "succeeded",
            "reason": "duplicate",
        },
        id="refund-updated-jpy",
    ),
    pytest.param(
        "payment_intent.succeeded",
        "Payment Intent Succeeded",
        "2023-11-27T15:46:40.000Z",
        CUSTOMER_U4821,
        CUS_NFFR,
        {
            "payment_intent": "pi_3OkLmN2eZvKYlo2C1abcdefg",
            "amount": 54.5,
            "amount_received": 54.5,
            "currency": "USD",
            "status": "succeeded",
            "description": "Order 8812",
        },  # no revenue: it is counted on the charge
        id="payment-intent-succeeded",
    ),
    pytest.param(
        "payment_intent.payment_failed",
        "Payment Intent Failed",
        "2023-11-28T19:33:20.000Z",
        ("anonymousId", "stripe:pi_3OkGbp2eZvKYlo2C1poundz"),
        [{"id": "pi_3OkGbp2eZvKYlo2C1poundz", "type": "stripe_payment_intent_id"}],
        {
            "payment_intent": "pi_3OkGbp2eZvKYlo2C1poundz",
            "amount": 25.0,
            "amount_received": 0.0,
            "currency": "GBP",
            "status": "requires_payment_method",
            "failure_code": "card_declined",
            "failure_message": "Your card has insufficient funds.",
        },
        id="payment-intent-failed-guest",
    ),
    pytest.param(
        "payment_intent.created",
        "Payment Intent Created",
        "2023-11-29T23:20:00.000Z",
        ("anonymousId", "stripe:cus_Pq2Rs3Tu4Vw5Xy"),
        CUS_PQ2,
        {
            "payment_intent": "pi_3OkNew2eZvKYlo2C1fresh1",
            "amount": 10.99,
            "amount_received": 0.0,
            "currency": "USD",
            "status": "requires_payment_method",
        },
        id="other-payment-intent-types-by-the-rule",
    ),
    pytest.param(
        "customer.subscription.deleted",
        "Subscription Canceled",
        "2023-12-01T03:06:40.000Z",
        CUSTOMER_U4821,
        CUS_NFFR,
        {
            "subscription_id": "sub_1OkSub2eZvKYlo2Cabcdefgh",
            "status": "canceled",
            "plan_id": "price_1OkPro2eZvKYlo2C",
            "plan_name": "Pro monthly",
            "product_id": "prod_OkPro",
            "interval": "month",
            "amount": 87.0,
            "quantity": 3,
            "currency": "EUR",
            "current_period_end": "2023-12-28T22:16:40.000Z",
            "cancel_at_period_end": False,
            "canceled_at": "2023-12-01T03:06:40.000Z",
            "cancellation_reason": "cancellation_requested",
        },
        id="subscription-deleted-is-canceled",
    ),
    pytest.param(
        "customer.subscription.trial_will_end",
        "Trial Ending",
        "2023-12-02T06:53:20.000Z",
        ("anonymousId", "stripe:cus_Pq2Rs3Tu4Vw5Xy"),
        CUS_PQ2,
        {
            "subscription_id": "sub_1OkTrl2eZvKYlo2Cendsoon",
            "status": "trialing",
            "plan_id": "price_1OkTeam2eZvKYlo2C",
            "plan_name": "Team yearly",
            "product_id": "prod_OkTeam",
            "interval": "year",
            "amount": 990.0,
            "quantity": 1,
            "currency": "USD",
            "trial_start": "2023-11-18T08:10:00.000Z",
            "trial_end": "2023-12-05T06:50:00.000Z",
            "current_period_end": "2023-12-05T06:50:00.000Z",
            "cancel_at_period_end": False,
        },
        id="trial-will-end-is-trial-ending",
    ),
]


@pytest.mark.parametrize(
    ("name", "event", "timestamp", "who", "external_ids", "properties"), LIFECYCLE
)
def test_stripe_event_becomes(name, event, timestamp, who, external_ids, properties):
    """The whole event: its name, Stripe's `created` as the time, who it is about, the
    payer's match keys, and every property, money in major units with revenue only where
    money moves (docs/events.md: "Built-in normalizers", "Identity")."""
    [out] = run("stripe", fixture("stripe", name))
    expected = stripe(
        name,
        who,
        timestamp,
        external_ids=external_ids,
        event=event,
        properties=properties,
        context_traits=PAYERS.get(name),
    )
    assert_same(out, expected)


# context.traits of the LIFECYCLE fixtures, from their payloads; the others carry none
# (refunds, disputes and subscriptions name no person's details; the expired session's
# customer_details is null; the other PaymentIntents have no receipt_email).
PAYERS = {
    "checkout.session.async_payment_succeeded": {
        "email": "max@example.de",
        "name": "Max Mustermann",
        "address": {
            "street": "Unter den Linden 1",
            "city": "Berlin",
            "postalCode": "10117",
            "country": "DE",
        },
    },
    "checkout.session.async_payment_failed": {
        "email": "erika@example.de",
        "name": "Erika Musterfrau",
        "address": {
            "street": "Jungfernstieg 7",
            "city": "Hamburg",
            "postalCode": "20354",
            "country": "DE",
        },
    },
    "charge.failed": {
        "email": "sam@example.com",
        "name": "Sam Lee",
        "address": {"postalCode": "10001", "country": "US"},
    },
    "payment_intent.succeeded": {"email": "jennyrosen@example.com"},  # its receipt_email
}


def _with(name, **fields):
    """A fixture whose data.object has these fields changed."""
    event = json.loads(fixture("stripe", name))
    event["data"]["object"].update(fields)
    return event


# Who pays, by object, as Stripe's API reference describes each field. Plain: no case
# folding, no phone formatting, no hashing (destinations do that per vendor).
ERIKA_ADDRESS = {
    "city": "Hamburg",
    "country": "DE",
    "line1": "Jungfernstieg 7",
    "line2": "3. OG",
    "postal_code": "20354",
    "state": None,
}
MATCH_KEYS = [
    pytest.param(
        _with(
            "checkout.session.expired",
            customer_email="Pat.Doe@Example.com",
        ),
        {"email": "Pat.Doe@Example.com"},
        id="checkout-customer-email-when-no-customer-details",
    ),
    pytest.param(
        _with(
            "checkout.session.completed",
            customer_email="prefilled@example.com",
            customer_details={
                "address": ERIKA_ADDRESS,
                "email": "erika@example.de",
                "name": "Acme GmbH",
                "business_name": "Acme GmbH",
                "individual_name": "Erika Musterfrau",
                "phone": "+49 40 1234567",
            },
        ),
        {
            "email": "erika@example.de",
            "phone": "+49 40 1234567",
            "name": "Erika Musterfrau",
            "address": {
                "street": "Jungfernstieg 7, 3. OG",
                "city": "Hamburg",
                "postalCode": "20354",
                "country": "DE",
            },
        },
        id="checkout-details-win-individual-name-over-business-line2-joined",
    ),
    pytest.param(
        _with(
            "checkout.session.completed",
            customer_details={
                "address": None,
                "email": "billing@acme.example",
                "name": "Acme GmbH",
                "business_name": "Acme GmbH",
                "phone": None,
            },
        ),
        {"email": "billing@acme.example"},
        id="checkout-business-name-is-not-a-persons-name",
    ),
    pytest.param(
        _with(
            "charge.succeeded",
            receipt_email="receipts@example.com",
            billing_details={
                "address": None,
                "email": None,
                "name": "Jenny Rosen",
                "phone": "(415) 555-0123",
            },
            shipping={
                "name": "Gift Recipient",
                "phone": "+15550000000",
                "address": {"line1": "9 Elsewhere Rd", "city": "Reno", "country": "US"},
            },
        ),
        {"email": "receipts@example.com", "phone": "(415) 555-0123", "name": "Jenny Rosen"},
        id="charge-receipt-email-when-billing-has-none-never-shipping",
    ),
    pytest.param(
        _with(
            "payment_intent.created",
            receipt_email=None,
            shipping={
                "name": "Gift Recipient",
                "phone": "+15550000000",
                "address": {"line1": "9 Elsewhere Rd", "city": "Reno", "country": "US"},
            },
        ),
        None,
        id="payment-intent-shipping-is-the-recipient-not-the-payer",
    ),
    pytest.param(
        _with(
            "invoice.paid",
            customer_email="jennyrosen@example.com",
            customer_name="Jenny Rosen",
            customer_phone="+14155550123",
            customer_address={
                "city": "South San Francisco",
                "country": "US",
                "line1": "354 Oyster Point Blvd",
                "line2": None,
                "postal_code": "94080",
                "state": "CA",
            },
            customer_shipping={"name": "Someone Else", "address": {"city": "Reno"}},
        ),
        {
            "email": "jennyrosen@example.com",
            "phone": "+14155550123",
            "name": "Jenny Rosen",
            "address": JENNY_CUSTOMER_ADDRESS,
        },
        id="invoice-customer-fields",
    ),
    pytest.param(
        _with("customer.created", phone="  +1 415 555 0123 ", email="", address=None),
        {"phone": "+1 415 555 0123", "name": "Jenny Rosen"},
        id="customer-blank-email-left-out-phone-trimmed",
    ),
]


@pytest.mark.parametrize(("event", "traits"), MATCH_KEYS)
def test_payers_match_keys_go_to_context_traits(event, traits):
    for out in run("stripe", event):
        assert out["context"].get("traits") == traits
        assert "firstName" not in str(out)  # Stripe's one name field is never split


# A Charges-API guest: a charge with no customer and no PaymentIntent, whose charge id
# (Stripe's legacy `ch_` made by POST /v1/charges) is the person docs/events.md promises.
LEGACY_CHARGE = "ch_1OkJpy2eZvKYlo2Clegacy01"


def _charges_api_guest(name):
    """A fixture made into one about the guest's charge: no customer, no PaymentIntent,
    no metadata (so no userId)."""
    event = json.loads(fixture("stripe", name))
    obj = event["data"]["object"]
    obj.update(customer=None, payment_intent=None, metadata={})
    if obj["object"] == "charge":
        obj["id"] = LEGACY_CHARGE
    else:
        obj["charge"] = LEGACY_CHARGE
    return event


@pytest.mark.parametrize(
    ("name", "event"),
    [
        ("charge.succeeded", "Charge Succeeded"),
        ("charge.refunded", "Order Refunded"),
        ("refund.created", "Refund Created"),
        ("charge.dispute.created", "Dispute Created"),
    ],
)
def test_charges_api_guest_charge_refund_and_dispute_share_the_charge_id(name, event):
    """docs/events.md "Identity": a guest without a customer is "stripe:ch_..." for the Charges API,
    "so their charge, refund and dispute share one id"."""
    [out] = run("stripe", _charges_api_guest(name))
    assert out["event"] == event
    assert out["anonymousId"] == "stripe:ch_1OkJpy2eZvKYlo2Clegacy01"
    assert "userId" not in out
    assert out["context"]["externalIds"] == [
        {"id": "ch_1OkJpy2eZvKYlo2Clegacy01", "type": "stripe_charge_id"}
    ]
    # The same payment, for anyone joining them: the charge stands in for the order.
    assert out["properties"]["order_id"] == "ch_1OkJpy2eZvKYlo2Clegacy01"
    assert out["properties"]["charge_id"] == "ch_1OkJpy2eZvKYlo2Clegacy01"
