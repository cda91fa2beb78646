"""Cases for the URL/form and body-field vendors (gateway/sources/vendors/fields.py).

Each signer is the vendor's own SDK where one is pip-installable (twilio, braintree, Adyen)
or the vendor's documented algorithm written out with hmac/hashlib, the docs cited.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import parse_qsl, urlencode

from Adyen.util import generate_notification_sig
from braintree.util.crypto import Crypto
from twilio.request_validator import RequestValidator
from urllib3 import encode_multipart_formdata

from tests.sources.catalog_cases import Case, Signed

TWILIO_TOKEN = "twilio-auth-token-0123456789abcdef"
TWILIO_URL = "https://hooks.example.com/webhooks/twilio"
MANDRILL_KEY = "mandrill-webhook-key-1"
MANDRILL_URL = "https://hooks.example.com/webhooks/mandrill"
MAILGUN_KEY = "key-mailgun-signing-0123456789"
BRAINTREE_PUBLIC, BRAINTREE_PRIVATE = "pub_4kq9xt", "b4e1d06f0f3c4a2e9f1c7d8e5a6b3c21"
ADYEN_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
DROPBOX_SIGN_KEY = "dropbox-sign-api-key-0123456789abcdef"


def _twilio(body: bytes, now: float) -> Signed:
    # twilio SDK: RequestValidator.compute_signature(url, POST params), the value Twilio puts
    # in X-Twilio-Signature (https://www.twilio.com/docs/usage/webhooks/webhooks-security).
    params = dict(parse_qsl(body.decode(), keep_blank_values=True))
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(TWILIO_URL, params)
    return Signed({"X-Twilio-Signature": signature}, body)


def mandrill_signature(key: str, url: str, body: bytes) -> str:
    # Mailchimp Transactional docs, "Authenticating webhook requests": the webhook URL, then
    # each POST variable's key and value sorted by key, no delimiter; HMAC-SHA1 with the
    # webhook key, base64 (https://mailchimp.com/developer/transactional/guides/
    # track-respond-activity-webhooks/#authenticating-webhook-requests).
    signed = url + "".join(k + v for k, v in sorted(parse_qsl(body.decode())))
    return base64.b64encode(hmac.new(key.encode(), signed.encode(), hashlib.sha1).digest()).decode()


def _mandrill(body: bytes, now: float) -> Signed:
    return Signed(
        {"X-Mandrill-Signature": mandrill_signature(MANDRILL_KEY, MANDRILL_URL, body)}, body
    )


def mailgun_signed(body: bytes, timestamp: str, token: str, key: str = MAILGUN_KEY) -> bytes:
    # Mailgun docs, "Securing webhooks": signature = hex HMAC-SHA256(webhook signing key,
    # timestamp + token), sent in the body's `signature` object
    # (https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks).
    payload = json.loads(body)
    digest = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    payload["signature"] = {"timestamp": timestamp, "token": token, "signature": digest}
    return json.dumps(payload).encode()


def _mailgun(body: bytes, now: float) -> Signed:
    token = hashlib.sha256(body).hexdigest()[:50]
    return Signed({}, mailgun_signed(body, str(int(now)), token))


def _mailgun_tamper(signed: Signed) -> Signed:
    # The body is not signed: changing it proves nothing; a changed token must fail.
    payload = json.loads(signed.body)
    payload["signature"]["token"] = payload["signature"]["token"][:-1] + "x"
    return Signed(signed.headers, json.dumps(payload).encode(), signed.query)


def braintree_form(xml: str, public: str = BRAINTREE_PUBLIC, private: str = BRAINTREE_PRIVATE):
    # braintree SDK: WebhookTestingGateway.sample_notification base64-encodes the XML with
    # encodebytes and signs it with Crypto.sha1_hmac_hash(private_key, payload), as
    # `public_key|hex` (braintree/webhook_testing_gateway.py).
    payload = base64.encodebytes(xml.encode())
    signature = f"{public}|{Crypto.sha1_hmac_hash(private, payload)}"
    return urlencode({"bt_signature": signature, "bt_payload": payload}).encode()


def _braintree(body: bytes, now: float) -> Signed:
    xml = dict(parse_qsl(body.decode()))["bt_payload"]
    return Signed({}, braintree_form(xml))


def _braintree_tamper(signed: Signed) -> Signed:
    fields = dict(parse_qsl(signed.body.decode()))
    xml = base64.b64decode(fields["bt_payload"]).replace(b"49.99", b"0.01")
    fields["bt_payload"] = base64.encodebytes(xml).decode()
    return Signed(signed.headers, urlencode(fields).encode(), signed.query)


def adyen_signed(body: bytes, key: str = ADYEN_KEY) -> bytes:
    # Adyen SDK: util.generate_notification_sig(NotificationRequestItem, hex key), base64 into
    # additionalData.hmacSignature of every item.
    payload = json.loads(body)
    for wrapper in payload["notificationItems"]:
        item = wrapper["NotificationRequestItem"]
        unsigned = {k: v for k, v in item.items() if k != "additionalData"}
        item["additionalData"]["hmacSignature"] = generate_notification_sig(unsigned, key).decode()
    return json.dumps(payload).encode()


def _adyen(body: bytes, now: float) -> Signed:
    return Signed({}, adyen_signed(body))


def _adyen_tamper(signed: Signed) -> Signed:
    payload = json.loads(signed.body)
    payload["notificationItems"][0]["NotificationRequestItem"]["amount"]["value"] += 1
    return Signed(signed.headers, json.dumps(payload).encode(), signed.query)


def dropbox_sign_request(payload: dict, key: str = DROPBOX_SIGN_KEY) -> Signed:
    # dropbox-sign SDK EventCallbackHelper.is_valid: event_hash = hex HMAC-SHA256(API key,
    # f"{event_time}{event_type}"); Dropbox Sign posts the event as the `json` field of a
    # multipart/form-data body (https://developers.hellosign.com/docs/events/walkthrough/).
    event = payload["event"]
    content = f"{event['event_time']}{event['event_type']}".encode()
    event["event_hash"] = hmac.new(key.encode(), content, hashlib.sha256).hexdigest()
    body, content_type = encode_multipart_formdata({"json": json.dumps(payload)})
    return Signed({"content-type": content_type}, body)


def _dropbox_sign(body: bytes, now: float) -> Signed:
    return dropbox_sign_request(json.loads(body))


def _dropbox_sign_tamper(signed: Signed) -> Signed:
    return Signed(
        signed.headers,
        signed.body.replace(b"signature_request_signed", b"signature_request_viewed"),
        signed.query,
    )


CASES = {
    "twilio": Case(
        config={"secrets": [TWILIO_TOKEN], "url": TWILIO_URL},
        sign=_twilio,
        why="twilio SDK RequestValidator.compute_signature",
        event="Delivered",
    ),
    "mandrill": Case(
        config={"secrets": [MANDRILL_KEY], "url": MANDRILL_URL},
        sign=_mandrill,
        why="Mailchimp Transactional docs: base64 HMAC-SHA1 of url + sorted POST key/values",
        event="Send",
        events=2,
    ),
    "mailgun": Case(
        config={"secrets": [MAILGUN_KEY]},
        sign=_mailgun,
        why="Mailgun docs: hex HMAC-SHA256 of timestamp + token",
        event="Delivered",
        tamper=_mailgun_tamper,
    ),
    "braintree": Case(
        config={"secrets": [f"{BRAINTREE_PUBLIC}:{BRAINTREE_PRIVATE}"]},
        sign=_braintree,
        why="braintree SDK Crypto.sha1_hmac_hash over the encodebytes payload",
        event="Subscription Charged Successfully",
        tamper=_braintree_tamper,
    ),
    "adyen": Case(
        config={"secrets": [ADYEN_KEY]},
        sign=_adyen,
        why="Adyen SDK util.generate_notification_sig",
        event="Authorisation",
        tamper=_adyen_tamper,
    ),
    "dropbox-sign": Case(
        config={"secrets": [DROPBOX_SIGN_KEY]},
        sign=_dropbox_sign,
        why="dropbox-sign SDK EventCallbackHelper algorithm written out; urllib3 multipart",
        event="Signature Request Signed",
        tamper=_dropbox_sign_tamper,
    ),
}
