"""Collected Segment messages (source `type: collect`) as events: Segment's HTTP Tracking
API rules, its clock-skew correction, the client's context, and webhook events unchanged.

Stored format (gateway/collect.py writes it): one message per delivery, the delivery id is
the message's messageId, the body is the message JSON, the headers are content-type,
user-agent and x-collect-ip.
"""

from __future__ import annotations

from importlib.metadata import version

import msgspec
import pytest

from normalizers import NORMALIZERS, Delivery, Event, NormalizeError, normalize
from normalizers.collect import validate_message
from tests.conftest import expected_message_id
from tests.normalizers.conftest import RECEIVED_AT, RECEIVED_MS, assert_same, fixture, run

HEADERS = {
    "content-type": "application/json",
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0",
    "x-collect-ip": "203.0.113.7",
}
# RECEIVED_AT is 2023-11-14T22:21:40.123Z: the gateway's clock for every delivery below.


def collect(msg: dict, headers: dict | None = None, delivery_id: str = "m-1") -> list[dict]:
    """The events one stored collect message becomes, as plain dicts (as on the wire)."""
    return run(
        "collect",
        msgspec.json.encode(msg),
        HEADERS if headers is None else headers,
        source="web",
        delivery_id=delivery_id,
    )


def one(msg: dict, headers: dict | None = None) -> dict:
    events = collect(msg, headers)
    assert len(events) == 1
    return events[0]


def test_collect_is_the_registered_normalizer_of_its_source_type():
    from normalizers import collect as module

    assert NORMALIZERS["collect"] is module.normalize


# --- validation: https://segment.com/docs/connections/sources/catalog/libraries/server/
# http-api/#errors ("each payload has a userId and/or anonymousId", "All Track events ...
# must have an `event` field", "messageId values with fewer than 100 characters") and
# https://segment.com/docs/connections/spec/common/#timestamps ("All timestamps are
# ISO-8601 date strings"). -----------------------------------------------------------------

U = {"userId": "u1"}
TYPES_REASON = "a message needs `type`: track, identify, page, screen, group or alias"
WRONG_TYPE = "`type` must be track, identify, page, screen, group or alias, not "
ISO = "must be an ISO 8601 time such as 2024-05-01T12:00:00.000Z, not "

INVALID = [
    pytest.param([{"type": "track"}], "a message must be a JSON object, not an array", id="array"),
    pytest.param("track", "a message must be a JSON object, not a string", id="string"),
    pytest.param(None, "a message must be a JSON object, not null", id="null"),
    pytest.param({"userId": "u1", "event": "X"}, TYPES_REASON, id="no-type"),
    pytest.param({**U, "type": "purchase"}, WRONG_TYPE + "'purchase'", id="unknown-type"),
    pytest.param({**U, "type": "Track"}, WRONG_TYPE + "'Track'", id="type-is-case-sensitive"),
    pytest.param({**U, "type": 1}, WRONG_TYPE + "a number", id="type-number"),
    pytest.param(
        {"type": "track", "event": "X"},
        "a track message needs `userId` or `anonymousId`",
        id="track-no-ids",
    ),
    pytest.param(
        {"type": "identify", "userId": "", "anonymousId": "", "traits": {"a": 1}},
        "an identify message needs `userId` or `anonymousId`",
        id="empty-strings-do-not-count",
    ),
    pytest.param(
        {"type": "page", "userId": "  ", "anonymousId": None},
        "a page message needs `userId` or `anonymousId`",
        id="blank-and-null-do-not-count",
    ),
    pytest.param(
        {"type": "screen", "anonymousId": {"id": 1}},
        "`anonymousId` must be a string or a number, not an object",
        id="id-object",
    ),
    pytest.param(
        {"type": "screen", "userId": True},
        "`userId` must be a string or a number, not a boolean",
        id="id-boolean",
    ),
    pytest.param(
        {"type": "screen", "userId": ["u1"]},
        "`userId` must be a string or a number, not an array",
        id="id-array",
    ),
    pytest.param(
        {"type": "alias", "anonymousId": "a1", "previousId": "p1"},
        "an alias message needs `userId`",
        id="alias-needs-userId-not-anonymousId",
    ),
    pytest.param(
        {"type": "alias", "userId": "u1"}, "an alias message needs `previousId`", id="alias-prev"
    ),
    pytest.param(
        {"type": "alias", "userId": "u1", "previousId": ""},
        "an alias message needs `previousId`",
        id="alias-empty-prev",
    ),
    pytest.param({**U, "type": "track"}, "a track message needs `event`", id="track-no-event"),
    pytest.param({**U, "type": "track", "event": ""}, "a track message needs `event`", id="ev-''"),
    pytest.param(
        {**U, "type": "track", "event": "   "}, "a track message needs `event`", id="ev-blank"
    ),
    pytest.param(
        {**U, "type": "track", "event": 5}, "`event` must be a string, not a number", id="ev-5"
    ),
    pytest.param({**U, "type": "group"}, "a group message needs `groupId`", id="group"),
    pytest.param(
        {**U, "type": "group", "groupId": {}},
        "`groupId` must be a string or a number, not an object",
        id="group-object",
    ),
    pytest.param(
        {**U, "type": "track", "event": "X", "properties": [1]},
        "`properties` must be an object, not an array",
        id="properties",
    ),
    pytest.param(
        {**U, "type": "identify", "traits": "vip"},
        "`traits` must be an object, not a string",
        id="traits",
    ),
    pytest.param(
        {**U, "type": "page", "context": 1}, "`context` must be an object, not a number", id="ctx"
    ),
    pytest.param(
        {**U, "type": "page", "integrations": True},
        "`integrations` must be an object, not a boolean",
        id="integrations",
    ),
    pytest.param(
        {**U, "type": "page", "timestamp": "yesterday"}, "`timestamp` " + ISO + "'yesterday'"
    ),
    pytest.param({**U, "type": "page", "timestamp": 1700000000}, "`timestamp` " + ISO + "a number"),
    pytest.param(
        {**U, "type": "page", "sentAt": "2023-11-14T25:00:00Z"},
        "`sentAt` " + ISO + "'2023-11-14T25:00:00Z'",
        id="sentAt-hour-25",
    ),
    pytest.param(
        # Not ISO 8601 (one-digit month), though Segment's own batch example shows it.
        {**U, "type": "page", "originalTimestamp": "2015-2-02T00:30:08.276Z"},
        "`originalTimestamp` " + ISO + "'2015-2-02T00:30:08.276Z'",
        id="originalTimestamp-one-digit-month",
    ),
    pytest.param(
        {**U, "type": "page", "timestamp": "x" * 60},
        "`timestamp` " + ISO + "'" + "x" * 40 + "…'",
        id="long-values-are-cut",
    ),
    pytest.param(
        {**U, "type": "page", "messageId": ""},
        "`messageId` must be a non-empty string, not ''",
        id="messageId-empty",
    ),
    pytest.param(
        {**U, "type": "page", "messageId": 7},
        "`messageId` must be a non-empty string, not a number",
        id="messageId-number",
    ),
    pytest.param(
        {**U, "type": "page", "messageId": "m" * 101},
        "`messageId` must be at most 100 characters (it has 101)",
        id="messageId-101",
    ),
]


@pytest.mark.parametrize(("msg", "reason"), INVALID)
def test_an_invalid_message_is_refused_with_its_reason(msg, reason):
    assert validate_message(msg) == reason


@pytest.mark.parametrize(("msg", "reason"), INVALID)
def test_a_stored_invalid_message_goes_to_the_quarantine_with_the_same_reason(msg, reason):
    with pytest.raises(NormalizeError) as caught:
        collect(msg)
    assert str(caught.value) == reason


def test_a_message_the_front_door_refused_is_quarantined_with_its_reason():
    # gateway/collect.py stores a refused message (over 32 KB, invalid) with the reason in
    # `x-collect-refused`, so it reaches the quarantine instead of being lost.
    msg = {"type": "track", "event": "X", "anonymousId": "a1", "properties": {"p": "x" * 99}}
    reason = "message 3: over 32768 bytes (33000)"
    with pytest.raises(NormalizeError) as caught:
        collect(msg, {**HEADERS, "x-collect-refused": reason})
    assert str(caught.value) == reason


def test_a_stored_body_that_is_not_json_is_quarantined():
    delivery = Delivery("web", "collect", "m-1", RECEIVED_MS, HEADERS, b"{not json")
    with pytest.raises(NormalizeError, match="not JSON"):
        normalize(delivery)


VALID = [
    pytest.param({"type": "track", "event": "X", "anonymousId": "a1"}, id="track-anonymous"),
    pytest.param({"type": "identify", "userId": 42}, id="number-userId"),
    pytest.param({"type": "page", "anonymousId": 1.5}, id="float-anonymousId"),
    pytest.param({"type": "screen", "userId": "", "anonymousId": "a1"}, id="one-empty-one-set"),
    pytest.param({"type": "group", "userId": "u1", "groupId": 7}, id="number-groupId"),
    pytest.param({"type": "alias", "userId": "u1", "previousId": 9}, id="alias"),
    pytest.param(
        {
            **U,
            "type": "page",
            "properties": None,
            "context": None,
            "timestamp": None,
            "messageId": None,
        },
        id="null-fields-are-absent",
    ),
    pytest.param({**U, "type": "page", "messageId": "m" * 100}, id="messageId-100"),
    pytest.param(
        {
            **U,
            "type": "page",
            # analytics.js (toISOString), analytics-python (isoformat: microseconds and an
            # offset), a date alone, and no offset at all (read as UTC).
            "timestamp": "2023-11-14T22:13:20.123Z",
            "sentAt": "2023-11-14T22:13:20.123456+00:00",
            "originalTimestamp": "2023-11-14",
        },
        id="iso-forms",
    ),
]


@pytest.mark.parametrize("msg", VALID)
def test_a_valid_message_passes(msg):
    assert validate_message(msg) is None
    assert len(collect(msg)) == 1


# --- time: https://segment.com/docs/connections/spec/common/#timestamps: "timestamp ...
# Calculated by Segment to correct client-device clock skew using the following formula:
# receivedAt - (sentAt - originalTimestamp)"; originalTimestamp is the client's time (or
# the `timestamp` a server library passed). Expected values are worked out by hand from
# receivedAt = 2023-11-14T22:21:40.123Z. --------------------------------------------------

TIMES = [
    pytest.param(
        # The client's clock is 1 h fast: it says the event was 10 s before sending.
        {"timestamp": "2023-11-14T23:21:30.000Z", "sentAt": "2023-11-14T23:21:40.000Z"},
        "2023-11-14T22:21:30.123Z",
        "2023-11-14T23:21:30.000Z",
        id="clock-1h-fast",
    ),
    pytest.param(
        # 1 day slow, the event queued 2 min (offline) before sending.
        {"timestamp": "2023-11-13T22:19:40.500Z", "sentAt": "2023-11-13T22:21:40.500Z"},
        "2023-11-14T22:19:40.123Z",
        "2023-11-13T22:19:40.500Z",
        id="clock-1d-slow-queued-2min",
    ),
    pytest.param(
        # The same instants as clock-1h-fast, written with offsets.
        {"timestamp": "2023-11-15T00:21:30+01:00", "sentAt": "2023-11-14T18:21:40.000-05:00"},
        "2023-11-14T22:21:30.123Z",
        "2023-11-14T23:21:30.000Z",
        id="offsets",
    ),
    pytest.param(
        # 40.999 - 30.001 = 10.998 s before receipt: 40.123 - 10.998 = 29.125.
        {"timestamp": "2023-11-14T23:21:30.001Z", "sentAt": "2023-11-14T23:21:40.999Z"},
        "2023-11-14T22:21:29.125Z",
        "2023-11-14T23:21:30.001Z",
        id="milliseconds",
    ),
    pytest.param(
        # analytics-python's microseconds: 9.9995 s skew-free gap; 40.123 - 9.9995 = 30.1235,
        # written with milliseconds (cut, like every time in the event).
        {
            "timestamp": "2023-11-14T23:21:30.000500+00:00",
            "sentAt": "2023-11-14T23:21:40.000000+00:00",
        },
        "2023-11-14T22:21:30.123Z",
        "2023-11-14T23:21:30.000Z",
        id="microseconds",
    ),
    pytest.param(
        # The client's clock 3 s slow and the event "after" sentAt: the formula holds anyway.
        {"timestamp": "2023-11-14T22:21:38.000Z", "sentAt": "2023-11-14T22:21:37.000Z"},
        "2023-11-14T22:21:41.123Z",
        "2023-11-14T22:21:38.000Z",
        id="timestamp-after-sentAt",
    ),
    pytest.param(
        # No offset: UTC.
        {"timestamp": "2023-11-14T23:21:30", "sentAt": "2023-11-14T23:21:40"},
        "2023-11-14T22:21:30.123Z",
        "2023-11-14T23:21:30.000Z",
        id="no-offset-is-utc",
    ),
    pytest.param(
        {"originalTimestamp": "2023-11-14T23:21:30.000Z", "sentAt": "2023-11-14T23:21:40.000Z"},
        "2023-11-14T22:21:30.123Z",
        "2023-11-14T23:21:30.000Z",
        id="originalTimestamp-when-no-timestamp",
    ),
    pytest.param(
        {
            "timestamp": "2023-11-14T23:21:30.000Z",
            "originalTimestamp": "2023-11-14T23:00:00.000Z",
            "sentAt": "2023-11-14T23:21:40.000Z",
        },
        "2023-11-14T22:21:30.123Z",
        "2023-11-14T23:21:30.000Z",
        id="timestamp-wins-over-originalTimestamp",
    ),
    pytest.param(
        # Without sentAt there is nothing to measure the skew with: the client's time as is
        # (a server library importing history).
        {"timestamp": "2012-12-02T01:30:08.276+01:00"},
        "2012-12-02T00:30:08.276Z",
        "2012-12-02T00:30:08.276Z",
        id="no-sentAt",
    ),
    pytest.param(
        {"sentAt": "2023-11-14T23:21:40.000Z"}, RECEIVED_AT, None, id="sentAt-only-receivedAt"
    ),
    pytest.param({}, RECEIVED_AT, None, id="neither-receivedAt"),
    pytest.param(
        # A correction past year 1: the client's clock is junk, receivedAt stands.
        {"timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-12-31T00:00:00Z"},
        RECEIVED_AT,
        "0001-01-01T00:00:00.000Z",
        id="correction-out-of-range",
    ),
]


@pytest.mark.parametrize(("times", "timestamp", "original"), TIMES)
def test_timestamp_is_corrected_for_the_client_clock_skew(times, timestamp, original):
    event = one({"type": "track", "event": "Clicked", "anonymousId": "a1", **times})
    assert event["timestamp"] == timestamp
    assert event["receivedAt"] == RECEIVED_AT
    if original is None:
        assert "originalTimestamp" not in event
    else:
        assert event["originalTimestamp"] == original


# --- context -------------------------------------------------------------------------------

# Segment's example of the common fields, https://segment.com/docs/connections/spec/common/
# (#structure), with userAgentData, consent and channel as analytics.js sends them.
SPEC_CONTEXT = {
    "active": True,
    "app": {"name": "InitechGlobal", "version": "545", "build": "3.0.1.545"},
    "campaign": {"name": "TPS Innovation Newsletter", "source": "Newsletter", "medium": "email"},
    "channel": "browser",
    "consent": {"categoryPreferences": {"Advertising": True, "Analytics": False}},
    "device": {"id": "B5372DB0-C21E-11E4-8DFC-AA07A5B093DB", "manufacturer": "Apple"},
    "groupId": "12345",
    "ip": "8.8.8.8",
    "library": {"name": "analytics.js", "version": "2.11.1"},
    "locale": "en-US",
    "location": {"city": "San Francisco", "latitude": 40.2964197, "speed": 0},
    "network": {"bluetooth": False, "carrier": "T-Mobile US", "wifi": False},
    "os": {"name": "iPhone OS", "version": "8.1.3"},
    "page": {"path": "/academy/", "referrer": "", "title": "Analytics Academy"},
    "referrer": {"id": "ABCD582CDEFFFF01919", "type": "dataxu"},
    "screen": {"width": 320, "height": 568, "density": 2},
    "timezone": "Europe/Amsterdam",
    "traits": {"email": "peter@example.com"},
    "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 9_1 like Mac OS X)",
    "userAgentData": {"brands": [{"brand": "Chromium", "version": "126"}], "mobile": False},
    "externalIds": [{"id": "cus_123", "type": "stripe_customer_id", "encoding": "none"}],
}


def test_the_clients_spec_context_is_kept_with_our_source():
    event = one({"type": "track", "event": "X", "userId": "u1", "context": SPEC_CONTEXT})
    expected = {k: v for k, v in SPEC_CONTEXT.items() if k != "externalIds"}
    expected["externalIds"] = [{"id": "cus_123", "type": "stripe_customer_id"}]
    expected["source"] = {"name": "web", "type": "collect", "deliveryId": "m-1"}
    assert_same(event["context"], expected)


@pytest.mark.parametrize(
    ("given", "headers", "ip", "agent"),
    [
        pytest.param({}, HEADERS, "203.0.113.7", HEADERS["user-agent"], id="from-the-request"),
        pytest.param(
            {"ip": "198.51.100.4", "userAgent": "MyApp/1.0"},
            HEADERS,
            "198.51.100.4",
            "MyApp/1.0",
            id="the-message-wins",
        ),
        pytest.param({"ip": "", "userAgent": ""}, HEADERS, "203.0.113.7", HEADERS["user-agent"]),
        pytest.param({"ip": "198.51.100.4"}, HEADERS, "198.51.100.4", HEADERS["user-agent"]),
        pytest.param({"userAgent": "MyApp/1.0"}, HEADERS, "203.0.113.7", "MyApp/1.0"),
        pytest.param({}, {"content-type": "application/json"}, None, None, id="none-anywhere"),
    ],
)
def test_ip_and_user_agent_come_from_the_request_only_when_the_message_has_none(
    given, headers, ip, agent
):
    context = one({"type": "page", "anonymousId": "a1", "context": given}, headers)["context"]
    assert context.get("ip") == ip
    assert context.get("userAgent") == agent
    if ip is None:
        assert "ip" not in context and "userAgent" not in context


def test_context_keys_outside_the_spec_and_wrong_types_are_left_out():
    context = one(
        {
            "type": "page",
            "anonymousId": "a1",
            "context": {
                "instanceId": "x",  # not a Spec field ("properties outside the spec are ignored")
                "page": "/home",  # Spec says object
                "campaign": {},  # empty: omitted
                "active": "yes",  # Spec says boolean
                "locale": ["en"],  # Spec says string
                "library": {"version": "1"},  # no name: ours stands
                "externalIds": [{"id": "x"}, "y", {"id": 5, "type": "crm_id"}],
            },
        },
        {},
    )["context"]
    assert_same(
        context,
        {
            "source": {"name": "web", "type": "collect", "deliveryId": "m-1"},
            "library": {"name": "webhook-gateway", "version": version("webhook-gateway")},
            "externalIds": [{"id": "5", "type": "crm_id"}],
        },
    )


# --- the six types, ids and messageIds --------------------------------------------------

LIBRARY = {"name": "analytics.js", "version": "npm:next-1.70.0"}  # a browser's


def expected(type_: str, message_id: str, **fields) -> dict:
    """The whole event a message below becomes (no client time: timestamp = receivedAt)."""
    return {
        "type": type_,
        "messageId": message_id,
        "timestamp": RECEIVED_AT,
        "receivedAt": RECEIVED_AT,
        "context": {
            "source": {"name": "web", "type": "collect", "deliveryId": "m-1"},
            "library": LIBRARY,
            "ip": "203.0.113.7",
            "userAgent": HEADERS["user-agent"],
        },
        **fields,
    }


SIX = [
    pytest.param(
        {
            "type": "track",
            "event": "Order Completed",
            "userId": "u1",
            "anonymousId": "a1",
            "properties": {"revenue": 54.5, "currency": "EUR", "coupon": None},
            "traits": {"ignored": True},  # not a track field
        },
        expected(
            "track",
            "msg-1",
            event="Order Completed",
            userId="u1",
            anonymousId="a1",
            properties={"revenue": 54.5, "currency": "EUR"},  # null properties are left out
        ),
        id="track",
    ),
    pytest.param(
        {
            "type": "identify",
            "userId": 1234,
            "anonymousId": "a1",
            "traits": {"email": "peter@example.com", "plan": "pro"},
        },
        expected(
            "identify",
            "msg-1",
            userId="1234",
            anonymousId="a1",
            traits={"email": "peter@example.com", "plan": "pro"},
        ),
        id="identify",
    ),
    pytest.param(
        {
            "type": "page",
            "anonymousId": "a1",
            "name": "Pricing",
            "properties": {"path": "/pricing", "url": "https://example.com/pricing"},
        },
        expected(
            "page",
            "msg-1",
            anonymousId="a1",
            name="Pricing",
            properties={"path": "/pricing", "url": "https://example.com/pricing"},
        ),
        id="page",
    ),
    pytest.param(
        {"type": "screen", "userId": "u1", "name": "Home", "properties": {"tab": 2}},
        expected("screen", "msg-1", userId="u1", name="Home", properties={"tab": 2}),
        id="screen",
    ),
    pytest.param(
        {"type": "group", "userId": "u1", "groupId": 99, "traits": {"name": "Initech"}},
        expected("group", "msg-1", userId="u1", groupId="99", traits={"name": "Initech"}),
        id="group",
    ),
    pytest.param(
        {"type": "alias", "userId": "u1", "previousId": "a1", "anonymousId": "a1"},
        expected("alias", "msg-1", userId="u1", anonymousId="a1", previousId="a1"),
        id="alias",
    ),
]


@pytest.mark.parametrize(("msg", "event"), SIX)
def test_each_type_becomes_its_event(msg, event):
    msg = {**msg, "messageId": "msg-1", "context": {"library": LIBRARY}}
    assert_same(one(msg), event)


def test_numbers_as_ids_become_text():
    event = one({"type": "identify", "userId": 42, "anonymousId": 7.5})
    assert (event["userId"], event["anonymousId"]) == ("42", "7.5")
    alias = one({"type": "alias", "userId": 1, "previousId": 2})
    assert (alias["userId"], alias["previousId"]) == ("1", "2")
    assert "anonymousId" not in alias  # no `<source>:system` stand-in for collected messages


def test_the_clients_message_id_is_kept():
    event = one({"type": "track", "event": "X", "anonymousId": "a1", "messageId": "ajs-1-abc"})
    assert event["messageId"] == "ajs-1-abc"


def test_without_a_message_id_the_documented_formula_names_the_event():
    msg = {"type": "track", "event": "Signed Up", "anonymousId": "a1"}
    events = collect(msg, delivery_id="sha256:ab12")
    assert events[0]["messageId"] == expected_message_id("web", "sha256:ab12", 0, "Signed Up")
    assert events[0]["context"]["source"]["deliveryId"] == "sha256:ab12"
    page = collect({"type": "page", "anonymousId": "a1"}, delivery_id="sha256:cd34")[0]
    assert page["messageId"] == expected_message_id("web", "sha256:cd34", 0, None, "page")


def test_a_collected_event_decodes_back_into_the_model():
    msg = {
        "type": "track",
        "event": "X",
        "userId": "u1",
        "context": SPEC_CONTEXT,
        "timestamp": "2023-11-14T23:21:30.000Z",
        "sentAt": "2023-11-14T23:21:40.000Z",
    }
    event = msgspec.convert(one(msg), Event)
    assert event.original_timestamp == "2023-11-14T23:21:30.000Z"
    assert event.context.ip == "8.8.8.8" and event.context.user_agent_data["mobile"] is False


# --- webhook events are unchanged by the collect fields ------------------------------------

# Encoded before Context and Event gained the collect fields (same delivery, same bytes);
# context.traits (the payer's match keys, from the fixtures' billing_details and the
# customer) written in by hand where Context declares it, after externalIds.
GOLDEN = {
    "charge.succeeded": (
        '{"type":"track","messageId":"2d17aa4e-9316-54b0-94be-7fd1c9103615",'
        '"timestamp":"2023-11-14T22:15:01.000Z","receivedAt":"2023-11-14T22:21:40.123Z",'
        '"context":{"source":{"name":"shop","type":"stripe","deliveryId":"evt_golden",'
        '"eventType":"charge.succeeded"},"library":{"name":"webhook-gateway","version":"@V@"},'
        '"externalIds":[{"id":"cus_NffrFeUfNV2Hib","type":"stripe_customer_id"}],'
        '"traits":{"email":"jennyrosen@example.com","name":"Jenny Rosen",'
        '"address":{"postalCode":"78701","country":"US"}}},'
        '"event":"Charge Succeeded","userId":"u_4821","properties":{"order_id":'
        '"pi_3OkLmN2eZvKYlo2C1abcdefg","charge_id":"ch_3OkLmN2eZvKYlo2C1xyzabcd","amount":54.5,'
        '"amount_captured":54.5,"amount_refunded":0.0,"currency":"USD","status":"succeeded",'
        '"paid":true,"captured":true,"refunded":false,"payment_intent":'
        '"pi_3OkLmN2eZvKYlo2C1abcdefg","payment_method_type":"card","revenue":54.5}}'
    ),
    "customer.created": (
        '{"type":"identify","messageId":"0776f00b-c3ce-5f51-8138-8c061d9c6086",'
        '"timestamp":"2023-11-14T22:13:20.000Z","receivedAt":"2023-11-14T22:21:40.123Z",'
        '"context":{"source":{"name":"shop","type":"stripe","deliveryId":"evt_golden2",'
        '"eventType":"customer.created"},"library":{"name":"webhook-gateway","version":"@V@"},'
        '"externalIds":[{"id":"cus_NffrFeUfNV2Hib","type":"stripe_customer_id"}],'
        '"traits":{"email":"jennyrosen@example.com","name":"Jenny Rosen",'
        '"address":{"street":"354 Oyster Point Blvd","city":"South San Francisco","state":"CA",'
        '"postalCode":"94080","country":"US"}}},'
        '"userId":"u_4821","traits":{"email":"jennyrosen@example.com","name":"Jenny Rosen",'
        '"createdAt":"2023-11-14T22:13:10.000Z","address":{"street":"354 Oyster Point Blvd",'
        '"city":"South San Francisco","state":"CA","postalCode":"94080","country":"US"},'
        '"stripeCustomerId":"cus_NffrFeUfNV2Hib"}}'
    ),
    # About no one's details (a refund): encoded by the code before context.traits
    # existed, so an event without match keys must stay byte for byte the same.
    "refund.created": (
        '{"type":"track","messageId":"960eee0e-ef98-54aa-807f-bb1e1aa2dfd0",'
        '"timestamp":"2023-11-25T08:13:20.000Z","receivedAt":"2023-11-14T22:21:40.123Z",'
        '"context":{"source":{"name":"shop","type":"stripe","deliveryId":"evt_golden3",'
        '"eventType":"refund.created"},"library":{"name":"webhook-gateway","version":"@V@"},'
        '"externalIds":[{"id":"pi_3OkLmN2eZvKYlo2C1abcdefg","type":"stripe_payment_intent_id"}]},'
        '"event":"Refund Created","userId":"u_4821","properties":{"refund_id":'
        '"re_3OkLmN2eZvKYlo2C1refund2","charge_id":"ch_3OkLmN2eZvKYlo2C1xyzabcd","order_id":'
        '"pi_3OkLmN2eZvKYlo2C1abcdefg","amount":20.0,"currency":"USD","status":"succeeded",'
        '"reason":"requested_by_customer"}}'
    ),
}


@pytest.mark.parametrize("name", GOLDEN)
def test_a_webhook_events_json_is_byte_for_byte_what_it_was(name):
    body = fixture("stripe", name)
    delivery_id = {"customer.created": "evt_golden2", "refund.created": "evt_golden3"}.get(
        name, "evt_golden"
    )
    delivery = Delivery("shop", "stripe", delivery_id, RECEIVED_MS, {}, body)
    (event,) = normalize(delivery)
    golden = GOLDEN[name].replace("@V@", version("webhook-gateway"))
    assert msgspec.json.encode(event).decode() == golden


@pytest.mark.parametrize("library", ["analytics-python", "@segment/analytics-node"])
def test_a_server_librarys_request_address_is_not_the_persons(library):
    """Segment's server libraries send from the server: its address and user agent must
    not become the person's (they would reach the ad platforms as match keys)."""
    msg = {
        "type": "track", "event": "E", "userId": "u", "messageId": "srv-1",
        "context": {"library": {"name": library, "version": "1"}},
    }  # fmt: skip
    event = one(msg)
    assert "ip" not in event["context"] and "userAgent" not in event["context"]
    given = one({**msg, "context": {**msg["context"], "ip": "198.51.100.9"}})
    assert given["context"]["ip"] == "198.51.100.9"  # the server may pass the person's own
