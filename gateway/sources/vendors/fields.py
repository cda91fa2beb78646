"""Vendors whose signature covers the URL and the form parameters (Twilio, Mandrill) or
fields inside the body (Mailgun, Braintree, Adyen, Dropbox Sign), with their envelopes.

Mailgun and Dropbox Sign sign a few fields, not the body: a captured request's signature
can be replayed with another body. Both are marked weaker; Mailgun's signed token is its
delivery id, so a replay within the dedupe window is a duplicate, and its timestamp bounds
the rest. Braintree's base64 XML and Dropbox Sign's multipart form are decoded here for
the generic normalizer and mappings (`Spec.decode`).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlparse, urlsplit, urlunsplit
from xml.etree import ElementTree

from normalizers.base import NormalizeError
from normalizers.generic import Spec

from ...errors import NO_MATCH, PayloadError, SignatureError
from ..catalog import CatalogSource, Reply, Request, Scheme, Signed, Vendor, register_vendor
from ..signing import check_window, matches_any, parse_timestamp

# --- form bodies ----------------------------------------------------------------------------


def form_fields(body: bytes, content_type: str) -> list[tuple[str, str]]:
    """The fields of an urlencoded or multipart/form-data body, in order (files skipped)."""
    if content_type.lower().startswith("multipart/form-data"):
        head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        if not message.is_multipart():
            raise PayloadError("the multipart/form-data body has no parts (boundary?)")
        fields = []
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str) or part.get_filename():
                continue
            raw = part.get_payload(decode=True) or b""
            fields.append((name, raw.decode(part.get_content_charset() or "utf-8", "replace")))
        return fields
    return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)


def _fields(request: Request) -> dict[str, str]:
    return dict(form_fields(request.body, request.headers.get("content-type", "")))


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "").lower()
    return kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


def _hex_digests(keys: Sequence[bytes], content: bytes, algorithm: Callable) -> list[bytes]:
    return [hmac.new(key, content, algorithm).hexdigest().encode() for key in keys]


def _json_body(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# --- Twilio and Mandrill: the URL and the sorted POST parameters -----------------------------

TWILIO_SETTINGS = "x-twilio-webhooks-signature-settings"
_TWILIO_ALGORITHMS = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}


def sorted_params(fields: Sequence[tuple[str, str]]) -> str:
    """Each parameter name followed by its value, by name (code point order); a repeated
    name's distinct values in order too, as Twilio's RequestValidator does."""
    grouped: dict[str, set[str]] = {}
    for name, value in fields:
        grouped.setdefault(name, set()).add(value)
    return "".join(name + value for name in sorted(grouped) for value in sorted(grouped[name]))


def twilio_urls(url: str) -> list[str]:
    """The URL without and with its port: Twilio's RequestValidator accepts either, "since
    sig generation on back end is inconsistent" (twilio-python request_validator.py)."""
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        return [url]
    if port:
        return [parsed._replace(netloc=parsed.netloc.rsplit(":", 1)[0]).geturl(), parsed.geturl()]
    default = 443 if parsed.scheme == "https" else 80
    return [parsed.geturl(), parsed._replace(netloc=f"{parsed.netloc}:{default}").geturl()]


@dataclass(frozen=True)
class UrlFormHmac(Scheme):
    """base64 HMAC of the URL the vendor called followed by each POST parameter's name and
    value sorted by name. `twilio`: the port variants, JSON bodies signed through a
    `bodySHA256` URL parameter, and SharedKey's HMAC-SHA256 (named in a settings header)."""

    header: str
    twilio: bool = False

    needs_url: ClassVar[bool] = True

    def headers(self) -> tuple[str, ...]:
        return (self.header.lower(), TWILIO_SETTINGS) if self.twilio else (self.header.lower(),)

    def describe(self) -> str:
        what = f"HMAC-SHA1 base64 of `url + sorted form name/value pairs` in {self.header}"
        if self.twilio:
            what += (
                " (JSON bodies: the URL with `bodySHA256`; with or without the port; "
                "SharedKey: HMAC-SHA256 when its settings header says so)"
            )
        return what

    def verify(self, keys: Sequence[Any], request: Request) -> None:
        text = request.headers.get(self.header.lower())
        if not text:
            raise SignatureError(f"the {self.header} header is missing")
        try:
            given = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError(f"the {self.header} header is not base64") from None
        algorithm = self._algorithm(request)
        contents = [c.encode() for c in self._contents(request)]
        expected = [hmac.new(k, c, algorithm).digest() for k in keys for c in contents]
        if not matches_any(expected, [given]):
            # The URL is not echoed: a configured one may hold Basic auth credentials.
            raise SignatureError(
                f"{NO_MATCH}; what is signed is this source's `url:` (plus the request's "
                "query) and the sorted form parameters: the URL must be exactly the one "
                "configured at the vendor"
            )

    def _algorithm(self, request: Request) -> Callable:
        if not self.twilio:
            return hashlib.sha1
        # twilio-python get_signature_algorithm: `key=...,algorithm=HMAC_SHA256` names the
        # SharedKey's algorithm; no header (or no algorithm=) is the Auth Token's HMAC-SHA1.
        name = "HMAC_SHA1"
        for part in request.headers.get(TWILIO_SETTINGS, "").split(","):
            key, sep, value = part.partition("=")
            if sep and key.strip() == "algorithm" and value.strip():
                name = value.strip().upper()
        if name not in _TWILIO_ALGORITHMS:
            raise SignatureError(
                f"X-Twilio-Webhooks-Signature-Settings names the algorithm {name!r}; "
                "this gateway knows HMAC_SHA1 and HMAC_SHA256"
            )
        return _TWILIO_ALGORITHMS[name]

    def _contents(self, request: Request) -> list[str]:
        if not self.twilio:
            return [request.url + sorted_params(form_fields(request.body, _kind(request)))]
        query = dict(parse_qsl(urlsplit(request.url).query))
        if "bodySHA256" in query:
            # A JSON body: the URL alone is signed, and its bodySHA256 must be the body's.
            actual = hashlib.sha256(request.body).hexdigest().encode()
            if not hmac.compare_digest(actual, query["bodySHA256"].encode()):
                raise SignatureError("the bodySHA256 URL parameter is not the body's SHA-256")
            tail = ""
        else:
            tail = sorted_params(form_fields(request.body, _kind(request)))
        return [url + tail for url in twilio_urls(request.url)]

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        parts = urlsplit(request.url)
        if self.twilio and request.body.lstrip()[:1] in (b"{", b"["):
            digest = hashlib.sha256(request.body).hexdigest()
            query = "&".join(q for q in (parts.query, f"bodySHA256={digest}") if q)
            content = urlunsplit(parts._replace(query=query))
        else:
            query = parts.query
            content = request.url + sorted_params(form_fields(request.body, ""))
        mac = hmac.new(secret.encode(), content.encode(), hashlib.sha1).digest()
        return Signed({self.header: base64.b64encode(mac).decode()}, request.body, query)


def _kind(request: Request) -> str:
    return request.headers.get("content-type", "")


def _mandrill_setup(source: CatalogSource, method: str, request: Request) -> Reply | None:
    """Mandrill checks a new webhook URL with a HEAD (200 expected); failing that, it POSTs
    an empty batch signed with the key `test-webhook` (Mailchimp Transactional docs, "Why
    can't my webhook URL be verified"). Neither carries an event."""
    if method == "HEAD":
        return Reply(b"", content_type="text/plain; charset=utf-8")
    small_form = method == "POST" and len(request.body) <= 64 and _is_form(request)
    if small_form and _fields(request).get("mandrill_events", "").strip() == "[]":
        return Reply.text("")
    return None


# --- Mailgun: timestamp + token inside the body ----------------------------------------------


@dataclass(frozen=True)
class MailgunSignature(Scheme):
    """hex HMAC-SHA256 of `timestamp + token`, in the JSON body's `signature` object (or the
    legacy form fields of the same names); `parent-signature` for subaccounts."""

    tolerance: float | None = None

    weak: ClassVar[bool] = True

    def with_tolerance(self, tolerance: float | None) -> MailgunSignature:
        return dataclasses.replace(self, tolerance=tolerance)

    def describe(self) -> str:
        return (
            "HMAC-SHA256 hex of `timestamp + token` in the body's `signature` (the body "
            "itself is not signed; a replay is refused by its timestamp and its token)"
        )

    def verify(self, keys: Sequence[Any], request: Request) -> None:
        fields = self._signature(request)
        timestamp, token, signature = (fields.get(k) for k in ("timestamp", "token", "signature"))
        if not (isinstance(timestamp, str | int) and isinstance(token, str)):
            raise SignatureError("the body's signature has no timestamp and token")
        if not isinstance(signature, str) or not signature:
            raise SignatureError("the body's signature has no signature value")
        if self.tolerance is not None:
            check_window(parse_timestamp(str(timestamp), "s"), request.now, self.tolerance)
        expected = _hex_digests(keys, f"{timestamp}{token}".encode(), hashlib.sha256)
        given = [signature.lower().encode()]
        parent = fields.get("parent-signature")
        if isinstance(parent, str) and parent:
            given.append(parent.lower().encode())
        if not matches_any(expected, given):
            raise SignatureError(NO_MATCH + " (Mailgun: the HTTP webhook signing key)")

    def _signature(self, request: Request) -> dict[str, Any]:
        if _is_form(request):
            return _fields(request)
        try:
            body = request.json()
        except PayloadError:
            raise SignatureError("the body is not JSON, so it has no signature object") from None
        found = body.get("signature") if isinstance(body, dict) else None
        if not isinstance(found, dict):
            raise SignatureError("the body has no `signature` object")
        return found

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        timestamp = str(int(request.now))
        token = hashlib.sha256(delivery_id.encode()).hexdigest()[:50]
        mac = hmac.new(secret.encode(), (timestamp + token).encode(), hashlib.sha256)
        values = {"timestamp": timestamp, "token": token, "signature": mac.hexdigest()}
        if request.body.lstrip()[:1] != b"{":  # a legacy form-encoded webhook
            fields = [(k, v) for k, v in form_fields(request.body, "") if k not in values]
            return Signed({}, urlencode([*fields, *values.items()]).encode(), request.query)
        body = json.loads(request.body)
        body["signature"] = values
        return Signed({}, _json_body(body), request.query)


# --- Braintree: bt_signature over the base64 XML bt_payload ----------------------------------

_BT_PAYLOAD = re.compile(r"[A-Za-z0-9+=/\n]+")


@dataclass(frozen=True)
class BraintreeSignature(Scheme):
    """`bt_signature` holds `public_key|hex HMAC-SHA1(SHA-1(private key), bt_payload)` pairs
    joined by `&` (braintree-python webhook_notification_gateway.py)."""

    def describe(self) -> str:
        return (
            "bt_signature `public_key|HMAC-SHA1 hex of bt_payload` keyed with SHA-1(private "
            "key); secret: `public_key:private_key` (or the private key alone)"
        )

    def load(self, key: str) -> tuple[bytes | None, bytes]:
        public, sep, private = key.strip().rpartition(":")
        if not private:
            raise ValueError("expected the Braintree private key (or `public_key:private_key`)")
        return (public.encode() if sep else None), hashlib.sha1(private.encode()).digest()

    def verify(self, keys: Sequence[Any], request: Request) -> None:
        fields = _fields(request)
        signature, payload = fields.get("bt_signature"), fields.get("bt_payload")
        if not signature or not payload:
            raise SignatureError("the form fields bt_signature and bt_payload are required")
        if not _BT_PAYLOAD.fullmatch(payload):
            raise SignatureError("bt_payload is not base64")
        pairs = [p.partition("|")[::2] for p in signature.split("&") if "|" in p]
        if not pairs:
            raise SignatureError("bt_signature holds no `public_key|signature` pair")
        found = False
        for public, key in keys:
            given = [s.lower().encode() for p, s in pairs if public is None or p.encode() == public]
            # The SDK also accepts the payload with a trailing newline (form parsers strip it).
            for content in (payload.encode(), payload.encode() + b"\n"):
                found |= matches_any(_hex_digests([key], content, hashlib.sha1), given)
        if not found:
            raise SignatureError(NO_MATCH + " (Braintree: `public_key:private_key`)")

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        public, key = self.load(secret)
        payload = dict(form_fields(request.body, "")).get("bt_payload", "")
        if payload.lstrip().startswith("<"):  # the sample's XML: encode it as Braintree does
            payload = base64.encodebytes(payload.encode()).decode()
        mac = hmac.new(key, payload.encode(), hashlib.sha1).hexdigest()
        pair = f"{(public or b'send').decode()}|{mac}"
        body = urlencode([("bt_signature", pair), ("bt_payload", payload)]).encode()
        return Signed({}, body, request.query)


def braintree_notification(fields: dict[str, Any]) -> dict[str, Any]:
    """The notification inside `bt_payload` as a dict, read as braintree-python's XML parser
    reads it (dashes become underscores, `type="array"` lists, integers, booleans, nil)."""
    payload = fields.get("bt_payload")
    if not isinstance(payload, str):
        raise NormalizeError("the form field bt_payload is missing")
    try:
        root = ElementTree.fromstring(binascii.a2b_base64(payload))
    except (binascii.Error, ElementTree.ParseError, ValueError):
        raise NormalizeError("bt_payload is not base64-encoded XML") from None
    value = _xml_value(root)
    if not isinstance(value, dict):
        raise NormalizeError("bt_payload holds no notification")
    return value


def _xml_value(node: ElementTree.Element) -> Any:
    kind = node.get("type")
    children = list(node)
    if kind == "array":
        return [_xml_value(child) for child in children]
    if children:
        out: dict[str, Any] = {}
        for child in children:
            key, value = child.tag.replace("-", "_"), _xml_value(child)
            if key in out and isinstance(value, dict) and child.get("type") != "array":
                out[key] = [*(out[key] if isinstance(out[key], list) else [out[key]]), value]
            else:
                out[key] = value
        return out
    text = node.text or ""
    if node.get("nil") == "true":
        return None
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            return text
    if kind == "boolean":
        return text in ("true", "1")
    return text


# --- Adyen: HMAC over listed fields of each notification item --------------------------------

_ADYEN_FIELDS = (
    "pspReference",
    "originalReference",
    "merchantAccountCode",
    "merchantReference",
    "value",
    "currency",
    "eventCode",
    "success",
)


def adyen_signed_text(item: dict[str, Any]) -> str:
    """The colon-joined fields Adyen signs (Adyen-python-api-library util.py
    generate_notification_sig): a missing field is empty; the amount gives value/currency."""
    amount = item.get("amount") if isinstance(item.get("amount"), dict) else {}
    values = {**item, "value": amount.get("value"), "currency": amount.get("currency")}
    return ":".join(_adyen_text(values.get(name)) for name in _ADYEN_FIELDS)


def _adyen_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):  # Adyen sends "true"/"false" strings; a JSON bool reads alike
        return "true" if value else "false"
    return str(value)


def _adyen_items(body: Any) -> list[dict[str, Any]]:
    items = body.get("notificationItems") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise SignatureError("the body has no notificationItems")
    out = []
    for item in items:
        inner = item.get("NotificationRequestItem") if isinstance(item, dict) else None
        if not isinstance(inner, dict):
            raise SignatureError("a notification item has no NotificationRequestItem")
        out.append(inner)
    return out


@dataclass(frozen=True)
class AdyenHmac(Scheme):
    """base64 HMAC-SHA256 with the hex HMAC key over each item's listed fields, in the item's
    additionalData.hmacSignature; every item must carry a valid one."""

    def describe(self) -> str:
        return (
            "HMAC-SHA256 base64 (hex key) of `pspReference:originalReference:"
            "merchantAccountCode:merchantReference:value:currency:eventCode:success` "
            "in each item's additionalData.hmacSignature"
        )

    def load(self, key: str) -> bytes:
        try:
            raw = bytes.fromhex(key.strip())
        except ValueError:
            raw = b""
        if not raw:
            raise ValueError("expected Adyen's HMAC key: hexadecimal, as the Customer Area shows")
        return raw

    def verify(self, keys: Sequence[Any], request: Request) -> None:
        items = _adyen_items(request.json())
        for number, item in enumerate(items, 1):
            where = f"notification item {number} of {len(items)}"
            extra = item.get("additionalData")
            text = extra.get("hmacSignature") if isinstance(extra, dict) else None
            if not isinstance(text, str) or not text:
                raise SignatureError(f"{where} has no additionalData.hmacSignature")
            try:
                given = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise SignatureError(f"{where}: hmacSignature is not base64") from None
            content = adyen_signed_text(item).encode()
            expected = [hmac.new(key, content, hashlib.sha256).digest() for key in keys]
            if not matches_any(expected, [given]):
                raise SignatureError(f"{where}: {NO_MATCH}")

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        key = self.load(secret)
        body = json.loads(request.body)
        for item in _adyen_items(body):
            mac = hmac.new(key, adyen_signed_text(item).encode(), hashlib.sha256).digest()
            extra = item.setdefault("additionalData", {})
            extra["hmacSignature"] = base64.b64encode(mac).decode()
        return Signed({}, _json_body(body), request.query)


# --- Dropbox Sign: event_hash over event_time + event_type -----------------------------------

DROPBOX_SIGN_ACK = "Hello API Event Received"


def dropbox_sign_event(body: bytes, content_type: str) -> Any:
    """The callback's JSON: the `json` field of its multipart (or urlencoded) form."""
    if content_type.lower().startswith("application/json"):
        raw = body.decode("utf-8", "replace")
    else:
        raw = dict(form_fields(body, content_type)).get("json")
    if raw is None:
        raise PayloadError("the form has no `json` field")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise PayloadError("the `json` form field is not JSON") from None


@dataclass(frozen=True)
class DropboxSignEventHash(Scheme):
    """`event.event_hash` = hex HMAC-SHA256(API key, event_time + event_type) (dropbox-sign
    SDK EventCallbackHelper.is_valid)."""

    weak: ClassVar[bool] = True

    def describe(self) -> str:
        return (
            "HMAC-SHA256 hex of `event_time + event_type` in the `json` field's "
            "event.event_hash (the rest of the body is not signed)"
        )

    def verify(self, keys: Sequence[Any], request: Request) -> None:
        try:
            payload = dropbox_sign_event(request.body, _kind(request))
        except PayloadError as e:
            raise SignatureError(f"{e}, so it has no event_hash") from None
        event = payload.get("event") if isinstance(payload, dict) else None
        event = event if isinstance(event, dict) else {}
        when, kind, given = (event.get(k) for k in ("event_time", "event_type", "event_hash"))
        if not (isinstance(when, str | int) and isinstance(kind, str) and isinstance(given, str)):
            raise SignatureError("the event has no event_time, event_type and event_hash")
        expected = _hex_digests(keys, f"{when}{kind}".encode(), hashlib.sha256)
        if not matches_any(expected, [given.lower().encode()]):
            raise SignatureError(NO_MATCH + " (Dropbox Sign signs with the account's API key)")

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        payload = json.loads(request.body)
        event = payload["event"]
        content = f"{event['event_time']}{event['event_type']}".encode()
        event["event_hash"] = hmac.new(secret.encode(), content, hashlib.sha256).hexdigest()
        boundary = "gateway" + hashlib.sha256(delivery_id.encode()).hexdigest()[:24]
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="json"\r\n\r\n'.encode()
            + _json_body(payload)
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
        return Signed(headers, body, request.query)


def _dropbox_sign_test(source: CatalogSource, request: Request) -> Reply | None:
    """`callback_test` (sent when a callback URL is set) is answered, not stored."""
    payload = dropbox_sign_event(request.body, _kind(request))
    event = payload.get("event") if isinstance(payload, dict) else None
    if isinstance(event, dict) and event.get("event_type") == "callback_test":
        return Reply.text(DROPBOX_SIGN_ACK)
    return None


# --- bodies the generic decoding cannot read (Spec.decode) ----------------------------------


def braintree_payload(body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    """A Braintree delivery's notification, for the normalizer and mappings."""
    return braintree_notification(dict(form_fields(body, headers.get("content-type", ""))))


def dropbox_sign_payload(body: bytes, headers: Mapping[str, str]) -> Any:
    """A Dropbox Sign delivery's event callback JSON, for the normalizer and mappings."""
    try:
        return dropbox_sign_event(body, headers.get("content-type", ""))
    except PayloadError as e:
        raise NormalizeError(str(e)) from None


# --- the vendors ------------------------------------------------------------------------------

FORM = "application/x-www-form-urlencoded"

register_vendor(
    Vendor(
        name="twilio",
        title="Twilio",
        category="messaging",
        scheme=UrlFormHmac("X-Twilio-Signature", twilio=True),
        docs="https://www.twilio.com/docs/usage/webhooks/webhooks-security",
        tested_with="twilio SDK (RequestValidator), published vector (Twilio docs)",
        delivery_id=("header:I-Twilio-Idempotency-Token", "hash"),
        # Messaging webhooks carry SmsStatus (`received`, `delivered`, ...), status
        # callbacks MessageStatus, voice ones CallStatus (`ringing`, `completed`, ...).
        spec=Spec(event_type="SmsStatus|MessageStatus|CallStatus", properties=None),
        # https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides (rc)
        retry_window="once after a failed connection (connection overrides: up to 5)",
        content_type=FORM,
        note="`url:` must be the exact URL configured at Twilio (query included); "
        "JSON bodies are checked through their bodySHA256 URL parameter.",
    )
)
register_vendor(
    Vendor(
        name="mandrill",
        title="Mailchimp Transactional (Mandrill)",
        category="email",
        scheme=UrlFormHmac("X-Mandrill-Signature"),
        docs="https://mailchimp.com/developer/transactional/guides/"
        "track-respond-activity-webhooks/#authenticating-webhook-requests",
        tested_with="docs (HMAC written out)",
        delivery_id=("hash",),
        spec=Spec(
            json_field="mandrill_events", each="@", event_type="event", time="ts", properties="msg"
        ),
        retry_window="failed batches for a while (schedule not published)",
        content_type=FORM,
        challenge=_mandrill_setup,
        handshake_doc="HEAD (URL check) answered 200; the empty test batch answered, not stored",
        note="`url:` must be the webhook URL exactly as entered in Mandrill.",
    )
)
register_vendor(
    Vendor(
        name="mailgun",
        title="Mailgun",
        category="email",
        scheme=MailgunSignature(),
        docs="https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/"
        "securing-webhooks",
        tested_with="docs (HMAC written out)",
        # The token is signed; event-data.id is not, so a replayed signature with another
        # body would get past a dedupe on it.
        delivery_id=("body:signature.token", "form:token"),
        spec=Spec(
            event_type="event-data.event", time="event-data.timestamp", properties="event-data"
        ),
        retry_window="for 8 hours (5 min to 4 h apart)",
        # Retries resend the first attempt's signature (Hookdeck's Mailgun notes; Mailgun's
        # docs are silent), so the window spans the retries; the token dedupe stops replays.
        tolerance="9h",
    )
)
register_vendor(
    Vendor(
        name="braintree",
        title="Braintree",
        category="payments",
        scheme=BraintreeSignature(),
        docs="https://developer.paypal.com/braintree/docs/guides/webhooks/parse/python",
        tested_with="braintree SDK (WebhookTesting, Crypto), its parser cross-checked",
        delivery_id=("hash",),
        spec=Spec(
            decode=braintree_payload, event_type="kind", time="timestamp", properties="subject"
        ),
        retry_window="hourly for up to 24 hours",
        content_type=FORM,
        note="secret: `public_key:private_key` (the private key alone also works).",
    )
)
register_vendor(
    Vendor(
        name="adyen",
        title="Adyen",
        category="payments",
        scheme=AdyenHmac(),
        docs="https://docs.adyen.com/development-resources/webhooks/secure-webhooks/"
        "verify-hmac-signatures/",
        tested_with="Adyen SDK (util.generate_notification_sig, is_valid_hmac_notification)",
        delivery_id=("hash",),
        spec=Spec(
            each="notificationItems",
            event_type="NotificationRequestItem.eventCode",
            time="NotificationRequestItem.eventDate",
            properties="NotificationRequestItem",
        ),
        retry_window="up to 30 days",
        dedupe_ttl="30d",
        ack=Reply.text("[accepted]"),
        note="secret: the HMAC key (hex). Every notification item must verify.",
    )
)
register_vendor(
    Vendor(
        name="dropbox-sign",
        title="Dropbox Sign (HelloSign)",
        category="documents",
        scheme=DropboxSignEventHash(),
        docs="https://developers.hellosign.com/docs/events/walkthrough/",
        tested_with="docs (HMAC written out, as the dropbox-sign SDK's EventCallbackHelper)",
        delivery_id=("hash",),
        spec=Spec(
            decode=dropbox_sign_payload,
            event_type="event.event_type",
            time="event.event_time",
            properties="signature_request",
        ),
        retry_window="with backoff for about 3 days",
        dedupe_ttl="7d",
        ack=Reply.text(DROPBOX_SIGN_ACK),
        handshake=_dropbox_sign_test,
        handshake_doc="`callback_test` answered `Hello API Event Received`, not stored",
        content_type="multipart/form-data",
        note="secret: the account's API key.",
    )
)
