"""Vendor payloads -> first-party events: built-in normalizers per source type.

`normalize(delivery)` is the one entry point: it picks the source type's normalizer
(see NORMALIZERS), runs it and completes the drafts with `finish()` (ids, context,
identity). Pure: the same delivery always gives byte-identical events.
"""

from __future__ import annotations

from . import generic, github, intercom, shopify, stripe  # noqa: F401 (registers them)
from .base import NORMALIZERS, Delivery, Draft, NormalizeError, finish
from .event import Event, event_schema

__all__ = [
    "NORMALIZERS",
    "Delivery",
    "Draft",
    "Event",
    "NormalizeError",
    "event_schema",
    "normalize",
]


def normalize(delivery: Delivery) -> list[Event]:
    """The events a delivery becomes; NormalizeError (with the reason) if it cannot."""
    fn = NORMALIZERS.get(delivery.source_type, generic.normalize)
    try:
        drafts = fn(delivery)
    except NormalizeError:
        raise
    except Exception as e:  # a payload shape the normalizer did not expect
        raise NormalizeError(
            f"{delivery.source_type} normalizer failed: {type(e).__name__}: {e}"
        ) from e
    return finish(delivery, drafts)
