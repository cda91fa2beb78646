"""The event model: deterministic ids, byte-identical redos, times, identity."""

from __future__ import annotations

import uuid

import msgspec

from normalizers import Delivery, Event, event_schema, normalize
from normalizers.event import iso_time, message_id
from tests.normalizers.conftest import fixture, run


def test_message_id_is_a_uuid5_of_source_delivery_and_index():
    a = message_id("stripe", "evt_1", 0)
    assert uuid.UUID(a).version == 5
    assert a == message_id("stripe", "evt_1", 0)
    assert (
        len(
            {
                a,
                message_id("stripe", "evt_1", 1),
                message_id("stripe", "evt_2", 0),
                message_id("stripe2", "evt_1", 0),
            }
        )
        == 4
    )


def test_the_same_delivery_twice_gives_byte_identical_events():
    body = fixture("stripe", "customer.subscription.created")
    twice = [
        [msgspec.json.encode(e) for e in normalize(Delivery("s", "stripe", "evt_9", 1, {}, body))]
        for _ in range(2)
    ]
    assert twice[0] == twice[1]
    assert len(twice[0]) == 2
    ids = [msgspec.json.decode(e)["messageId"] for e in twice[0]]
    assert ids == [message_id("s", "evt_9", 0), message_id("s", "evt_9", 1)]


def test_events_decode_back_into_the_model():
    for name in ("customer.created", "charge.refunded"):
        for event in run("stripe", fixture("stripe", name)):
            assert isinstance(msgspec.convert(event, Event), Event)


def test_event_schema_names_the_segment_fields():
    props = event_schema()["$defs"]["Event"]["properties"]
    for name in (
        "type",
        "event",
        "messageId",
        "userId",
        "anonymousId",
        "properties",
        "traits",
        "context",
        "timestamp",
        "receivedAt",
    ):
        assert name in props


def test_iso_time_accepts_seconds_milliseconds_and_iso_text():
    assert iso_time(1700000000) == "2023-11-14T22:13:20.000Z"
    assert iso_time(1700000000123) == "2023-11-14T22:13:20.123Z"
    assert iso_time("2023-11-14T23:13:20+01:00") == "2023-11-14T22:13:20.000Z"
    assert iso_time("2023-11-14T22:13:20Z") == "2023-11-14T22:13:20.000Z"
    assert iso_time("soon") is None and iso_time(None) is None and iso_time(True) is None
