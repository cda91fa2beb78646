"""What a normalizer is: a pure function from one raw delivery to drafts of events.

A normalizer reads the payload and says what happened (`Draft`); `finish()` turns the
drafts into `Event`s the same way for every vendor: messageId, context, receivedAt and
the identity rule. No I/O and no clock anywhere here: time comes with the delivery.

Identity rule (documented in docs/events.md): an event's `userId` is the customer's own id
when the payload carries it (per source: `user_id:` in config, or the vendor default);
otherwise `anonymousId` is the vendor's stable id for the person, `<vendor>:<id>`
(`stripe:cus_123`); an event about no person at all is attributed to `<source>:system`.
The vendor's id always also goes to `context.externalIds`, and the person's match keys
(email, phone, name, address) the payload gives to `context.traits`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from .event import Context, Event, ExternalId, SourceInfo, iso_time, library, message_id


class NormalizeError(Exception):
    """A payload the normalizer cannot make sense of; the delivery goes to quarantine."""


@dataclass(frozen=True)
class Delivery:
    """One raw delivery as stored by the front door, with its payload decoded once."""

    source: str
    source_type: str
    delivery_id: str
    received_at_ms: int
    headers: Mapping[str, str]
    body: bytes
    config: Any = None
    """The source's config struct (normalizer settings such as event_type_field)."""

    @cached_property
    def payload(self) -> Any:
        """The body as JSON (or form fields as a dict); NormalizeError if it is neither."""
        try:
            return msgspec.json.decode(self.body)
        except (msgspec.DecodeError, RecursionError):
            pass
        content_type = self.headers.get("content-type", "")
        if content_type.startswith("application/x-www-form-urlencoded"):
            return dict(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))
        raise NormalizeError("the body is not JSON")

    @property
    def object(self) -> dict[str, Any]:
        """The payload when it is a JSON object (what every vendor sends); else
        NormalizeError."""
        payload = self.payload
        if not isinstance(payload, dict):
            raise NormalizeError("the payload is not a JSON object")
        return payload

    @cached_property
    def received_at(self) -> str:
        return iso_time(self.received_at_ms) or ""


@dataclass
class Person:
    """Who an event is about, as the vendor knows them."""

    vendor_id: str | None = None
    """The vendor's id for the person (cus_123, a GitHub user id, ...)."""
    id_type: str = ""
    """What the id is, for context.externalIds (stripe_customer_id, ...)."""
    user_id: str | None = None
    """The customer's own id, when the payload carries it (Stripe metadata.user_id, ...)."""
    traits: dict[str, Any] = field(default_factory=dict)
    """The person's match keys as the payload gives them, plain, by Segment Spec trait name
    (email, phone, firstName, lastName, name, address): what an identity graph and ad
    platforms know a person by. They go to context.traits; empty ones are left out."""


@dataclass
class Draft:
    """An event as a normalizer describes it, before ids, context and identity."""

    event: str | None = None
    type: str = "track"
    properties: dict[str, Any] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)
    timestamp: Any = None
    """When it happened: unix seconds/ms or ISO text; None means receivedAt."""
    event_type: str | None = None
    """The vendor's own name for what happened."""
    person: Person | None = None
    group_id: str | None = None
    name: str | None = None
    previous_id: str | None = None
    anonymous_id: str | None = None
    """Set by a mapping that says who it is; otherwise derived by the identity rule."""
    element_id: str | None = None
    """A batch element's own id (SendGrid's sg_event_id): it stands in for (delivery id,
    index) in the messageId, so an event re-sent in another batch keeps its id."""
    message_id: str | None = None
    """The sender's own id for the event (a collected message's messageId): the event's
    messageId as given, instead of the derived one."""
    original_timestamp: Any = None
    """When the sender's clock said it happened, before a skew correction (collected
    messages): the event's originalTimestamp."""
    context: dict[str, Any] = field(default_factory=dict)
    """Context fields the sender gave, by `Context` attribute name (collected messages):
    `library` replaces ours, `external_ids` add to the vendor's, the rest are set as is."""


Normalizer = Callable[[Delivery], list[Draft]]
NORMALIZERS: dict[str, Normalizer] = {}


def register(*source_types: str) -> Callable[[Normalizer], Normalizer]:
    """Decorator: the built-in normalizer of these source types."""

    def wrap(fn: Normalizer) -> Normalizer:
        for name in source_types:
            NORMALIZERS[name] = fn
        return fn

    return wrap


UserIdScope = Callable[[Delivery, Any], Any]
USER_ID_SCOPES: dict[str, UserIdScope] = {}
"""What a source type's `user_id:` expression is evaluated over, where not the payload."""


def register_user_id_scope(*source_types: str) -> Callable[[UserIdScope], UserIdScope]:
    """Decorator: what `user_id:` sees for these source types (default: the payload)."""

    def wrap(fn: UserIdScope) -> UserIdScope:
        for name in source_types:
            USER_ID_SCOPES[name] = fn
        return fn

    return wrap


def finish(delivery: Delivery, drafts: list[Draft], own_user_id: Any = None) -> list[Event]:
    """Complete drafts into events: deterministic ids, context, times and identity.

    `own_user_id` is the customer's own id when the source's `user_id:` found one.
    """
    events = []
    own_id = _text(own_user_id)
    prefix = delivery.source_type
    for index, draft in enumerate(drafts):
        person = draft.person or Person()
        uid = own_id or _text(person.user_id)
        # A mapping's own anonymous_id is kept beside a userId (Segment events may carry
        # both); the vendor-id fallback only stands in when there is no userId.
        anonymous = _text(draft.anonymous_id)
        if uid is None and anonymous is None:
            vid = _text(person.vendor_id)
            anonymous = f"{prefix}:{vid}" if vid else f"{delivery.source}:system"
        external = []
        if person.vendor_id is not None and person.id_type:
            external.append(ExternalId(id=str(person.vendor_id), type=person.id_type))
        source = SourceInfo(
            name=delivery.source,
            type=delivery.source_type,
            delivery_id=delivery.delivery_id,
            event_type=draft.event_type,
        )
        name = draft.event if draft.type == "track" else None
        traits = match_keys(person.traits)
        if draft.context:
            given = dict(draft.context)
            external += given.pop("external_ids", [])
            if traits:  # the draft's own context.traits keys win over the vendor's
                own = given.pop("traits", None)
                traits = {**traits, **own} if isinstance(own, dict) else traits
            context = Context(
                source=source,
                library=given.pop("library", None) or library(),
                external_ids=external,
                **({"traits": traits} if traits else {}),
                **given,
            )
        else:
            context = Context(
                source=source, library=library(), external_ids=external, traits=traits
            )
        events.append(
            Event(
                type=draft.type,  # type: ignore[arg-type]
                # What the event says (type, name) is part of its id: a replay that renames
                # it must reach deduping destinations as new, not as a copy of the old one.
                message_id=draft.message_id
                or message_id(
                    delivery.source,
                    *(
                        (delivery.delivery_id, index)
                        if draft.element_id is None
                        else (f"element:{draft.element_id}", 0)
                    ),
                    draft.type,
                    name,
                ),
                timestamp=iso_time(draft.timestamp) or delivery.received_at,
                received_at=delivery.received_at,
                context=context,
                event=name,
                user_id=uid,
                anonymous_id=anonymous,
                group_id=_text(draft.group_id),
                previous_id=_text(draft.previous_id),
                name=_text(draft.name),
                properties=_clean(draft.properties),
                traits=_clean(draft.traits),
                original_timestamp=iso_time(draft.original_timestamp),
            )
        )
    return events


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    return text or None


def match_keys(traits: dict[str, Any]) -> dict[str, Any]:
    """A person's traits without empty values: no None, blank text, or empty object (an
    address keeps only its non-empty parts). Text is stripped, never otherwise changed:
    destinations normalize and hash as each vendor requires."""
    out: dict[str, Any] = {}
    for key, value in traits.items():
        if isinstance(value, dict):
            value = match_keys(value)
        elif isinstance(value, str):
            value = value.strip()
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value  # e.g. a zip code or phone number sent as a number
            continue
        else:
            continue  # None, true/false, a list: not a match key
        if value:
            out[key] = value
    return out


def street(*lines: Any) -> str | None:
    """A Segment address's `street` from a vendor's address lines (line1, line2)."""
    return ", ".join(t for line in lines if (t := _text(line)) is not None) or None


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    """Drop keys whose value is None: absent beats null for every destination."""
    return {k: v for k, v in values.items() if v is not None}


# --- naming ------------------------------------------------------------------------------

# Words, camelCase split (`updateCard` -> update, Card; `SMSSent` -> SMS, Sent).
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+")
_SMALL = {"and", "or", "of", "to", "for", "from", "a", "an", "the", "in", "on", "by", "with"}


@functools.lru_cache(maxsize=4096)  # event names repeat; building them is regex work
def title(*parts: str) -> str:
    """`checkout.session`, `completed` -> `Checkout Session Completed` (Segment's style)."""
    words = [w for part in parts for w in _WORD.findall(part.replace("_", " "))]
    out = []
    for i, word in enumerate(words):
        lower = word.lower()
        out.append(lower if i and lower in _SMALL else lower[:1].upper() + lower[1:])
    return " ".join(out)


def generic_name(vendor_type: str) -> str:
    """The documented name for an event type no rule knows: `issuing_card.created` ->
    `Issuing Card Created`."""
    return title(vendor_type) or "Unknown Event"


def scalars(obj: Any, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The top-level string/number/bool fields of an object (generic events' properties)."""
    if not isinstance(obj, dict):
        return {}
    return {
        k: v for k, v in obj.items() if isinstance(v, str | int | float | bool) and k not in skip
    }


def dig(obj: Any, *path: str | int) -> Any:
    """obj[p0][p1]... or None when any step is missing or of the wrong kind."""
    for part in path:
        if isinstance(obj, dict) and isinstance(part, str):
            obj = obj.get(part)
        elif isinstance(obj, list) and isinstance(part, int) and -len(obj) <= part < len(obj):
            obj = obj[part]
        elif isinstance(obj, list) and isinstance(part, str) and part.isdigit():
            # A dotted path's `changes.0.field` (catalog specs) indexes a list.
            obj = obj[int(part)] if int(part) < len(obj) else None
        else:
            return None
    return obj
