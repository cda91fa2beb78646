"""`mixpanel`: the /import API in strict mode, and people profiles through /engage.

track -> an event with `time` (ms) and `$insert_id` (the messageId without dashes: 32
characters of [0-9a-f], within Mixpanel's 36 of [A-Za-z0-9-]), so Mixpanel drops copies;
identify -> a profile `$set` through /engage (with `verbose=1`, so that a refused update
says so instead of a bare 0 under HTTP 200). In strict mode Mixpanel imports the valid records of a
batch and answers 400 with `failed_records` for the others: only those are
dead-lettered, the rest count as sent (they are in).
https://developer.mixpanel.com/reference/import-events

alias (the identity graph joining a vendor id to a person) goes through /import too, in
the way the project's ID merge API takes it (`id_merge`, which cannot change once a
project has data; see Project Settings > Identity Merge):
- `simplified` (the default for new organizations): a `$identify` event carrying
  `$device_id` = previousId and `$user_id` = userId (`distinct_id` = userId). The first
  event with both links them, and every event sent with either id as its `distinct_id`
  counts for the user. `$create_alias` and `$merge` do nothing in these projects.
  https://docs.mixpanel.com/docs/tracking-methods/id-management/identifying-users-simplified
- `original`: `$merge` with `$distinct_ids` = [userId, previousId]. `$identify` would
  merge only a UUIDv4 `$anon_id` (a vendor id like `stripe:cus_123` is not one), and
  `$create_alias` is the legacy call. `$merge` is irreversible and fails past 500 ids
  in one person. https://docs.mixpanel.com/reference/identity-merge
Projects without ID merge (legacy ID management) cannot join past histories: not handled.

Location: Mixpanel geolocates an event from the address that sent it (the gateway's data
centre) unless told otherwise. /import is called with `ip=0`, which "will not perform
geolocation parsing using the IP address of the request" (the ingestion API's `ip`
parameter, https://github.com/mixpanel/docs/blob/main/openapi/src/common/ingestion-api.yaml;
mixpanel-node sends `ip: metrics.config.geolocate ? 1 : 0`, off by default, on /import
too), and each event carries `ip` = `context.ip` when there is one: "If you supply a
property `ip` with an IP address, Mixpanel will automatically do a GeoIP lookup"
(https://developer.mixpanel.com/reference/import-events, GeoIP Enrichment). Without one
the event has no location rather than the gateway's. Profiles take `$ip`, "0" to ignore it
(https://docs.mixpanel.com/docs/tracking-best-practices/geolocation#ignore-ip-address).

Profiles: traits go to Mixpanel's reserved profile properties (`$email`, `$name`,
`$first_name`, `$last_name`, `$phone`, `$avatar`, `$created`), which its UI, reports and
cohort syncs read; a trait already named `$email` etc. wins.
https://docs.mixpanel.com/docs/data-structure/property-reference/reserved-properties
"""

from __future__ import annotations

import base64
from typing import Any, ClassVar

import httpx

from gateway.config import Secret
from gateway.errors import ConfigError

from .base import (
    OK,
    DestinationConfig,
    HttpDestination,
    Result,
    encode_json,
    fail,
    register,
    unix_seconds,
)

ID_MERGE_APIS = ("simplified", "original")
"""Mixpanel's two Identity Merge APIs, which join histories differently."""


class MixpanelConfig(DestinationConfig, tag="mixpanel", kw_only=True):
    project_token: Secret
    """The project token (for profiles, and the import's project)."""
    service_account: str | None = None
    """A service account's username (with `secret` and `project_id`)."""
    secret: Secret | None = None
    """The service account's secret, or the project's API secret alone."""
    project_id: str | None = None
    host: str = "https://api.mixpanel.com"
    """https://api-eu.mixpanel.com for EU data residency."""
    id_merge: str = "simplified"
    """The project's Identity Merge API, which decides what an alias sends: simplified
    (Mixpanel's default for new organizations) or original."""

    def check(self) -> None:
        super().check()
        if self.id_merge not in ID_MERGE_APIS:
            raise ConfigError(
                "must be simplified or original (the project's Identity Merge setting)",
                path="id_merge",
            )
        if self.secret is None:
            raise ConfigError(
                "/import needs `secret` (a service account's, with "
                "service_account and project_id, or the project's API secret)",
                path="secret",
            )
        if self.service_account and not self.project_id:
            raise ConfigError("a service account needs project_id", path="project_id")


RESERVED_TRAITS = {
    "email": "$email",
    "name": "$name",
    "firstName": "$first_name",
    "first_name": "$first_name",
    "lastName": "$last_name",
    "last_name": "$last_name",
    "phone": "$phone",
    "avatar": "$avatar",
    "createdAt": "$created",
    "created_at": "$created",
}
"""Segment-style trait names -> Mixpanel's reserved profile properties."""


def profile_set(traits: dict[str, Any]) -> dict[str, Any]:
    """The `$set` of a profile: traits, the reserved ones under Mixpanel's names."""
    out: dict[str, Any] = {}
    for key, value in traits.items():
        if key not in RESERVED_TRAITS:
            out[key] = value
    for key, value in traits.items():
        if key in RESERVED_TRAITS:
            out.setdefault(RESERVED_TRAITS[key], value)
    return out


def insert_id(message_id: str) -> str:
    return message_id.replace("-", "")[:36]


def to_mixpanel(event: dict[str, Any], now: float) -> dict[str, Any]:
    properties = dict(event.get("properties") or {})
    properties.update(_common(event, now))
    return {"event": event.get("event") or event["type"], "properties": properties}


def alias_to_mixpanel(
    event: dict[str, Any], now: float, id_merge: str, token: str
) -> dict[str, Any]:
    """The /import record that joins previousId's history to userId's."""
    user, previous = event.get("userId"), event.get("previousId")
    properties = _common(event, now)
    if id_merge == "original":
        # $merge takes exactly two ids and the project token.
        properties.update({"$distinct_ids": [user, previous], "token": token})
        return {"event": "$merge", "properties": properties}
    # What the JS SDK's identify() sends in a Simplified project: both ids on one event.
    properties.update({"$device_id": previous, "$user_id": user})
    return {"event": "$identify", "properties": properties}


def _common(event: dict[str, Any], now: float) -> dict[str, Any]:
    """What every /import record has: strict mode needs time, distinct_id and $insert_id;
    `ip` (the person's, for geolocation) when the event has one."""
    context = event.get("context") or {}
    common = {
        "time": int(unix_seconds(event.get("timestamp"), now) * 1000),
        "distinct_id": event.get("userId") or event.get("anonymousId"),
        "$insert_id": insert_id(event["messageId"]),
        "$source": "webhook-gateway",
        "source": context.get("source", {}).get("name"),
    }
    if context.get("ip"):
        common["ip"] = context["ip"]
    return common


@register
class MixpanelDestination(HttpDestination):
    config_type = MixpanelConfig
    consent_purpose: ClassVar[str | None] = "analytics"
    max_batch: ClassVar[int] = 2000
    max_bytes: ClassVar[int] = 10 * 1024 * 1024

    def __init__(self, name: str, config: MixpanelConfig) -> None:
        super().__init__(name, config)
        user = config.service_account or (config.secret.reveal() if config.secret else "")
        password = config.secret.reveal() if config.service_account and config.secret else ""
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.auth = {"authorization": f"Basic {token}", "content-type": "application/json"}

    async def _send(self, batch: list[dict[str, Any]], now: float) -> list[Result]:
        # Profiles and events go to two endpoints.
        return await self.split_send(batch, now, ("identify",), self._engage, self._import)

    async def _import(self, batch: list[dict[str, Any]], now: float) -> list[Result]:
        config: MixpanelConfig = self.config  # type: ignore[assignment]
        # ip=0: never geolocate from the gateway's own address (see the module docstring)
        query = "strict=1&ip=0" + (f"&project_id={config.project_id}" if config.project_id else "")
        records = [
            alias_to_mixpanel(e, now, config.id_merge, config.project_token.reveal())
            if e["type"] == "alias"
            else to_mixpanel(e, now)
            for e in batch
        ]
        body = encode_json(records)
        return await self.post(
            f"{config.host}/import?{query}", self.auth, body, batch, now, self._import
        )

    async def _engage(self, batch: list[dict[str, Any]], now: float) -> list[Result]:
        config: MixpanelConfig = self.config  # type: ignore[assignment]
        body = encode_json(
            [
                {
                    "$token": config.project_token.reveal(),
                    "$distinct_id": e.get("userId") or e.get("anonymousId"),
                    "$set": profile_set(e.get("traits") or {}),
                    # Without $ip Mixpanel would place every profile where the gateway runs
                    "$ip": (e.get("context") or {}).get("ip") or "0",
                }
                for e in batch
            ]
        )
        return await self.post(
            f"{config.host}/engage?verbose=1",
            {"content-type": "application/json"},
            body,
            batch,
            now,
            self._engage,
        )

    def results(self, response: httpx.Response, batch: list[dict[str, Any]]) -> list[Result]:
        if response.request.url.path.endswith("/engage"):
            return self._engage_results(response, batch)
        failed = _failed_records(response)
        if failed is None:
            return super().results(response, batch)
        # The valid records were imported: only the named ones failed.
        results: list[Result] = [OK] * len(batch)
        for record in failed:
            index = record.get("index") if isinstance(record, dict) else None
            if isinstance(index, int) and 0 <= index < len(batch):
                results[index] = fail(
                    f"Mixpanel: {record.get('field')}: {record.get('message')}", 400
                )
        return results

    def _engage_results(
        self, response: httpx.Response, batch: list[dict[str, Any]]
    ) -> list[Result]:
        if not response.is_success:
            return super().results(response, batch)
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") == 0:
            why = f"Mixpanel /engage: {body.get('error') or 'refused'}"[:300]
            return [fail(why, response.status_code)] * len(batch)
        return [OK] * len(batch)

    def splittable(self, response: httpx.Response, results: list[Result]) -> bool:
        if _failed_records(response) is not None:
            return False  # strict /import already named the bad records; the rest are in
        if response.is_success:
            # /engage refuses a whole batch (status 0 under HTTP 200) for one bad profile;
            # a bad project token refuses every one alike: no bisecting that
            return all(r.outcome == "fail" for r in results) and not any(
                "token" in r.reason.lower() for r in results
            )
        return super().splittable(response, results)


def _failed_records(response: httpx.Response) -> list[Any] | None:
    """The `failed_records` of a strict /import's 400 (None when it is another reply)."""
    if response.status_code != 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    failed = body.get("failed_records") if isinstance(body, dict) else None
    return failed if isinstance(failed, list) else None
