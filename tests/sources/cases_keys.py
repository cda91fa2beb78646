"""Cases for the public-key, JWT, Box and shared-token vendors (gateway/sources/vendors/keys.py).

Public-key vendors are signed here with a key pair made for the test (the vendor's private
key never leaves the vendor), by `cryptography` (SendGrid) or PyNaCl (Discord, Telnyx), as
the vendors' docs and SDKs do it; the config holds the public key as the vendor prints it.
JWTs are made with PyJWT as Netlify and Vonage describe them. Nothing here uses the
gateway's own signing code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import UTC, datetime

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nacl.encoding import Base64Encoder, HexEncoder
from nacl.signing import SigningKey

from tests.sources.catalog_cases import Case, Signed


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- key pairs, as each vendor would hold them; the public halves as each prints them ------

SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = b64(
    SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
)
"""SendGrid shows the verification key as base64 DER SubjectPublicKeyInfo (no PEM lines)."""

DISCORD_KEY = SigningKey.generate()
DISCORD_PUBLIC = DISCORD_KEY.verify_key.encode(HexEncoder).decode()
"""Discord's developer portal shows the application's public key in hex."""

TELNYX_KEY = SigningKey.generate()
TELNYX_PUBLIC = TELNYX_KEY.verify_key.encode(Base64Encoder).decode()
"""Telnyx's portal shows the account's public key in base64."""

NETLIFY_SECRET = "netlify-jws-secret-token-for-tests"
VONAGE_SECRET = "vonage-signature-secret-0123456789abcdef"
GITLAB_TOKEN = "glwht-secret-token"
BASIC = "hooks:s3cret-pa55word"
BOX_PRIMARY = "SamplePrimaryKey"
BOX_SECONDARY = "SampleSecondaryKey"
TELEGRAM_TOKEN = "telegram_secret-Token_123"
REVENUECAT_AUTH = "Bearer rc-webhook-auth-value"


# --- signers ------------------------------------------------------------------------------


def sign_sendgrid(body: bytes, now: float, key: ec.EllipticCurvePrivateKey = SENDGRID_KEY):
    # Twilio SendGrid, "Event Webhook Security Features" and sendgrid-python
    # helpers/eventwebhook: ECDSA P-256 + SHA-256 over timestamp + raw payload, the DER
    # signature base64 in X-Twilio-Email-Event-Webhook-Signature.
    ts = str(int(now))
    sig = key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    return Signed(
        {
            "X-Twilio-Email-Event-Webhook-Signature": b64(sig),
            "X-Twilio-Email-Event-Webhook-Timestamp": ts,
        },
        body,
    )


def sign_discord(body: bytes, now: float, key: SigningKey = DISCORD_KEY) -> Signed:
    # https://discord.com/developers/docs/interactions/overview (Python example, PyNaCl):
    # Ed25519 over f"{timestamp}{body}", signature hex in X-Signature-Ed25519.
    ts = str(int(now))
    sig = key.sign(ts.encode() + body).signature
    return Signed({"X-Signature-Ed25519": sig.hex(), "X-Signature-Timestamp": ts}, body)


def sign_telnyx(body: bytes, now: float, key: SigningKey = TELNYX_KEY) -> Signed:
    # telnyx-python src/telnyx/lib/webhook_verification.py: Ed25519 over
    # f"{timestamp}|{payload}", signature base64 in telnyx-signature-ed25519.
    ts = str(int(now))
    sig = key.sign(f"{ts}|".encode() + body).signature
    return Signed({"telnyx-signature-ed25519": b64(sig), "telnyx-timestamp": ts}, body)


def sign_netlify(body: bytes, now: float, secret: str = NETLIFY_SECRET, **claims) -> Signed:
    # https://docs.netlify.com/site-deploys/notifications/#payload-signature: a JWS (HS256)
    # with the JWS secret token; claims iss "netlify" and sha256 = hex SHA-256 of the body.
    payload = {"iss": "netlify", "sha256": hashlib.sha256(body).hexdigest(), **claims}
    return Signed({"X-Webhook-Signature": jwt.encode(payload, secret, algorithm="HS256")}, body)


def vonage_token(body: bytes, now: float, secret: str = VONAGE_SECRET, **claims) -> str:
    # https://developer.vonage.com/en/messages/concepts/signed-webhooks ("Sample Signed
    # JWT"): HS256 with the signature secret; iat, jti, iss "Vonage", payload_hash = hex
    # SHA-256 of the payload, api_key, application_id.
    payload = {
        "iat": int(now),
        "jti": str(uuid.uuid4()),
        "iss": "Vonage",
        "payload_hash": hashlib.sha256(body).hexdigest(),
        "api_key": "a1b2c3d",
        "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        **claims,
    }
    payload = {k: v for k, v in payload.items() if v is not None}  # None: leave the claim out
    return jwt.encode(payload, secret, algorithm="HS256")


def sign_vonage(body: bytes, now: float) -> Signed:
    return Signed({"Authorization": f"Bearer {vonage_token(body, now)}"}, body)


def sign_gitlab(body: bytes, now: float) -> Signed:
    # https://docs.gitlab.com/user/project/integrations/webhooks/#delivery-headers: the
    # secret token as is in X-Gitlab-Token; Idempotency-Key is the same on every retry.
    key = str(uuid.UUID(hashlib.sha256(body).hexdigest()[:32]))
    headers = {"X-Gitlab-Token": GITLAB_TOKEN, "X-Gitlab-Event": "Push Hook"}
    return Signed({**headers, "Idempotency-Key": key, "X-Gitlab-Event-UUID": key}, body)


def basic(body: bytes, now: float, credentials: str = BASIC) -> Signed:
    # RFC 7617 Basic auth, as Postmark (credentials in the webhook URL) and Chargebee
    # ("Protect webhook URL with basic authentication") send it.
    return Signed({"Authorization": "Basic " + b64(credentials.encode())}, body)


def box_headers(body: bytes, stamp: str, primary: str, secondary: str) -> dict[str, str]:
    # https://developer.box.com/guides/webhooks/v2/signatures-v2/: base64 HMAC-SHA256 of
    # body + BOX-DELIVERY-TIMESTAMP, one signature per key.
    def sig(key: str) -> str:
        return b64(hmac.new(key.encode(), body + stamp.encode(), hashlib.sha256).digest())

    return {
        "BOX-DELIVERY-ID": str(uuid.uuid4()),
        "BOX-DELIVERY-TIMESTAMP": stamp,
        "BOX-SIGNATURE-PRIMARY": sig(primary),
        "BOX-SIGNATURE-SECONDARY": sig(secondary),
        "BOX-SIGNATURE-VERSION": "1",
        "BOX-SIGNATURE-ALGORITHM": "HmacSHA256",
    }


def sign_box(body: bytes, now: float) -> Signed:
    stamp = datetime.fromtimestamp(int(now), UTC).astimezone().isoformat()
    return Signed(box_headers(body, stamp, BOX_PRIMARY, BOX_SECONDARY), body)


def sign_telegram(body: bytes, now: float) -> Signed:
    # https://core.telegram.org/bots/api#setwebhook: secret_token in
    # X-Telegram-Bot-Api-Secret-Token.
    return Signed({"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_TOKEN}, body)


def sign_revenuecat(body: bytes, now: float) -> Signed:
    # https://www.revenuecat.com/docs/integrations/webhooks: the configured Authorization
    # header value, sent as is.
    return Signed({"Authorization": REVENUECAT_AUTH}, body)


def with_header(name: str, value: str):
    """A tamper: the same request with one header replaced (a wrong token or password)."""

    def tamper(signed: Signed) -> Signed:
        return Signed({**signed.headers, name: value}, signed.body, signed.query)

    return tamper


CASES = {
    "sendgrid": Case(
        config={"public_keys": [SENDGRID_PUBLIC]},
        sign=sign_sendgrid,
        why="ECDSA P-256 (cryptography) as SendGrid's docs and sendgrid-python sign",
        event="Processed",
        events=2,
    ),
    "discord": Case(
        config={"public_keys": [DISCORD_PUBLIC]},
        sign=sign_discord,
        why="Ed25519 with PyNaCl, as Discord's docs verify",
        event="Application Authorized",
    ),
    "telnyx": Case(
        config={"public_keys": [TELNYX_PUBLIC]},
        sign=sign_telnyx,
        why="Ed25519 with PyNaCl over timestamp|body, as telnyx-python verifies",
        event="Message Received",
    ),
    "netlify": Case(
        config={"secrets": [NETLIFY_SECRET]},
        sign=sign_netlify,
        why="PyJWT HS256 with iss netlify and sha256 claim (Netlify docs)",
        event="Ready",
    ),
    "vonage": Case(
        config={"secrets": [VONAGE_SECRET]},
        sign=sign_vonage,
        why="PyJWT HS256 Bearer with payload_hash (Vonage signed webhooks docs)",
        event="Delivered",
    ),
    "gitlab": Case(
        config={"secrets": [GITLAB_TOKEN]},
        sign=sign_gitlab,
        why="GitLab docs: X-Gitlab-Token sent as is",
        event="Push",
        tamper=with_header("X-Gitlab-Token", GITLAB_TOKEN + "x"),
    ),
    "postmark": Case(
        config={"secrets": [BASIC]},
        sign=basic,
        why="Postmark docs: Basic auth credentials in the webhook URL",
        event="Delivery",
        tamper=with_header("Authorization", "Basic " + b64(b"hooks:wrong-password")),
    ),
    "chargebee": Case(
        config={"secrets": [BASIC]},
        sign=basic,
        why="Chargebee docs: webhook URL protected with Basic authentication",
        event="Subscription Created",
        tamper=with_header("Authorization", "Basic " + b64(b"hooks:s3cret-pa55worD")),
    ),
    "box": Case(
        config={"secrets": [BOX_PRIMARY, BOX_SECONDARY]},
        sign=sign_box,
        why="Box docs: HMAC-SHA256 of body + timestamp, written out, both keys",
        event="File Uploaded",
    ),
    "telegram": Case(
        config={"secrets": [TELEGRAM_TOKEN]},
        sign=sign_telegram,
        why="Telegram Bot API: setWebhook secret_token header",
        event="Webhook Received",
        tamper=with_header("X-Telegram-Bot-Api-Secret-Token", "telegram_secret-Token_124"),
    ),
    "revenuecat": Case(
        config={"secrets": [REVENUECAT_AUTH]},
        sign=sign_revenuecat,
        why="RevenueCat docs: configured Authorization header value",
        event="Initial Purchase",
        tamper=with_header("Authorization", "Bearer rc-webhook-auth-valuf"),
    ),
}
