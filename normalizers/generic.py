"""Sources without a vendor-specific normalizer (catalog vendors, Standard Webhooks, `hmac`,
Slack).

The event name is the payload's `type` (or the source's `event_type_field`, or the catalog
vendor's `Spec.event_type`) in Title Case (`invoice.paid` -> `Invoice Paid`); properties
are the payload's `data` object (or the whole payload when it has none). A payload
without a type becomes `Webhook Received`. A batch (`Spec.each`: SendGrid's array,
Mandrill's `mandrill_events`, Microsoft Graph's `value`) becomes one event per element.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .base import Delivery, Draft, NormalizeError, Person, dig, generic_name, register

# Where senders commonly put the time something happened.
_TIME_FIELDS = ("timestamp", "created_at", "createdAt", "occurred_at", "occurredAt", "created")


@dataclass(frozen=True)
class Spec:
    """How a catalog vendor's payload reads; paths are dotted, relative to each element."""

    event_type: str | None = "type"
    """Path to the vendor's event type, `header:Name`, `a+b` (joined with a dot) or `a|b`
    (the first present)."""
    time: str | None = None
    """Path to when it happened (`a|b`: the first present); None: the first of timestamp,
    created_at, ... found."""
    properties: str | None = "data"
    """Path to the object that becomes the properties (the whole element when absent)."""
    each: str | None = None
    """A batch: path to the list of events (`@`: the payload is the list)."""
    person: str | None = None
    """Path to the vendor's id of the person (becomes anonymousId `<type>:<id>`)."""
    person_type: str = ""
    """What that id is, for context.externalIds (e.g. `sendgrid_email`)."""
    traits: tuple[tuple[str, str], ...] = ()
    """The person's match keys for context.traits: (Segment trait name, path) pairs, e.g.
    `("email", "content.customer.email")` (`a|b`: the first present); `address.city` names
    a part of `address`. Only paths to the customer themselves, never to a merchant, a
    teammate or a shipping recipient."""
    traits_when: tuple[str, tuple[str, ...]] | None = None
    """(path, values): read `traits` only when the value at the path is one of these, for
    a vendor whose same field names someone else in other events (Lemon Squeezy's
    `user_email` is an affiliate's on `affiliates`)."""
    json_field: str | None = None
    """A form field holding the JSON payload (Mandrill's `mandrill_events`)."""
    decode: Callable[[bytes, Mapping[str, str]], Any] | None = None
    """Reads a body that is neither JSON nor an urlencoded form (Braintree's base64 XML,
    Dropbox Sign's multipart form): (body, headers) -> payload, NormalizeError if it
    cannot. Pure, so mappings, `map` and replays read the body as the worker does."""
    strip: str = ""
    """A prefix the event name leaves out (Zendesk's `zen:event-type:`)."""
    element_id: str | None = None
    """A batch: path to each element's own id (SendGrid `sg_event_id`), which names its
    event (messageId) whatever batch it comes in."""
    omit: tuple[str, ...] = ()
    """Keys left out of the properties (a shared secret echoed in the payload)."""


DEFAULT = Spec()


def spec_of(delivery: Delivery) -> Spec:
    spec = getattr(delivery.config, "normalize_spec", None)
    if spec is not None:
        return spec
    field = getattr(delivery.config, "event_type_field", None) or "type"
    return Spec(event_type=field) if field != "type" else DEFAULT


def payload_of(delivery: Delivery, spec: Spec) -> Any:
    payload = spec.decode(delivery.body, delivery.headers) if spec.decode else delivery.payload
    if spec.json_field is not None and isinstance(payload, dict):
        raw = payload.get(spec.json_field)
        if isinstance(raw, str):
            try:
                payload = json.loads(raw)
            except ValueError:
                raise NormalizeError(f"the form field `{spec.json_field}` is not JSON") from None
    return payload


def elements(delivery: Delivery, spec: Spec) -> list[Any]:
    """The payload's events: itself, or each element of its batch."""
    payload = payload_of(delivery, spec)
    if spec.each is None:
        if not isinstance(payload, dict):
            raise NormalizeError("the payload is not a JSON object")
        return [payload]
    items = payload if spec.each == "@" else dig(payload, *spec.each.split("."))
    if not isinstance(items, list):
        raise NormalizeError(f"the batch `{spec.each}` is not a list")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            # Never dropped in silence: the delivery goes to the quarantine with the reason.
            raise NormalizeError(f"element {i} of the batch `{spec.each}` is not an object")
    return items


def event_type_of(delivery: Delivery, spec: Spec, element: Any) -> str | None:
    path = spec.event_type
    if path is None:
        return None
    if "|" in path:  # alternatives, the first present wins (Twilio: SmsStatus|CallStatus)
        for one in path.split("|"):
            if value := event_type_of(delivery, dataclasses.replace(spec, event_type=one), element):
                return value
        return None
    if path.startswith("header:"):
        value = delivery.headers.get(path[7:].lower())
    elif "+" in path:  # Linear: `type+action` -> `Issue.create`
        parts = [dig(element, *p.split(".")) for p in path.split("+")]
        value = ".".join(parts) if all(isinstance(p, str) and p for p in parts) else None
    else:
        value = dig(element, *path.split("."))
    return value if isinstance(value, str) and value else None


@register("standard-webhooks", "hmac", "slack")
def normalize(delivery: Delivery) -> list[Draft]:
    if delivery.source_type == "slack":
        return _slack(delivery.object)
    spec = spec_of(delivery)
    return [_draft(delivery, spec, element) for element in elements(delivery, spec)]


def _draft(delivery: Delivery, spec: Spec, payload: dict[str, Any]) -> Draft:
    kind = event_type_of(delivery, spec, payload)
    data = dig(payload, *spec.properties.split(".")) if spec.properties else None
    properties = dict(data) if isinstance(data, dict) else dict(payload)
    for key in spec.omit:
        properties.pop(key, None)
    if spec.time is not None:
        for path in spec.time.split("|"):  # alternatives: the first present wins
            if (when := dig(payload, *path.split("."))) is not None:
                break
    else:
        when = next((payload[k] for k in _TIME_FIELDS if payload.get(k) is not None), None)
        if when is None and isinstance(data, dict):
            when = next((data[k] for k in _TIME_FIELDS if data.get(k) is not None), None)
    person = None
    if spec.person is not None:
        vid = dig(payload, *spec.person.split("."))
        if isinstance(vid, str | int) and not isinstance(vid, bool) and str(vid).strip():
            person = Person(vendor_id=str(vid), id_type=spec.person_type)
    if spec.traits and _about_the_customer(spec, payload):
        traits = _traits(spec.traits, payload)
        person = dataclasses.replace(person, traits=traits) if person else Person(traits=traits)
    element_id = None
    if spec.element_id is not None:
        value = dig(payload, *spec.element_id.split("."))
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            element_id = str(value)
    return Draft(
        element_id=element_id,
        event=generic_name(kind.removeprefix(spec.strip)) if kind else "Webhook Received",
        properties=properties,
        timestamp=when,
        event_type=kind,
        person=person,
    )


def _about_the_customer(spec: Spec, payload: Any) -> bool:
    if spec.traits_when is None:
        return True
    path, values = spec.traits_when
    return dig(payload, *path.split(".")) in values


def _traits(paths: tuple[tuple[str, str], ...], payload: Any) -> dict[str, Any]:
    """{trait: the value at its path}; `address.<part>` names go into `address`."""
    traits: dict[str, Any] = {}
    for name, path in paths:
        value = None
        for one in path.split("|"):  # alternatives: the first present wins
            if (value := dig(payload, *one.split("."))) not in (None, ""):
                break
        parent, _, part = name.rpartition(".")
        if parent:
            traits.setdefault(parent, {})[part] = value
        else:
            traits[name] = value
    return traits


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
