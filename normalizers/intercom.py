"""Intercom notifications -> events, by the notification's `topic`.

Contacts and users (created or updated) -> identify with their traits; a contact's
`external_id` (your own id for them) is the `userId`, otherwise `intercom:<id>`.
Conversations -> `Conversation Started` (user created), `Conversation Closed`,
`Conversation Replied` and so on; tags -> `Contact Tagged` / `Contact Untagged`. Any
other topic is named by the same rule (`conversation.admin.snoozed` -> `Conversation
Admin Snoozed`). `ping` produces nothing. Time: the notification's `created_at`.
https://developers.intercom.com/docs/references/webhooks/webhook-models
"""

from __future__ import annotations

from typing import Any

from .base import Delivery, Draft, NormalizeError, Person, dig, register, scalars, title
from .event import iso_time

NAMES = {
    "conversation.user.created": "Conversation Started",
    "conversation.user.replied": "Conversation Replied",
    "conversation.admin.replied": "Conversation Admin Replied",
    "conversation.admin.closed": "Conversation Closed",
    "conversation.admin.opened": "Conversation Reopened",
    "conversation.admin.assigned": "Conversation Assigned",
    "conversation.rating.added": "Conversation Rated",
    "contact.user.tag.created": "Contact Tagged",
    "contact.lead.tag.created": "Contact Tagged",
    "contact.user.tag.deleted": "Contact Untagged",
    "contact.lead.tag.deleted": "Contact Untagged",
    "user.tag.created": "Contact Tagged",
    "user.tag.deleted": "Contact Untagged",
    "contact.user.deleted": "Contact Deleted",
    "contact.lead.deleted": "Contact Deleted",
    "user.deleted": "Contact Deleted",
}
_IDENTIFY = {
    "contact.user.created",
    "contact.user.updated",
    "contact.lead.created",
    "contact.lead.updated",
    "contact.created",
    "contact.updated",
    "user.created",
    "user.updated",
    "contact.lead.signed_up",
    "contact.signed_up",
}


@register("intercom")
def normalize(delivery: Delivery) -> list[Draft]:
    note = delivery.payload
    if not isinstance(note, dict) or not isinstance(note.get("topic"), str):
        raise NormalizeError("not an Intercom notification (no `topic`)")
    topic = note["topic"]
    if topic == "ping":
        return []
    item = dig(note, "data", "item")
    if not isinstance(item, dict):
        raise NormalizeError("an Intercom notification needs `data.item`")
    when = note.get("created_at")
    if topic in _IDENTIFY:
        return [
            Draft(
                type="identify",
                traits=_traits(item),
                timestamp=when,
                event_type=topic,
                person=_person(item),
            )
        ]
    if item.get("type") == "conversation":
        props = _conversation(item)
        person = _person(_conversation_contact(item))
    elif topic.startswith(("contact.", "user.")) and isinstance(item.get("tag"), dict):
        props = {"tag": dig(item, "tag", "name"), "tag_id": dig(item, "tag", "id")}
        person = _person(item.get("contact") or item.get("user") or {})
    else:
        props = scalars(item)
        person = _person(item) if item.get("type") in ("contact", "user", "lead") else Person()
    name = NAMES.get(topic) or title(topic)
    return [Draft(event=name, properties=props, timestamp=when, event_type=topic, person=person)]


def _person(contact: dict[str, Any]) -> Person:
    """The contact, with the match keys its payload gives (email, phone, name: Intercom's
    name is one field, kept whole)."""
    return Person(
        vendor_id=contact.get("id"),
        id_type="intercom_contact_id",
        user_id=contact.get("external_id") or contact.get("user_id"),
        traits={key: contact.get(key) for key in ("email", "phone", "name")},
    )


def _conversation_contact(c: dict[str, Any]) -> dict[str, Any]:
    """The conversation's (first) contact. A conversation's `contacts` list holds ids
    only; the message that started it (`source`) names its author with email and name,
    which are the contact's when the author is that contact (not a teammate)."""
    author = dig(c, "source", "author")
    if not isinstance(author, dict) or author.get("type") not in ("user", "lead", "contact"):
        author = {}
    contacts = dig(c, "contacts", "contacts")
    if isinstance(contacts, list) and contacts and isinstance(contacts[0], dict):
        contact = contacts[0]
        if author and author.get("id") == contact.get("id"):
            return {**{k: author.get(k) for k in ("email", "phone", "name")}, **_given(contact)}
        return contact
    return author


def _given(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if v is not None}


def _conversation(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "conversation_id": c.get("id"),
        "state": c.get("state"),
        "open": c.get("open"),
        "priority": c.get("priority"),
        "title": c.get("title"),
        "channel": dig(c, "source", "delivered_as") or dig(c, "source", "type"),
        "assignee_id": dig(c, "admin_assignee_id") or dig(c, "assignee", "id"),
        "team_assignee_id": c.get("team_assignee_id"),
        "rating": dig(c, "conversation_rating", "rating"),
        "tags": [t.get("name") for t in dig(c, "tags", "tags") or [] if isinstance(t, dict)]
        or None,
        "created_at": iso_time(c.get("created_at")),
    }


def _traits(c: dict[str, Any]) -> dict[str, Any]:
    location = c.get("location") if isinstance(c.get("location"), dict) else {}
    custom = c.get("custom_attributes") if isinstance(c.get("custom_attributes"), dict) else {}
    return {
        "email": c.get("email"),
        "name": c.get("name"),
        "phone": c.get("phone"),
        "role": c.get("role"),
        "createdAt": iso_time(c.get("created_at") or c.get("signed_up_at")),
        "lastSeenAt": iso_time(c.get("last_seen_at")),
        "address": {
            "city": location.get("city"),
            "state": location.get("region"),
            "country": location.get("country_code") or location.get("country"),
        }
        if any(location.get(k) for k in ("city", "region", "country", "country_code"))
        else None,
        "unsubscribedFromEmails": c.get("unsubscribed_from_emails"),
        "intercomContactId": c.get("id"),
        **{k: v for k, v in custom.items() if isinstance(v, str | int | float | bool)},
    }
