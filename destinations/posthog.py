"""`posthog`: PostHog's batch capture API.

track -> the event by name; identify -> `$identify` with `$set` (the traits); group ->
`$groupidentify`; page -> `$pageview`; screen -> `$screen`. `uuid` is the messageId
(PostHog drops copies), `distinct_id` the userId or anonymousId, `timestamp` the event's
own time. `historical_migration: true` marks backfills.
https://posthog.com/docs/api/capture

alias (the identity graph joining a vendor id to a person) -> `$create_alias` with
`distinct_id` = userId and `properties.alias` = previousId. PostHog merges the `alias`
side into the `distinct_id` side, past events included, and refuses (an ingestion
warning `cannot_merge_already_identified`, the event still 200) when the `alias` side is
already identified: the anonymous previousId must be that side, never the userId.
`$identify` with `$anon_distinct_id` merges the same way; `$merge_dangerously` skips the
check and is kept out. https://posthog.com/docs/product-analytics/identify
This is the SDKs' direction too: posthog-js `alias(alias, original)` sends
`capture('$create_alias', { alias: alias, distinct_id: original })`, `original` being "the
current identifier being used for this user" and `alias` a new one, refused when it is
already an identified person ("Attempting to create alias for existing People user");
posthog-python `alias(previous_id, distinct_id)` likewise puts the id in use in
`distinct_id` and the id to add in `properties.alias`
(https://github.com/PostHog/posthog-js/blob/main/packages/browser/src/posthog-core.ts,
https://github.com/PostHog/posthog-python/blob/master/posthog/client.py `alias`). Here the
person (userId) is the id in use and the vendor's previousId the id added.

Location: PostHog geolocates an event from its `$ip` property, or else from the address
that sent it, which for the gateway is its own data centre. So `$ip` is the event's
`context.ip`, and without one `$geoip_disable: true` turns the lookup off (the property
posthog-python sets for `disable_geoip`). https://posthog.com/docs/cdp/geoip-enrichment
"""

from __future__ import annotations

from typing import Any, ClassVar

from gateway.config import Secret

from .base import DestinationConfig, HttpDestination, encode_json, register


class PostHogConfig(DestinationConfig, tag="posthog", kw_only=True):
    api_key: Secret
    """The project API key (phc_...)."""
    host: str = "https://us.i.posthog.com"
    """https://eu.i.posthog.com in the EU, or your own instance."""
    historical_migration: bool = False
    """Mark the events as a backfill (PostHog ingests them apart from live traffic)."""


_NAMES = {
    "identify": "$identify",
    "group": "$groupidentify",
    "page": "$pageview",
    "screen": "$screen",
    "alias": "$create_alias",
}


def to_posthog(event: dict[str, Any]) -> dict[str, Any]:
    kind = event["type"]
    properties: dict[str, Any] = dict(event.get("properties") or {})
    if kind == "identify":
        properties["$set"] = event.get("traits") or {}
    elif kind == "group":
        properties.update(
            {
                "$group_type": "company",
                "$group_key": event.get("groupId"),
                "$group_set": event.get("traits") or {},
            }
        )
    elif kind == "alias":
        # The `alias` side is merged into `distinct_id` (the userId, below), and only if it
        # is not identified yet: an anonymous previousId always may be.
        properties["alias"] = event.get("previousId")
    elif kind in ("page", "screen") and event.get("name"):
        properties["$screen_name" if kind == "screen" else "title"] = event["name"]
    context = event.get("context") or {}
    source = context.get("source", {})
    ip = context.get("ip") or properties.get("$ip")
    if ip:
        properties["$ip"] = ip
    else:
        properties["$geoip_disable"] = True
    properties.update(
        {
            "$lib": "webhook-gateway",
            "source": source.get("name"),
            "source_event_type": source.get("eventType"),
        }
    )
    return {
        "event": event.get("event") if kind == "track" else _NAMES[kind],
        "distinct_id": event.get("userId") or event.get("anonymousId"),
        "properties": properties,
        "timestamp": event["timestamp"],
        "uuid": event["messageId"],
    }


@register
class PostHogDestination(HttpDestination):
    config_type = PostHogConfig
    consent_purpose: ClassVar[str | None] = "analytics"
    max_batch: ClassVar[int] = 1000
    max_bytes: ClassVar[int] = 10 * 1024 * 1024

    def request(self, batch: list[dict[str, Any]], now: float) -> tuple[str, dict[str, str], bytes]:
        config: PostHogConfig = self.config  # type: ignore[assignment]
        body: dict[str, Any] = {
            "api_key": config.api_key.reveal(),
            "batch": [to_posthog(e) for e in batch],
        }
        if config.historical_migration:
            body["historical_migration"] = True
        url = config.host.rstrip("/") + "/batch/"
        return url, {"content-type": "application/json"}, encode_json(body)
