"""`meta-capi`: Meta (Facebook) Conversions API.

Event names map to Meta's standard events (`Order Completed` -> `Purchase`, ...;
`event_names:` overrides or adds); `event_id` is the messageId, so Meta dedupes these
against the browser pixel's events with the same id; `event_time` is the event's own
time, and an event older than Meta's 7 days is dead-lettered with that reason instead of
being refused over and over. Customer data is normalized and SHA-256 hashed as Meta
specifies (destinations/pii.py). One bad event fails Meta's whole request, so a refused
batch is bisected to find it.
https://developers.facebook.com/docs/marketing-api/conversions-api/parameters
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from gateway.config import Secret

from . import pii
from .base import (
    OK,
    DestinationConfig,
    HttpDestination,
    Result,
    encode_json,
    fail,
    register,
    retry,
    unix_seconds,
)

MAX_AGE = 7 * 86400
STANDARD_EVENTS = {
    "Order Completed": "Purchase",
    "Checkout Started": "InitiateCheckout",
    "Payment Info Entered": "AddPaymentInfo",
    "Product Added": "AddToCart",
    "Product Added to Wishlist": "AddToWishlist",
    "Product Viewed": "ViewContent",
    "Products Searched": "Search",
    "Signed Up": "CompleteRegistration",
    "Subscription Created": "Subscribe",
    "Trial Started": "StartTrial",
    "Lead Created": "Lead",
    "Form Submitted": "Lead",
}


class MetaCapiConfig(DestinationConfig, tag="meta-capi", kw_only=True):
    no_anonymize: ClassVar[str | None] = (
        "Meta refuses an event whose user_data has no customer information parameter, and "
        "one such event fails its whole request"
    )
    """https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters
    ("You must provide at least one of the following user_data parameters")."""
    pixel_id: str
    access_token: Secret
    api_version: str = "v21.0"
    event_names: dict[str, str] = {}
    """Our event name -> Meta's (added to, and overriding, the standard mapping)."""
    action_source: str = "system_generated"
    """Where the conversion happened: webhook-born ones are usually system_generated."""
    test_event_code: str | None = None
    """Send as test events (Events Manager > Test events)."""
    host: str = "https://graph.facebook.com"
    phone_region: str = "US"
    """The country assumed for phone numbers written without one (ISO 3166-1 alpha-2)."""

    def check(self) -> None:
        super().check()
        self.phone_region = pii.region(self.phone_region)


def user_data(event: dict[str, Any], region: str = "US") -> dict[str, Any]:
    """Meta's `user_data`: match keys normalized and hashed, external_id lower-cased and
    hashed; IP, user agent, fbc and fbp as they are (Meta: "Do not hash").
    https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters
    """
    who = pii.person(event)
    fields = {
        "em": pii.hashed(who["email"], pii.email),
        "ph": pii.hashed(who["phone"], lambda text: pii.phone(text, region)),
        "fn": pii.hashed(who["first_name"], pii.name),
        "ln": pii.hashed(who["last_name"], pii.name),
        "ct": pii.hashed(who["city"], pii.city),
        "st": pii.hashed(who["state"], pii.state),
        "zp": pii.hashed(who["zip"], pii.zip_code),
        "country": pii.hashed(who["country"], pii.country),
        "external_id": pii.hashed(event.get("userId") or event.get("anonymousId"), pii.external_id),
    }
    out: dict[str, Any] = {k: [v] for k, v in fields.items() if v}
    context = event.get("context") or {}
    for ours, theirs in (("ip", "client_ip_address"), ("userAgent", "client_user_agent")):
        if context.get(ours):
            out[theirs] = context[ours]  # never hashed
    clicks = pii.click_ids(event)
    for key in ("fbc", "fbp"):
        if clicks.get(key):
            out[key] = clicks[key]  # click id and browser id: never hashed
    return out


# Graph API error codes that come back as HTTP 400 but are not about the events: rate
# limits (retried later) and token or permission problems (every event would fail alike).
# https://developers.facebook.com/docs/graph-api/guides/error-handling
THROTTLE_CODES = frozenset({4, 17, 32, 613, 80004})
AUTH_CODES = frozenset({10, 102, 190, 200})


def graph_error(response: httpx.Response) -> dict[str, Any]:
    """The `error` object of a Graph API reply ({} when there is none)."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


@register
class MetaCapiDestination(HttpDestination):
    config_type = MetaCapiConfig
    consent_purpose: ClassVar[str | None] = "ads"
    max_batch: ClassVar[int] = 1000
    max_bytes: ClassVar[int] = 4 * 1024 * 1024
    max_event_age: ClassVar[float | None] = MAX_AGE
    age_limit: ClassVar[str] = "the 7 days Meta accepts (event_time)"

    def __init__(self, name: str, config: MetaCapiConfig) -> None:
        super().__init__(name, config)
        self.names = {**STANDARD_EVENTS, **config.event_names}

    def to_meta(self, event: dict[str, Any], now: float) -> dict[str, Any]:
        config: MetaCapiConfig = self.config  # type: ignore[assignment]
        name = event.get("event") or event["type"]
        props = event.get("properties") or {}
        lines = pii.product_lines(props, "id", "item_price")
        custom = {
            k: v
            for k, v in {
                "value": props.get("revenue", props.get("value", props.get("total"))),
                "currency": props.get("currency"),
                "order_id": props.get("order_id"),
                "content_ids": [line["id"] for line in lines] or None,
                "contents": lines or None,
                "num_items": sum(line["quantity"] for line in lines) if lines else None,
            }.items()
            if v is not None
        }
        out = {
            "event_name": self.names.get(name, name),
            "event_time": int(unix_seconds(event.get("timestamp"), now)),
            "event_id": event["messageId"],
            "action_source": config.action_source,
            "user_data": user_data(event, config.phone_region),
            "custom_data": custom,
        }
        page = pii.web_page(event)
        if page and out["user_data"].get("client_user_agent"):
            # Meta: website events require event_source_url and client_user_agent
            # (https://developers.facebook.com/docs/marketing-api/conversions-api/parameters);
            # a collected event without an agent (a server library's) keeps the configured
            # source rather than be refused.
            out["action_source"] = "website"
            out["event_source_url"] = page
        return out

    def request(self, batch: list[dict[str, Any]], now: float) -> tuple[str, dict[str, str], bytes]:
        config: MetaCapiConfig = self.config  # type: ignore[assignment]
        body: dict[str, Any] = {
            "data": [self.to_meta(e, now) for e in batch],
            "access_token": config.access_token.reveal(),
        }
        if config.test_event_code:
            body["test_event_code"] = config.test_event_code
        url = f"{config.host}/{config.api_version}/{config.pixel_id}/events"
        return url, {"content-type": "application/json"}, encode_json(body)

    def results(self, response: httpx.Response, batch: list[dict[str, Any]]) -> list[Result]:
        if response.is_success:
            return [OK] * len(batch)
        error = graph_error(response)
        if not error:
            return super().results(response, batch)
        code = error.get("code")
        why = f"Meta error {code}: {error.get('error_user_msg') or error.get('message', '')}"
        why = why[:300]
        if code in THROTTLE_CODES or error.get("is_transient") is True:
            return [retry(why, None, response.status_code)] * len(batch)
        if _about_the_destination(error) or response.status_code in (401, 403):
            why += " (check this destination's access_token and pixel_id)"
        return [fail(why, response.status_code)] * len(batch)

    def splittable(self, response: httpx.Response, results: list[Result]) -> bool:
        # A token, permission or pixel error fails every event alike: bisecting would only
        # send the same refusal a thousand more times.
        return not _about_the_destination(graph_error(response)) and super().splittable(
            response, results
        )


def _about_the_destination(error: dict[str, Any]) -> bool:
    """A token or permission error, or a pixel that does not exist or is not this
    token's (code 100, subcode 33)."""
    return error.get("code") in AUTH_CODES or (
        error.get("code") == 100 and error.get("error_subcode") == 33
    )
