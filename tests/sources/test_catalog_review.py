"""Findings of the catalog's review, pinned: replays, double counts, 5xx and weak keys."""

from __future__ import annotations

import json

import pytest

from gateway.errors import ConfigError
from normalizers import NormalizeError, normalize
from normalizers.base import Delivery
from tests.conftest import Clock, config, gateway_client, raw_entries
from tests.sources import cases_hmac, cases_keys
from tests.sources.cases_handshakes import ZOOM_SECRET, zoom_sign
from tests.sources.catalog_cases import Signed

NOW = 1_700_000_000.0
YEAR = 365 * 86400


def _cfg(name: str, **settings) -> str:
    return json.dumps({"sources": {name: {"type": name, **settings}}})


async def _post(
    store,
    name: str,
    settings: dict,
    signed: Signed,
    *,
    now: float = NOW,
    content_type: str = "application/json",
):
    async with gateway_client(config(_cfg(name, **settings)), store, Clock(now)) as client:
        headers = {"content-type": content_type, **signed.headers}
        return await client.post(f"/webhooks/{name}", content=signed.body, headers=headers)


@pytest.mark.parametrize(
    ("name", "sign"),
    [("customer-io", cases_hmac._customer_io), ("persona", cases_hmac._persona)],
)
async def test_a_signed_timestamp_is_checked_so_an_old_request_cannot_be_replayed(
    name, sign, redis_store
):
    body = json.dumps({"event_id": "e1", "data": {"id": "d1"}}).encode()
    old = await _post(redis_store, name, {"secrets": [cases_hmac.SECRET]}, sign(body, NOW - YEAR))
    assert old.status_code == 401
    assert "old" in old.json()["detail"]
    fresh = await _post(redis_store, name, {"secrets": [cases_hmac.SECRET]}, sign(body, NOW))
    assert fresh.status_code == 200, fresh.text


async def test_a_line_redelivery_is_a_duplicate(redis_store):
    """LINE marks a redelivery `isRedelivery: true`, so the body (and its hash) changes;
    the events' webhookEventIds do not."""

    def body(redelivery: bool) -> bytes:
        event = {
            "type": "message",
            "webhookEventId": "01FZ74A0TDDPYRVKNK77XKC3ZR",
            "deliveryContext": {"isRedelivery": redelivery},
            "timestamp": 1625665242211,
            "source": {"type": "user", "userId": "U4af4980629"},
            "message": {"id": "325708", "type": "text", "text": "Hello"},
        }
        return json.dumps({"destination": "xxxxxxxxxx", "events": [event]}).encode()

    sign = cases_hmac.CASES["line"].sign
    settings = cases_hmac.CASES["line"].config
    first = await _post(redis_store, "line", settings, sign(body(False), NOW))
    again = await _post(redis_store, "line", settings, sign(body(True), NOW))
    assert first.json()["status"] == "accepted"
    assert again.json()["status"] == "duplicate"
    assert len(await raw_entries(redis_store, "line")) == 1


def _sendgrid_events(body: bytes, delivery: str) -> list:
    cfg = config(_cfg("sendgrid", public_keys=[cases_keys.SENDGRID_PUBLIC]))
    return normalize(
        Delivery(
            "sg",
            "sendgrid",
            delivery,
            0,
            {"content-type": "application/json"},
            body,
            cfg.sources["sendgrid"],
        )
    )


def test_a_sendgrid_event_resent_in_another_batch_keeps_its_message_id():
    one = {
        "email": "a@example.com",
        "event": "delivered",
        "sg_event_id": "sg-1",
        "timestamp": 1700000000,
    }
    two = {
        "email": "b@example.com",
        "event": "open",
        "sg_event_id": "sg-2",
        "timestamp": 1700000001,
    }
    first = _sendgrid_events(json.dumps([one]).encode(), "sha256:aaa")
    later = _sendgrid_events(json.dumps([two, one]).encode(), "sha256:bbb")
    assert first[0].message_id == later[1].message_id
    assert later[0].message_id != later[1].message_id


def test_a_batch_element_that_is_not_an_object_is_not_dropped_in_silence():
    with pytest.raises(NormalizeError, match="element 1 of the batch"):
        _sendgrid_events(b'[{"event": "open", "sg_event_id": "x"}, 7]', "sha256:ccc")


async def test_a_malformed_zoom_validation_is_the_clients_mistake_not_a_500(redis_store):
    body = b'{"event":"endpoint.url_validation","payload":"x"}'
    answer = await _post(redis_store, "zoom", {"secrets": [ZOOM_SECRET]}, zoom_sign(body, NOW))
    assert answer.status_code == 400
    assert "plainToken" in answer.json()["detail"]


async def test_deeply_nested_bodies_get_4xx_not_500(redis_store):
    deep = b"[" * 5000
    # Dropbox Sign reads its JSON before any signature: a stranger's junk must not 500.
    unsigned = await _post(redis_store, "dropbox-sign", {"secrets": ["k"]}, Signed({}, deep))
    assert unsigned.status_code == 401
    # Discord's PING check decodes the signed body.
    signed = cases_keys.sign_discord(b'{"a":' * 3000, NOW)
    discord = await _post(
        redis_store, "discord", {"public_keys": [cases_keys.DISCORD_PUBLIC]}, signed
    )
    assert discord.status_code < 500


@pytest.mark.parametrize(
    "key",
    [
        "01" + "00" * 31,  # the identity: R = identity, S = 0 verifies for any message
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # same, sign bit
        "ec" + "ff" * 30 + "7f",  # p-1, order 2
    ],
)
def test_an_ed25519_key_of_small_order_is_refused_in_config(key):
    with pytest.raises(ConfigError, match="small order"):
        config(_cfg("discord", public_keys=[key]))


async def test_discords_204_is_what_the_log_says(redis_store, capsys):
    body = json.dumps(
        {
            "version": 1,
            "application_id": "1",
            "type": 1,
            "event": {
                "type": "APPLICATION_AUTHORIZED",
                "timestamp": "2024-10-18T14:42:53Z",
                "data": {"user": {"id": "42"}},
            },
        }
    ).encode()
    answer = await _post(
        redis_store,
        "discord",
        {"public_keys": [cases_keys.DISCORD_PUBLIC]},
        cases_keys.sign_discord(body, NOW),
    )
    assert answer.status_code == 204
    logged = capsys.readouterr()
    line = next(x for x in (logged.out + logged.err).splitlines() if "delivery.accepted" in x)
    assert "status=204" in line
