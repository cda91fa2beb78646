"""`amplitude`: Amplitude's HTTP V2 API.

`insert_id` is the messageId (Amplitude drops copies for 7 days), `time` the event's own
time in ms; `user_id` is the userId, `device_id` the anonymousId (Amplitude needs one of
them); identify -> `$identify` with the traits under `user_properties.$set`. A 400 names
the bad events by index (`events_with_invalid_fields`...): those are dead-lettered, and
the others, refused with them, are sent again right away.
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


def to_amplitude(event: dict[str, Any], now: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "event_type": event.get("event") if event["type"] == "track" else f"${event['type']}",
        "time": int(unix_seconds(event.get("timestamp"), now) * 1000),
        "insert_id": event["messageId"],
        "platform": "webhook-gateway",
    }
    if event.get("userId"):
        out["user_id"] = event["userId"]
    if event.get("anonymousId"):
        out["device_id"] = event["anonymousId"]
    if event["type"] == "identify":
        out["user_properties"] = {"$set": event.get("traits") or {}}
    else:
        out["event_properties"] = event.get("properties") or {}
    return out


def to_identification(event: dict[str, Any]) -> dict[str, Any]:
    """An alias as an Identify API identification: the user id of the anonymous device."""
    return {"user_id": event.get("userId"), "device_id": event.get("previousId")}


@register
class AmplitudeDestination(HttpDestination):
    config_type = AmplitudeConfig
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
            "events": [to_amplitude(e, now) for e in batch],
            "options": {"min_id_length": config.min_id_length},
        }
        return config.endpoint, {"content-type": "application/json"}, encode_json(body)

    def results(self, response: httpx.Response, batch: list[dict[str, Any]]) -> list[Result]:
        if response.status_code != 400 or response.request.url == httpx.URL(self.identify_url):
            return super().results(response, batch)  # the Identify API names no events
        try:
            body = response.json()
        except ValueError:
            return super().results(response, batch)
        bad: dict[int, str] = {}
        for key in ("events_with_invalid_fields", "events_with_missing_fields"):
            for field, indexes in (body.get(key) or {}).items():
                for index in indexes if isinstance(indexes, list) else []:
                    if isinstance(index, int):
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
