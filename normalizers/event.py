"""The first-party event: Segment Spec field names on the wire, one msgspec Struct.

Every destination the gateway feeds accepts these names (camelCase). An event is built
once by `finish()` from what a normalizer or mapping produced, validated once, encoded
once; the same delivery always gives byte-identical events (see `message_id`).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from gateway import __version__

EventType = Literal["track", "identify", "group", "page", "screen", "alias"]

# All messageIds live under this namespace:
# uuid5(NAMESPACE, "source\ndelivery\nindex\ntype\nevent name").
NAMESPACE = uuid.UUID("6c1b7e36-3f7e-5a38-9d2f-2b0f1c6a8e51")
LIBRARY_NAME = "webhook-gateway"


class SourceInfo(msgspec.Struct, rename="camel", omit_defaults=True):
    """Where an event came from: `context.source`."""

    name: str
    """The source's name in config.yaml (the URL segment)."""
    type: str
    """The source type (stripe, github, hmac, ...)."""
    delivery_id: str
    """The vendor's delivery id, as deduplicated at the front door."""
    event_type: str | None = None
    """The vendor's own name for what happened (charge.succeeded, orders/paid, ...)."""


class Library(msgspec.Struct):
    name: str
    version: str


class ExternalId(msgspec.Struct, omit_defaults=True):
    """A vendor's id for the person (Segment's context.externalIds)."""

    id: str
    type: str
    collection: str = "users"
    encoding: str = "none"


class Context(msgspec.Struct, rename="camel", omit_defaults=True):
    """`context`: where the event came from, plus the Segment Spec's common context fields
    a collected message carries (https://segment.com/docs/connections/spec/common/#context).
    Each of those is left out when empty, so a webhook event's context is only `source`,
    `library` and `externalIds`. Keys outside the Spec are not kept: Segment documents
    context as "a complete and explicit specification, so properties outside the spec are
    ignored"."""

    source: SourceInfo
    library: Library
    """Who produced the event: the gateway, or a collected message's own client library."""
    external_ids: list[ExternalId] = []
    active: bool | None = None
    app: dict[str, Any] = {}
    click_ids: dict[str, str] = {}
    """`context.clickIds`: the ad click ids of the person's latest landing (gclid, gbraid,
    wbraid, fbc, fbp, ttclid, ttp, msclkid, li_fat_id), from the identity graph; left out
    when the person's consent does not allow ad_storage."""
    profile: dict[str, Any] = {}
    """`context.profile`: the identity graph's profile of the person: `id`, and
    `firstTouch` / `lastTouch` (at, url, referrer, campaign, clickIds) when known."""
    campaign: dict[str, Any] = {}
    """UTM parameters (name, source, medium, term, content)."""
    channel: str | None = None
    consent: dict[str, Any] = {}
    device: dict[str, Any] = {}
    group_id: str | None = None
    ip: str | None = None
    """The person's IP address: the client's own, else the address the gateway saw."""
    locale: str | None = None
    location: dict[str, Any] = {}
    network: dict[str, Any] = {}
    os: dict[str, Any] = {}
    page: dict[str, Any] = {}
    referrer: dict[str, Any] = {}
    screen: dict[str, Any] = {}
    timezone: str | None = None
    traits: dict[str, Any] = {}
    user_agent: str | None = None
    user_agent_data: dict[str, Any] = {}


class Event(msgspec.Struct, rename="camel", omit_defaults=True):
    """One first-party event (Segment Spec: track, identify, group, page, screen, alias)."""

    type: EventType
    message_id: str
    """Deterministic: UUIDv5 of (source, delivery id, index of the event in the delivery,
    type, event name): a replay gives the same id unless a fixed mapping changed what the
    event says (its type or name), which a destination must then take as a new event."""
    timestamp: str
    """When it happened at the vendor, ISO 8601 UTC (receivedAt when the vendor says not);
    for a collected message, its time corrected for the client's clock skew."""
    received_at: str
    """When the gateway accepted the delivery, ISO 8601 UTC."""
    context: Context
    event: str | None = None
    """The event name, for track events ("Order Completed")."""
    user_id: str | None = None
    anonymous_id: str | None = None
    group_id: str | None = None
    previous_id: str | None = None
    name: str | None = None
    """Page or screen name."""
    properties: dict[str, Any] = {}
    traits: dict[str, Any] = {}
    original_timestamp: str | None = None
    """A collected message's own time as its client's clock said it (ISO 8601 UTC), before
    `timestamp` corrected it for the clock's skew; absent on webhook events."""


_NAMESPACE_BYTES = NAMESPACE.bytes


def message_id(source: str, delivery_id: str, index: int, type: str, event: str | None) -> str:
    """The event's idempotency key: the same delivery always yields the same ids.

    Exactly str(uuid.uuid5(NAMESPACE, "source\\ndelivery\\nindex\\ntype\\nevent")), with
    `event` the track event's name ("" for other types), built without the UUID object
    (this runs for every event). The type and name are in it so that a replay after a
    mapping fix that renames an event reaches destinations that dedupe on the id as a new
    event instead of a copy of the wrong one; properties are not, so re-running an
    unchanged mapping stays idempotent.
    """
    name = f"{source}\n{delivery_id}\n{index}\n{type}\n{event or ''}".encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def iso_time(value: Any) -> str | None:
    """ISO 8601 UTC (milliseconds, `Z`) from unix seconds/ms or an ISO string; None if not."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            millis = round(value if abs(value) >= 1e11 else value * 1000)
            seconds, millis = divmod(millis, 1000)
            t = time.gmtime(seconds)
            # Fields written out: strftime's %Y does not pad years before 1000 on glibc.
            return (
                f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
                f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{millis:03d}Z"
            )
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            try:
                return iso_time(float(text))
            except ValueError:
                return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00
            return None
        return utc_text(moment)
    return None


def utc_text(moment: datetime) -> str:
    """An aware UTC datetime as ISO 8601 with milliseconds and `Z` (microseconds cut)."""
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )


_LIBRARY = Library(LIBRARY_NAME, __version__)


def library() -> Library:
    """context.library (one shared instance: events never change it)."""
    return _LIBRARY


def event_schema() -> dict[str, Any]:
    """JSON Schema of the event, for destinations and consumers of the events stream."""
    schema = msgspec.json.schema(Event)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "webhook-gateway event"
    return schema
