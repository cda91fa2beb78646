"""Slack (Events API, slash commands, interactivity): `X-Slack-Signature: v0=<hex>`.

Signed content is `v0:{X-Slack-Request-Timestamp}:{raw body}`; Slack asks receivers to
refuse timestamps more than five minutes off. The Events API's `event_id` names a
delivery (Slack's retries reuse it); slash commands and interactive payloads carry a
`trigger_id`. The one-time `url_verification` request is answered with its challenge.
https://api.slack.com/authentication/verifying-requests-from-slack
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import msgspec

from ..config import Duration, SourceConfig, duration
from .base import BodyFields, Headers, body_hash, delivery_id_from, register
from .signing import HmacScheme, HmacSource, compile_template


class SlackConfig(SourceConfig, tag="slack"):
    tolerance: Duration = duration("5m")
    """Accepted clock difference, both ways, for X-Slack-Request-Timestamp."""


_FIELDS = BodyFields("type", "event_id", "challenge")


def _is_form(headers: Headers) -> bool:
    return headers.get("content-type", "").startswith("application/x-www-form-urlencoded")


@register
class SlackSource(HmacSource):
    config_type = SlackConfig
    vendor_headers = (
        "x-slack-signature",
        "x-slack-request-timestamp",
        "x-slack-retry-num",
        "x-slack-retry-reason",
    )

    def build_scheme(self, config: SlackConfig) -> HmacScheme:
        return HmacScheme(
            header="x-slack-signature",
            prefix="v0=",
            template=compile_template("v0:{timestamp}:{body}"),
            timestamp_header="x-slack-request-timestamp",
            tolerance=float(config.tolerance),
            display_header="X-Slack-Signature",
        )

    def handshake(self, body: bytes, headers: Headers) -> bytes | None:
        if _is_form(headers) or b"url_verification" not in body:
            return None
        fields = _FIELDS.read(body)
        if fields["type"] != "url_verification" or not isinstance(fields["challenge"], str):
            return None
        return msgspec.json.encode({"challenge": fields["challenge"]})

    def identify(self, body: bytes, headers: Headers) -> tuple[str, str]:
        delivery = None
        if _is_form(headers):
            form = parse_qs(body.decode("utf-8", "replace"))
            delivery = (form.get("trigger_id") or [None])[0]
            if delivery is None and "payload" in form:
                try:
                    delivery = json.loads(form["payload"][0]).get("trigger_id")
                except (ValueError, AttributeError, RecursionError):
                    delivery = None
        else:
            delivery = _FIELDS.read(body)["event_id"]
        if not isinstance(delivery, str) or not delivery:
            delivery = body_hash(body)
        delivery = delivery_id_from(delivery, "the event_id or trigger_id")
        return delivery, delivery

    def ack_body(self, headers: Headers) -> bytes | None:
        # Slack shows the reply to a slash command or an interaction to the user: say nothing.
        return b"" if _is_form(headers) else None
