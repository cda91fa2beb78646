"""Vendors that do not sign with a shared-secret HMAC of the body: public-key signatures
(SendGrid's ECDSA, Discord's and Telnyx's Ed25519), JWT-signed requests (Netlify, Vonage),
two signature headers (Box), and shared tokens or Basic credentials (GitLab, Postmark,
Chargebee, Telegram, RevenueCat).

Public keys are loaded once, at start-up, with the `cryptography` package (ECDSA and
Ed25519 verification are OpenSSL's); JWTs are checked with PyJWT. A public-key scheme
cannot sign for `webhook-gateway send`: the private key stays with the vendor.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import jwt
import msgspec
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from normalizers.generic import Spec

from ...errors import NO_MATCH, SignatureError
from ..catalog import CatalogSource, Reply, Request, Scheme, Signed, Vendor, register_vendor
from ..schemes import Hmac, Token
from ..signing import check_window, parse_timestamp

NO_KEY_MATCH = (
    "no signature matched: check that `public_keys` holds the verification key the vendor "
    "shows for this endpoint (and, while rotating, both keys)"
)


# --- public keys ---------------------------------------------------------------------------


def _key_bytes(text: str) -> bytes:
    """A raw or DER key as the vendor prints it: hex (Discord) or base64 (SendGrid, Telnyx)."""
    compact = "".join(text.split())
    if len(compact) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in compact):
        return bytes.fromhex(compact)
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not a public key: expected PEM, or the key in hex or base64") from None


def _load_public_key(text: str) -> Any:
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            data = _key_bytes(text)
            if len(data) == 32:  # a bare Ed25519 key (Discord, Telnyx)
                key = ed25519.Ed25519PublicKey.from_public_bytes(data)
            else:
                key = serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        if str(e).startswith("not a public key"):
            raise
        raise ValueError(
            "not a public key: expected PEM, a base64 DER key, or a raw Ed25519 key"
        ) from None
    if isinstance(key, ed25519.Ed25519PublicKey) and _small_order(key):
        raise ValueError(
            "not a usable Ed25519 public key: it is a point of small order, for which a "
            "signature can be forged for any message (a placeholder or a broken copy?)"
        )
    return key


# The Ed25519 points of small order (libsodium's blocklist, compared without the sign bit):
# with such a "public key", R = the point and S = 0 verify for any message.
_SMALL_ORDER = {
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
        "0100000000000000000000000000000000000000000000000000000000000000",  # order 1
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p-1, order 2
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p, order 4
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p+1, order 1
    )
}


def _small_order(key: ed25519.Ed25519PublicKey) -> bool:
    raw = bytearray(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    raw[31] &= 0x7F
    return bytes(raw) in _SMALL_ORDER


@dataclass(frozen=True)
class PublicKeySignature(Scheme):
    """A signature over `timestamp + separator + body` made with the vendor's private key,
    checked with the public key it hands out. Subclasses say which algorithm."""

    header: str
    timestamp_header: str
    encoding: str = "base64"
    """How the signature header encodes the signature bytes: base64 or hex."""
    separator: str = ""
    tolerance: float | None = None

    key_kind: ClassVar[str] = "public_key"
    algorithm: ClassVar[str] = ""

    def headers(self) -> tuple[str, ...]:
        return (self.header.lower(), self.timestamp_header.lower())

    def with_tolerance(self, tolerance: float | None) -> PublicKeySignature:
        return dataclasses.replace(self, tolerance=tolerance)

    def describe(self) -> str:
        signed = f"timestamp{self.separator}body" if self.separator else "timestamp + body"
        return (
            f"{self.algorithm} signature ({self.encoding}) of `{signed}` in "
            f"{self.header}, timestamp in {self.timestamp_header}; public key configured"
        )

    def load(self, key: str) -> Any:
        loaded = _load_public_key(key)
        self._check_key(loaded)
        return loaded

    def _check_key(self, key: Any) -> None:
        raise NotImplementedError

    def _valid(self, key: Any, signature: bytes, content: bytes) -> bool:
        raise NotImplementedError

    def verify(self, keys: Sequence[Any], request: Request) -> None:
        text = request.headers.get(self.header.lower())
        if not text:
            raise SignatureError(f"the {self.header} header is missing")
        stamp = request.headers.get(self.timestamp_header.lower())
        if not stamp:
            raise SignatureError(f"the signature timestamp ({self.timestamp_header}) is missing")
        if self.tolerance is not None:
            check_window(parse_timestamp(stamp, "s"), request.now, self.tolerance)
        try:
            if self.encoding == "hex":
                signature = bytes.fromhex(text.strip())
            else:
                signature = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError(f"the {self.header} header is not {self.encoding}") from None
        content = stamp.encode("latin-1") + self.separator.encode() + request.body
        # Keys are tried in turn: which one matched is not a secret (they are public).
        if not any(self._valid(key, signature, content) for key in keys):
            raise SignatureError(NO_KEY_MATCH)


@dataclass(frozen=True)
class Ecdsa(PublicKeySignature):
    """ECDSA P-256 with SHA-256, DER signature (SendGrid's Event Webhook)."""

    algorithm: ClassVar[str] = "ECDSA P-256/SHA-256"

    def _check_key(self, key: Any) -> None:
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise ValueError("not an ECDSA P-256 public key")

    def _valid(self, key: Any, signature: bytes, content: bytes) -> bool:
        try:
            key.verify(signature, content, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Ed25519(PublicKeySignature):
    """Ed25519 (Discord, Telnyx)."""

    algorithm: ClassVar[str] = "Ed25519"

    def _check_key(self, key: Any) -> None:
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")

    def _valid(self, key: Any, signature: bytes, content: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            key.verify(signature, content)
        except InvalidSignature:
            return False
        return True


# --- JWT-signed requests -------------------------------------------------------------------


@dataclass(frozen=True)
class Jwt(Scheme):
    """An HS256 JWT signed with the shared secret, carrying the hex SHA-256 of the body in a
    claim (Netlify's `sha256`, Vonage's `payload_hash`): the token proves the sender, the
    claim ties it to this body."""

    header: str
    bearer: bool = False
    """The token is `Authorization: Bearer <jwt>`."""
    issuer: str | None = None
    body_hash: str = "sha256"
    required: tuple[str, ...] = ()
    """Claims that must be present besides the body hash."""
    tolerance: float | None = None
    """Window around the `iat` claim (None: `iat` is not checked)."""

    def headers(self) -> tuple[str, ...]:
        # A bearer token is not worth keeping with each delivery; a signature header is.
        return () if self.bearer else (self.header.lower(),)

    def with_tolerance(self, tolerance: float | None) -> Jwt:
        return dataclasses.replace(self, tolerance=tolerance)

    def describe(self) -> str:
        where = f"`{self.header}: Bearer`" if self.bearer else self.header
        iss = f", iss `{self.issuer}`" if self.issuer else ""
        return f"JWT (HS256) in {where}{iss}, `{self.body_hash}` claim = SHA-256 of the body"

    def load(self, key: str) -> bytes:
        if not key:
            raise ValueError("the secret is empty")
        return key.encode()

    def _token(self, request: Request) -> str:
        value = request.headers.get(self.header.lower(), "").strip()
        if not value:
            raise SignatureError(f"the {self.header} header is missing")
        if self.bearer:
            scheme, _, value = value.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise SignatureError(f"the {self.header} header is not `Bearer <JWT>`")
        return value.strip()

    def verify(self, keys: Sequence[Any], request: Request) -> None:
        token = self._token(request)
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise SignatureError(f"the {self.header} header is not a JWT") from None
        if alg != "HS256":
            raise SignatureError(f"the JWT is signed with {alg!r}, not HS256")
        claims = None
        for key in keys:
            try:
                # Times are checked below against the request's clock, not PyJWT's.
                claims = jwt.decode(token, key, algorithms=["HS256"], options=_SIGNATURE_ONLY)
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as e:
                raise SignatureError(f"the JWT is malformed ({e})") from None
        if claims is None:
            raise SignatureError(NO_MATCH)
        self._check_claims(claims, request)

    def _check_claims(self, claims: dict[str, Any], request: Request) -> None:
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise SignatureError(
                f"the JWT's issuer is {claims.get('iss')!r}, expected {self.issuer!r}"
            )
        for name in (*self.required, self.body_hash):
            if claims.get(name) is None:
                raise SignatureError(f"the JWT has no `{name}` claim")
        now = request.now
        exp, nbf, iat = (_number(claims, n) for n in ("exp", "nbf", "iat"))
        if exp is not None and now >= exp:
            raise SignatureError(f"the JWT expired {now - exp:.0f} s ago")
        if nbf is not None and now < nbf:
            raise SignatureError(f"the JWT is not valid for another {nbf - now:.0f} s")
        if self.tolerance is not None and iat is not None:
            check_window(iat, now, self.tolerance)
        given = claims[self.body_hash]
        want = hashlib.sha256(request.body).hexdigest()
        if not isinstance(given, str) or not hmac.compare_digest(
            given.lower().encode(), want.encode()
        ):
            raise SignatureError(
                f"the JWT's `{self.body_hash}` claim is not the SHA-256 of this body"
            )

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        claims: dict[str, Any] = {}
        if self.issuer is not None:
            claims["iss"] = self.issuer
        if "iat" in self.required or self.tolerance is not None:
            claims["iat"] = int(request.now)
        if "jti" in self.required:
            claims["jti"] = delivery_id
        claims[self.body_hash] = hashlib.sha256(request.body).hexdigest()
        token = jwt.encode(claims, secret, algorithm="HS256")
        value = f"Bearer {token}" if self.bearer else token
        return Signed({self.header: value}, request.body, request.query)


_SIGNATURE_ONLY = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
}


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SignatureError(f"the JWT's `{name}` claim is not a number")
    return float(value)


# --- Box: two signature headers ------------------------------------------------------------


@dataclass(frozen=True)
class BoxSignature(Hmac):
    """Box signs with a primary and a secondary key, one signature header each, so a key can
    be rotated without downtime; either configured key may match either header."""

    def headers(self) -> tuple[str, ...]:
        return (*super().headers(), "box-signature-version", "box-signature-algorithm")

    def verify(self, keys: Sequence[Any], request: Request) -> None:
        # Box's SDKs refuse any other version or algorithm than the one they know.
        version = request.headers.get("box-signature-version")
        algorithm = request.headers.get("box-signature-algorithm")
        if version is not None and version.strip() != "1":
            raise SignatureError(f"unknown BOX-SIGNATURE-VERSION {version!r} (expected 1)")
        if algorithm is not None and algorithm.strip() != "HmacSHA256":
            raise SignatureError(f"unknown BOX-SIGNATURE-ALGORITHM {algorithm!r}")
        super().verify(keys, request)

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        stamp = datetime.fromtimestamp(int(request.now), UTC).isoformat()
        digest = hmac.new(self.load(secret), request.body + stamp.encode(), hashlib.sha256)
        headers = {
            "BOX-DELIVERY-ID": delivery_id,
            "BOX-DELIVERY-TIMESTAMP": stamp,
            "BOX-SIGNATURE-PRIMARY": base64.b64encode(digest.digest()).decode(),
            "BOX-SIGNATURE-VERSION": "1",
            "BOX-SIGNATURE-ALGORITHM": "HmacSHA256",
        }
        return Signed(headers, request.body, request.query)


# --- Discord: PING handshakes --------------------------------------------------------------


class _DiscordEnvelope(msgspec.Struct):
    type: int | None = None
    event: msgspec.Raw | None = None


def discord_ping(source: CatalogSource, request: Request) -> Reply | None:
    """Answer Discord's signed PINGs instead of storing them.

    Webhook Events URL: `{"type": 0}` with no `event` must get 204 and an empty body.
    Interactions Endpoint URL: an interaction of type 1 (PING) must get `{"type": 1}` (PONG).
    A webhook event is `type: 1` *with* an `event` object, so the two cannot be confused.
    """
    try:
        envelope = msgspec.json.decode(request.body, type=_DiscordEnvelope)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    if envelope.event is not None:
        return None
    if envelope.type == 0:
        return Reply(b"", status=204)
    if envelope.type == 1:
        return Reply.json({"type": 1})
    return None


# --- the vendors ---------------------------------------------------------------------------

# Where a vendor documents no signature window, the default window equals the default
# dedupe TTL: a resent request is then either a duplicate or too old, and a vendor retry
# that reuses its first signature is never refused.
_SAME_AS_DEDUPE = "7d"

register_vendor(
    Vendor(
        name="sendgrid",
        title="SendGrid Event Webhook",
        category="email",
        # https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
        # and sendgrid-python helpers/eventwebhook: ECDSA over timestamp + raw body.
        scheme=Ecdsa(
            "X-Twilio-Email-Event-Webhook-Signature",
            timestamp_header="X-Twilio-Email-Event-Webhook-Timestamp",
        ),
        docs="https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features",
        tested_with="sendgrid SDK (EventWebhook.verify_signature), published vector",
        delivery_id=("hash",),
        spec=Spec(
            each="@",
            element_id="sg_event_id",
            event_type="event",
            time="timestamp",
            properties=None,
            person="email",
            person_type="email",
        ),
        tolerance=_SAME_AS_DEDUPE,
        note="The body is a JSON array of events: one event per element. The verification "
        "key is the base64 key SendGrid shows (PEM also accepted).",
    )
)
register_vendor(
    Vendor(
        name="discord",
        title="Discord",
        category="messaging",
        # https://discord.com/developers/docs/events/webhook-events and
        # https://discord.com/developers/docs/interactions/overview: Ed25519 over
        # timestamp + raw body, hex signature, hex public key.
        scheme=Ed25519(
            "X-Signature-Ed25519", timestamp_header="X-Signature-Timestamp", encoding="hex"
        ),
        docs="https://discord.com/developers/docs/events/webhook-events",
        tested_with="PyNaCl (as in Discord's docs)",
        delivery_id=("hash",),
        spec=Spec(
            event_type="event.type",
            time="event.timestamp",
            properties="event.data",
            person="event.data.user.id",
            person_type="discord_user_id",
        ),
        retry_window="with backoff for up to 10 minutes",
        tolerance=_SAME_AS_DEDUPE,
        handshake=discord_ping,
        handshake_doc="PING answered (204 for webhook events, PONG for interactions), not stored",
        # "Your endpoint must respond with a 204 No Content" to each event (webhook-events).
        ack=Reply(b"", status=204),
        note="Use this source as the app's Webhook Events URL. An Interactions Endpoint URL "
        "expects your bot's reply to each interaction: only its PING is answered here.",
    )
)
register_vendor(
    Vendor(
        name="telnyx",
        title="Telnyx",
        category="messaging",
        # telnyx-python lib/webhook_verification.py: Ed25519 over `{timestamp}|{body}`,
        # base64 signature, base64 public key, 300 s window both ways.
        scheme=Ed25519(
            "telnyx-signature-ed25519", timestamp_header="telnyx-timestamp", separator="|"
        ),
        docs="https://developers.telnyx.com/docs/messaging/messages/receiving-webhooks",
        tested_with="docs + telnyx SDK source (Ed25519 written out with PyNaCl)",
        delivery_id=("body:data.id",),
        spec=Spec(event_type="data.event_type", time="data.occurred_at", properties="data.payload"),
        retry_window="up to 3 attempts per URL, then the failover URL",
        tolerance="300s",
    )
)
register_vendor(
    Vendor(
        name="netlify",
        title="Netlify",
        category="dev tools",
        # https://docs.netlify.com/site-deploys/notifications/#payload-signature: a JWS
        # (HS256) in X-Webhook-Signature, iss "netlify", sha256 = hex SHA-256 of the body.
        scheme=Jwt("X-Webhook-Signature", issuer="netlify", body_hash="sha256"),
        docs="https://docs.netlify.com/site-deploys/notifications/#payload-signature",
        tested_with="PyJWT, signed as Netlify's docs describe",
        delivery_id=("hash",),
        spec=Spec(event_type="state", time="updated_at", properties=None),
        note="The secret is the notification's JWS secret token. Each deploy notification "
        "posts the deploy; its `state` (building, ready, error) is the event.",
    )
)
register_vendor(
    Vendor(
        name="vonage",
        title="Vonage Messages",
        category="messaging",
        # https://developer.vonage.com/en/messages/concepts/signed-webhooks: Authorization:
        # Bearer JWT (HS256, signature secret), iss "Vonage", iat, payload_hash = hex SHA-256.
        scheme=Jwt(
            "Authorization",
            bearer=True,
            issuer="Vonage",
            body_hash="payload_hash",
            required=("iat",),
        ),
        docs="https://developer.vonage.com/en/messages/concepts/signed-webhooks",
        tested_with="vonage-jwt SDK (verify_signature), PyJWT",
        delivery_id=("hash",),
        spec=Spec(event_type="status", time="timestamp", properties=None),
        tolerance=_SAME_AS_DEDUPE,
        note="The secret is the account's signature secret. Message status webhooks become "
        "events named after their `status`; inbound messages become `Webhook Received`.",
    )
)
register_vendor(
    Vendor(
        name="gitlab",
        title="GitLab",
        category="dev tools",
        # https://docs.gitlab.com/user/project/integrations/webhooks/: the secret token is
        # sent as is in X-Gitlab-Token; Idempotency-Key stays the same across retries.
        scheme=Token(header="X-Gitlab-Token"),
        docs="https://docs.gitlab.com/user/project/integrations/webhooks/#delivery-headers",
        tested_with="docs (shared token)",
        # X-Gitlab-Event-UUID is shared by recursive hooks, so it is no delivery id; before
        # GitLab 17.4 (no Idempotency-Key) a retry has the same body.
        delivery_id=("header:Idempotency-Key", "hash"),
        spec=Spec(event_type="object_kind", time="object_attributes.updated_at", properties=None),
        retry_window="no automatic schedule documented (Idempotency-Key marks retries)",
        note="A shared token, not a signature: it proves the sender knows it, not that the "
        "body is unchanged. Use HTTPS.",
    )
)
register_vendor(
    Vendor(
        name="postmark",
        title="Postmark",
        category="email",
        # https://postmarkapp.com/developer/webhooks/webhooks-overview: Basic auth credentials
        # in the webhook URL (https://user:password@host/...).
        scheme=Token(basic=True),
        docs="https://postmarkapp.com/developer/webhooks/webhooks-overview#basic-http-authentication",
        tested_with="docs (HTTP Basic auth)",
        # Opens and clicks repeat for one MessageID, so the body itself identifies a delivery.
        delivery_id=("hash",),
        spec=Spec(
            event_type="RecordType",
            # Each record type has its own time field (Delivery, Bounce/SpamComplaint,
            # Open/Click, SubscriptionChange).
            time="DeliveredAt|BouncedAt|ReceivedAt|ChangedAt",
            properties=None,
            person="Recipient",
            person_type="email",
        ),
        note="Give the webhook URL as https://user:password@host/webhooks/<name> in Postmark "
        "and `user:password` as the secret. Basic auth is weaker than a signature.",
    )
)
register_vendor(
    Vendor(
        name="chargebee",
        title="Chargebee",
        category="payments",
        # https://www.chargebee.com/docs/2.0/webhook_settings.html (Basic authentication) and
        # https://apidocs.chargebee.com/docs/api/events (the event `id` identifies retries).
        scheme=Token(basic=True),
        docs="https://www.chargebee.com/docs/2.0/webhook_settings.html#basic-authentication",
        tested_with="docs (HTTP Basic auth)",
        delivery_id=("body:id",),
        spec=Spec(
            event_type="event_type",
            time="occurred_at",
            properties="content",
            person="content.customer.id",
            person_type="chargebee_customer_id",
            # The customer resource every event carries, and its own billing address
            # (https://apidocs.chargebee.com/docs/api/customers#customer_attributes).
            traits=(
                ("email", "content.customer.email"),
                ("phone", "content.customer.phone"),
                ("firstName", "content.customer.first_name"),
                ("lastName", "content.customer.last_name"),
                ("address.street", "content.customer.billing_address.line1"),
                ("address.city", "content.customer.billing_address.city"),
                (
                    "address.state",
                    "content.customer.billing_address.state_code"
                    "|content.customer.billing_address.state",
                ),
                ("address.postalCode", "content.customer.billing_address.zip"),
                ("address.country", "content.customer.billing_address.country"),
            ),
        ),
        retry_window="7 retries, the last about 3 days 7 hours after the event",
        note="Turn on `Protect webhook URL with basic authentication` and give the same "
        "`user:password` as the secret. Basic auth is weaker than a signature.",
    )
)
register_vendor(
    Vendor(
        name="box",
        title="Box",
        category="storage",
        # https://developer.box.com/guides/webhooks/v2/signatures-v2/: base64 HMAC-SHA256 of
        # body + BOX-DELIVERY-TIMESTAMP, one header per key, messages older than 10 minutes
        # refused.
        scheme=BoxSignature(
            "BOX-SIGNATURE-PRIMARY",
            encoding="base64",
            signed="{body}{timestamp}",
            timestamp_header="BOX-DELIVERY-TIMESTAMP",
            also=("BOX-SIGNATURE-SECONDARY",),
        ),
        docs="https://developer.box.com/guides/webhooks/v2/signatures-v2/",
        tested_with="published vector (Box SDKs' tests), docs",
        # BOX-DELIVERY-ID changes on every retry; the body's `id` stays.
        delivery_id=("body:id", "hash"),
        spec=Spec(
            event_type="trigger",
            time="created_at",
            properties="source",
            person="created_by.id",
            person_type="box_user_id",
        ),
        retry_window="up to 12 times over 2 hours",
        tolerance="600s",
        note="List both the primary and the secondary signature key in `secrets:`.",
    )
)
register_vendor(
    Vendor(
        name="telegram",
        title="Telegram Bot API",
        category="messaging",
        # https://core.telegram.org/bots/api#setwebhook: `secret_token` is sent as is in
        # X-Telegram-Bot-Api-Secret-Token; each Update has a unique update_id.
        scheme=Token(header="X-Telegram-Bot-Api-Secret-Token"),
        docs="https://core.telegram.org/bots/api#setwebhook",
        tested_with="docs (shared token)",
        delivery_id=("body:update_id",),
        spec=Spec(
            event_type=None,
            time="message.date",
            properties=None,
            person="message.from.id",
            person_type="telegram_user_id",
        ),
        retry_window="retried until Telegram gives up (count not documented)",
        note="Set the same `secret_token` in setWebhook. Updates carry no type field: "
        "they become `Webhook Received` unless a mapping names them.",
    )
)
register_vendor(
    Vendor(
        name="revenuecat",
        title="RevenueCat",
        category="payments",
        # https://www.revenuecat.com/docs/integrations/webhooks: the Authorization header
        # value set in the dashboard is sent as is with each POST; event.id identifies it.
        scheme=Token(header="Authorization"),
        docs="https://www.revenuecat.com/docs/integrations/webhooks",
        tested_with="docs (shared Authorization value)",
        delivery_id=("body:event.id",),
        spec=Spec(
            event_type="event.type",
            time="event.event_timestamp_ms",
            properties="event",
            person="event.app_user_id",
            person_type="revenuecat_app_user_id",
        ),
        note="The secret is the whole Authorization header value set in RevenueCat "
        "(for example `Bearer <token>`).",
    )
)
