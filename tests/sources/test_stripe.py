"""Stripe, signed by the stripe library itself."""

from __future__ import annotations

import json

import pytest
import stripe

from tests.conftest import Clock, gateway_client

SECRET = "whsec_primary"
OLD = "whsec_rotated_out"
CFG = f"sources:\n  stripe:\n    type: stripe\n    secrets: [{SECRET}, {OLD}]\n"
NOW = 1_700_000_000


def event(event_id: str = "evt_1", **extra) -> str:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": "charge.succeeded",
            "created": NOW - 5,
            "data": {"object": {"id": "ch_1"}},
            **extra,
        }
    )


def signed(body: str, secret: str = SECRET, t: int = NOW) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=t)
    return {"stripe-signature": header, "content-type": "application/json"}


async def post(store, body, headers, now=NOW):
    async with gateway_client(CFG, store, Clock(now)) as client:
        return await client.post("/webhooks/stripe", content=body, headers=headers)


async def test_signed_by_the_stripe_library_is_accepted(store):
    r = await post(store, event(), signed(event()))
    assert r.status_code == 200
    assert r.json() == {"status": "accepted", "delivery_id": "evt_1"}


async def test_any_configured_secret_may_match_during_rotation(store):
    r = await post(store, event("evt_old"), signed(event("evt_old"), OLD))
    assert r.json() == {"status": "accepted", "delivery_id": "evt_old"}


async def test_several_v1_signatures_one_of_them_right(store):
    body = event()
    good = signed(body)["stripe-signature"].split(",")[1]
    header = f"t={NOW},v1={'0' * 64},{good},v0=deadbeef"
    r = await post(store, body, {"stripe-signature": header})
    assert r.json() == {"status": "accepted", "delivery_id": "evt_1"}


@pytest.mark.parametrize(
    ("age", "status"),
    [(299, 200), (300, 200), (301, 401), (86400, 401)],
    ids=["299s-old", "300s-old", "301s-old", "a-day-old"],
)
async def test_old_timestamp_beyond_the_tolerance_is_401(store, age, status):
    # Timestamps ahead of the clock: tests/sources/test_timestamps.py
    body = event()
    r = await post(store, body, signed(body, t=NOW - age))
    assert r.status_code == status, r.text
    if status == 401:
        assert r.json()["detail"] == (
            f"the signature timestamp is {age} s old; this source accepts 300 s"
        )


async def test_tolerance_is_configurable(store):
    cfg = CFG + "    tolerance: 1h\n"
    body = event()
    async with gateway_client(cfg, store, Clock(NOW)) as client:
        r = await client.post("/webhooks/stripe", content=body, headers=signed(body, t=NOW - 3000))
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "Stripe-Signature header is missing"),
        ({"stripe-signature": "garbage"}, "header has no `v1=` signature (no key=value pairs"),
        ({"stripe-signature": f"t={NOW}"}, "header has no `v1=` signature (found: t)"),
        ({"stripe-signature": f"v1={'a' * 64}"}, "no `t=` timestamp"),
        ({"stripe-signature": f"t={NOW},v1=abc"}, "not an HMAC-SHA256 digest in hex (64 hex"),
        ({"stripe-signature": f"t=soon,v1={'a' * 64}"}, "malformed"),
        ({"stripe-signature": f"t={NOW},v1={'a' * 64}"}, "no signature matched"),
        (
            {"stripe-signature": f"t={NOW},v1=\u00e9\u00e9".encode("latin-1")},
            "is 2 characters, neither hex nor base64 of a digest",
        ),
    ],
    ids=["missing", "garbage", "no-v1", "no-t", "not-hex", "bad-t", "wrong", "non-ascii"],
)
async def test_bad_signature_headers_are_401_with_a_reason(store, headers, detail):
    r = await post(store, event(), headers)
    assert r.status_code == 401
    assert detail in r.json()["detail"]
    assert "whsec" not in r.text


async def test_wrong_secret_is_401(store):
    r = await post(store, event(), signed(event(), "whsec_someone_else"))
    assert r.status_code == 401
    assert r.json()["detail"].startswith(
        "no signature matched: the signature is there and readable, but none of this source's "
        "secrets gives it; check that the secret"
    )


async def test_signed_body_without_an_id_is_400(store):
    body = json.dumps({"object": "event"})
    r = await post(store, body, signed(body))
    assert r.status_code == 400
    assert r.json()["detail"] == "no delivery id: the event's `id` is missing"


async def test_signed_body_that_is_not_json_is_400(store):
    body = "not json"
    r = await post(store, body, signed(body))
    assert r.status_code == 400
    assert r.json()["detail"] == "the body is not valid JSON"


async def test_body_that_is_not_utf8_is_401_not_500(store):
    r = await post(store, b"\xff\xfe{}", {"stripe-signature": f"t={NOW},v1={'a' * 64}"})
    assert r.status_code == 401
    assert r.json()["detail"] == "no signature matched (the body is not UTF-8)"
