"""The vendors' official (or recomputed, verified) test vectors from shared/reference/providers.md.

Each row goes through the whole front door: a correct vector is accepted, the same
request with one body byte changed is refused with 401.
"""

from __future__ import annotations

import pytest

from tests.conftest import Clock, gateway_client

SLACK_BODY = (
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmi"
    "bIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)

VECTORS = [
    pytest.param(
        "type: stripe\n    secrets: [whsec_test_secret]",
        {
            "stripe-signature": "t=1614265330,v1=fbd6bf5496b9d6310e422a2c072578f95f5eb492111ab57a5510e9cd79c1b304"
        },
        b'{"id":"evt_test","object":"event"}',
        1614265330,
        "evt_test",
        id="stripe",
    ),
    pytest.param(
        "type: standard-webhooks\n    secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]",
        {
            "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "webhook-timestamp": "1614265330",
            "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        },
        b'{"test": 2432232314}',
        1614265330,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        id="standard-webhooks",
    ),
    pytest.param(
        "type: standard-webhooks\n    secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]",
        {
            "svix-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "svix-timestamp": "1614265330",
            "svix-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        },
        b'{"test": 2432232314}',
        1614265330,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        id="standard-webhooks-svix-headers",
    ),
    pytest.param(
        'type: github\n    secrets: ["It\'s a Secret to Everybody"]',
        {
            "x-hub-signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            "x-github-event": "ping",
        },
        b"Hello, World!",
        None,
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        id="github",
    ),
    pytest.param(
        "type: shopify\n    secrets: [hush]",
        {
            "x-shopify-hmac-sha256": "VnKUjZsLuN5iZWjn5EntcBVCF9kMN43LglzCE1/GSeY=",
            "x-shopify-webhook-id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            "x-shopify-topic": "orders/create",
        },
        b'{"id":1}',
        None,
        "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        id="shopify",
    ),
    pytest.param(
        "type: intercom\n    secrets: [intercom-client-secret]",
        {"x-hub-signature": "sha1=23227fc8c3b135104982418369555b8e0c12e64c"},
        b'{"type":"notification_event","id":"notif_1"}',
        None,
        "notif_1",
        id="intercom",
    ),
    pytest.param(
        "type: slack\n    secrets: [8f742231b10e8888abcd99yyyzzz85a5]",
        {
            "x-slack-signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            "x-slack-request-timestamp": "1531420618",
            "content-type": "application/x-www-form-urlencoded",
        },
        SLACK_BODY.encode(),
        1531420618,
        "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c",
        id="slack",
    ),
]


def _tamper(body: bytes) -> bytes:
    return body[:-1] + bytes([body[-1] ^ 0x01])


@pytest.mark.parametrize(("source", "headers", "body", "now", "delivery_id"), VECTORS)
async def test_official_vector_is_accepted_and_a_changed_byte_is_not(
    store, source, headers, body, now, delivery_id
):
    cfg = f"sources:\n  v:\n    {source}\n"
    async with gateway_client(cfg, store, Clock(now)) as client:
        bad = await client.post("/webhooks/v", content=_tamper(body), headers=headers)
        assert bad.status_code == 401, bad.text
        assert bad.json()["reason"] == "bad_signature"

        ok = await client.post("/webhooks/v", content=body, headers=headers)
        assert ok.status_code == 200, ok.text
        if headers.get("content-type", "").startswith("application/x-www-form"):
            assert ok.content == b""  # Slack shows a slash command's reply to the user
        else:
            assert ok.json() == {"status": "accepted", "delivery_id": delivery_id}

        again = await client.post("/webhooks/v", content=body, headers=headers)
        assert again.status_code == 200
        if not headers.get("content-type", "").startswith("application/x-www-form"):
            assert again.json() == {"status": "duplicate", "delivery_id": delivery_id}
    entries = await store.client.xrange(store.keys.raw("v"))
    assert len(entries) == 1
    assert entries[0][1][b"delivery_id"].decode() == delivery_id
    assert entries[0][1][b"body"] == body
