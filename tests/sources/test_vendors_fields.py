"""Edge cases of the URL/form and body-field vendors (gateway/sources/vendors/fields.py),
through the real front door (real Redis), signed by the vendors' SDKs or written-out docs.

Twilio: the docs' vector, JSON bodies (bodySHA256), the port quirk, SharedKey HMAC-SHA256.
Mandrill: the HEAD check and the empty test batch. Mailgun: stale and future timestamps,
subaccounts, legacy forms, replays. Adyen: every item of a batch must verify. Braintree:
the SDK's own signed notifications and XML parser. Dropbox Sign: the callback test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from urllib.parse import parse_qsl, urlencode

import braintree
import pytest
from Adyen.util import is_valid_hmac_notification
from braintree.util.xml_util import XmlUtil
from twilio.request_validator import RequestValidator

from gateway.sources.catalog import VENDORS, Request
from gateway.sources.vendors.fields import braintree_notification
from gateway.worker import Pipeline
from normalizers import normalize
from tests.conftest import Clock, config, gateway_client, raw_entries
from tests.sources.cases_fields import (
    ADYEN_KEY,
    BRAINTREE_PRIVATE,
    BRAINTREE_PUBLIC,
    DROPBOX_SIGN_KEY,
    MAILGUN_KEY,
    MANDRILL_KEY,
    MANDRILL_URL,
    adyen_signed,
    braintree_form,
    dropbox_sign_request,
    mailgun_signed,
    mandrill_signature,
)

FORM = {"content-type": "application/x-www-form-urlencoded"}
JSON = {"content-type": "application/json"}


def _cfg(name: str, **settings) -> str:
    return json.dumps({"sources": {name: {"type": name, **settings}}})


# --- Twilio -------------------------------------------------------------------------------

# Twilio docs' example (https://www.twilio.com/docs/usage/webhooks/webhooks-security, and
# twilio-php docs/usage/validation.rst): auth token 12345, this URL and these parameters.
DOCS_TOKEN = "12345"
DOCS_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
DOCS_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


async def test_twilio_docs_vector_is_accepted(redis_store) -> None:
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert RequestValidator(DOCS_TOKEN).compute_signature(url, DOCS_PARAMS) == DOCS_SIGNATURE
    cfg = _cfg("twilio", secrets=[DOCS_TOKEN], url="https://mycompany.com/myapp.php")
    body = urlencode(DOCS_PARAMS).encode()
    async with gateway_client(cfg, redis_store) as client:
        ok = await client.post(
            "/webhooks/twilio?foo=1&bar=2",
            content=body,
            headers={**FORM, "X-Twilio-Signature": DOCS_SIGNATURE},
        )
        wrong_query = await client.post(
            "/webhooks/twilio?foo=1&bar=3",
            content=body,
            headers={**FORM, "X-Twilio-Signature": DOCS_SIGNATURE},
        )
    assert ok.status_code == 200, ok.text
    assert wrong_query.status_code == 401, wrong_query.text


async def test_twilio_json_body_is_checked_through_body_sha256(redis_store) -> None:
    token, base = "tok-json", "https://hooks.example.com/webhooks/twilio"
    body = json.dumps({"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030"}).encode()
    query = "bodySHA256=" + hashlib.sha256(body).hexdigest()
    signature = RequestValidator(token).compute_signature(f"{base}?{query}", {})
    # The SDK's own check of the same request (signature over the URL, body hash).
    assert RequestValidator(token).validate(f"{base}?{query}", body.decode(), signature)
    headers = {**JSON, "X-Twilio-Signature": signature}
    async with gateway_client(_cfg("twilio", secrets=[token], url=base), redis_store) as client:
        ok = await client.post(f"/webhooks/twilio?{query}", content=body, headers=headers)
        changed = await client.post(
            f"/webhooks/twilio?{query}", content=body.replace(b"CA12", b"CA99"), headers=headers
        )
    assert ok.status_code == 200, ok.text
    assert changed.status_code == 401
    assert "bodySHA256" in changed.json()["detail"]


@pytest.mark.parametrize(
    ("configured", "signed_as"),
    [
        # Twilio may sign with the default port although the configured URL has none...
        (
            "https://hooks.example.com/webhooks/twilio",
            "https://hooks.example.com:443/webhooks/twilio",
        ),
        # ...or without a port the URL has: the SDK tries the URL with and without it.
        (
            "https://hooks.example.com:8443/webhooks/twilio",
            "https://hooks.example.com/webhooks/twilio",
        ),
        ("http://hooks.example.com/webhooks/twilio", "http://hooks.example.com:80/webhooks/twilio"),
    ],
)
async def test_twilio_port_quirk_matches_the_sdk(redis_store, configured, signed_as) -> None:
    token = "tok-port"
    params = {"MessageSid": "SM1", "SmsStatus": "delivered"}
    signature = RequestValidator(token).compute_signature(signed_as, params)
    assert RequestValidator(token).validate(configured, params, signature)
    headers = {**FORM, "X-Twilio-Signature": signature}
    cfg = _cfg("twilio", secrets=[token], url=configured)
    async with gateway_client(cfg, redis_store) as client:
        ok = await client.post(
            "/webhooks/twilio", content=urlencode(params).encode(), headers=headers
        )
    assert ok.status_code == 200, ok.text


async def test_twilio_refuses_a_signature_for_another_host(redis_store) -> None:
    token, params = "tok-host", {"MessageSid": "SM1", "SmsStatus": "delivered"}
    signature = RequestValidator(token).compute_signature(
        "https://evil.example/webhooks/twilio", params
    )
    cfg = _cfg("twilio", secrets=[token], url="https://hooks.example.com/webhooks/twilio")
    async with gateway_client(cfg, redis_store) as client:
        answer = await client.post(
            "/webhooks/twilio",
            content=urlencode(params).encode(),
            headers={**FORM, "X-Twilio-Signature": signature},
        )
    assert answer.status_code == 401
    assert "`url:`" in answer.json()["detail"]


async def test_twilio_shared_key_sha256_and_repeated_parameters(redis_store) -> None:
    class MultiDict(dict):  # what Flask hands the SDK: several values per name
        def getall(self, name):
            return self[name]

    url, secret = "https://hooks.example.com/webhooks/twilio", "sharedkey-secret"
    fields = [("MediaUrl", "b"), ("Body", "hi"), ("MediaUrl", "a")]
    params = MultiDict({"MediaUrl": ["b", "a"], "Body": ["hi"]})
    sha256 = RequestValidator(secret).compute_signature(url, params, algorithm="HMAC_SHA256")
    settings = "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"
    body = urlencode(fields).encode()
    async with gateway_client(_cfg("twilio", secrets=[secret], url=url), redis_store) as client:
        ok = await client.post(
            "/webhooks/twilio",
            content=body,
            headers={
                **FORM,
                "X-Twilio-Signature": sha256,
                "X-Twilio-Webhooks-Signature-Settings": settings,
            },
        )
        without_settings = await client.post(
            "/webhooks/twilio", content=body, headers={**FORM, "X-Twilio-Signature": sha256}
        )
        unknown = await client.post(
            "/webhooks/twilio",
            content=body,
            headers={
                **FORM,
                "X-Twilio-Signature": sha256,
                "X-Twilio-Webhooks-Signature-Settings": "key=k,algorithm=HMAC_SHA512",
            },
        )
    assert ok.status_code == 200, ok.text
    assert without_settings.status_code == 401
    assert unknown.status_code == 401 and "HMAC_SHA512" in unknown.json()["detail"]


# --- Mandrill -----------------------------------------------------------------------------


async def test_mandrill_url_check_and_empty_test_batch_are_answered_not_stored(
    redis_store,
) -> None:
    cfg = _cfg("mandrill", secrets=[MANDRILL_KEY], url=MANDRILL_URL)
    # The fallback POST is signed with the generic key `test-webhook` (Mailchimp
    # Transactional docs, "Why can't my webhook URL be verified").
    empty = urlencode({"mandrill_events": "[]"}).encode()
    test_signature = mandrill_signature("test-webhook", MANDRILL_URL, empty)
    async with gateway_client(cfg, redis_store) as client:
        head = await client.head("/webhooks/mandrill")
        get = await client.get("/webhooks/mandrill")
        batch = await client.post(
            "/webhooks/mandrill",
            content=empty,
            headers={**FORM, "X-Mandrill-Signature": test_signature},
        )
        unsigned_events = await client.post(
            "/webhooks/mandrill",
            content=urlencode({"mandrill_events": '[{"event":"send"}]'}).encode(),
            headers={**FORM, "X-Mandrill-Signature": test_signature},
        )
    assert head.status_code == 200 and head.content == b""
    assert get.status_code == 405
    assert batch.status_code == 200, batch.text
    assert unsigned_events.status_code == 401
    assert await raw_entries(redis_store, "mandrill") == []


# --- Mailgun ------------------------------------------------------------------------------

MAILGUN_EVENT = {"event-data": {"id": "ev-1", "event": "opened", "timestamp": 1700000000.0}}


@pytest.mark.parametrize(("offset", "word"), [(-86400, "old"), (86400, "future")])
async def test_mailgun_refuses_a_stale_or_future_timestamp(redis_store, offset, word) -> None:
    clock = Clock()
    body = mailgun_signed(
        json.dumps(MAILGUN_EVENT).encode(), str(int(clock.now + offset)), "t" * 50
    )
    async with gateway_client(_cfg("mailgun", secrets=[MAILGUN_KEY]), redis_store, clock) as client:
        answer = await client.post("/webhooks/mailgun", content=body, headers=JSON)
    assert answer.status_code == 401
    assert "timestamp" in answer.json()["detail"] and word in answer.json()["detail"]


async def test_mailgun_token_is_the_delivery_id_so_a_replayed_signature_is_a_duplicate(
    redis_store,
) -> None:
    clock = Clock()
    body = mailgun_signed(json.dumps(MAILGUN_EVENT).encode(), str(int(clock.now)), "r" * 50)
    forged = json.loads(body)
    forged["event-data"] = {"id": "ev-forged", "event": "clicked"}
    async with gateway_client(_cfg("mailgun", secrets=[MAILGUN_KEY]), redis_store, clock) as client:
        first = await client.post("/webhooks/mailgun", content=body, headers=JSON)
        replay = await client.post(
            "/webhooks/mailgun", content=json.dumps(forged).encode(), headers=JSON
        )
    assert first.json() == {"status": "accepted", "delivery_id": "r" * 50}
    assert replay.json()["status"] == "duplicate"
    assert len(await raw_entries(redis_store, "mailgun")) == 1


async def test_mailgun_subaccount_parent_signature_and_legacy_form(redis_store) -> None:
    clock = Clock()
    parent_key, ts, token = "key-parent-account", str(int(clock.now)), "p" * 50
    sub = mailgun_signed(json.dumps(MAILGUN_EVENT).encode(), ts, token, key="key-subaccount")
    payload = json.loads(sub)
    # Mailgun docs: subaccount events also carry `parent-signature`, the same HMAC made
    # with the primary account's key.
    payload["signature"]["parent-signature"] = hmac.new(
        parent_key.encode(), (ts + token).encode(), hashlib.sha256
    ).hexdigest()
    digest = hmac.new(MAILGUN_KEY.encode(), (ts + "f" * 50).encode(), hashlib.sha256).hexdigest()
    legacy = urlencode(
        {
            "event": "delivered",
            "recipient": "alice@example.com",
            "timestamp": ts,
            "token": "f" * 50,
            "signature": digest,
        }
    ).encode()
    cfg = _cfg("mailgun", secrets=[parent_key, MAILGUN_KEY])
    async with gateway_client(cfg, redis_store, clock) as client:
        parent = await client.post("/webhooks/mailgun", content=json.dumps(payload), headers=JSON)
        form = await client.post("/webhooks/mailgun", content=legacy, headers=FORM)
    assert parent.status_code == 200, parent.text
    assert form.status_code == 200, form.text
    assert form.json()["delivery_id"] == "f" * 50


# --- Adyen --------------------------------------------------------------------------------


def _adyen_batch(count: int) -> bytes:
    items = [
        {
            "NotificationRequestItem": {
                "additionalData": {"hmacSignature": ""},
                "amount": {"currency": "EUR", "value": 1000 + n},
                "eventCode": "AUTHORISATION" if n == 0 else "CAPTURE",
                "eventDate": "2024-01-01T01:00:00+01:00",
                "merchantAccountCode": "YOUR_MERCHANT_ACCOUNT",
                "merchantReference": f"ref-{n}",
                "originalReference": "" if n == 0 else "8313547924770610",
                "pspReference": f"88135479247706{n:02d}",
                "success": "true",
            }
        }
        for n in range(count)
    ]
    return json.dumps({"live": "false", "notificationItems": items}).encode()


async def test_adyen_every_item_must_verify(redis_store) -> None:
    good = adyen_signed(_adyen_batch(3))
    bad = json.loads(good)
    bad["notificationItems"][1]["NotificationRequestItem"]["amount"]["value"] = 1
    async with gateway_client(_cfg("adyen", secrets=[ADYEN_KEY]), redis_store) as client:
        refused = await client.post("/webhooks/adyen", content=json.dumps(bad), headers=JSON)
        ok = await client.post("/webhooks/adyen", content=good, headers=JSON)
    assert refused.status_code == 401
    assert "item 2 of 3" in refused.json()["detail"]
    assert ok.status_code == 200 and ok.content == b"[accepted]"
    entries = await raw_entries(redis_store, "adyen")
    assert len(entries) == 1
    cfg = config(_cfg("adyen", secrets=[ADYEN_KEY]))
    pipeline = Pipeline(cfg, redis_store)
    fields = {k.encode(): (v.encode() if isinstance(v, str) else v) for k, v in entries[0].items()}
    events = normalize(pipeline.delivery("adyen", fields), pipeline.mappers["adyen"])
    assert [e.event for e in events] == ["Authorisation", "Capture", "Capture"]


def test_adyen_send_signs_what_the_sdk_validates() -> None:
    signed = VENDORS["adyen"].scheme.sign(ADYEN_KEY, Request(_adyen_batch(2), {}, 0.0), "d1")
    for wrapper in json.loads(signed.body)["notificationItems"]:
        assert is_valid_hmac_notification(wrapper["NotificationRequestItem"], ADYEN_KEY)


def test_adyen_refuses_a_key_that_is_not_hex() -> None:
    with pytest.raises(Exception, match="hex"):
        config(_cfg("adyen", secrets=["not-a-hex-key"]))


# --- Braintree ----------------------------------------------------------------------------


def _braintree_gateway(public: str = BRAINTREE_PUBLIC) -> braintree.BraintreeGateway:
    return braintree.BraintreeGateway(
        braintree.Configuration(
            braintree.Environment.Sandbox,
            merchant_id="merchant_1",
            public_key=public,
            private_key=BRAINTREE_PRIVATE,
        )
    )


@pytest.mark.parametrize("secret", [f"{BRAINTREE_PUBLIC}:{BRAINTREE_PRIVATE}", BRAINTREE_PRIVATE])
async def test_braintree_sdk_signed_notification_is_accepted(redis_store, secret) -> None:
    # braintree SDK: webhook_testing.sample_notification signs as Braintree does (no network).
    sample = _braintree_gateway().webhook_testing.sample_notification(
        braintree.WebhookNotification.Kind.DisputeOpened, "dispute_1"
    )
    body = urlencode(sample).encode()
    other = _braintree_gateway("pub_other").webhook_testing.sample_notification(
        braintree.WebhookNotification.Kind.DisputeOpened, "dispute_2"
    )
    async with gateway_client(_cfg("braintree", secrets=[secret]), redis_store) as client:
        ok = await client.post("/webhooks/braintree", content=body, headers=FORM)
        foreign = await client.post(
            "/webhooks/braintree", content=urlencode(other).encode(), headers=FORM
        )
    assert ok.status_code == 200, ok.text
    # Another public key: refused when the source names its own, accepted (same private
    # key) when it gives the private key alone.
    assert foreign.status_code == (401 if ":" in secret else 200)


@pytest.mark.parametrize(
    "kind",
    [
        braintree.WebhookNotification.Kind.SubscriptionChargedSuccessfully,
        braintree.WebhookNotification.Kind.DisputeOpened,
        braintree.WebhookNotification.Kind.TransactionSettled,
        braintree.WebhookNotification.Kind.Check,
    ],
)
def test_braintree_payload_reads_as_the_sdk_parser_reads_it(kind) -> None:
    sample = _braintree_gateway().webhook_testing.sample_notification(kind, "id_1")
    ours = braintree_notification({"bt_payload": sample["bt_payload"].decode()})
    theirs = XmlUtil.dict_from_xml(base64.b64decode(sample["bt_payload"]))["notification"]

    def plain(value):  # the SDK makes datetimes; the normalizer keeps the ISO text
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%dT%H:%M:%SZ")
        return str(value) if hasattr(value, "isoformat") else value

    assert plain(theirs) == plain(ours)
    assert ours["kind"] == kind


CHECK_XML = (
    "<notification><kind>check</kind>"
    "<subject><check type='boolean'>true</check></subject></notification>"
)


def test_braintree_send_signs_what_the_sdk_parses() -> None:
    xml = CHECK_XML
    body = urlencode({"bt_payload": xml}).encode()
    signed = VENDORS["braintree"].scheme.sign(
        f"{BRAINTREE_PUBLIC}:{BRAINTREE_PRIVATE}", Request(body, {}, 0.0), "d1"
    )
    fields = dict(parse_qsl(signed.body.decode()))
    notification = _braintree_gateway().webhook_notification.parse(
        fields["bt_signature"], fields["bt_payload"]
    )
    assert notification.kind == "check"
    assert braintree_form(xml) == signed.body  # the SDK's encoding, byte for byte


# --- Dropbox Sign -------------------------------------------------------------------------


def _dropbox_event(kind: str, when: str = "1348177752") -> dict:
    return {"event": {"event_time": when, "event_type": kind, "event_hash": ""}}


async def test_dropbox_sign_callback_test_is_answered_not_stored(redis_store) -> None:
    signed = dropbox_sign_request(_dropbox_event("callback_test"))
    cfg = _cfg("dropbox-sign", secrets=[DROPBOX_SIGN_KEY])
    async with gateway_client(cfg, redis_store) as client:
        answer = await client.post(
            "/webhooks/dropbox-sign", content=signed.body, headers=signed.headers
        )
        forged = dropbox_sign_request(_dropbox_event("callback_test"), key="another-key")
        refused = await client.post(
            "/webhooks/dropbox-sign", content=forged.body, headers=forged.headers
        )
    assert answer.status_code == 200
    assert answer.text == "Hello API Event Received"
    assert answer.headers["content-type"].startswith("text/plain")
    assert refused.status_code == 401
    assert await raw_entries(redis_store, "dropbox-sign") == []


async def test_dropbox_sign_event_is_acknowledged_with_the_exact_text(redis_store) -> None:
    signed = dropbox_sign_request(_dropbox_event("signature_request_viewed"))
    # Urlencoded works as well as multipart (the `json` field either way).
    form = urlencode({"json": _field_json(signed)}).encode()
    cfg = _cfg("dropbox-sign", secrets=[DROPBOX_SIGN_KEY])
    async with gateway_client(cfg, redis_store) as client:
        first = await client.post(
            "/webhooks/dropbox-sign", content=signed.body, headers=signed.headers
        )
        as_form = await client.post("/webhooks/dropbox-sign", content=form, headers=FORM)
    assert first.status_code == 200 and first.text == "Hello API Event Received"
    assert as_form.status_code == 200 and as_form.text == "Hello API Event Received"
    assert len(await raw_entries(redis_store, "dropbox-sign")) == 2


def _field_json(signed) -> str:
    boundary = signed.headers["content-type"].split("boundary=")[1].encode()
    part = signed.body.split(b"--" + boundary)[1]
    return part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0].decode()


@pytest.mark.parametrize("name", ["braintree", "dropbox-sign"])
def test_mappings_read_the_decoded_payload(name) -> None:
    """`Spec.decode`: mappings, `map` and context.source.eventType see the notification
    inside Braintree's base64 XML and Dropbox Sign's multipart form, not the envelope."""
    from normalizers import vendor_event_type
    from normalizers.base import Delivery
    from normalizers.generic import payload_of, spec_of

    if name == "braintree":
        body, headers, kind = braintree_form(CHECK_XML), FORM, "check"
        secret = BRAINTREE_PRIVATE
    else:
        signed = dropbox_sign_request(_dropbox_event("signature_request_sent"))
        body, headers, kind = signed.body, signed.headers, "signature_request_sent"
        secret = DROPBOX_SIGN_KEY
    source = config(_cfg(name, secrets=[secret])).sources[name]
    delivery = Delivery(name, name, "d1", 0, headers, body, source)
    payload = payload_of(delivery, spec_of(delivery))
    assert (payload["kind"] if name == "braintree" else payload["event"]["event_type"]) == kind
    assert vendor_event_type(delivery) == kind
