"""`tiktok`: TikTok's Events API (v1.3).

`event_id` is the messageId (TikTok dedupes against the pixel), `event_time` the event's
own time (older than 7 days: dead-lettered), customer data hashed like Meta's. TikTok
answers errors inside HTTP 200 with a non-zero `code`: rate limits and internal errors
are retried, token and permission errors dead-lettered at once (every event would fail
alike), and anything else (one bad event fails the request) bisected to find the event,
which is dead-lettered with TikTok's message.
https://business-api.tiktok.com/portal/docs?id=1771101303285761
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
RETRY_CODES = frozenset({40100, 40016, 50000, 50002})  # rate limits, internal errors
AUTH_CODES = frozenset({40001, 40101, 40102, 40104, 40105})  # no permission, bad token
STANDARD_EVENTS = {
    "Order Completed": "CompletePayment",
    "Checkout Started": "InitiateCheckout",
    "Payment Info Entered": "AddPaymentInfo",
    "Product Added": "AddToCart",
    "Product Viewed": "ViewContent",
    "Products Searched": "Search",
    "Signed Up": "CompleteRegistration",
    "Subscription Created": "Subscribe",
    "Form Submitted": "SubmitForm",
}


class TikTokConfig(DestinationConfig, tag="tiktok", kw_only=True):
    pixel_code: str
    """The pixel (event source id)."""
    access_token: Secret
    event_source: str = "web"
    event_names: dict[str, str] = {}
    test_event_code: str | None = None
    phone_region: str = "US"
    """The country assumed for phone numbers written without one (ISO 3166-1 alpha-2)."""
    endpoint: str = "https://business-api.tiktok.com/open_api/v1.3/event/track/"

    def check(self) -> None:
        super().check()
        self.phone_region = pii.region(self.phone_region)


@register
class TikTokDestination(HttpDestination):
    config_type = TikTokConfig
    consent_purpose: ClassVar[str | None] = "ads"
    max_batch: ClassVar[int] = 1000
    max_bytes: ClassVar[int] = 4 * 1024 * 1024
    max_event_age: ClassVar[float | None] = MAX_AGE
    age_limit: ClassVar[str] = "the 7 days TikTok accepts (event_time)"

    def __init__(self, name: str, config: TikTokConfig) -> None:
        super().__init__(name, config)
        self.names = {**STANDARD_EVENTS, **config.event_names}
        self.region = config.phone_region

    def phone(self, text: str) -> str:
        # TikTok hashes the E.164 form with its `+` (Meta's form drops it): "+12133734253"
        # https://business-api.tiktok.com/portal/docs?id=1771100865818625
        return pii.e164(text, self.region)

    def to_tiktok(self, event: dict[str, Any], now: float) -> dict[str, Any]:
        """One event of TikTok's Events API 2.0: `user` (email, phone, external_id hashed;
        ttclid, ttp, ip, user_agent as they are), `page` for a web event, `properties`.
        https://business-api.tiktok.com/portal/docs?id=1771101303285761"""
        who = pii.person(event)
        context = event.get("context") or {}
        clicks = pii.click_ids(event)
        user = {
            k: v
            for k, v in {
                "email": pii.hashed(who["email"], pii.email),
                "phone": pii.hashed(who["phone"], self.phone),
                "external_id": pii.hashed(
                    event.get("userId") or event.get("anonymousId"), pii.external_id
                ),
                "ttclid": clicks.get("ttclid"),
                "ttp": clicks.get("ttp"),
                "ip": context.get("ip"),
                "user_agent": context.get("userAgent"),
            }.items()
            if v
        }
        props = event.get("properties") or {}
        name = event.get("event") or event["type"]
        out = {
            "event": self.names.get(name, name),
            "event_time": int(unix_seconds(event.get("timestamp"), now)),
            "event_id": event["messageId"],
            "user": user,
            "properties": {
                k: v
                for k, v in {
                    "value": props.get("revenue", props.get("value", props.get("total"))),
                    "currency": props.get("currency"),
                    "order_id": props.get("order_id"),
                    "contents": pii.product_lines(props, "content_id", "price") or None,
                }.items()
                if v is not None
            },
        }
        url = pii.web_page(event)
        if url:
            page = {"url": url}
            referrer = (context.get("page") or {}).get("referrer")
            if isinstance(referrer, str) and referrer.strip():
                page["referrer"] = referrer.strip()
            out["page"] = page
        return out

    def request(self, batch: list[dict[str, Any]], now: float) -> tuple[str, dict[str, str], bytes]:
        config: TikTokConfig = self.config  # type: ignore[assignment]
        body: dict[str, Any] = {
            "event_source": config.event_source,
            "event_source_id": config.pixel_code,
            "data": [self.to_tiktok(e, now) for e in batch],
        }
        if config.test_event_code:
            body["test_event_code"] = config.test_event_code
        headers = {"content-type": "application/json", "access-token": config.access_token.reveal()}
        return config.endpoint, headers, encode_json(body)

    def results(self, response: httpx.Response, batch: list[dict[str, Any]]) -> list[Result]:
        if not response.is_success:
            return super().results(response, batch)
        code, message = _code(response)
        if code == 0:
            return [OK] * len(batch)
        why = f"TikTok code {code}: {message}"[:300]
        if code in RETRY_CODES:
            return [retry(why, None, response.status_code)] * len(batch)
        if code in AUTH_CODES:
            why += " (check this destination's access_token and pixel_code)"
        return [fail(why, response.status_code)] * len(batch)

    def splittable(self, response: httpx.Response, results: list[Result]) -> bool:
        if response.is_success:
            code, _ = _code(response)
            return code not in RETRY_CODES and code not in AUTH_CODES and code != 0
        return super().splittable(response, results)


def _code(response: httpx.Response) -> tuple[int, str]:
    """TikTok's `code` and `message` (0 when the body has none: the events went in)."""
    try:
        body = response.json()
        return int(body.get("code", 0)), str(body.get("message", ""))
    except (ValueError, TypeError, AttributeError):
        return 0, ""
