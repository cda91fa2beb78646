"""Stripe events -> first-party events (Segment's naming: "Object Action", past tense).

Revenue is counted once, where money moves: on the charge (`Charge Succeeded` when it
is captured, `Charge Captured` otherwise), negative on `Order Refunded` (the amount of
this refund, from previous_attributes) and `Dispute Funds Withdrawn`, positive again on
`Dispute Funds Reinstated`. `Order Completed` (a paid Checkout Session) and
`Invoice Paid` carry totals but no `revenue`, so subscribing to both kinds of Stripe
events never counts a payment twice. Amounts are in major units with Stripe's currency
exponents; currencies are upper-case ISO 4217. `timestamp` is the event's `created`.
https://docs.stripe.com/api/events/types
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import (
    Delivery,
    Draft,
    NormalizeError,
    Person,
    dig,
    generic_name,
    register,
    scalars,
    street,
)
from .event import iso_time
from .money import currency_code, stripe_amount

# Event types whose name is not simply the type in title case.
NAMES = {
    "checkout.session.async_payment_succeeded": "Order Completed",
    "checkout.session.async_payment_failed": "Checkout Payment Failed",
    "checkout.session.expired": "Checkout Expired",
    "charge.refunded": "Order Refunded",
    "customer.subscription.deleted": "Subscription Canceled",
    "customer.subscription.trial_will_end": "Trial Ending",
    "payment_intent.payment_failed": "Payment Intent Failed",
}


@register("stripe")
def normalize(delivery: Delivery) -> list[Draft]:
    event = delivery.payload
    if not isinstance(event, dict) or event.get("object") != "event":
        raise NormalizeError('not a Stripe event (no "object": "event")')
    kind = event.get("type")
    obj = dig(event, "data", "object")
    if not isinstance(kind, str) or not isinstance(obj, dict):
        raise NormalizeError("a Stripe event needs a `type` and a `data.object`")
    previous = dig(event, "data", "previous_attributes") or {}
    drafts = _drafts(kind, obj, previous if isinstance(previous, dict) else {})
    person = _person(obj)
    for draft in drafts:
        draft.timestamp = event.get("created")
        draft.event_type = kind
        draft.person = person
    return drafts


def _drafts(kind: str, obj: dict[str, Any], previous: dict[str, Any]) -> list[Draft]:
    if kind in ("customer.created", "customer.updated"):
        return [Draft(type="identify", traits=_customer_traits(obj))]
    props = PROPERTIES.get(str(obj.get("object")), _generic_props)(obj)
    name = NAMES.get(kind) or _name(kind)
    if kind == "checkout.session.completed":
        paid = obj.get("payment_status") in ("paid", "no_payment_required")
        name = "Order Completed" if paid else "Checkout Completed"
    revenue = _revenue(kind, obj, previous)
    if revenue is not None:
        props["revenue"] = revenue
    if kind == "charge.refunded":
        props["total"] = stripe_amount(_refunded_now(obj, previous), obj.get("currency"))
    drafts = [Draft(event=name, properties=props)]
    # Segment's B2B SaaS events, beside the subscription's own.
    if kind == "customer.subscription.created" and obj.get("status") == "trialing":
        drafts.append(Draft(event="Trial Started", properties=dict(props)))
    if (
        kind == "customer.subscription.updated"
        and previous.get("status") == "trialing"
        and obj.get("status") != "trialing"
    ):
        drafts.append(Draft(event="Trial Ended", properties=dict(props)))
    return drafts


def _name(kind: str) -> str:
    if kind.startswith("customer.subscription."):
        return generic_name("subscription." + kind.rpartition(".")[2])
    if kind.startswith("charge.dispute."):
        return generic_name(kind.removeprefix("charge."))
    if kind.startswith("checkout.session."):
        return generic_name("checkout." + kind.removeprefix("checkout.session."))
    return generic_name(kind)


def _revenue(kind: str, obj: dict[str, Any], previous: dict[str, Any]) -> Any:
    """Money actually earned (or lost) by this event, in major units; None if none."""
    currency = obj.get("currency")
    if kind == "charge.succeeded" and obj.get("captured"):
        return _amount(obj, "amount_captured") or _amount(obj, "amount")
    if kind == "charge.captured":
        captured = obj.get("amount_captured", obj.get("amount"))
        before = previous.get("amount_captured", 0) or 0
        return stripe_amount((captured or 0) - before, currency)
    if kind == "charge.refunded":
        delta = _refunded_now(obj, previous)
        return -stripe_amount(delta, currency) if delta > 0 else None
    if kind == "charge.dispute.funds_withdrawn":
        return -(_amount(obj, "amount") or 0)
    if kind == "charge.dispute.funds_reinstated":
        return _amount(obj, "amount")
    return None


def _refunded_now(charge: dict[str, Any], previous: dict[str, Any]) -> int:
    """Minor units given back by this refund, out of money that was captured.

    Before API version 2025-03-31 Stripe also reports an uncaptured authorization that is
    released, and the uncaptured rest of a partial capture, as `amount_refunded`: money
    that was never earned is not refunded revenue.
    """
    captured = charge.get("amount_captured") if charge.get("captured") else 0
    captured = captured if isinstance(captured, int) else 0

    def capped(value: Any) -> int:
        return min(value if isinstance(value, int) else 0, captured)

    return max(
        0, capped(charge.get("amount_refunded")) - capped(previous.get("amount_refunded", 0))
    )


def _amount(obj: dict[str, Any], key: str) -> Any:
    return stripe_amount(obj.get(key), obj.get("currency"))


def _id(value: Any) -> str | None:
    """An id that Stripe may have expanded into an object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else None


def _person(obj: dict[str, Any]) -> Person:
    """The customer; for a guest payment (no customer), the payment it belongs to (its
    PaymentIntent, else its charge), so a guest's charge, refund and dispute share one id
    instead of a catch-all. With the match keys the object gives for the payer."""
    user_id = dig(obj, "metadata", "user_id")
    keys = _MATCH_KEYS.get(str(obj.get("object")))
    traits = keys(obj) if keys else {}
    customer = obj.get("id") if obj.get("object") == "customer" else _id(obj.get("customer"))
    if customer:
        return Person(customer, "stripe_customer_id", user_id=user_id, traits=traits)
    payment = (
        obj.get("id") if obj.get("object") == "payment_intent" else _id(obj.get("payment_intent"))
    )
    if payment:
        return Person(payment, "stripe_payment_intent_id", user_id=user_id, traits=traits)
    # A charge made with the Charges API has no PaymentIntent: its charge id stands in.
    charge = obj.get("id") if obj.get("object") == "charge" else _id(obj.get("charge"))
    if charge:
        return Person(charge, "stripe_charge_id", user_id=user_id, traits=traits)
    return Person(user_id=user_id, traits=traits)


# --- the payer's match keys (context.traits) ----------------------------------------------
# Plain, as Stripe has them; `name` is never split into first and last: Stripe's is one
# field, "the customer's full name or business name"
# (https://docs.stripe.com/api/customers/object#customer_object-name). Shipping details
# (a PaymentIntent's or Charge's `shipping`, a Checkout Session's `shipping_details`)
# name the recipient, not the payer: never read.


def _session_keys(s: dict[str, Any]) -> dict[str, Any]:
    """Checkout Session: what the customer entered at checkout (`customer_details`), else
    the email the session was created with
    (https://docs.stripe.com/api/checkout/sessions/object#checkout_session_object-customer_details)."""
    d = s.get("customer_details") if isinstance(s.get("customer_details"), dict) else {}
    return _keys(d.get("email") or s.get("customer_email"), d.get("phone"), _person_name(d), d)


def _charge_keys(c: dict[str, Any]) -> dict[str, Any]:
    """Charge: the payment method's billing details at the time of the charge, and the
    email the receipt went to (https://docs.stripe.com/api/charges/object)."""
    b = c.get("billing_details") if isinstance(c.get("billing_details"), dict) else {}
    return _keys(b.get("email") or c.get("receipt_email"), b.get("phone"), b.get("name"), b)


def _invoice_keys(i: dict[str, Any]) -> dict[str, Any]:
    """Invoice: the customer's details as of its finalization
    (https://docs.stripe.com/api/invoices/object#invoice_object-customer_email)."""
    return _keys(
        i.get("customer_email"),
        i.get("customer_phone"),
        i.get("customer_name"),
        {"address": i.get("customer_address")},
    )


def _keys(email: Any, phone: Any, name: Any, has_address: dict[str, Any]) -> dict[str, Any]:
    return {"email": email, "phone": phone, "name": name, "address": _address(has_address)}


def _person_name(who: dict[str, Any]) -> Any:
    """A person's name where Stripe may hold a business name instead: the individual name
    when Checkout collected one, else `name` unless it is the business name
    (https://docs.stripe.com/payments/checkout/name-collection)."""
    if who.get("individual_name"):
        return who["individual_name"]
    name = who.get("name")
    return None if name and name == who.get("business_name") else name


def _address(has_address: dict[str, Any]) -> dict[str, Any] | None:
    """Stripe's address (line1, line2, city, state, postal_code, country: ISO 3166-1
    alpha-2) as Segment's (street, city, state, postalCode, country)."""
    a = has_address.get("address")
    if not isinstance(a, dict):
        return None
    return {
        "street": street(a.get("line1"), a.get("line2")),
        "city": a.get("city"),
        "state": a.get("state"),
        "postalCode": a.get("postal_code"),
        "country": a.get("country"),
    }


_MATCH_KEYS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "checkout.session": _session_keys,
    "charge": _charge_keys,
    # A PaymentIntent's `shipping` is the recipient's: only the receipt email is the payer's.
    "payment_intent": lambda p: {"email": p.get("receipt_email")},
    "invoice": _invoice_keys,
    "customer": lambda c: _keys(c.get("email"), c.get("phone"), _person_name(c), c),
}


def _customer_traits(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "email": c.get("email"),
        "name": c.get("name"),
        "phone": c.get("phone"),
        "description": c.get("description"),
        "createdAt": iso_time(c.get("created")),
        "address": _address(c) if c.get("address") else None,
        "stripeCustomerId": c.get("id"),
        "currency": currency_code(c.get("currency")),
    }


def _money(obj: dict[str, Any], **fields: str) -> dict[str, Any]:
    return {name: _amount(obj, key) for name, key in fields.items()}


def _checkout_session(s: dict[str, Any]) -> dict[str, Any]:
    totals = s.get("total_details") if isinstance(s.get("total_details"), dict) else {}
    currency = s.get("currency")
    return {
        "order_id": s.get("id"),
        "checkout_id": s.get("id"),
        "total": _amount(s, "amount_total"),
        "subtotal": _amount(s, "amount_subtotal"),
        "tax": stripe_amount(totals.get("amount_tax"), currency),
        "discount": stripe_amount(totals.get("amount_discount"), currency),
        "shipping": stripe_amount(totals.get("amount_shipping"), currency),
        "currency": currency_code(currency),
        "payment_status": s.get("payment_status"),
        "mode": s.get("mode"),
        "payment_intent": _id(s.get("payment_intent")),
        "subscription": _id(s.get("subscription")),
        "invoice": _id(s.get("invoice")),
        "client_reference_id": s.get("client_reference_id"),
    }


def _charge(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "order_id": _id(c.get("payment_intent")) or c.get("id"),
        "charge_id": c.get("id"),
        **_money(
            c, amount="amount", amount_captured="amount_captured", amount_refunded="amount_refunded"
        ),
        "currency": currency_code(c.get("currency")),
        "status": c.get("status"),
        "paid": c.get("paid"),
        "captured": c.get("captured"),
        "refunded": c.get("refunded"),
        "payment_intent": _id(c.get("payment_intent")),
        "invoice": _id(c.get("invoice")),
        "description": c.get("description"),
        "payment_method_type": dig(c, "payment_method_details", "type"),
        "failure_code": c.get("failure_code"),
        "failure_message": c.get("failure_message"),
    }


def _refund(r: dict[str, Any]) -> dict[str, Any]:
    return _on_a_charge(r, "refund_id")


def _invoice(i: dict[str, Any]) -> dict[str, Any]:
    return {
        "invoice_id": i.get("id"),
        "number": i.get("number"),
        **_money(
            i,
            total="total",
            subtotal="subtotal",
            tax="tax",
            amount_due="amount_due",
            amount_paid="amount_paid",
        ),
        "currency": currency_code(i.get("currency")),
        "status": i.get("status"),
        "billing_reason": i.get("billing_reason"),
        "subscription": _id(i.get("subscription"))
        or _id(dig(i, "parent", "subscription_details", "subscription")),
        "attempt_count": i.get("attempt_count"),
        "hosted_invoice_url": i.get("hosted_invoice_url"),
    }


def _payment_intent(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "payment_intent": p.get("id"),
        **_money(p, amount="amount", amount_received="amount_received"),
        "currency": currency_code(p.get("currency")),
        "status": p.get("status"),
        "description": p.get("description"),
        "failure_code": dig(p, "last_payment_error", "code"),
        "failure_message": dig(p, "last_payment_error", "message"),
    }


def _subscription(s: dict[str, Any]) -> dict[str, Any]:
    item = dig(s, "items", "data", 0) or {}
    price = item.get("price") if isinstance(item.get("price"), dict) else {}
    plan = s.get("plan") if isinstance(s.get("plan"), dict) else {}
    currency = price.get("currency") or s.get("currency") or plan.get("currency")
    unit = price.get("unit_amount", plan.get("amount"))
    quantity = item.get("quantity", s.get("quantity")) or 1
    period_end = s.get("current_period_end", item.get("current_period_end"))
    return {
        "subscription_id": s.get("id"),
        "status": s.get("status"),
        "plan_id": price.get("id") or plan.get("id"),
        "plan_name": price.get("nickname") or plan.get("nickname"),
        "product_id": _id(price.get("product") or plan.get("product")),
        "interval": dig(price, "recurring", "interval") or plan.get("interval"),
        "amount": stripe_amount(unit * quantity, currency) if unit is not None else None,
        "quantity": quantity,
        "currency": currency_code(currency),
        "trial_start": iso_time(s.get("trial_start")),
        "trial_end": iso_time(s.get("trial_end")),
        "current_period_end": iso_time(period_end),
        "cancel_at_period_end": s.get("cancel_at_period_end"),
        "canceled_at": iso_time(s.get("canceled_at")),
        "cancellation_reason": dig(s, "cancellation_details", "reason"),
    }


def _dispute(d: dict[str, Any]) -> dict[str, Any]:
    return _on_a_charge(d, "dispute_id")


def _on_a_charge(o: dict[str, Any], id_name: str) -> dict[str, Any]:
    """A refund or a dispute: what it is about, how much, and why."""
    return {
        id_name: o.get("id"),
        "charge_id": _id(o.get("charge")),
        "order_id": _id(o.get("payment_intent")) or _id(o.get("charge")),
        **_money(o, amount="amount"),
        "currency": currency_code(o.get("currency")),
        "status": o.get("status"),
        "reason": o.get("reason"),
    }


def _generic_props(obj: dict[str, Any]) -> dict[str, Any]:
    props = scalars(obj, skip=("object",))
    if "currency" in props:
        props["currency"] = currency_code(props["currency"])
        for key in ("amount", "amount_total", "amount_paid", "amount_due"):
            if isinstance(props.get(key), int):
                props[key] = stripe_amount(props[key], props["currency"])
    return props


PROPERTIES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "checkout.session": _checkout_session,
    "charge": _charge,
    "refund": _refund,
    "invoice": _invoice,
    "payment_intent": _payment_intent,
    "subscription": _subscription,
    "dispute": _dispute,
    "customer": lambda c: {"customer_id": c.get("id"), "email": c.get("email")},
}
