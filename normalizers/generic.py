"""Sources without a vendor-specific normalizer (Standard Webhooks, generic hmac, Slack).

The event name is the payload's `type` (or the source's `event_type_field`) in Title
Case (`invoice.paid` -> `Invoice Paid`); properties are the payload's `data` object (or
the whole payload when it has none). A payload without a type becomes `Webhook Received`.
"""

from __future__ import annotations

from typing import Any

from .base import Delivery, Draft, dig, generic_name, register

# Where senders commonly put the time something happened.
_TIME_FIELDS = ("timestamp", "created_at", "createdAt", "occurred_at", "occurredAt", "created")


@register("standard-webhooks", "hmac", "slack")
def normalize(delivery: Delivery) -> list[Draft]:
    payload = delivery.object
    if delivery.source_type == "slack":
        return _slack(payload)
    field = getattr(delivery.config, "event_type_field", None) or "type"
    kind = dig(payload, *field.split("."))
    data = payload.get("data")
    properties = dict(data) if isinstance(data, dict) else dict(payload)
    when = next((payload[k] for k in _TIME_FIELDS if payload.get(k) is not None), None)
    if when is None and isinstance(data, dict):
        when = next((data[k] for k in _TIME_FIELDS if data.get(k) is not None), None)
    name = generic_name(kind) if isinstance(kind, str) and kind else "Webhook Received"
    return [
        Draft(
            event=name,
            properties=properties,
            timestamp=when,
            event_type=kind if isinstance(kind, str) else None,
        )
    ]


def _slack(payload: dict[str, Any]) -> list[Draft]:
    """Events API callbacks are named after the inner event (`app_mention` -> `App Mention`)."""
    inner = payload.get("event") if isinstance(payload.get("event"), dict) else None
    if payload.get("type") == "event_callback" and inner is not None:
        kind = str(inner.get("type") or "event")
        return [
            Draft(
                event=generic_name(kind),
                properties=dict(inner),
                timestamp=payload.get("event_time"),
                event_type=kind,
            )
        ]
    kind = payload.get("type") or payload.get("command") or "webhook"
    return [Draft(event=generic_name(str(kind)), properties=dict(payload), event_type=str(kind))]
