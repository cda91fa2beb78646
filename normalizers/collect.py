"""`type: collect`: a message a Segment client sent to the collect API becomes one event.

gateway/collect.py stores each message as one raw delivery of the collect source: the
body is the message as the client sent it (with the batch's `sentAt` when it had none),
the headers carry the client's address (`x-collect-ip`) and `user-agent`, and
`x-collect-refused` the reason when the front door refused the message. The message
already is a Segment Spec event; this module checks it as Segment's HTTP Tracking API
does (`validate_message`, also run by the HTTP side for each message of a request),
corrects its time for the client's clock skew and keeps its context.

Identity: `userId` and `anonymousId` exactly as the client sent them (numbers as text),
both kept; the messageId is the client's own when it sent one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from .base import Delivery, Draft, NormalizeError, Person, register
from .event import ExternalId, Library, utc_text

TYPES = ("track", "identify", "page", "screen", "group", "alias")
REFUSED = "x-collect-refused"
"""The stored header saying why the front door refused a message (gateway/collect.py)."""
MAX_MESSAGE_ID = 100
"""The longest messageId: Segment's support says "limited to 100 characters"
(https://github.com/segmentio/segment-docs/issues/5924); its HTTP API page says "fewer
than 100" (https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/
#errors). 100 itself is taken, as gateway/collect.py does for the delivery id."""

_IDS = ("userId", "anonymousId", "previousId", "groupId")
_OBJECTS = ("properties", "traits", "context", "integrations")
_TIMES = ("timestamp", "sentAt", "originalTimestamp")
_PROPERTIES = ("track", "page", "screen")
"""The types whose `properties` are kept; identify and group carry `traits` instead."""
_ARTICLE = {"identify": "an identify", "alias": "an alias"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The Segment Spec's common context fields (https://segment.com/docs/connections/spec/common/
# #context), by their JSON name and the `Context` attribute that holds them.
_CONTEXT_OBJECTS = (
    ("app", "app"),
    ("campaign", "campaign"),
    ("consent", "consent"),
    ("device", "device"),
    ("location", "location"),
    ("network", "network"),
    ("os", "os"),
    ("page", "page"),
    ("referrer", "referrer"),
    ("screen", "screen"),
    ("traits", "traits"),
    ("userAgentData", "user_agent_data"),
)
_CONTEXT_TEXTS = (
    ("channel", "channel"),
    ("groupId", "group_id"),
    ("ip", "ip"),
    ("locale", "locale"),
    ("timezone", "timezone"),
    ("userAgent", "user_agent"),
)


def validate_message(msg: Any) -> str | None:
    """Why a collected message cannot be taken (Segment HTTP Tracking API rules), or None.

    A field given as null counts as absent. Pure and cheap: it runs for every message of
    a request before the request is answered.
    """
    if not isinstance(msg, dict):
        return f"a message must be a JSON object, not {_kind(msg)}"
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in TYPES:
        if kind is None:
            return "a message needs `type`: track, identify, page, screen, group or alias"
        return f"`type` must be track, identify, page, screen, group or alias, not {_show(kind)}"
    for key in _IDS:
        value = msg.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, str | int | float)
        ):
            return f"`{key}` must be a string or a number, not {_kind(value)}"
    # https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/#errors:
    # "each payload has a userId and/or anonymousId"; "All Track events sent to Segment
    # must have an `event` field". Alias and group need what they join (Spec: alias, group).
    a = _ARTICLE.get(kind, f"a {kind}")
    if kind == "alias":
        if _id(msg.get("userId")) is None:
            return "an alias message needs `userId`"
        if _id(msg.get("previousId")) is None:
            return "an alias message needs `previousId`"
    elif _id(msg.get("userId")) is None and _id(msg.get("anonymousId")) is None:
        return f"{a} message needs `userId` or `anonymousId`"
    if kind == "track":
        event = msg.get("event")
        if event is not None and not isinstance(event, str):
            return f"`event` must be a string, not {_kind(event)}"
        if not event or not event.strip():
            return "a track message needs `event`"
    elif kind == "group" and _id(msg.get("groupId")) is None:
        return "a group message needs `groupId`"
    for key in _OBJECTS:
        value = msg.get(key)
        if value is not None and not isinstance(value, dict):
            return f"`{key}` must be an object, not {_kind(value)}"
    for key in _TIMES:
        value = msg.get(key)
        if value is not None and _instant(value) is None:
            return (
                f"`{key}` must be an ISO 8601 time such as 2024-05-01T12:00:00.000Z, "
                f"not {_show(value)}"
            )
    message_id = msg.get("messageId")
    if message_id is not None:
        if not isinstance(message_id, str) or not message_id:
            return f"`messageId` must be a non-empty string, not {_show(message_id)}"
        if len(message_id) > MAX_MESSAGE_ID:
            return (
                f"`messageId` must be at most {MAX_MESSAGE_ID} characters "
                f"(it has {len(message_id)})"
            )
        if not message_id.isprintable():
            return "`messageId` must be printable text (no control characters)"
    return None


@register("collect")
def normalize(delivery: Delivery) -> list[Draft]:
    """The one event a stored collect message becomes; NormalizeError (quarantine) with
    validate_message's reason when it is not a valid message."""
    refused = delivery.headers.get(REFUSED)
    if refused:  # the front door refused it (too large, invalid): quarantined, not lost
        raise NormalizeError(refused)
    msg = delivery.payload
    reason = validate_message(msg)
    if reason is not None:
        raise NormalizeError(reason)
    kind = msg["type"]
    received = _EPOCH + timedelta(milliseconds=delivery.received_at_ms)
    given = msg.get("timestamp")
    original = _instant(given if given is not None else msg.get("originalTimestamp"))
    sent = _instant(msg.get("sentAt"))
    # Segment's clock-skew correction, https://segment.com/docs/connections/spec/common/
    # #timestamps: "`timestamp`: calculated by Segment to correct client-device clock skew
    # using the following formula: `receivedAt` - (`sentAt` - `originalTimestamp`)", where
    # originalTimestamp is "time on the client device when call was invoked OR the
    # `timestamp` value manually passed in through server-side libraries". sentAt and
    # receivedAt are "assumed to occur at the same time", so their difference is the skew.
    if original is None:
        when = received
    elif sent is None:
        when = original
    else:
        try:
            when = received - (sent - original)
        except OverflowError:  # a skew past year 1 or 9999: the client's clock is junk
            when = received
    return [
        Draft(
            type=kind,
            event=msg.get("event") if kind == "track" else None,
            name=msg.get("name") if kind in ("page", "screen") else None,
            properties=dict(msg.get("properties") or {}) if kind in _PROPERTIES else {},
            traits=dict(msg.get("traits") or {}) if kind in ("identify", "group") else {},
            timestamp=utc_text(when),
            original_timestamp=utc_text(original) if original is not None else None,
            person=Person(user_id=_id(msg.get("userId"))),
            anonymous_id=_id(msg.get("anonymousId")),
            group_id=_id(msg.get("groupId")),
            previous_id=_id(msg.get("previousId")),
            message_id=msg.get("messageId"),
            context=_context(msg.get("context") or {}, delivery.headers),
        )
    ]


def _context(given: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """The client's Spec context fields (wrong-typed ones left out), by Context attribute;
    `ip` and `userAgent` from the request when the client gave none."""
    out: dict[str, Any] = {}
    for key, attr in _CONTEXT_OBJECTS:
        value = given.get(key)
        if isinstance(value, dict) and value:
            out[attr] = value
    for key, attr in _CONTEXT_TEXTS:
        value = _id(given.get(key))
        if value is not None:
            out[attr] = value
    if isinstance(active := given.get("active"), bool):
        out["active"] = active
    library = given.get("library")
    if isinstance(library, dict) and (name := _id(library.get("name"))) is not None:
        out["library"] = Library(name, _id(library.get("version")) or "")
    external = _external_ids(given.get("externalIds"))
    if external:
        out["external_ids"] = external
    # The request's address and agent are the person's only when a browser or an app sent
    # it; a server library's request carries the server's (Segment fills them the same way).
    lib = out.get("library")
    if lib is None or lib.name not in SERVER_LIBRARIES:
        if "ip" not in out and (ip := headers.get("x-collect-ip")):
            out["ip"] = ip
        if "user_agent" not in out and (agent := headers.get("user-agent")):
            out["user_agent"] = agent
    return out


SERVER_LIBRARIES = frozenset(
    {
        "analytics-python",
        "analytics-node",
        "@segment/analytics-node",
        "analytics-ruby",
        "analytics-go",
        "analytics-java",
        "analytics-php",
        "analytics.NET",
        "analytics-dotnet",
        "analytics-clojure",
    }
)
"""Segment's server-side libraries (context.library.name): their requests come from a
server, so its address and user agent are not the person's."""


def _external_ids(given: Any) -> list[ExternalId]:
    """The client's context.externalIds: the entries with an id and a type."""
    out = []
    for item in given if isinstance(given, list) else ():
        if not isinstance(item, dict):
            continue
        eid, etype = _id(item.get("id")), _id(item.get("type"))
        if eid is not None and etype is not None:
            extra = {k: v for k in ("collection", "encoding") if (v := _id(item.get(k)))}
            # A default value is left out of the JSON (msgspec's omit_defaults compares by
            # identity), as on webhook events: {"id", "type"} unless it says otherwise.
            if extra.get("collection") == "users":
                del extra["collection"]
            if extra.get("encoding") == "none":
                del extra["encoding"]
            out.append(ExternalId(eid, etype, **extra))
    return out


def _id(value: Any) -> str | None:
    """An id (or a Spec text field) as text: strings and numbers count, blank ones do not."""
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _instant(value: Any) -> datetime | None:
    """An ISO 8601 time (a string; no offset means UTC) as an aware UTC datetime, or None."""
    if not isinstance(value, str):
        return None
    try:
        # Python 3.11 reads ISO 8601 as clients write it: `Z`, offsets, fractions of any
        # length (JavaScript's toISOString, Python's isoformat), basic and week forms.
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+05:00 is before the first representable
        return None


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for reasons a person reads."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _show(value: Any) -> str:
    """A short quote of a wrong value: a string (cut at 40 characters) or its kind."""
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "…")
    return _kind(value)
