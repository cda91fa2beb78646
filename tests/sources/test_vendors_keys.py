"""Public keys, JWTs, Box's two headers and shared tokens, beyond the catalog's common checks.

Vendors' own SDKs and published vectors where they exist (sendgrid-python's EventWebhook and
its test vector, Box SDKs' test vector, vonage-jwt), otherwise PyNaCl / cryptography / PyJWT
used exactly as the vendor's docs show (see tests/sources/cases_keys.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nacl.encoding import Base64Encoder
from nacl.signing import SigningKey

from gateway.errors import ConfigError
from tests.conftest import Clock, config, gateway_client, raw_entries, served_gateway
from tests.sources import cases_keys as keys
from tests.sources.catalog_cases import Signed

NOW = 1_700_000_000.0


def _cfg(name: str, **settings) -> str:
    return json.dumps({"sources": {name: {"type": name, **settings}}})


async def _post(client, name: str, signed: Signed):
    headers = {"content-type": "application/json", **signed.headers}
    return await client.post(f"/webhooks/{name}", content=signed.body, headers=headers)


async def _send(store, name: str, settings: dict, signed: Signed, now: float = NOW):
    async with gateway_client(config(_cfg(name, **settings)), store, Clock(now)) as client:
        return await _post(client, name, signed)


def _pem(public_key) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


# --- SendGrid ------------------------------------------------------------------------------

# sendgrid-python test/unit/test_eventwebhook.py: a request SendGrid signed, with its key.
SG_VECTOR_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+"
    "2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
SG_VECTOR_SIGNATURE = (
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAi"
    "EAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM="
)
SG_VECTOR_TIMESTAMP = "1600112502"
SG_VECTOR_PAYLOAD = (
    json.dumps(
        [
            {
                "email": "hello@world.com",
                "event": "dropped",
                "reason": "Bounced Address",
                "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
                "sg_message_id": (
                    "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0"
                ),
                "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
                "timestamp": 1600112492,
            }
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    + "\r\n"
)
SG_VECTOR_OTHER_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7"
    "aNDthvj+y7GjUuFDb/R1NGe1OPzpA=="
)


def _sg_vector() -> Signed:
    return Signed(
        {
            "X-Twilio-Email-Event-Webhook-Signature": SG_VECTOR_SIGNATURE,
            "X-Twilio-Email-Event-Webhook-Timestamp": SG_VECTOR_TIMESTAMP,
        },
        SG_VECTOR_PAYLOAD.encode(),
    )


async def test_sendgrid_published_vector_is_accepted(redis_store) -> None:
    answer = await _send(
        redis_store,
        "sendgrid",
        {"public_keys": [SG_VECTOR_KEY]},
        _sg_vector(),
        now=float(SG_VECTOR_TIMESTAMP),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "accepted"


async def test_sendgrid_published_vector_with_the_sdks_bad_key_is_refused(redis_store) -> None:
    answer = await _send(
        redis_store,
        "sendgrid",
        {"public_keys": [SG_VECTOR_OTHER_KEY]},
        _sg_vector(),
        now=float(SG_VECTOR_TIMESTAMP),
    )
    assert answer.status_code == 401
    assert "public_keys" in answer.json()["detail"]
    assert await raw_entries(redis_store, "sendgrid") == []


async def test_sendgrid_sdk_verifies_what_the_gateway_accepts(redis_store) -> None:
    """The same request passes sendgrid-python's EventWebhook.verify_signature and the
    gateway; one changed byte fails both."""
    from sendgrid.helpers.eventwebhook import EventWebhook

    body = b'[{"email":"a@example.com","event":"open","timestamp":1700000000,"sg_event_id":"x1"}]'
    signed = keys.sign_sendgrid(body, NOW)
    sig = signed.headers["X-Twilio-Email-Event-Webhook-Signature"]
    ts = signed.headers["X-Twilio-Email-Event-Webhook-Timestamp"]
    hook = EventWebhook()
    sdk_key = hook.convert_public_key_to_ecdsa(keys.SENDGRID_PUBLIC)
    assert hook.verify_signature(body.decode(), sig, ts, sdk_key)
    assert not hook.verify_signature(body.decode() + " ", sig, ts, sdk_key)

    answer = await _send(redis_store, "sendgrid", {"public_keys": [keys.SENDGRID_PUBLIC]}, signed)
    assert answer.status_code == 200, answer.text
    tampered = Signed(signed.headers, body + b" ")
    answer = await _send(redis_store, "sendgrid", {"public_keys": [keys.SENDGRID_PUBLIC]}, tampered)
    assert answer.status_code == 401


# --- public keys in every form the vendors print them ---------------------------------------

SG_PEM = _pem(keys.SENDGRID_KEY.public_key())
DISCORD_PEM = _pem(
    serialization.load_der_public_key(
        # Ed25519 SubjectPublicKeyInfo = fixed 12-byte prefix + the raw key (RFC 8410).
        bytes.fromhex("302a300506032b6570032100") + bytes(keys.DISCORD_KEY.verify_key)
    )
)
TELNYX_PEM = _pem(
    serialization.load_der_public_key(
        bytes.fromhex("302a300506032b6570032100") + bytes(keys.TELNYX_KEY.verify_key)
    )
)
FORMS = [
    ("sendgrid", keys.SENDGRID_PUBLIC, keys.sign_sendgrid),
    ("sendgrid", SG_PEM, keys.sign_sendgrid),
    ("discord", keys.DISCORD_PUBLIC, keys.sign_discord),
    ("discord", keys.DISCORD_PUBLIC.upper(), keys.sign_discord),
    ("discord", DISCORD_PEM, keys.sign_discord),
    ("telnyx", keys.TELNYX_PUBLIC, keys.sign_telnyx),
    ("telnyx", TELNYX_PEM, keys.sign_telnyx),
    ("telnyx", bytes(keys.TELNYX_KEY.verify_key).hex(), keys.sign_telnyx),
]


@pytest.mark.parametrize(
    "name,public_key,sign",
    FORMS,
    ids=[
        "sg-base64-der",
        "sg-pem",
        "discord-hex",
        "discord-HEX",
        "discord-pem",
        "telnyx-base64",
        "telnyx-pem",
        "telnyx-hex",
    ],
)
async def test_public_key_is_accepted_in_every_printed_form(
    name: str, public_key: str, sign, redis_store
) -> None:
    body = b'{"data":{"id":"d1","event_type":"x"},"type":1,"event":{"type":"X"}}'
    answer = await _send(redis_store, name, {"public_keys": [public_key]}, sign(body, NOW))
    # Discord asks for 204 No Content for its events; the others get our JSON 200.
    assert answer.status_code == (204 if name == "discord" else 200), answer.text


OTHER_EC = ec.generate_private_key(ec.SECP256R1())
OTHER_ED = SigningKey.generate()


@pytest.mark.parametrize(
    "name,sign",
    [
        ("sendgrid", lambda b, n: keys.sign_sendgrid(b, n, OTHER_EC)),
        ("discord", lambda b, n: keys.sign_discord(b, n, OTHER_ED)),
        ("telnyx", lambda b, n: keys.sign_telnyx(b, n, OTHER_ED)),
    ],
    ids=["sendgrid", "discord", "telnyx"],
)
async def test_a_request_signed_with_another_key_is_refused(name, sign, redis_store) -> None:
    public = {"sendgrid": keys.SENDGRID_PUBLIC, "discord": keys.DISCORD_PUBLIC}.get(
        name, keys.TELNYX_PUBLIC
    )
    body = b'{"data":{"id":"d1"},"type":1,"event":{"type":"X"}}'
    answer = await _send(redis_store, name, {"public_keys": [public]}, sign(body, NOW))
    assert answer.status_code == 401
    assert "public_keys" in answer.json()["detail"]


async def test_rotation_any_configured_public_key_may_match(redis_store) -> None:
    other = OTHER_ED.verify_key.encode(Base64Encoder).decode()
    body = b'{"data":{"id":"rot"}}'
    answer = await _send(
        redis_store, "telnyx", {"public_keys": [other, keys.TELNYX_PUBLIC]},
        keys.sign_telnyx(body, NOW),
    )  # fmt: skip
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    "name,public_keys,where,why",
    [
        ("discord", [keys.DISCORD_PUBLIC, "not-a-key!"], "public_keys[1]", "not a public key"),
        ("discord", [keys.SENDGRID_PUBLIC], "public_keys[0]", "not an Ed25519 public key"),
        ("sendgrid", [keys.DISCORD_PUBLIC], "public_keys[0]", "not an ECDSA P-256"),
        ("telnyx", [base64.b64encode(b"\x01" * 31).decode()], "public_keys[0]", "public key"),
        ("sendgrid", [], "public_keys", "at least one public key"),
    ],
    ids=["garbage", "ec-for-ed25519", "ed25519-for-ecdsa", "short", "none"],
)
def test_a_bad_public_key_is_a_config_error_naming_it(name, public_keys, where, why) -> None:
    with pytest.raises(ConfigError) as caught:
        config(_cfg(name, public_keys=public_keys))
    assert where in str(caught.value)
    assert why in str(caught.value)


def test_a_public_key_vendor_refuses_secrets() -> None:
    with pytest.raises(ConfigError, match="public_keys"):
        config(_cfg("sendgrid", secrets=["whsec_abc"]))


async def test_telnyx_timestamp_outside_five_minutes_is_refused(redis_store) -> None:
    body = b'{"data":{"id":"late"}}'
    settings = {"public_keys": [keys.TELNYX_PUBLIC]}
    old = await _send(redis_store, "telnyx", settings, keys.sign_telnyx(body, NOW - 301))
    assert old.status_code == 401
    assert "old" in old.json()["detail"]
    ahead = await _send(redis_store, "telnyx", settings, keys.sign_telnyx(body, NOW + 301))
    assert ahead.status_code == 401
    fine = await _send(redis_store, "telnyx", settings, keys.sign_telnyx(body, NOW - 299))
    assert fine.status_code == 200, fine.text


async def test_a_missing_or_malformed_signature_header_says_so(redis_store) -> None:
    body = b'{"type":1,"event":{"type":"X"}}'
    signed = keys.sign_discord(body, NOW)
    settings = {"public_keys": [keys.DISCORD_PUBLIC]}
    no_sig = {k: v for k, v in signed.headers.items() if k != "X-Signature-Ed25519"}
    answer = await _send(redis_store, "discord", settings, Signed(no_sig, body))
    assert answer.status_code == 401
    assert "X-Signature-Ed25519 header is missing" in answer.json()["detail"]
    bad = {**signed.headers, "X-Signature-Ed25519": "zz" * 64}
    answer = await _send(redis_store, "discord", settings, Signed(bad, body))
    assert answer.status_code == 401
    assert "not hex" in answer.json()["detail"]


# --- Discord PINGs ---------------------------------------------------------------------------

PING = b'{"version":1,"application_id":"1234560123453231555","type":0}'
INTERACTION_PING = (
    b'{"application_id":"1234560123453231555","id":"1","token":"tok","type":1,"version":1}'
)


async def test_discord_ping_is_answered_204_over_real_http_and_never_stored(redis_store) -> None:
    """https://discord.com/developers/docs/events/webhook-events#acknowledging-ping-requests:
    a PING (type 0) must get 204 with an empty body; nothing reaches the raw stream."""
    cfg = config(_cfg("discord", public_keys=[keys.DISCORD_PUBLIC]))
    signed = keys.sign_discord(PING, NOW)
    async with (
        served_gateway(cfg, redis_store, Clock(NOW)) as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        answer = await client.post(
            "/webhooks/discord",
            content=PING,
            headers={"content-type": "application/json", **signed.headers},
        )
    assert answer.status_code == 204
    assert answer.content == b""
    assert await raw_entries(redis_store, "discord") == []


async def test_discord_interactions_ping_gets_a_pong(redis_store) -> None:
    """https://discord.com/developers/docs/interactions/overview: an interaction PING
    (type 1, no `event`) must get 200 `{"type": 1}`."""
    answer = await _send(
        redis_store,
        "discord",
        {"public_keys": [keys.DISCORD_PUBLIC]},
        keys.sign_discord(INTERACTION_PING, NOW),
    )
    assert answer.status_code == 200
    assert answer.json() == {"type": 1}
    assert await raw_entries(redis_store, "discord") == []


@pytest.mark.parametrize("body", [PING, INTERACTION_PING], ids=["event-ping", "interaction-ping"])
async def test_discord_ping_with_a_bad_signature_gets_401(body: bytes, redis_store) -> None:
    """Discord checks endpoints by sending invalid signatures: they must get 401, even PINGs."""
    signed = keys.sign_discord(body, NOW, OTHER_ED)
    answer = await _send(redis_store, "discord", {"public_keys": [keys.DISCORD_PUBLIC]}, signed)
    assert answer.status_code == 401
    assert await raw_entries(redis_store, "discord") == []


# --- JWTs: Netlify and Vonage ----------------------------------------------------------------

BODY = b'{"id":"5ebc34bf4fea0b01f02efa3a","state":"ready","status":"delivered"}'


@pytest.mark.parametrize(
    "headers,detail",
    [
        ({}, "X-Webhook-Signature header is missing"),
        ({"X-Webhook-Signature": "not.a.jwt"}, "not a JWT"),
        (
            keys.sign_netlify(BODY, NOW, secret="some-other-jws-secret-token-0123456789").headers,
            "no signature matched",
        ),
        (keys.sign_netlify(BODY, NOW, iss="not-netlify").headers, "issuer"),
        (keys.sign_netlify(b"{}", NOW).headers, "sha256"),
        (keys.sign_netlify(BODY, NOW, exp=int(NOW) - 10).headers, "expired"),
        (keys.sign_netlify(BODY, NOW, nbf=int(NOW) + 60).headers, "not valid for another"),
    ],
    ids=["absent", "garbage", "wrong-secret", "wrong-iss", "other-body", "expired", "nbf"],
)
async def test_netlify_jwt_refusals_say_why(headers, detail, redis_store) -> None:
    answer = await _send(
        redis_store, "netlify", {"secrets": [keys.NETLIFY_SECRET]}, Signed(headers, BODY)
    )
    assert answer.status_code == 401
    assert detail in answer.json()["detail"]


async def test_netlify_jwt_with_another_algorithm_is_refused(redis_store) -> None:
    claims = {"iss": "netlify", "sha256": hashlib.sha256(BODY).hexdigest()}
    token = jwt.encode(claims, keys.NETLIFY_SECRET * 2, "HS512")
    unsigned = jwt.encode(claims, None, algorithm="none")
    for value in (token, unsigned):
        signed = Signed({"X-Webhook-Signature": value}, BODY)
        answer = await _send(redis_store, "netlify", {"secrets": [keys.NETLIFY_SECRET]}, signed)
        assert answer.status_code == 401
        assert "not HS256" in answer.json()["detail"]


async def test_vonage_token_verifies_with_the_vonage_sdk_and_the_gateway(redis_store) -> None:
    from vonage_jwt import verify_signature

    token = keys.vonage_token(BODY, NOW)
    assert verify_signature(token, keys.VONAGE_SECRET) is True
    assert verify_signature(token, "another-signature-secret-0123456789") is False
    signed = Signed({"Authorization": f"Bearer {token}"}, BODY)
    answer = await _send(redis_store, "vonage", {"secrets": [keys.VONAGE_SECRET]}, signed)
    assert answer.status_code == 200, answer.text


async def test_vonage_sdk_vector_verifies_but_lacks_vonages_claims(redis_store) -> None:
    """vonage-python-sdk jwt/tests/test_verify_jwt.py: a token valid for its secret, but not
    a Vonage webhook (issuer "Online JWT Builder", no payload_hash): refused by claim."""
    from vonage_jwt import verify_signature

    token = (
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJPbmxpbmUgSldUIEJ1aWxkZXIiLCJpYXQiOjE2OTc2"
        "MzQ2ODAsImV4cCI6MzMyNTQ1NDA4MjgsImF1ZCI6IiIsInN1YiI6IiJ9.88vJc3I2HhuqEDixHXVhc9R30tA6U_HQHZ"
        "TC29y6CGM"
    )
    secret = "qwertyuiopasdfghjklzxcvbnm123456"
    assert verify_signature(token, secret) is True
    signed = Signed({"Authorization": f"Bearer {token}"}, BODY)
    answer = await _send(redis_store, "vonage", {"secrets": [secret]}, signed)
    assert answer.status_code == 401
    assert "issuer is 'Online JWT Builder'" in answer.json()["detail"]


@pytest.mark.parametrize(
    "authorization,detail",
    [
        (None, "Authorization header is missing"),
        ("Basic abc", "Bearer <JWT>"),
        ("Bearer " + keys.vonage_token(BODY, NOW, iat=None), "`iat`"),
        ("Bearer " + keys.vonage_token(BODY, NOW - 8 * 86400), "old"),
        ("Bearer " + keys.vonage_token(BODY, NOW, iss="Nexmo"), "issuer"),
        ("Bearer " + keys.vonage_token(BODY, NOW, payload_hash="00" * 32), "payload_hash"),
    ],
    ids=["absent", "not-bearer", "no-iat", "stale-iat", "wrong-iss", "wrong-hash"],
)
async def test_vonage_jwt_refusals_say_why(authorization, detail, redis_store) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = await _send(
        redis_store, "vonage", {"secrets": [keys.VONAGE_SECRET]}, Signed(headers, BODY)
    )
    assert answer.status_code == 401
    assert detail in answer.json()["detail"]


# --- Box -----------------------------------------------------------------------------------

# Box SDKs' tests (box-python-sdk test/unit/object/test_webhook.py, box-node-sdk
# tests/lib/managers/webhooks-test.js): a message signed with these two keys.
BOX_VECTOR_BODY = (
    b'{"type":"webhook_event","webhook":{"id":"1234567890"},"trigger":"FILE.UPLOADED",'
    b'"source":{"id":"1234567890","type":"file","name":"Test.txt"}}'
)
BOX_VECTOR_HEADERS = {
    "box-delivery-id": "f96bb54b-ee16-4fc5-aa65-8c2d9e5b546f",
    "box-delivery-timestamp": "2020-01-01T00:00:00-07:00",
    "box-signature-algorithm": "HmacSHA256",
    "box-signature-primary": "6TfeAW3A1PASkgboxxA5yqHNKOwFyMWuEXny/FPD5hI=",
    "box-signature-secondary": "v+1CD1Jdo3muIcbpv5lxxgPglOqMfsNHPV899xWYydo=",
    "box-signature-version": "1",
}
BOX_VECTOR_TIME = datetime.fromisoformat("2020-01-01T00:00:00-07:00").timestamp()


@pytest.mark.parametrize(
    "secrets,status",
    [
        (["SamplePrimaryKey", "SampleSecondaryKey"], 200),
        (["SamplePrimaryKey"], 200),
        (["SampleSecondaryKey"], 200),
        (["WrongPrimaryKey", "SampleSecondaryKey"], 200),
        (["WrongPrimaryKey", "WrongSecondaryKey"], 401),
    ],
    ids=["both", "primary-only", "secondary-only", "rotated-primary", "both-wrong"],
)
async def test_box_published_vector(secrets, status, redis_store) -> None:
    signed = Signed(BOX_VECTOR_HEADERS, BOX_VECTOR_BODY)
    answer = await _send(redis_store, "box", {"secrets": secrets}, signed, now=BOX_VECTOR_TIME)
    assert answer.status_code == status, answer.text


@pytest.mark.parametrize(
    "change,detail",
    [
        ({"box-signature-version": "2"}, "BOX-SIGNATURE-VERSION"),
        ({"box-signature-algorithm": "XXX"}, "BOX-SIGNATURE-ALGORITHM"),
    ],
    ids=["version-2", "other-algorithm"],
)
async def test_box_unknown_signature_version_is_refused(change, detail, redis_store) -> None:
    signed = Signed({**BOX_VECTOR_HEADERS, **change}, BOX_VECTOR_BODY)
    answer = await _send(
        redis_store, "box", {"secrets": ["SamplePrimaryKey"]}, signed, now=BOX_VECTOR_TIME
    )
    assert answer.status_code == 401
    assert detail in answer.json()["detail"]


async def test_box_message_older_than_ten_minutes_is_refused(redis_store) -> None:
    """Box's docs and SDKs refuse a BOX-DELIVERY-TIMESTAMP over 10 minutes old."""
    signed = Signed(BOX_VECTOR_HEADERS, BOX_VECTOR_BODY)
    settings = {"secrets": ["SamplePrimaryKey"]}
    late = await _send(redis_store, "box", settings, signed, now=BOX_VECTOR_TIME + 15 * 60)
    assert late.status_code == 401
    assert "old" in late.json()["detail"]
    fine = await _send(redis_store, "box", settings, signed, now=BOX_VECTOR_TIME + 5 * 60)
    assert fine.status_code == 200, fine.text


async def test_box_retry_with_a_new_delivery_header_is_a_duplicate(redis_store) -> None:
    """BOX-DELIVERY-ID changes on each retry; the body's `id` does not."""
    body = b'{"type":"webhook_event","id":"eb0c4e06-751f-442c-86f8-fd5bb404dbec"}'
    cfg = config(_cfg("box", secrets=[keys.BOX_PRIMARY]))
    async with gateway_client(cfg, redis_store, Clock(NOW)) as client:
        first = await _post(client, "box", keys.sign_box(body, NOW))
        retry = await _post(client, "box", keys.sign_box(body, NOW + 60))
    assert first.json()["status"] == "accepted"
    assert retry.json() == {**first.json(), "status": "duplicate"}


# --- shared tokens and Basic auth --------------------------------------------------------------


@pytest.mark.parametrize("name", ["postmark", "chargebee"])
@pytest.mark.parametrize(
    "authorization,detail",
    [
        ("Basic " + keys.b64(b"hooks:wrong"), "credentials did not match"),
        ("Basic " + keys.b64(b"other:s3cret-pa55word"), "credentials did not match"),
        ("Basic !!!", "not base64"),
        ("Bearer " + keys.b64(keys.BASIC.encode()), "not `Basic"),
        (None, "Authorization header is missing"),
    ],
    ids=["wrong-password", "wrong-user", "garbage", "not-basic", "absent"],
)
async def test_basic_auth_refusals(name, authorization, detail, redis_store) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = await _send(redis_store, name, {"secrets": [keys.BASIC]}, Signed(headers, b"{}"))
    assert answer.status_code == 401
    assert detail in answer.json()["detail"]


async def test_basic_auth_compares_in_constant_time(monkeypatch, redis_store) -> None:
    """The password check is a constant-time comparison (signing.matches_any, i.e.
    hmac.compare_digest), never `==`, so its timing does not leak the password."""
    import hmac as hmac_module

    seen: list[tuple[bytes, bytes]] = []
    real = hmac_module.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr("gateway.sources.signing.hmac.compare_digest", spy)
    wrong = keys.basic(b"{}", NOW, credentials="hooks:s3cret-pa55worx")
    answer = await _send(redis_store, "postmark", {"secrets": [keys.BASIC]}, wrong)
    assert answer.status_code == 401
    assert (keys.BASIC.encode(), b"hooks:s3cret-pa55worx") in seen


def test_basic_auth_secret_must_be_user_colon_password() -> None:
    with pytest.raises(ConfigError, match="user:password"):
        config(_cfg("chargebee", secrets=["just-a-password"]))


async def test_gitlab_token_is_never_stored_with_the_delivery(redis_store) -> None:
    """A shared token is the secret itself: the raw delivery keeps GitLab's other headers
    but not X-Gitlab-Token (stored deliveries are replayed and shown by `map`)."""
    body = b'{"object_kind":"push","ref":"refs/heads/main"}'
    answer = await _send(redis_store, "gitlab", {"secrets": [keys.GITLAB_TOKEN]},
                         keys.sign_gitlab(body, NOW))  # fmt: skip
    assert answer.status_code == 200, answer.text
    (entry,) = await raw_entries(redis_store, "gitlab")
    assert keys.GITLAB_TOKEN not in entry["headers"]
    assert "x-gitlab-token" not in json.loads(entry["headers"])


async def test_gitlab_retry_keeps_idempotency_key_and_is_a_duplicate(redis_store) -> None:
    """https://docs.gitlab.com/user/project/integrations/webhooks/#delivery-headers:
    Idempotency-Key stays the same across retries (the per-request UUID headers do not)."""
    body = b'{"object_kind":"push","ref":"refs/heads/main"}'
    cfg = config(_cfg("gitlab", secrets=[keys.GITLAB_TOKEN]))
    first = keys.sign_gitlab(body, NOW)
    retry = Signed({**first.headers, "X-Gitlab-Event-UUID": "another-uuid"}, body)
    async with gateway_client(cfg, redis_store, Clock(NOW)) as client:
        one = await _post(client, "gitlab", first)
        two = await _post(client, "gitlab", retry)
    assert one.json()["delivery_id"] == first.headers["Idempotency-Key"]
    assert two.json()["status"] == "duplicate"


@pytest.mark.parametrize(
    "name,header,secret",
    [
        ("gitlab", "X-Gitlab-Token", keys.GITLAB_TOKEN),
        ("telegram", "X-Telegram-Bot-Api-Secret-Token", keys.TELEGRAM_TOKEN),
        ("revenuecat", "Authorization", keys.REVENUECAT_AUTH),
    ],
)
async def test_token_header_missing_or_wrong_is_refused(name, header, secret, redis_store) -> None:
    body = b'{"update_id":1,"event":{"id":"e1"}}'
    for headers, detail in (({}, "missing"), ({header: secret[:-1]}, "did not match")):
        answer = await _send(redis_store, name, {"secrets": [secret]}, Signed(headers, body))
        assert answer.status_code == 401
        assert detail in answer.json()["detail"]
