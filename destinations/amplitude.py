"""`amplitude`: Amplitude's HTTP V2 API.

`insert_id` is the messageId (Amplitude drops copies for 7 days), `time` the event's own
time in ms; `user_id` is the userId, `device_id` the anonymousId (Amplitude needs one of
them); identify -> `$identify` with the traits under `user_properties.$set`. A 400 names
the bad events by index (`events_with_invalid_fields`...): those are dead-lettered, and
the others, refused with them, are sent again right away.
https://amplitude.com/docs/apis/analytics/http-v2
"""

from __future__ import annotations

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


@register
class AmplitudeDestination(HttpDestination):
    config_type = AmplitudeConfig
    max_batch: ClassVar[int] = 2000
    max_bytes: ClassVar[int] = 1024 * 1024

    def request(self, batch: list[dict[str, Any]], now: float) -> tuple[str, dict[str, str], bytes]:
        config: AmplitudeConfig = self.config  # type: ignore[assignment]
        body = {
            "api_key": config.api_key.reveal(),
            "events": [to_amplitude(e, now) for e in batch],
            "options": {"min_id_length": config.min_id_length},
        }
        return config.endpoint, {"content-type": "application/json"}, encode_json(body)

    def results(self, response: httpx.Response, batch: list[dict[str, Any]]) -> list[Result]:
        if response.status_code != 400:
            return super().results(response, batch)
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
