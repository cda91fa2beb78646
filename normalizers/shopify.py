"""Shopify webhooks -> Segment e-commerce events, by the X-Shopify-Topic header.

orders/paid -> `Order Completed` (with `revenue`: the subtotal after discounts, before
shipping and tax, as Segment defines it), orders/create -> `Order Created`,
orders/cancelled -> `Order Cancelled`, orders/fulfilled -> `Order Fulfilled`,
refunds/create -> `Order Refunded` (negative revenue: the money refunded),
checkouts/create -> `Checkout Started`, customers/create|update -> identify. Any other
topic is named by the same rule (`products/update` -> `Product Updated`). Amounts are
Shopify's decimal strings as numbers; `products` follows the Segment e-commerce spec.
The customer is `shopify:<customer id>`; their Shopify id becomes `userId` only when the
source's `user_id:` says so (Shopify ids are Shopify's, not yours); `customer.id` also
applies to customers/* topics, whose payload is the customer itself.
https://shopify.dev/docs/api/webhooks
"""

from __future__ import annotations

from typing import Any

from .base import (
    Delivery,
    Draft,
    NormalizeError,
    Person,
    dig,
    register,
    register_user_id_scope,
    scalars,
    street,
    title,
)
from .event import iso_time
from .money import currency_code, exponent

NAMES = {
    "orders/paid": "Order Completed",
    "checkouts/create": "Checkout Started",
    "refunds/create": "Order Refunded",
}
_VERBS = {
    "create": "created",
    "update": "updated",
    "delete": "deleted",
    "paid": "paid",
    "cancelled": "cancelled",
    "fulfilled": "fulfilled",
    "edited": "edited",
    "partially_fulfilled": "partially fulfilled",
}


@register("shopify")
def normalize(delivery: Delivery) -> list[Draft]:
    topic = delivery.headers.get("x-shopify-topic")
    if not topic:
        raise NormalizeError("no X-Shopify-Topic header: cannot tell what happened")
    obj = delivery.object
    resource, _, verb = topic.partition("/")
    customer = obj if resource == "customers" else obj.get("customer")
    person = Person(
        vendor_id=dig(customer, "id"),
        id_type="shopify_customer_id",
        traits=_match_keys(resource, obj, customer),
    )
    when = _when(obj, verb)
    if resource == "customers" and verb in ("create", "update", "enable", "disable"):
        return [
            Draft(
                type="identify",
                traits=_traits(obj),
                timestamp=when,
                event_type=topic,
                person=person,
            )
        ]
    if resource in ("orders", "checkouts", "carts"):
        props = _order(obj)
        if topic == "orders/paid":
            props["revenue"] = _number(obj.get("current_subtotal_price", obj.get("subtotal_price")))
    elif resource == "refunds":
        props = _refund(obj)
        if person.vendor_id is None and obj.get("order_id"):
            # Refunds carry no customer: keep them on their order, not on a catch-all.
            return [
                Draft(
                    event=NAMES[topic],
                    properties=props,
                    timestamp=when,
                    event_type=topic,
                    anonymous_id=f"shopify:order-{obj['order_id']}",
                )
            ]
    else:
        props = scalars(obj, skip=("body_html",))
    name = NAMES.get(topic) or title(_singular(resource), _VERBS.get(verb, verb))
    return [Draft(event=name, properties=props, timestamp=when, event_type=topic, person=person)]


@register_user_id_scope("shopify")
def _user_id_scope(delivery: Delivery, payload: Any) -> Any:
    """A customers/* payload is the customer itself, while `user_id:` is written for
    orders (`customer.id`): it reads the customer as an order's `customer`, so a
    customer's identify gets the same userId as their orders."""
    topic = delivery.headers.get("x-shopify-topic") or ""
    return {"customer": payload} if topic.startswith("customers/") else payload


# The time a topic is about: a cancellation happened at cancelled_at, not when the
# order was first processed.
_TIMES = {
    "create": ("created_at", "processed_at"),
    "paid": ("processed_at", "updated_at", "created_at"),
    "cancelled": ("cancelled_at", "updated_at"),
    "delete": ("updated_at",),
}


def _when(obj: dict[str, Any], verb: str) -> Any:
    for key in (*_TIMES.get(verb, ("updated_at",)), "processed_at", "created_at"):
        if obj.get(key):
            return obj[key]
    return None


def _singular(resource: str) -> str:
    return resource[:-1] if resource.endswith("s") else resource


def _number(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() and isinstance(value, int) else number


def _order(o: dict[str, Any]) -> dict[str, Any]:
    codes = o.get("discount_codes") if isinstance(o.get("discount_codes"), list) else []
    shipping = dig(o, "total_shipping_price_set", "shop_money", "amount")
    if shipping is None and isinstance(o.get("shipping_lines"), list):
        shipping = sum(_number(line.get("price")) or 0 for line in o["shipping_lines"])
    return {
        "order_id": str(o["id"]) if o.get("id") is not None else None,
        "order_number": o.get("order_number") or o.get("name"),
        "checkout_id": str(o["checkout_id"]) if o.get("checkout_id") else o.get("token"),
        "total": _number(o.get("current_total_price", o.get("total_price"))),
        "subtotal": _number(o.get("current_subtotal_price", o.get("subtotal_price"))),
        "tax": _number(o.get("current_total_tax", o.get("total_tax"))),
        "discount": _number(o.get("current_total_discounts", o.get("total_discounts"))),
        "shipping": _number(shipping),
        "coupon": codes[0].get("code") if codes and isinstance(codes[0], dict) else None,
        "currency": currency_code(o.get("currency") or o.get("presentment_currency")),
        "financial_status": o.get("financial_status"),
        "fulfillment_status": o.get("fulfillment_status"),
        "cancel_reason": o.get("cancel_reason"),
        "products": [
            _product(item) for item in o.get("line_items") or [] if isinstance(item, dict)
        ],
    }


def _product(item: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in {
            "product_id": str(item["product_id"]) if item.get("product_id") else None,
            "variant": str(item["variant_id"]) if item.get("variant_id") else None,
            "sku": item.get("sku") or None,
            "name": item.get("title") or item.get("name"),
            "brand": item.get("vendor"),
            "price": _number(item.get("price")),
            "quantity": item.get("quantity"),
        }.items()
        if value is not None
    }


def _refund(r: dict[str, Any]) -> dict[str, Any]:
    transactions = r.get("transactions") if isinstance(r.get("transactions"), list) else []
    refunded = [
        t
        for t in transactions
        if isinstance(t, dict)
        and t.get("kind") == "refund"
        and t.get("status") in ("success", None)
    ]
    currency = next((t.get("currency") for t in refunded if t.get("currency")), None)
    amount = round(sum(_number(t.get("amount")) or 0 for t in refunded), exponent(currency))
    items = [
        i.get("line_item")
        for i in r.get("refund_line_items") or []
        if isinstance(i, dict) and isinstance(i.get("line_item"), dict)
    ]
    return {
        "order_id": str(r["order_id"]) if r.get("order_id") else None,
        "refund_id": str(r["id"]) if r.get("id") else None,
        "total": amount,
        "revenue": -amount if amount else None,
        "currency": currency_code(currency),
        "reason": r.get("note"),
        "products": [_product(i) for i in items],
    }


def _match_keys(resource: str, obj: dict[str, Any], customer: Any) -> dict[str, Any]:
    """The buyer's match keys (context.traits): a customers/* payload's own fields and its
    default address; an order's or checkout's contact email and phone, its customer, and
    its billing address ("the mailing address associated with the payment method",
    https://shopify.dev/docs/api/admin-rest/latest/resources/order). Never the shipping
    address (the recipient's) nor the customer's `state` (the account's, e.g. "enabled")."""
    if resource == "customers":
        c, address = obj, _dict(obj.get("default_address"))
        email, phone = c.get("email"), c.get("phone")
    elif resource in ("orders", "checkouts"):
        c, address = _dict(customer), _dict(obj.get("billing_address"))
        # The email and phone given for this order; the account's when it has none.
        email = obj.get("email") or obj.get("contact_email") or c.get("email")
        phone = obj.get("phone") or c.get("phone")
    else:
        return {}
    return {
        "email": email,
        "phone": phone,
        "firstName": c.get("first_name"),
        "lastName": c.get("last_name"),
        "name": _full_name(c.get("first_name"), c.get("last_name")),
        "address": _address(address),
    }


def _full_name(first: Any, last: Any) -> str | None:
    """Segment's `name` from first and last name, as Segment itself fills it in."""
    return " ".join(p for p in (first, last) if isinstance(p, str) and p) or None


def _address(a: dict[str, Any]) -> dict[str, Any] | None:
    """A Shopify address as Segment's (street, city, state, postalCode, country)."""
    if not a:
        return None
    return {
        "street": street(a.get("address1"), a.get("address2")),
        "city": a.get("city"),
        "state": a.get("province_code") or a.get("province"),
        "postalCode": a.get("zip"),
        "country": a.get("country_code") or a.get("country"),
    }


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _traits(c: dict[str, Any]) -> dict[str, Any]:
    address = _dict(c.get("default_address"))
    return {
        "email": c.get("email"),
        "firstName": c.get("first_name"),
        "lastName": c.get("last_name"),
        "name": _full_name(c.get("first_name"), c.get("last_name")),
        "phone": c.get("phone"),
        "createdAt": iso_time(c.get("created_at")),
        "state": c.get("state"),
        "ordersCount": c.get("orders_count"),
        "totalSpent": _number(c.get("total_spent")),
        "tags": c.get("tags") or None,
        "acceptsMarketing": dig(c, "email_marketing_consent", "state") == "subscribed"
        if isinstance(c.get("email_marketing_consent"), dict)
        else c.get("accepts_marketing"),
        "address": _address(address),
        "shopifyCustomerId": str(c["id"]) if c.get("id") else None,
    }
