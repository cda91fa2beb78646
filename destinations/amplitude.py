"""`amplitude`: Amplitude's HTTP V2 API.

`insert_id` is the messageId (Amplitude drops copies for 7 days), `time` the event's own
time in ms; `user_id` is the userId, `device_id` the anonymousId (Amplitude needs one of
them); identify -> `$identify` with the traits under `user_properties.$set`; group ->
`$groupidentify` with `groups` = {group_type: groupId} and the traits under
`group_properties.$set`, as Amplitude's own SDKs send a group identify through this API.
A track's `revenue`, `price`, `quantity`, `product_id` and `revenueType` properties also
go in Amplitude's revenue fields (Amplitude counts revenue only from those).
A 400 names the bad events by index (`events_with_invalid_fields`,
`events_with_invalid_id_lengths`...): those are dead-lettered, and the others, refused
with them, are sent again right away. A 400 about the request itself (an invalid API key,
`missing_field: api_key`) fails every event with a credentials hint and is not bisected.
https://amplitude.com/docs/apis/analytics/http-v2

alias (the identity graph joining a vendor id to a person) -> the Identify API with
`identification` = {user_id: userId, device_id: previousId}: it sets the user id of that
device id, not counted as an event. The device's anonymous events (sent with the vendor id
as `device_id`) then count for the user: the same Amplitude ID when the user id is new,
a merge of the two Amplitude IDs when it is known. Limits: Amplitude never merges two user
ids (the User Mapping API does that only with the Portfolio add-on, and maps user ids, not
device ids), nor move a device id's past events off a user id it was already tied to;
the merge shows in charts, not in raw event exports (Redshift). https://amplitude.com/docs/apis/analytics/identify
https://amplitude.com/docs/data/sources/instrument-track-unique-users
"""

from __future__ import annotations

import urllib.parse
from typing import Any, ClassVar

import httpx

from gateway.config import Secret

from .base import (
    DestinationConfig,
    HttpDestination,
    Result,
    encode_json,
    fail,
    register,
    retry,
    unix_seconds,
)


class AmplitudeConfig(DestinationConfig, tag="amplitude", kw_only=True):
    api_key: Secret
    endpoint: str = "https://api2.amplitude.com/2/httpapi"
    """https://api.eu.amplitude.com/2/httpapi for the EU data center."""
    identify_endpoint: str | None = None
    """Where alias goes (the Identify API); null: /identify on `endpoint`'s host
    (https://api2.amplitude.com/identify, https://api.eu.amplitude.com/identify)."""
    min_id_length: int = 1
    """Amplitude's minimum user_id/device_id length (its default is 5)."""
    group_type: str = "[Segment] Group"
    """The Amplitude group type of a group call's groupId (Segment's own Amplitude
    destination uses "[Segment] Group" when no group type is configured)."""


def to_amplitude(
    event: dict[str, Any], now: float, group_type: str = "[Segment] Group"
) -> dict[str, Any]:
    kind = event["type"]
    out: dict[str, Any] = {
        "event_type": event.get("event")
        if kind == "track"
        else "$groupidentify"
        if kind == "group"
        else f"${kind}",
        "time": int(unix_seconds(event.get("timestamp"), now) * 1000),
        "insert_id": event["messageId"],
        "platform": "webhook-gateway",
    }
    if event.get("userId"):
        out["user_id"] = event["userId"]
    if event.get("anonymousId"):
        out["device_id"] = event["anonymousId"]
    if kind == "identify":
        out["user_properties"] = {"$set": event.get("traits") or {}}
    elif kind == "group":
        # The group identify event of Amplitude's SDKs (createGroupIdentifyEvent):
        # https://amplitude.com/docs/apis/analytics/group-identify
        out["groups"] = {group_type: str(event.get("groupId") or "")}
        out["group_properties"] = {"$set": event.get("traits") or {}}
    else:
        properties = event.get("properties") or {}
        out["event_properties"] = properties
        if kind == "track":
            out.update(revenue_fields(properties))
    return out


# Segment Spec property -> Amplitude's revenue field, and its type. "price: required for
# revenue data if the revenue field isn't sent; quantity defaults to 1; revenue = price x
# quantity when all three are sent" - https://amplitude.com/docs/apis/analytics/http-v2
_REVENUE_FIELDS: tuple[tuple[tuple[str, ...], str, type], ...] = (
    (("revenue",), "revenue", float),
    (("price",), "price", float),
    (("quantity",), "quantity", int),
    (("product_id", "productId"), "productId", str),
    (("revenueType", "revenue_type"), "revenueType", str),
)


def revenue_fields(properties: dict[str, Any]) -> dict[str, Any]:
    """Amplitude's revenue fields from the properties; a value of the wrong type (a
    non-numeric revenue, say) is left out rather than get the event refused."""
    out: dict[str, Any] = {}
    for names, field, kind in _REVENUE_FIELDS:
        value = next((properties[n] for n in names if properties.get(n) is not None), None)
        if value is None or isinstance(value, bool | dict | list):
            continue
        try:
            out[field] = int(float(value)) if kind is int else kind(value)
        except (TypeError, ValueError, OverflowError):
            continue
    if "revenue" not in out and "price" not in out:
        return {}  # no amount: a product id alone is not revenue
    return out


def to_identification(event: dict[str, Any]) -> dict[str, Any]:
    """An alias as an Identify API identification: the user id of the anonymous device."""
    return {"user_id": event.get("userId"), "device_id": event.get("previousId")}


@register
class AmplitudeDestination(HttpDestination):
    config_type = AmplitudeConfig
    consent_purpose: ClassVar[str | None] = "analytics"
    max_batch: ClassVar[int] = 2000
    max_bytes: ClassVar[int] = 1024 * 1024

    def __init__(self, name: str, config: AmplitudeConfig) -> None:
        super().__init__(name, config)
        parts = urllib.parse.urlsplit(config.endpoint)
        self.identify_url = config.identify_endpoint or urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, "/identify", "", "")
        )

    async def _send(self, batch: list[dict[str, Any]], now: float) -> list[Result]:
        # Events and aliases go to two endpoints.
        return await self.split_send(batch, now, ("alias",), self._identify, super()._send)

    async def _identify(self, batch: list[dict[str, Any]], now: float) -> list[Result]:
        config: AmplitudeConfig = self.config  # type: ignore[assignment]
        # A form, like Amplitude's own Segment action sends it (options included).
        form = {
            "api_key": config.api_key.reveal(),
            "identification": encode_json([to_identification(e) for e in batch]).decode(),
            "options": encode_json({"min_id_length": config.min_id_length}).decode(),
        }
        headers = {"content-type": "application/x-www-form-urlencoded"}
        body = urllib.parse.urlencode(form).encode()
        return await self.post(self.identify_url, headers, body, batch, now, self._identify)

    def request(self, batch: list[dict[str, Any]], now: float) -> tuple[str, dict[str, str], bytes]:
        config: AmplitudeConfig = self.config  # type: ignore[assignment]
        body = {
            "api_key": config.api_key.reveal(),
            "events": [to_amplitude(e, now, config.group_type) for e in batch],
            "options": {"min_id_length": config.min_id_length},
        }
        return config.endpoint, {"content-type": "application/json"}, encode_json(body)

    def results(self, response: httpx.Response, batch: list[dict[str, Any]]) -> list[Result]:
        problem = _about_request(response)
        if problem:
            # Every event would be refused the same way: not theirs to dead-letter one by
            # one (and the reply, which echoes the key, is not copied into the reason).
            return [fail(problem, response.status_code)] * len(batch)
        if response.status_code != 400 or response.request.url == httpx.URL(self.identify_url):
            return super().results(response, batch)  # the Identify API names no events
        try:
            body = response.json()
        except ValueError:
            return super().results(response, batch)
        if not isinstance(body, dict):
            return super().results(response, batch)
        config: AmplitudeConfig = self.config  # type: ignore[assignment]
        bad: dict[int, str] = {}
        for key in (
            "events_with_invalid_fields",
            "events_with_missing_fields",
            "events_with_invalid_id_lengths",
        ):
            fields = body.get(key)
            for field, indexes in (fields if isinstance(fields, dict) else {}).items():
                for index in indexes if isinstance(indexes, list) else []:
                    if isinstance(index, int):
                        if key == "events_with_invalid_id_lengths":
                            bad[index] = (
                                f"Amplitude: {field} shorter than the minimum id length "
                                f"(min_id_length: {config.min_id_length})"
                            )
                            continue
                        kind = "missing" if "missing" in key else "invalid"
                        bad[index] = f"Amplitude: {kind} field {field}"
        for index in body.get("silenced_events") or []:
            if isinstance(index, int):
                bad[index] = "Amplitude: silenced (the device or user sends too much)"
        if not bad:
            return super().results(response, batch)
        # Amplitude took none of them: the good ones are sent again at once.
        return [
            fail(bad[i], 400) if i in bad else retry("sent again after a bad neighbour", 0)
            for i in range(len(batch))
        ]

    def splittable(self, response: httpx.Response, results: list[Result]) -> bool:
        return not _about_request(response) and super().splittable(response, results)


CREDENTIALS_HINT = " (check this destination's credentials: every event will fail the same way)"


def _about_request(response: httpx.Response) -> str:
    """The reason when a 400 is about the request, not its events: an invalid API key
    (`{"code": 400, "error": "Invalid API key: <key>"}`; the Identify API answers
    `invalid_api_key`), or `missing_field` naming a request field such as api_key.
    https://amplitude.com/docs/apis/analytics/http-v2#400-bad-request
    https://github.com/amplitude/Amplitude-Swift/issues/260 (the invalid key reply)"""
    if response.status_code != 400:
        return ""
    text = response.text
    if "invalid api key" in text.lower() or "invalid_api_key" in text.lower():
        return (
            "HTTP 400: Amplitude: invalid API key (or a key of the other data center: "
            "set endpoint for the EU)" + CREDENTIALS_HINT
        )
    try:
        body = response.json()
    except ValueError:
        return ""
    missing = body.get("missing_field") if isinstance(body, dict) else None
    if missing == "api_key":
        return "HTTP 400: Amplitude: the request misses api_key" + CREDENTIALS_HINT
    return ""
