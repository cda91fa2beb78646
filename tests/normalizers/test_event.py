"""The event model: deterministic ids, byte-identical redos, times, identity."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import msgspec
import pytest

from normalizers import Delivery, Event, event_schema, normalize
from normalizers.event import iso_time, message_id
from tests.conftest import expected_message_id
from tests.normalizers.conftest import fixture, run


@pytest.mark.parametrize(
    ("source", "delivery_id", "index", "type", "event", "golden"),
    [
        # The messageId docs/events.md shows for this refund: pinned as printed there.
        (
            "stripe",
            "evt_3OkLmN2eZvKYlo2C0refund1",
            0,
            "track",
            "Order Refunded",
            "ee015c74-4d91-5486-89f6-7dd2aa8b1f1b",
        ),
        ("stripe", "evt_1", 0, "track", "Charge Succeeded", "21cb268a-787f-58e8-8306-50af14f06c9a"),
        ("stripe", "evt_1", 1, "track", "Order Completed", "cbf55679-36d5-52eb-a92d-fcc0f0261d47"),
        # Types without a name sign an empty one.
        ("stripe", "evt_1", 0, "identify", None, "ee2b610c-7abc-515d-a94a-ea0eafd5e827"),
        ("github", "72d3162e-cc78-11e3-81ab-4c9367dc0958", 0, "track", "Star Created", None),
        ("forms", "sha256:" + "ab" * 32, 2, "group", None, None),
        ("crm", "délivery-ü-✓", 0, "track", "Contact Créé ✓", None),
    ],
)
def test_message_id_is_the_documented_uuid5(source, delivery_id, index, type, event, golden):
    """UUIDv5 under the documented namespace of "source\\ndelivery id\\nindex\\ntype\\nname"."""
    independent = str(
        uuid.uuid5(
            uuid.UUID("6c1b7e36-3f7e-5a38-9d2f-2b0f1c6a8e51"),
            f"{source}\n{delivery_id}\n{index}\n{type}\n{event or ''}",
        )
    )
    assert message_id(source, delivery_id, index, type, event) == independent
    if golden is not None:
        assert independent == golden
    assert uuid.UUID(independent).version == 5


def test_the_readme_example_event_has_the_id_it_shows():
    readme = (Path(__file__).parents[2] / "docs" / "events.md").read_text()
    example = readme[readme.index('{"type":"track","messageId":') :]
    shown = re.search(r'"messageId":"([0-9a-f-]{36})"', example).group(1)
    delivery = re.search(r'"deliveryId":"([^"]+)"', example).group(1)
    name = re.search(r'"event":"([^"]+)"', example).group(1)
    assert message_id("stripe", delivery, 0, "track", name) == shown
    assert shown == "ee015c74-4d91-5486-89f6-7dd2aa8b1f1b"


def test_the_same_delivery_twice_gives_byte_identical_events():
    body = fixture("stripe", "customer.subscription.created")
    twice = [
        [msgspec.json.encode(e) for e in normalize(Delivery("s", "stripe", "evt_9", 1, {}, body))]
        for _ in range(2)
    ]
    assert twice[0] == twice[1]
    assert len(twice[0]) == 2
    ids = [msgspec.json.decode(e)["messageId"] for e in twice[0]]
    assert ids == [
        expected_message_id("s", "evt_9", 0, "Subscription Created"),
        expected_message_id("s", "evt_9", 1, "Trial Started"),
    ]


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
