"""Vendor payloads -> first-party events: built-in normalizers and YAML mappings.

`normalize(delivery, mapper)` is the one entry point: the source's mapping rules (if one
matches) and/or the source type's built-in normalizer (NORMALIZERS) describe the
events; `finish()` completes them (ids, context, identity). Pure: the same delivery
always gives byte-identical events.
"""

from __future__ import annotations

from typing import Any

from . import collect, generic, github, intercom, shopify, stripe  # noqa: F401 (registers them)
from .base import NORMALIZERS, USER_ID_SCOPES, Delivery, Draft, NormalizeError, dig, finish
from .event import Event, event_schema
from .mapping import Mapper, MappingError

__all__ = [
    "NORMALIZERS",
    "Delivery",
    "Draft",
    "Event",
    "Mapper",
    "MappingError",
    "NormalizeError",
    "event_schema",
    "normalize",
    "vendor_event_type",
]


def normalize(delivery: Delivery, mapper: Mapper | None = None) -> list[Event]:
    """The events a delivery becomes; NormalizeError (with the reason) if it cannot."""
    try:
        if mapper is None:
            return finish(delivery, _builtin(delivery))
        payload = generic.payload_of(delivery, generic.spec_of(delivery))
        tokens = mapper.enter(payload, delivery.headers)
        try:
            rule = mapper.match(payload) if mapper.rules else None
            drafts = _builtin(delivery) if rule is None or rule.builtin else []
            if rule is not None:
                drafts += mapper.drafts(rule, payload, vendor_event_type(delivery))
            scope = USER_ID_SCOPES.get(delivery.source_type)
            own = mapper.own_user_id(scope(delivery, payload) if scope else payload)
        finally:
            mapper.leave(tokens)
        return finish(delivery, drafts, own)
    except NormalizeError:
        raise
    except Exception as e:  # a payload shape the normalizer or a rule did not expect
        raise NormalizeError(
            f"{delivery.source_type} normalizer failed: {type(e).__name__}: {e}"
        ) from e


def _builtin(delivery: Delivery) -> list[Draft]:
    return NORMALIZERS.get(delivery.source_type, generic.normalize)(delivery)


def vendor_event_type(delivery: Delivery) -> str | None:
    """The vendor's own name for what happened, for context.source.eventType."""
    h, kind = delivery.headers, delivery.source_type
    value: Any
    if kind in ("github", "intercom", "slack"):
        p = delivery.payload  # a catalog vendor's body may need its Spec.decode (below)
    if kind == "github":
        action = dig(p, "action")
        value = h.get("x-github-event")
        value = f"{value}.{action}" if value and isinstance(action, str) else value
    elif kind == "shopify":
        value = h.get("x-shopify-topic")
    elif kind == "intercom":
        value = dig(p, "topic")
    elif kind == "slack":
        value = dig(p, "event", "type") or dig(p, "type")
    else:
        spec = generic.spec_of(delivery)
        payload = generic.payload_of(delivery, spec)
        value = generic.event_type_of(delivery, spec, payload) if spec.each is None else None
    return value if isinstance(value, str) else None
