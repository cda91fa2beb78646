"""`ga4`: Google Analytics 4 Measurement Protocol.

Event names become GA4's (recommended events where one fits: `Order Completed` ->
`purchase`; otherwise snake case, at most 40 letters, digits and underscores). Each
request carries one `client_id` (the anonymousId, or a hash of the userId) and
`user_id`, so a batch is sent as one request per person, at most 25 events each.
`timestamp_micros` is the event's own time; events older than GA4's 72 hours are
dead-lettered. GA4 answers 2xx even to invalid events (its /debug endpoint validates):
GA4 does not dedupe, the gateway's messageIds are sent as `event_id`. So that GA4 does
not drop parameters silently, they are made to fit its limits here: names of letters,
digits and underscores starting with a letter (at most 40, none of the reserved
`google_`/`ga_`/`firebase_` prefixes), at most 25 per event, string values cut at 100
characters. `order_id` is also sent as `transaction_id` (GA4 dedupes purchases by it) and
`products[]` as `items[]`.
https://developers.google.com/analytics/devguides/collection/protocol/ga4

GA4 must never receive personal data (Google's policy forbids PII in Measurement Protocol
parameters: https://support.google.com/analytics/answer/6366371): identify traits are
never read, and a property named like an email, phone, name or address, or any string
that looks like an email address, is left out of params and items; a userId or
anonymousId that is an email address is hashed or left out rather than sent as an id.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, ClassVar

from gateway.config import Secret

from .base import (
    OK,
    DestinationConfig,
    HttpDestination,
    Result,
    encode_json,
    register,
    unix_seconds,
)

MAX_AGE = 72 * 3600
MAX_EVENTS = 25
MAX_PARAMS = 25
MAX_VALUE = 100
RESERVED_PREFIXES = ("google_", "ga_", "firebase_")
ENGAGEMENT_MSEC = 1
"""`engagement_time_msec` on every event. Google: "In order for user activity to display in
reports like Realtime, engagement_time_msec and session_id must be supplied as part of the
params for an event. The engagement_time_msec parameter should reflect the event's
engagement time in milliseconds."
https://developers.google.com/analytics/devguides/collection/protocol/ga4/sending-events
and GA4 counts a user active once it "collects ... the engagement_time_msec parameter from a
website" (https://support.google.com/analytics/answer/11109416). A webhook has no
engagement time of its own (the docs give no server-side figure; their example is 100), so
1 ms: enough to count the user active, without inventing engagement time."""
PII_KEYS = {
    "email", "emailaddress", "mail", "phone", "phonenumber", "mobile", "mobilephone",
    "telephone", "tel", "name", "firstname", "lastname", "fullname", "middlename",
    "username", "address", "streetaddress", "street", "address1", "address2",
    "addressline1", "addressline2", "postalcode", "postcode", "zip", "zipcode",
    "birthday", "dateofbirth", "dob", "ssn",
}  # fmt: skip
"""Property names (lowercased, letters and digits only) that carry personal data."""
PII_PARTS = ("email", "phone", "firstname", "lastname", "fullname", "address")
"""...and parts of names that do (`customer_email`, `billingPhone`, `shipping_address`)."""
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
ITEM_FIELDS = {
    "product_id": "item_id", "sku": "item_id", "name": "item_name", "brand": "item_brand",
    "category": "item_category", "variant": "item_variant", "price": "price",
    "quantity": "quantity", "coupon": "coupon",
}  # fmt: skip
RECOMMENDED = {
    "Order Completed": "purchase",
    "Order Refunded": "refund",
    "Checkout Started": "begin_checkout",
    "Payment Info Entered": "add_payment_info",
    "Product Added": "add_to_cart",
    "Product Removed": "remove_from_cart",
    "Product Viewed": "view_item",
    "Product List Viewed": "view_item_list",
    "Products Searched": "search",
    "Signed Up": "sign_up",
    "Signed In": "login",
    "Form Submitted": "generate_lead",
}


class Ga4Config(DestinationConfig, tag="ga4", kw_only=True):
    measurement_id: str
    api_secret: Secret
    event_names: dict[str, str] = {}
    endpoint: str = "https://www.google-analytics.com/mp/collect"


def ga4_name(name: str) -> str:
    snake = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
    if not snake[:1].isalpha() or snake.startswith(RESERVED_PREFIXES):
        snake = "event_" + snake
    return snake[:40]


def param_name(name: str) -> str:
    """A GA4 parameter name: [A-Za-z0-9_], starting with a letter, at most 40."""
    clean = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")
    if clean.lower().startswith(RESERVED_PREFIXES) or not clean[:1].isalpha():
        clean = "p_" + clean
    return clean[:40]


def is_pii(key: str, value: Any) -> bool:
    """Whether a property may carry personal data, by its name or an email-like value."""
    norm = re.sub(r"[^a-z0-9]", "", key.lower())
    if norm in PII_KEYS or any(part in norm for part in PII_PARTS):
        return True
    return isinstance(value, str) and EMAIL.search(value) is not None


def looks_like_email(value: Any) -> bool:
    return isinstance(value, str) and EMAIL.search(value) is not None


def params(props: dict[str, Any], message_id: str, name: str = "") -> dict[str, Any]:
    """Event parameters within GA4's limits (the first 25, event_id and value first),
    without personal data."""
    out: dict[str, Any] = {"event_id": message_id, "engagement_time_msec": ENGAGEMENT_MSEC}
    value = props.get("revenue", props.get("value", props.get("total")))
    if isinstance(value, int | float) and not isinstance(value, bool):
        # Google's `refund` takes the refunded amount as a positive `value` (its
        # reference's example is `value: 30.03`) and GA4 subtracts it from revenue itself;
        # a source's negative refund amount would count twice the other way.
        # https://developers.google.com/analytics/devguides/collection/ga4/reference/events#refund
        out["value"] = abs(value) if name == "refund" else value
    order_id = props.get("order_id")
    if order_id is not None and "transaction_id" not in props and not looks_like_email(order_id):
        out["transaction_id"] = str(order_id)[:MAX_VALUE]
    items = [item(p) for p in props.get("products") or [] if isinstance(p, dict)]
    if items:
        out["items"] = [i for i in items if i][:200]
    for key, v in props.items():
        if len(out) >= MAX_PARAMS:
            break
        if is_pii(str(key), v):
            continue
        if isinstance(v, str):
            v = v[:MAX_VALUE]
        elif not isinstance(v, int | float | bool):
            continue
        out.setdefault(param_name(str(key)), v)
    return out


def item(product: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ours, theirs in ITEM_FIELDS.items():
        v = product.get(ours)
        if v is not None and theirs not in out and not looks_like_email(v):
            out[theirs] = v[:MAX_VALUE] if isinstance(v, str) else v
    return out


@register
class Ga4Destination(HttpDestination):
    config_type = Ga4Config
    consent_purpose: ClassVar[str | None] = "analytics"
    max_batch: ClassVar[int] = 500
    max_bytes: ClassVar[int] = 130 * 1024 * 20
    max_event_age: ClassVar[float | None] = MAX_AGE
    age_limit: ClassVar[str] = "the 72 hours GA4 accepts (timestamp_micros)"

    def __init__(self, name: str, config: Ga4Config) -> None:
        super().__init__(name, config)
        self.names = {**RECOMMENDED, **config.event_names}

    async def _send(self, batch: list[dict[str, Any]], now: float) -> list[Result]:
        """One request per person (client_id), 25 events at most."""
        groups: dict[str, list[int]] = {}
        for i, event in enumerate(batch):
            groups.setdefault(self.client_id(event), []).append(i)
        results: list[Result] = [OK] * len(batch)
        for indexes in groups.values():
            for start in range(0, len(indexes), MAX_EVENTS):
                part = indexes[start : start + MAX_EVENTS]
                url, headers, body = self.request([batch[i] for i in part], now)
                sent = await self.post(
                    url, headers, body, [batch[i] for i in part], now, self._send
                )
                for i, result in zip(part, sent, strict=True):
                    results[i] = result
        return results

    def client_id(self, event: dict[str, Any]) -> str:
        """The anonymousId, or a hash of the userId (or of an anonymousId that is an email
        address: GA4 must not get one as an id)."""
        anonymous = event.get("anonymousId")
        if anonymous and not looks_like_email(anonymous):
            return str(anonymous)
        if anonymous and not event.get("userId"):
            return hashlib.sha256(str(anonymous).encode()).hexdigest()[:32]
        return hashlib.sha256(str(event.get("userId", "")).encode()).hexdigest()[:32]

    def request(self, batch: list[dict[str, Any]], now: float) -> tuple[str, dict[str, str], bytes]:
        config: Ga4Config = self.config  # type: ignore[assignment]
        first = batch[0]
        body: dict[str, Any] = {"client_id": self.client_id(first), "events": []}
        if first.get("userId") and not looks_like_email(first["userId"]):
            body["user_id"] = str(first["userId"])
        for event in batch:
            name = event.get("event") or event["type"]
            ga4 = self.names.get(name, ga4_name(name))
            # Only properties: an identify's traits are who the person is, never for GA4.
            props = event.get("properties") or {}
            body["events"].append(
                {
                    "name": ga4,
                    "params": params(props, event["messageId"], ga4),
                    "timestamp_micros": int(unix_seconds(event.get("timestamp"), now) * 1e6),
                }
            )
        query = f"?measurement_id={config.measurement_id}&api_secret={config.api_secret.reveal()}"
        return config.endpoint + query, {"content-type": "application/json"}, encode_json(body)
