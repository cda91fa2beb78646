"""Standard Webhooks / Svix, signed by the standardwebhooks library itself."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from gateway.errors import ConfigError
from tests.conftest import Clock, config, gateway_client

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CFG = f"sources:\n  clerk:\n    type: standard-webhooks\n    secrets: [{SECRET}]\n"
NOW = 1_700_000_000
BODY = '{"type":"user.created","data":{"id":"user_1"}}'


def signed(msg_id: str = "msg_1", t: int = NOW, secret: str = SECRET, prefix: str = "webhook"):
    sig = Webhook(secret).sign(msg_id, datetime.fromtimestamp(t, tz=UTC), BODY)
    return {f"{prefix}-id": msg_id, f"{prefix}-timestamp": str(t), f"{prefix}-signature": sig}


async def post(store, headers, now=NOW, body=BODY, cfg=CFG):
    async with gateway_client(cfg, store, Clock(now)) as client:
        return await client.post("/webhooks/clerk", content=body, headers=headers)


async def test_signed_by_the_library_is_accepted(store):
    r = await post(store, signed())
    assert r.json() == {"status": "accepted", "delivery_id": "msg_1"}


async def test_webhook_and_svix_headers_are_the_same_delivery(store):
    assert (await post(store, signed(prefix="webhook"))).json()["status"] == "accepted"
    assert (await post(store, signed(prefix="svix"))).json()["status"] == "duplicate"


async def test_several_signatures_and_v1a_entries(store):
    headers = signed()
    headers["webhook-signature"] = f"v1a,AAAA v1,{'A' * 44} {headers['webhook-signature']}"
    assert (await post(store, headers)).json() == {"status": "accepted", "delivery_id": "msg_1"}


@pytest.mark.parametrize(
    "signature",
    ["v1,!!!not-base64!!!", "garbage", "v1", "v1,", ",", "v2,abc", "v1,YWJj" * 400],
)
async def test_malformed_signature_is_401_never_500(store, signature):
    headers = {**signed(), "webhook-signature": signature}
    r = await post(store, headers)
    assert r.status_code == 401
    assert r.json()["reason"] == "bad_signature"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
async def test_missing_header_is_401_and_named(store, missing):
    headers = signed()
    del headers[missing]
    r = await post(store, headers)
    assert r.status_code == 401
    assert missing in r.json()["detail"]


@pytest.mark.parametrize(("age", "status"), [(290, 200), (300, 200), (301, 401)])
async def test_old_timestamp_beyond_the_tolerance_is_401(store, age, status):
    # Timestamps ahead of the clock: tests/sources/test_timestamps.py
    r = await post(store, signed(t=NOW - age))
    assert r.status_code == status, r.text
    if status == 401:
        assert r.json()["detail"] == (
            f"the signature timestamp is {age} s old; this source accepts 300 s"
        )


@pytest.mark.parametrize(
    ("timestamp", "detail"),
    [
        ("soon", "the signature timestamp is malformed"),
        ("1e400", "the signature timestamp is malformed"),
        ("nan", "the signature timestamp is malformed"),
        ("", "missing header(s): webhook-timestamp"),
    ],
    ids=["word", "overflow", "nan", "empty"],
)
async def test_malformed_timestamp_is_401(store, timestamp, detail):
    r = await post(store, {**signed(), "webhook-timestamp": timestamp})
    assert r.status_code == 401
    assert r.json()["detail"] == detail


@pytest.mark.parametrize("secret", ["whsec_", "whsec_a", "whsec_!!!!"])
def test_malformed_secret_is_a_config_error(secret):
    with pytest.raises(ConfigError, match=r"^test\.yaml:4: sources\.clerk\.secrets\[0\]: ") as e:
        config(f"sources:\n  clerk:\n    type: standard-webhooks\n    secrets: ['{secret}']\n")
    assert secret not in str(e.value).replace("whsec_ followed", "")
