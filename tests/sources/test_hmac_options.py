"""The generic `hmac` type's options, one docs/sources.md table row at a time.

Every signature here is made with Python's `hmac` module from the docs' description,
never with the gateway's code; the docs' vendor configs are in test_hmac_vendors.py
(Paddle, Linear, Typeform, Zendesk, HubSpot, Calendly), which this file does not repeat.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import httpx
import pytest

from gateway.errors import ConfigError
from tests.conftest import Clock, config, gateway_client

NOW = 1_700_000_000  # 2023-11-14T22:13:20Z
SECRET = "acme-signing-secret"
URL = "/webhooks/acme"
BODY = b'{"type":"order.paid","event_id":"evt_71","data":{"id":"ord_9"}}'


def acme(**options: object) -> str:
    """An `hmac` source named acme with the docs' option names (values as YAML/JSON)."""
    lines = [
        "sources:",
        "  acme:",
        "    type: hmac",
        f"    secrets: [{json.dumps(options.pop('secret', SECRET))}]",
        "    signature_header: X-Acme-Signature",
    ]
    lines += [f"    {key}: {json.dumps(value)}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def mac(content: bytes, key: bytes = SECRET.encode(), algorithm: str = "sha256") -> bytes:
    return hmac.new(key, content, algorithm).digest()


def hexmac(content: bytes, **kw) -> str:
    return mac(content, **kw).hex()


async def post(store, cfg: str, headers: dict[str, str], body: bytes = BODY, now: float = NOW):
    async with gateway_client(cfg, store, Clock(now)) as client:
        return await client.post(URL, content=body, headers=headers)


# --- algorithm and encoding ------------------------------------------------------------------


def encoded(digest: bytes, encoding: str) -> str:
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


@pytest.mark.parametrize(
    ("algorithm", "encoding"),
    [
        ("sha1", "hex"),
        ("sha512", "hex"),
        ("sha1", "base64"),
        ("sha256", "base64"),
        ("sha512", "base64"),
    ],
)
async def test_algorithm_and_encoding_are_the_configured_ones(store, algorithm, encoding):
    cfg = acme(algorithm=algorithm, encoding=encoding, delivery_id_header="X-Acme-Delivery")
    right = encoded(mac(BODY, algorithm=algorithm), encoding)
    other_algorithm = "sha256" if algorithm != "sha256" else "sha512"
    other_encoding = "base64" if encoding == "hex" else "hex"
    wrong = [
        encoded(mac(BODY, algorithm=other_algorithm), encoding),
        encoded(mac(BODY, algorithm=algorithm), other_encoding),
    ]
    for signature in wrong:
        r = await post(store, cfg, {"x-acme-signature": signature, "x-acme-delivery": "d-1"})
        assert r.status_code == 401, signature
        assert r.json()["reason"] == "bad_signature"
    ok = await post(store, cfg, {"x-acme-signature": right, "x-acme-delivery": "d-1"})
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"status": "accepted", "delivery_id": "d-1"}


# --- {delivery_id} in signed_content ---------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "delivery_headers"),
    [
        ({"delivery_id_header": "X-Acme-Delivery"}, {"x-acme-delivery": "dlv_3001"}),
        ({"delivery_id_field": "data.id"}, {}),
    ],
    ids=["delivery_id_header", "delivery_id_field"],
)
async def test_delivery_id_is_part_of_the_signed_content(store, where, delivery_headers):
    cfg = acme(signed_content="{delivery_id}.{body}", **where)
    delivery_id = delivery_headers.get("x-acme-delivery", "ord_9")
    over_body_only = await post(store, cfg, {"x-acme-signature": hexmac(BODY), **delivery_headers})
    assert over_body_only.status_code == 401
    assert over_body_only.json()["detail"].startswith("no signature matched")

    signed = {"x-acme-signature": hexmac(f"{delivery_id}.".encode() + BODY), **delivery_headers}
    ok = await post(store, cfg, signed)
    assert ok.json() == {"status": "accepted", "delivery_id": delivery_id}


async def test_a_signature_does_not_carry_over_to_another_delivery_id_header(store):
    cfg = acme(signed_content="{delivery_id}.{body}", delivery_id_header="X-Acme-Delivery")
    signature = hexmac(b"dlv_1." + BODY)
    moved = await post(store, cfg, {"x-acme-signature": signature, "x-acme-delivery": "dlv_2"})
    assert moved.status_code == 401
    ok = await post(store, cfg, {"x-acme-signature": signature, "x-acme-delivery": "dlv_1"})
    assert ok.json() == {"status": "accepted", "delivery_id": "dlv_1"}


# --- secret_encoding -------------------------------------------------------------------------

KEY = bytes([0x00, 0x9F, 0xFF]) + b"raw key bytes" + bytes([0x80])


@pytest.mark.parametrize(
    ("secret_encoding", "secret"),
    [
        ("base64", "whsec_" + base64.b64encode(KEY).decode()),
        ("base64", base64.b64encode(KEY).decode()),
        ("hex", KEY.hex()),
    ],
    ids=["base64-whsec_", "base64", "hex"],
)
async def test_secret_encoding_decodes_the_key(store, secret_encoding, secret):
    cfg = acme(secret=secret, secret_encoding=secret_encoding)
    as_text = await post(store, cfg, {"x-acme-signature": hexmac(BODY, key=secret.encode())})
    assert as_text.status_code == 401
    ok = await post(store, cfg, {"x-acme-signature": hexmac(BODY, key=KEY)})
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "accepted"


# --- tolerance: null ---------------------------------------------------------------------------

A_DAY_AGO = NOW - 86_400


def ts_header(ts: int) -> dict[str, str]:
    return {
        "x-acme-timestamp": str(ts),
        "x-acme-signature": hexmac(f"{ts}.".encode() + BODY),
    }


def ts_pairs(ts: int) -> dict[str, str]:
    return {"x-acme-signature": f"t={ts},v1={hexmac(f'{ts}.'.encode() + BODY)}"}


def ts_field_body(ts: int) -> bytes:
    return json.dumps({"type": "order.paid", "sent_at": ts}).encode()


TIMESTAMPED = {
    # where the timestamp is: (options, headers for a timestamp, body for a timestamp)
    "timestamp_header": (
        {"timestamp_header": "X-Acme-Timestamp", "signed_content": "{timestamp}.{body}"},
        ts_header,
        lambda ts: BODY,
    ),
    "pairs": (
        {"signature_format": "pairs", "signed_content": "{timestamp}.{body}"},
        ts_pairs,
        lambda ts: BODY,
    ),
    "timestamp_field": (
        {"timestamp_field": "sent_at"},
        lambda ts: {"x-acme-signature": hexmac(ts_field_body(ts))},
        ts_field_body,
    ),
}


@pytest.mark.parametrize("where", sorted(TIMESTAMPED))
@pytest.mark.parametrize(
    ("tolerance", "ts", "status"),
    [
        ({}, A_DAY_AGO, 401),
        ({"tolerance": None}, A_DAY_AGO, 200),
        ({"tolerance": None}, NOW + 86_400, 200),
    ],
    ids=["default-a-day-old", "null-a-day-old", "null-a-day-ahead"],
)
async def test_tolerance_null_turns_the_freshness_check_off(store, where, tolerance, ts, status):
    options, headers, body = TIMESTAMPED[where]
    r = await post(store, acme(**options, **tolerance), headers(ts), body=body(ts))
    assert r.status_code == status, r.text
    if status == 401:
        assert (
            r.json()["detail"]
            == "the signature timestamp is 86400 s old; this source accepts 300 s"
        )


# --- several signatures in one header ----------------------------------------------------------

RIGHT = hexmac(BODY)
WRONG = hexmac(BODY, key=b"another-secret")


@pytest.mark.parametrize(
    ("options", "header", "status"),
    [
        ({}, f"{WRONG} {RIGHT}", 200),
        ({}, f"{RIGHT} {WRONG}", 200),
        ({}, f"{WRONG},{RIGHT}", 200),
        ({}, f"{WRONG}, {RIGHT}", 200),
        ({}, f"{WRONG} {WRONG}", 401),
        ({"prefix": "sha256="}, f"sha256={WRONG} sha256={RIGHT}", 200),
        ({"prefix": "sha256="}, f"sha256={WRONG},{RIGHT}", 401),
        ({"signature_format": "pairs"}, f"t={NOW},v1={WRONG},v1={RIGHT}", 200),
        ({"signature_format": "pairs"}, f"t={NOW},v1={RIGHT},v1={WRONG}", 200),
        ({"signature_format": "pairs"}, f"t={NOW},v0={RIGHT},v1={WRONG}", 401),
        (
            {"signature_format": "pairs", "timestamp_key": "ts", "signature_key": "h1"},
            f"ts={NOW};h1={WRONG};h1={RIGHT}",
            200,
        ),
    ],
    ids=[
        "plain-spaces-second-right",
        "plain-spaces-first-right",
        "plain-comma",
        "plain-comma-space",
        "plain-none-right",
        "prefix-each",
        "prefix-missing-on-the-right-one",
        "pairs-several-v1",
        "pairs-first-v1-right",
        "pairs-right-one-under-another-key",
        "pairs-ts-h1-semicolons",
    ],
)
async def test_several_signatures_in_one_header_any_may_match(store, options, header, status):
    r = await post(store, acme(**options), {"x-acme-signature": header})
    assert r.status_code == status, r.text
    if status == 200:
        # no delivery id configured: the body's SHA-256 stands in
        assert r.json() == {
            "status": "accepted",
            "delivery_id": "sha256:" + hashlib.sha256(BODY).hexdigest(),
        }
    else:
        assert r.json()["detail"].startswith("no signature matched")


# --- {method} and {url} ------------------------------------------------------------------------

PUBLIC_URL = "https://hooks.example.com/in/acme?tenant=7"


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"POST\n" + PUBLIC_URL.encode() + b"\n" + BODY, 200),
        (b"POST\nhttp://gateway/webhooks/acme\n" + BODY, 401),  # the URL the request reached
        (b"post\n" + PUBLIC_URL.encode() + b"\n" + BODY, 401),
        (PUBLIC_URL.encode() + b"\n" + BODY, 401),
    ],
    ids=["method-and-configured-url", "request-url", "lower-case-method", "no-method"],
)
async def test_method_and_url_are_signed_with_literal_text(store, content, status):
    cfg = acme(signed_content="{method}\n{url}\n{body}", url=PUBLIC_URL)
    r = await post(store, cfg, {"x-acme-signature": hexmac(content)})
    assert r.status_code == status, r.text


def test_url_placeholder_without_url_is_a_config_error():
    with pytest.raises(ConfigError, match=r"sources\.acme\.signed_content: uses \{url\}: set url"):
        config(acme(signed_content="{url}{body}"))


# --- timestamp_header formats ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stamp", "now"),
    [
        ("1700000000", NOW),
        ("1700000000000", NOW),
        ("1700000000123", NOW + 0.123),
        ("2023-11-14T22:13:20Z", NOW),
        ("2023-11-14T22:13:20.500Z", NOW + 0.5),
        ("2023-11-14T23:13:20+01:00", NOW),
    ],
    ids=["unix-seconds", "unix-ms", "unix-ms-fraction", "iso-z", "iso-fraction", "iso-offset"],
)
async def test_timestamp_header_formats_are_read_as_the_same_instant(store, stamp, now):
    cfg = acme(timestamp_header="X-Acme-Timestamp", signed_content="{timestamp}.{body}")
    headers = {"x-acme-timestamp": stamp, "x-acme-signature": hexmac(f"{stamp}.".encode() + BODY)}
    # The instant the header names is `now`; read in the wrong unit it would be days or
    # centuries away. 301 s later it is too old, 300 s later still fine.
    assert (await post(store, cfg, headers, now=now)).status_code == 200
    assert (await post(store, cfg, headers, now=now + 300)).json()["status"] == "duplicate"
    late = await post(store, cfg, headers, now=now + 301)
    assert late.status_code == 401
    assert (
        late.json()["detail"] == "the signature timestamp is 301 s old; this source accepts 300 s"
    )


# --- the same through `webhook-gateway serve` -------------------------------------------------


def test_served_hmac_with_sha512_base64_delivery_id_and_base64_secret(serve):
    """Options combined as a vendor would, through a real server process and real clock."""
    secret = "whsec_" + base64.b64encode(KEY).decode()
    server = serve(
        "redis_url: ${REDIS_URL}\nkey_prefix: ${PREFIX}\n"
        + acme(
            secret="${ACME_SECRET}",
            algorithm="sha512",
            encoding="base64",
            secret_encoding="base64",
            timestamp_header="X-Acme-Timestamp",
            delivery_id_header="X-Acme-Delivery",
            signed_content="{delivery_id}.{timestamp}.{body}",
        ),
        env={"ACME_SECRET": secret},
    )
    ts = str(int(time.time()))
    content = f"dlv_served.{ts}.".encode() + BODY
    headers = {
        "x-acme-timestamp": ts,
        "x-acme-delivery": "dlv_served",
        "x-acme-signature": base64.b64encode(mac(content, key=KEY, algorithm="sha512")).decode(),
    }
    tampered = httpx.post(server.url + URL, content=BODY + b" ", headers=headers)
    assert tampered.status_code == 401
    first = httpx.post(server.url + URL, content=BODY, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json() == {"status": "accepted", "delivery_id": "dlv_served"}
    again = httpx.post(server.url + URL, content=BODY, headers=headers)
    assert again.json() == {"status": "duplicate", "delivery_id": "dlv_served"}
    log = server.stop()
    assert secret not in log and base64.b64encode(KEY).decode() not in log
