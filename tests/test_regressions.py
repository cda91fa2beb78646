"""Defects found in review, each pinned by the request or config that showed it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ConfigError
from gateway.store import RawDelivery
from tests.conftest import Clock, config, gateway_client

DEEP = b'{"id": ' + b"[" * 5000 + b"]" * 5000 + b"}"


def _slack(body: bytes, now: int) -> dict[str, str]:
    sig = hmac.new(b"sl", f"v0:{now}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "x-slack-signature": f"v0={sig}",
        "x-slack-request-timestamp": str(now),
        "content-type": "application/x-www-form-urlencoded",
    }


async def test_unencodable_id_is_400_and_does_not_hang_its_batch(store):
    """A lone surrogate in a Slack trigger_id once failed the whole batch's Redis write."""
    now = int(time.time())
    bad = urlencode({"payload": '{"trigger_id": "\\ud800"}'}).encode()
    good = urlencode({"payload": '{"trigger_id": "1.2.ok"}'}).encode()
    cfg = "sources:\n  slack: {type: slack, secrets: [sl]}\n"
    async with gateway_client(cfg, store, Clock(now)) as client:
        replies = await asyncio.wait_for(
            asyncio.gather(
                client.post("/webhooks/slack", content=bad, headers=_slack(bad, now)),
                client.post("/webhooks/slack", content=good, headers=_slack(good, now)),
            ),
            timeout=5,
        )
    assert [r.status_code for r in replies] == [400, 200]


async def test_a_batch_that_fails_unexpectedly_answers_everyone(store):
    """Whatever breaks inside a write, every waiting request gets an answer."""

    def delivery(key: str) -> RawDelivery:
        return RawDelivery("s", "d", key, 1, b"{}", b"{}", 60_000, 100)

    results = await asyncio.wait_for(
        asyncio.gather(
            store.accept(delivery("ok")), store.accept(delivery("\ud800")), return_exceptions=True
        ),
        timeout=5,
    )
    # Both failed (the batch's one script call could not be encoded) and neither hung.
    assert [type(r) for r in results] == [UnicodeEncodeError, UnicodeEncodeError]
    again = await asyncio.wait_for(store.accept(delivery("ok")), timeout=5)
    assert again.accepted  # nothing of the failed batch was written


@pytest.mark.parametrize(
    ("source", "cfg", "headers", "status"),
    [
        (
            "linear",
            "type: hmac\n    secrets: [x]\n    signature_header: Linear-Signature\n"
            "    timestamp_field: webhookTimestamp",
            {"linear-signature": "00"},
            401,
        ),
        (
            "intercom",
            "type: intercom\n    secrets: [x]",
            {"x-hub-signature": "sha1=" + hmac.new(b"x", DEEP, "sha1").hexdigest()},
            400,
        ),
    ],
)
async def test_deeply_nested_json_is_a_client_error(store, source, cfg, headers, status):
    async with gateway_client(f"sources:\n  {source}:\n    {cfg}\n", store) as client:
        r = await client.post(f"/webhooks/{source}", content=DEEP, headers=headers)
    assert r.status_code == status, r.text


async def test_deeply_nested_signed_stripe_event_is_400(store):
    body = DEEP.decode()
    header = stripe.WebhookSignature.generate_signature_header(body, "whsec_x")
    cfg = "sources:\n  stripe: {type: stripe, secrets: [whsec_x]}\n"
    async with gateway_client(cfg, store) as client:
        r = await client.post(
            "/webhooks/stripe", content=body, headers={"stripe-signature": header}
        )
    assert r.status_code == 400


async def test_stripe_replay_with_a_second_fresh_timestamp_is_refused(store):
    """verify_header signs with the first t=; the window must not be checked on another."""
    now = int(time.time())
    body = json.dumps({"id": "evt_old", "object": "event"})
    old = stripe.WebhookSignature.generate_signature_header(body, "whsec_x", now - 30 * 86400)
    cfg = "sources:\n  stripe: {type: stripe, secrets: [whsec_x]}\n"
    async with gateway_client(cfg, store, Clock(now)) as client:
        plain = await client.post(
            "/webhooks/stripe", content=body, headers={"stripe-signature": old}
        )
        forged = await client.post(
            "/webhooks/stripe", content=body, headers={"stripe-signature": f"{old},t={now}"}
        )
    assert plain.status_code == 401
    assert forged.status_code == 401


async def test_non_ascii_digits_in_a_timestamp_are_401(store):
    cfg = (
        "sources:\n  acme:\n    type: hmac\n    secrets: [x]\n    signature_header: Sig\n"
        "    timestamp_field: ts\n    signed_content: '{timestamp}.{body}'\n"
    )
    arabic = str(int(time.time())).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    body = json.dumps({"ts": arabic}).encode()
    async with gateway_client(cfg, store) as client:
        r = await client.post("/webhooks/acme", content=body, headers={"sig": "00"})
    assert r.status_code == 401


@pytest.mark.parametrize("value", ["0x1f", "0755", "1_000", "12:30", "007", "1e5", "yes"])
def test_unquoted_variables_that_look_like_yaml_numbers_stay_as_written(value):
    cfg = config("sources:\n  s:\n    type: github\n    secrets:\n      - ${S}\n", S=value)
    assert cfg.sources["s"].secrets[0].reveal() == value


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("redis_url: http://localhost:6379\n", "test.yaml:1: redis_url: expected a URL"),
        ("redis_url: redis://:pw@host:notaport/0\n", "test.yaml:1: redis_url: expected a URL"),
        ("key_prefix: 'a{b}'\n", "test.yaml:1: key_prefix: must be non-empty"),
        (
            "sources:\n  s: {type: github, secrets: [x], dedupe_ttl: .inf}\n",
            "test.yaml:2: sources.s.dedupe_ttl: expected a duration",
        ),
        (
            "sources:\n  s: {type: github, secrets: [x], dedupe_ttl: 1e400}\n",
            "test.yaml:2: sources.s.dedupe_ttl: expected a duration",
        ),
    ],
)
def test_bad_values_are_config_errors_not_crashes(text, where):
    with pytest.raises(ConfigError) as e:
        config(text)
    assert str(e.value).startswith(where), str(e.value)


def test_errors_do_not_echo_values_from_the_environment():
    text = (
        "sources:\n  s:\n    type: hmac\n    secrets: [x]\n    signature_header: S\n"
        "    algorithm: ${ALGO}\n    tolerance: ${TOL}\n"
    )
    with pytest.raises(ConfigError) as e:
        config(text, ALGO="TOPSECRET", TOL="1m")
    assert "TOPSECRET" not in str(e.value)
    assert "sources.s.algorithm: invalid value (valid: sha1, sha256, sha512)" in str(e.value)
    with pytest.raises(ConfigError) as e:
        config(text, ALGO="sha1", TOL="HUNTER2")
    assert "HUNTER2" not in str(e.value)


@given(
    st.lists(
        st.one_of(
            st.text(max_size=40),
            st.binary(max_size=40),
            st.integers(min_value=-(2**70), max_value=2**70),
            st.floats(allow_nan=False, allow_infinity=False),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    )
)
@settings(max_examples=300, deadline=None)
def test_the_c_packer_writes_the_same_bytes_as_the_python_one(args) -> None:
    """store.pack_command takes hiredis's C packer when it can: same RESP bytes."""
    from gateway.store import _pack_command, pack_command

    command = ("CMD", *args)
    assert pack_command(command) == _pack_command(command)
