"""alias: each destination joins a vendor id's history to a person in the vendor's own way.

The identity graph emits one Segment alias when it learns that the id earlier events went
out under (`previousId`, their anonymousId) is a known person (`userId`). The requests
below are written by hand from each vendor's documentation (linked in each module's
docstring), not computed by the code under test.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest

from destinations import DESTINATION_TYPES
from gateway.config import parse_config
from gateway.errors import ConfigError
from tests.destinations.conftest import event

NOW = 1714564900.0  # 2024-05-01T12:01:40Z
MESSAGE_ID = "4f1c2b9e-8d7a-5e3f-9c6b-0a1d2e3f4a5b"

ALIAS: dict[str, Any] = {
    "type": "alias",
    "userId": "user-42",
    "previousId": "stripe:cus_123",
    "messageId": MESSAGE_ID,
    "timestamp": "2024-05-01T12:00:00.000Z",
    "receivedAt": "2024-05-01T12:00:01.000Z",
    "context": {
        "source": {
            "name": "stripe",
            "type": "stripe",
            "deliveryId": "evt_9",
            "eventType": "customer.updated",
        },
        "library": {"name": "webhook-gateway", "version": "0.1.0"},
    },
}


def make(text: str):
    cfg = parse_config(f"destinations:\n  d:\n{text}", "d.yaml", {}).destinations["d"]
    return DESTINATION_TYPES[cfg.__struct_config__.tag]("d", cfg)


async def send(dest, batch):
    await dest.start()
    try:
        return await dest.send(batch, NOW)
    finally:
        await dest.close()


# --- PostHog ----------------------------------------------------------------------------------


async def test_posthog_alias_is_create_alias_with_the_anonymous_id_as_the_alias(vendor):
    dest = make(f"    type: posthog\n    api_key: phc_test\n    host: {vendor.url}\n")
    [result] = await send(dest, [ALIAS])
    assert result.ok
    [seen] = vendor.requests
    assert seen.path == "/batch/"
    assert seen.json() == {
        "api_key": "phc_test",
        "batch": [
            {
                "event": "$create_alias",
                "distinct_id": "user-42",
                "properties": {
                    "alias": "stripe:cus_123",
                    "$lib": "webhook-gateway",
                    "source": "stripe",
                    "source_event_type": "customer.updated",
                    "$geoip_disable": True,  # no context.ip: not the gateway's location
                },
                "timestamp": "2024-05-01T12:00:00.000Z",
                "uuid": MESSAGE_ID,
            }
        ],
    }


class PostHogPersons:
    """PostHog's merge rule as its docs state it: `$create_alias` / `$identify` merge the
    `alias` / `$anon_distinct_id` person into the `distinct_id` person, unless the former
    is already identified (then the merge is skipped and the request still succeeds); the
    target of a merge becomes identified.
    https://posthog.com/docs/product-analytics/identify#when-are-merges-blocked"""

    def __init__(self) -> None:
        self.person: dict[str, int] = {}
        self.identified: set[int] = set()
        self.refused: list[tuple[str, str]] = []

    def of(self, distinct_id: str) -> int:
        return self.person.setdefault(distinct_id, len(self.person) + 1)

    def __call__(self, seen) -> tuple[int, dict, dict]:
        for e in seen.json()["batch"]:
            target = self.of(e["distinct_id"])
            other_id = {"$create_alias": "alias", "$identify": "$anon_distinct_id"}.get(e["event"])
            if other_id and other_id in e["properties"]:
                source = self.of(e["properties"][other_id])
                if source in self.identified and source != target:
                    self.refused.append((e["distinct_id"], e["properties"][other_id]))
                    continue
                for distinct_id, person in self.person.items():
                    if person == source:
                        self.person[distinct_id] = target
                self.identified.add(target)
        return (200, {}, {"status": "Ok"})


async def test_posthog_alias_joins_vendor_events_to_a_user_identified_before(vendor):
    """The common case: user-42 logged in on the web before Stripe's events arrived, so
    user-42 is identified in PostHog; the merge goes through only with the vendor id as
    the `alias` side."""
    persons = PostHogPersons()
    persons.identified.add(persons.of("user-42"))  # posthog-js identify()'d them at login
    vendor.default = persons
    dest = make(f"    type: posthog\n    api_key: phc_test\n    host: {vendor.url}\n")
    charges = [event(1, anonymousId="stripe:cus_123"), event(2, anonymousId="stripe:cus_123")]
    assert all(r.ok for r in await send(dest, charges))
    assert persons.person["stripe:cus_123"] != persons.person["user-42"]

    assert (await send(dest, [ALIAS]))[0].ok
    assert persons.refused == []
    assert persons.person["stripe:cus_123"] == persons.person["user-42"]


# --- Mixpanel ---------------------------------------------------------------------------------

MIXPANEL_COMMON = {
    "time": 1714564800000,
    "distinct_id": "user-42",
    "$insert_id": "4f1c2b9e8d7a5e3f9c6b0a1d2e3f4a5b",
    "$source": "webhook-gateway",
    "source": "stripe",
}


@pytest.mark.parametrize(
    ("setting", "record"),
    [
        pytest.param(
            "",
            {
                "event": "$identify",
                "properties": {
                    **MIXPANEL_COMMON,
                    "$device_id": "stripe:cus_123",
                    "$user_id": "user-42",
                },
            },
            id="simplified-by-default",
        ),
        pytest.param(
            "    id_merge: simplified\n",
            {
                "event": "$identify",
                "properties": {
                    **MIXPANEL_COMMON,
                    "$device_id": "stripe:cus_123",
                    "$user_id": "user-42",
                },
            },
            id="simplified",
        ),
        pytest.param(
            "    id_merge: original\n",
            {
                "event": "$merge",
                "properties": {
                    **MIXPANEL_COMMON,
                    "$distinct_ids": ["user-42", "stripe:cus_123"],
                    "token": "tok",
                },
            },
            id="original",
        ),
    ],
)
async def test_mixpanel_alias_per_id_merge_api(vendor, setting, record):
    dest = make(
        f"    type: mixpanel\n    project_token: tok\n    secret: api-secret\n"
        f"    host: {vendor.url}\n{setting}"
    )
    [result] = await send(dest, [ALIAS])
    assert result.ok
    [seen] = vendor.requests
    # $merge is taken only through /import, behind the project secret
    assert seen.path == "/import" and seen.query == "strict=1&ip=0"
    assert seen.headers["authorization"] == "Basic YXBpLXNlY3JldDo="  # api-secret:
    assert seen.json() == [record]


async def test_mixpanel_alias_keeps_its_place_among_events_and_profiles(vendor):
    """An alias is one more /import record: a strict 400 that names it fails it alone."""

    def judge(seen):
        if seen.path == "/engage":
            return (200, {}, {"status": 1})
        names = [r["event"] for r in seen.json()]
        failed = [
            {"index": i, "$insert_id": "x", "field": "properties", "message": "refused"}
            for i, name in enumerate(names)
            if name == "$merge"
        ]
        return (400, {}, {"code": 400, "num_records_imported": 1, "failed_records": failed})

    vendor.default = judge
    dest = make(
        f"    type: mixpanel\n    project_token: tok\n    secret: s\n    host: {vendor.url}\n"
        "    id_merge: original\n"
    )
    batch = [event(1, kind="identify", userId="user-42"), event(2), ALIAS, event(3)]
    results = await send(dest, batch)
    assert [r.outcome for r in results] == ["ok", "ok", "fail", "ok"]
    imported = next(r for r in vendor.requests if r.path == "/import").json()
    assert [r["event"] for r in imported] == ["Order Completed", "$merge", "Order Completed"]


def test_mixpanel_id_merge_is_checked():
    with pytest.raises(ConfigError) as e:
        make("    type: mixpanel\n    project_token: t\n    secret: s\n    id_merge: v3\n")
    assert "id_merge" in str(e.value) and "simplified or original" in str(e.value)


# --- Amplitude --------------------------------------------------------------------------------


def form(seen) -> dict[str, str]:
    fields = urllib.parse.parse_qs(seen.body.decode(), strict_parsing=True)
    assert all(len(v) == 1 for v in fields.values())
    return {k: v[0] for k, v in fields.items()}


async def test_amplitude_alias_sets_the_user_id_of_the_anonymous_device(vendor):
    vendor.default = (200, {}, b"success")
    dest = make(
        f"    type: amplitude\n    api_key: amp\n    endpoint: {vendor.url}/2/httpapi\n"
        "    min_id_length: 3\n"
    )
    [result] = await send(dest, [ALIAS])
    assert result.ok
    [seen] = vendor.requests
    assert seen.path == "/identify"
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
    fields = form(seen)
    assert fields.keys() == {"api_key", "identification", "options"}
    assert fields["api_key"] == "amp"
    assert json.loads(fields["identification"]) == [
        {"user_id": "user-42", "device_id": "stripe:cus_123"}
    ]
    assert json.loads(fields["options"]) == {"min_id_length": 3}


async def test_amplitude_alias_and_events_go_to_their_own_endpoints_in_order(vendor):
    def judge(seen):
        if seen.path == "/identify":
            return (400, {}, b"missing_event")
        return (200, {}, {"code": 200, "events_ingested": len(seen.json()["events"])})

    vendor.default = judge
    dest = make(f"    type: amplitude\n    api_key: amp\n    endpoint: {vendor.url}/2/httpapi\n")
    results = await send(dest, [event(1), event(2), ALIAS, event(3)])
    assert [r.outcome for r in results] == ["ok", "ok", "fail", "ok"]
    assert results[2].reason == "HTTP 400: missing_event" and results[2].status == 400
    [events] = [r for r in vendor.requests if r.path == "/2/httpapi"]
    assert [e["insert_id"] for e in events.json()["events"]] == [
        event(1)["messageId"],
        event(2)["messageId"],
        event(3)["messageId"],
    ]
    assert [r.path for r in vendor.requests].count("/identify") == 1


@pytest.mark.parametrize(
    ("settings", "url"),
    [
        ("", "https://api2.amplitude.com/identify"),
        (
            "    endpoint: https://api.eu.amplitude.com/2/httpapi\n",
            "https://api.eu.amplitude.com/identify",
        ),
        ("    endpoint: https://api2.amplitude.com/batch\n", "https://api2.amplitude.com/identify"),
        (
            "    identify_endpoint: https://proxy.example/amp/identify\n",
            "https://proxy.example/amp/identify",
        ),
    ],
)
def test_amplitude_identify_endpoint_follows_the_data_center(settings, url):
    dest = make(f"    type: amplitude\n    api_key: amp\n{settings}")
    assert dest.identify_url == url


# --- Segment ----------------------------------------------------------------------------------


async def test_segment_alias_goes_as_segments_own_alias_call(vendor):
    dest = make(f"    type: segment\n    write_key: wk\n    endpoint: {vendor.url}/v1/batch\n")
    [result] = await send(dest, [ALIAS])
    assert result.ok
    [seen] = vendor.requests
    assert seen.path == "/v1/batch"
    body = seen.json()
    assert body["batch"] == [
        {
            "type": "alias",
            "userId": "user-42",
            "previousId": "stripe:cus_123",
            "messageId": MESSAGE_ID,
            "timestamp": "2024-05-01T12:00:00.000Z",
            "receivedAt": "2024-05-01T12:00:01.000Z",
            "context": {
                "source": {
                    "name": "stripe",
                    "type": "stripe",
                    "deliveryId": "evt_9",
                    "eventType": "customer.updated",
                },
                "library": {"name": "webhook-gateway", "version": "0.1.0"},
            },
        }
    ]
