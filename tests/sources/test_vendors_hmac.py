"""HMAC-family vendors beyond the catalog conformance run: published vectors, vendor SDK
cross-checks, timestamp windows, key rotation and set-up probes.

Golden values come from the vendors' SDKs and docs (cited beside each test), never from the
gateway's own signing code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from gateway.errors import SignatureError
from gateway.sources.catalog import VENDORS, Request
from tests.conftest import Clock, config, gateway_client, raw_entries
from tests.sources.cases_hmac import CASES, SECRET


def _verify(
    name: str, secrets: list[str], body: bytes, headers: dict[str, str], now: float, url: str = ""
) -> None:
    vendor = VENDORS[name]
    scheme = vendor.scheme.with_tolerance(
        None if vendor.tolerance is None else _seconds(vendor.tolerance)
    )
    keys = [scheme.load(s) for s in secrets]
    lower = {k.lower(): v for k, v in headers.items()}
    scheme.verify(keys, Request(body, lower, now, url))


def _seconds(text: str) -> float:
    from gateway.config import Duration

    return float(Duration.parse(text))


# --- Paddle: the SDK's published vector and its Verifier ----------------------------------

# paddle-python-sdk tests/Unit/Notification/test_Verifier.py
# (test_validate_paddle_signature_header_integrity): three secrets, the third signed.
PADDLE_VECTOR = {
    "header": "ts=1696195954;h1=dummy;"
    "h1=d96299976a6eb066f484d7fde011ac56fc32b38fc9940bc419d6e537fdc6ef02",
    "body": b"hello-world",
    "secrets": [
        "pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_TjIG2BXbm83HPXqNfziwe506sBEdqL/4",
        "pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_vB/yIOnTOCWIvpBadM5jzBZPHc7OmdSo",
        "pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_WvRO0eL4Bj9rgYYIBZY6wZhG4EHy9jzh",
    ],
}


def test_paddle_sdk_vector_verifies_with_any_of_the_rotating_secrets() -> None:
    v = PADDLE_VECTOR
    _verify("paddle", v["secrets"], v["body"], {"Paddle-Signature": v["header"]}, 1696195954)
    with pytest.raises(SignatureError, match="match"):
        _verify(
            "paddle", v["secrets"][:2], v["body"], {"Paddle-Signature": v["header"]}, 1696195954
        )


def test_paddle_case_signature_is_accepted_by_the_paddle_sdk_verifier() -> None:
    from paddle_billing.Notifications import Secret, Verifier

    body = b'{"event_type":"transaction.completed"}'
    signed = CASES["paddle"].sign(body, Clock().now)

    class FakeRequest:  # what the SDK reads: .headers and .body
        headers = signed.headers
        body = signed.body

    assert Verifier().verify(FakeRequest(), Secret("pdl_ntfset_secret")) is True


def test_paddle_rejects_a_signature_outside_the_window() -> None:
    now = Clock().now
    body = b'{"event_type":"transaction.completed"}'
    signed = CASES["paddle"].sign(body, now - 3600)
    with pytest.raises(SignatureError, match="old"):
        _verify("paddle", ["pdl_ntfset_secret"], body, signed.headers, now)


# --- Zendesk: ISO 8601 timestamps ---------------------------------------------------------


def test_zendesk_iso_timestamp_is_checked_both_ways() -> None:
    now = Clock().now
    body = b'{"type":"zen:event-type:user.created"}'
    _verify("zendesk", [SECRET], body, CASES["zendesk"].sign(body, now).headers, now)
    for skew in (-3600, 3600):
        headers = CASES["zendesk"].sign(body, now + skew).headers
        with pytest.raises(SignatureError, match=r"old|future"):
            _verify("zendesk", [SECRET], body, headers, now)


def test_zendesk_send_uses_an_iso_timestamp_like_zendesk() -> None:
    scheme = VENDORS["zendesk"].scheme
    signed = scheme.sign(SECRET, Request(b"{}", {}, 1616648967.0), "d1")
    assert signed.headers["X-Zendesk-Webhook-Signature-Timestamp"] == "2021-03-25T05:09:27Z"
    # https://developer.zendesk.com/documentation/webhooks/verifying/: base64(HMAC(ts + body))
    want = base64.b64encode(
        hmac.new(SECRET.encode(), b"2021-03-25T05:09:27Z{}", hashlib.sha256).digest()
    ).decode()
    assert signed.headers["X-Zendesk-Webhook-Signature"] == want


# --- Recurly: bare `ms,sig,sig` header ----------------------------------------------------


def test_recurly_single_signature_and_stale_timestamp() -> None:
    now = Clock().now
    body = b'{"id":"abc","object_type":"account","event_type":"created"}'
    ts = str(int(now * 1000))
    # https://docs.recurly.com/v1.3/docs/signature-verification: hex HMAC of `ms.body`
    sig = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    _verify("recurly", [SECRET], body, {"recurly-signature": f"{ts},{sig}"}, now)
    with pytest.raises(SignatureError, match="old"):
        _verify("recurly", [SECRET], body, {"recurly-signature": f"{ts},{sig}"}, now + 600)
    with pytest.raises(SignatureError, match="not `timestamp,signature"):
        _verify("recurly", [SECRET], body, {"recurly-signature": f"t={ts},v1={sig}"}, now)


# --- HubSpot: the URI is signed with some escapes decoded ---------------------------------


def test_hubspot_signs_the_decoded_uri(redis_store) -> None:
    """https://developers.hubspot.com/docs/api/webhooks/validating-requests: `%3A` and
    friends are decoded in the URI that is signed; the SDK signs the URI it is given."""
    from hubspot.utils.signature import Signature

    now = Clock().now
    ts = str(int(now * 1000))
    body = b'[{"eventId":1,"subscriptionType":"contact.creation","occurredAt":1}]'
    url = "https://hooks.example.com/webhooks/hubspot"
    sig = Signature.get_signature(SECRET, body.decode(), "v3", url + "?portal=a:b", "POST", ts)
    headers = {
        "X-HubSpot-Signature-v3": sig,
        "X-HubSpot-Request-Timestamp": ts,
        ":query": "portal=a%3Ab",
    }
    _verify("hubspot", [SECRET], body, headers, now, url=url + "?portal=a%3Ab")


# --- Persona: rotation sets; Polar: both key forms ----------------------------------------


def test_persona_single_set_and_wrong_secret() -> None:
    now = Clock().now
    body = b'{"data":{"id":"evt_1"}}'
    ts = str(int(now))
    # https://docs.withpersona.com/docs/webhooks-best-practices: hex HMAC of `t.body`
    sig = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    _verify("persona", [SECRET], body, {"Persona-Signature": f"t={ts},v1={sig}"}, now)
    with pytest.raises(SignatureError):
        _verify("persona", ["other"], body, {"Persona-Signature": f"t={ts},v1={sig}"}, now)


def test_polar_accepts_a_base64_secret_too() -> None:
    """polar-sdk `_signing_keys`: the secret's bytes, or its base64 decoding."""
    from standardwebhooks.webhooks import Webhook

    now = Clock().now
    body = b'{"type":"order.paid","data":{}}'
    raw_key = b"sixteen byte key"
    secret = base64.b64encode(raw_key).decode()
    sig = Webhook(secret).sign("msg_1", datetime.fromtimestamp(int(now), UTC), body.decode())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(now)), "webhook-signature": sig}
    _verify("polar", [secret], body, headers, now)
    with pytest.raises(SignatureError):
        _verify("polar", ["polar_whs_other"], body, headers, now)


# --- Xero: intent to receive ---------------------------------------------------------------


async def test_xero_intent_to_receive_answers_200_then_401(redis_store) -> None:
    """https://developer.xero.com/documentation/webhooks/configuring-your-server: correctly
    signed probes (no events) must get 200, incorrectly signed ones 401."""
    body = json.dumps(
        {
            "events": [],
            "lastEventSequence": 0,
            "firstEventSequence": 0,
            "entropy": "S0m3r4Nd0mt3xt",
        }
    ).encode()
    good = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    bad = base64.b64encode(hmac.new(b"wrong", body, hashlib.sha256).digest()).decode()
    cfg = config(json.dumps({"sources": {"xero": {"type": "xero", "secrets": [SECRET]}}}))
    async with gateway_client(cfg, redis_store, Clock()) as client:
        ok = await client.post(
            "/webhooks/xero",
            content=body,
            headers={"x-xero-signature": good, "content-type": "application/json"},
        )
        refused = await client.post(
            "/webhooks/xero",
            content=body,
            headers={"x-xero-signature": bad, "content-type": "application/json"},
        )
    assert ok.status_code == 200, ok.text
    assert refused.status_code == 401
    assert len(await raw_entries(redis_store, "xero")) == 1


# --- Svix senders: the svix-id names the delivery ------------------------------------------


async def test_clerk_delivery_id_is_the_svix_id(redis_store) -> None:
    now = Clock().now
    body = b'{"type":"user.created","data":{},"timestamp":1}'
    signed = CASES["clerk"].sign(body, now)
    cfg = config(json.dumps({"sources": {"clerk": {"type": "clerk", **CASES["clerk"].config}}}))
    async with gateway_client(cfg, redis_store, Clock(now)) as client:
        answer = await client.post(
            "/webhooks/clerk",
            content=body,
            headers={"content-type": "application/json", **signed.headers},
        )
    assert answer.status_code == 200, answer.text
    (entry,) = await raw_entries(redis_store, "clerk")
    assert entry["delivery_id"] == signed.headers["svix-id"]


def test_workos_send_header_parses_as_the_workos_sdk_parses_it() -> None:
    """workos SDK webhooks/_verification.py verify_header splits `t=<ms>, v1=<hex>` on
    `", "` and signs `<ms>.<body>`; `send` must produce exactly that layout."""
    now = Clock().now
    body = b'{"id":"event_1","event":"user.created"}'
    header = (
        VENDORS["workos"]
        .scheme.sign(SECRET, Request(body, {}, now), "d1")
        .headers["WorkOS-Signature"]
    )
    issued, signature = header.split(", ")
    assert issued[:2] == "t=" and signature[:3] == "v1="
    ts = issued[2:]
    assert abs(int(ts) / 1000 - now) < 1
    want = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    assert signature[3:] == want
