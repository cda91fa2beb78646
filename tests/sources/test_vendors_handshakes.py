"""Handshakes through the real front door and the real Redis: each answered exactly as the
vendor specifies (status, content type, body, headers), none stored as a delivery, the
signed ones refused when forged, and the secrets Asana and Notion hand over kept for the
operator but never trusted by themselves.

The expected answers are written out from each vendor's docs (cited beside them); the
requests are signed by tests/sources/cases_handshakes.py, not by the gateway.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
import pytest

from tests.conftest import Clock, config, gateway_client, raw_entries, served_gateway
from tests.sources.cases_handshakes import (
    ASANA_SECRET,
    META_SECRET,
    META_VERIFY_TOKEN,
    NOTION_TOKEN,
    OKTA_SECRET,
    TRELLO_SECRET,
    TRELLO_URL,
    TWITCH_SECRET,
    ZOOM_SECRET,
    asana_sign,
    notion_sign,
    twitch_sign,
    zoom_sign,
)


def _cfg(**sources: dict) -> str:
    return json.dumps({"sources": {name.replace("_", "-"): s for name, s in sources.items()}})


async def _keys(store) -> list[str]:
    """Every Redis key the gateway wrote (this test's prefix only)."""
    found = [k async for k in store.client.scan_iter(match=f"{store.keys.prefix}:*")]
    return sorted(k.decode() for k in found)


async def _nothing_stored(store, *sources: str) -> None:
    for source in sources:
        assert await raw_entries(store, source) == []
    assert await _keys(store) == []  # no stream, no seen-key, nothing


# --- Zoom ---------------------------------------------------------------------------------

# Zoom's documented validation request (https://developers.zoom.us/docs/api/webhooks/
# #validate-your-webhook-endpoint), as Zoom posts it.
ZOOM_VALIDATION = (
    b'{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,'
    b'"event":"endpoint.url_validation"}'
)


async def test_zoom_url_validation_is_answered_with_the_hmac_of_the_plain_token(redis_store):
    clock = Clock()
    cfg = _cfg(zoom={"type": "zoom", "secrets": ["an-older-secret", ZOOM_SECRET]})
    signed = zoom_sign(ZOOM_VALIDATION, clock.now)  # signed with the second secret
    async with gateway_client(cfg, redis_store, clock) as client:
        answer = await client.post(
            "/webhooks/zoom", content=ZOOM_VALIDATION, headers=signed.headers
        )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    # encryptedToken = hex HMAC-SHA256(secret token, plainToken), with the secret that
    # signed the request (zoom/webhook-sample index.js, hashForValidate).
    expected = hmac.new(ZOOM_SECRET.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256)
    assert answer.json() == {
        "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
        "encryptedToken": expected.hexdigest(),
    }
    await _nothing_stored(redis_store, "zoom")


async def test_zoom_url_validation_unsigned_or_tampered_is_401_not_an_hmac_oracle(redis_store):
    clock = Clock()
    cfg = _cfg(zoom={"type": "zoom", "secrets": [ZOOM_SECRET]})
    signed = zoom_sign(ZOOM_VALIDATION, clock.now)
    chosen = ZOOM_VALIDATION.replace(b"qgg8vlvZRS6UYooatFL8Aw", b"attacker-chosen-text")
    async with gateway_client(cfg, redis_store, clock) as client:
        unsigned = await client.post("/webhooks/zoom", content=ZOOM_VALIDATION)
        tampered = await client.post("/webhooks/zoom", content=chosen, headers=signed.headers)
    for answer in (unsigned, tampered):
        assert answer.status_code == 401, answer.text
        assert "encryptedToken" not in answer.text
    await _nothing_stored(redis_store, "zoom")


# --- Twitch EventSub ----------------------------------------------------------------------

# Twitch's documented challenge request body (https://dev.twitch.tv/docs/eventsub/
# handling-webhook-events/#responding-to-a-challenge-request).
TWITCH_CHALLENGE = (
    b'{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"id":'
    b'"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","status":"webhook_callback_verification_pending",'
    b'"type":"channel.follow","version":"2","cost":1,"condition":{"broadcaster_user_id":'
    b'"12826","moderator_user_id":"12826"},"transport":{"method":"webhook","callback":'
    b'"https://example.com/webhooks/callback"},"created_at":"2019-11-16T10:11:12.634234626Z"}}'
)
TWITCH_REVOCATION = (
    b'{"subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","status":'
    b'"authorization_revoked","type":"channel.follow","cost":1,"version":"2","condition":'
    b'{"broadcaster_user_id":"12826"},"transport":{"method":"webhook","callback":'
    b'"https://example.com/webhooks/callback"},"created_at":"2019-11-16T10:11:12.634234626Z"}}'
)
TWITCH = _cfg(twitch={"type": "twitch", "secrets": [TWITCH_SECRET]})


async def test_twitch_challenge_is_echoed_as_the_whole_text_body(redis_store):
    clock = Clock()
    signed = twitch_sign(TWITCH_CHALLENGE, clock.now, kind="webhook_callback_verification")
    async with gateway_client(TWITCH, redis_store, clock) as client:
        answer = await client.post(
            "/webhooks/twitch", content=TWITCH_CHALLENGE, headers=signed.headers
        )
    # "a 200 status code, the Content-Type header set to text/plain, and the body set to
    # the challenge value" (twitchdev/twitch-cli's verify-subscription checks the same).
    assert answer.status_code == 200
    assert answer.headers["content-type"].split(";")[0] == "text/plain"
    assert answer.content == b"pogchamp-kappa-360noscope-vohiyo"
    await _nothing_stored(redis_store, "twitch")


async def test_twitch_challenge_with_a_forged_signature_is_401(redis_store):
    clock = Clock()
    signed = twitch_sign(TWITCH_CHALLENGE, clock.now, kind="webhook_callback_verification")
    forged = TWITCH_CHALLENGE.replace(b"pogchamp", b"pogchomp")
    async with gateway_client(TWITCH, redis_store, clock) as client:
        answer = await client.post("/webhooks/twitch", content=forged, headers=signed.headers)
    assert answer.status_code == 401
    assert b"pogchomp" not in answer.content
    await _nothing_stored(redis_store, "twitch")


async def test_twitch_revocation_is_acknowledged_not_stored_and_logged_as_a_warning(
    redis_store,
):
    from structlog.testing import capture_logs

    clock = Clock()
    signed = twitch_sign(TWITCH_REVOCATION, clock.now, kind="revocation")
    with capture_logs() as logged:
        async with gateway_client(TWITCH, redis_store, clock) as client:
            answer = await client.post(
                "/webhooks/twitch", content=TWITCH_REVOCATION, headers=signed.headers
            )
    assert answer.status_code == 200  # Twitch: "respond with a 2XX status code"
    await _nothing_stored(redis_store, "twitch")
    [line] = [e for e in logged if e["event"].startswith("delivery.")]
    assert (line["event"], line["log_level"]) == ("delivery.revocation", "warning")


@pytest.mark.parametrize(
    ("age", "status"),
    [(9 * 60, 200), (11 * 60, 401), (-11 * 60, 401)],
    ids=["9 min old", "11 min old", "11 min ahead"],
)
async def test_twitch_nanosecond_timestamps_parse_and_the_window_is_ten_minutes(
    redis_store, age: int, status: int
):
    # Twitch: "All timestamps are in RFC3339 format and use nanoseconds"; reject messages
    # older than 10 minutes (https://dev.twitch.tv/docs/eventsub/handling-webhook-events/).
    clock = Clock()
    sent = clock.now - age
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(sent))) + ".123456789Z"
    body = b'{"subscription":{"type":"channel.follow"},"event":{"user_id":"1234"}}'
    signed = twitch_sign(body, clock.now, timestamp=stamp)
    async with gateway_client(TWITCH, redis_store, clock) as client:
        answer = await client.post("/webhooks/twitch", content=body, headers=signed.headers)
    assert answer.status_code == status, answer.text
    assert len(await raw_entries(redis_store, "twitch")) == (status == 200)


# --- Dropbox, Trello and Asana through a real uvicorn ------------------------------------


async def test_get_head_and_header_handshakes_over_a_real_server(redis_store):
    cfg = _cfg(
        dropbox={"type": "dropbox", "secrets": ["dropbox-app-secret"]},
        trello={"type": "trello", "secrets": [TRELLO_SECRET], "url": TRELLO_URL},
        asana={"type": "asana", "secrets": [ASANA_SECRET]},
    )
    async with served_gateway(cfg, redis_store) as url, httpx.AsyncClient() as client:
        dropbox = await client.get(url + "/webhooks/dropbox", params={"challenge": "abc123"})
        trello = await client.head(url + "/webhooks/trello", params={"board": "nC8QJJoZ"})
        asana = await client.post(url + "/webhooks/asana", headers={"X-Hook-Secret": "fa1afe1"})
        stray = await client.get(url + "/webhooks/dropbox")
    # Dropbox: echo the challenge with Content-Type: text/plain and X-Content-Type-Options:
    # nosniff (https://www.dropbox.com/developers/reference/webhooks).
    assert dropbox.status_code == 200
    assert dropbox.content == b"abc123"
    assert dropbox.headers["content-type"].split(";")[0] == "text/plain"
    assert dropbox.headers["x-content-type-options"] == "nosniff"
    # Trello: a HEAD on the callback URL must get 200 (Trello webhooks guide).
    assert (trello.status_code, trello.content) == (200, b"")
    # Asana: 200 (or 204) with the same X-Hook-Secret header (Asana "Establish a webhook").
    assert asana.status_code == 200
    assert asana.headers["x-hook-secret"] == "fa1afe1"
    assert stray.status_code == 405  # a GET that is no challenge is not a webhook
    for source in ("dropbox", "trello", "asana"):
        assert await raw_entries(redis_store, source) == []
    # This source has its secret already: a set-up request is answered, nothing is kept
    # (it is unsigned: a stranger's must not plant another).
    assert await redis_store.handshake_secrets("asana") == []
    assert await _keys(redis_store) == []


# --- Microsoft Graph ----------------------------------------------------------------------

GRAPH = _cfg(microsoft_graph={"type": "microsoft-graph", "secrets": ["SecretClientState"]})
# Graph sends the token URL-encoded and wants it back decoded ("If the client returns an
# encoded validation token, the validation fails"; learn.microsoft.com/graph/
# change-notifications-delivery-webhooks#notificationurl-validation).
GRAPH_TOKEN = "Validation: Testing client application reachability for subscription Request-Id: 4c7b2c5e-0b6a-4a60-b2fc-3b3f3f6f1e11"  # noqa: E501


async def test_graph_validation_token_is_echoed_decoded_as_text(redis_store):
    query = httpx.QueryParams({"validationToken": GRAPH_TOKEN})
    async with gateway_client(GRAPH, redis_store) as client:
        answer = await client.post(
            "/webhooks/microsoft-graph?" + str(query),
            headers={"content-type": "text/plain; charset=utf-8"},
        )
    assert "%3A" in str(query) or "%3a" in str(query)  # it really went encoded
    assert answer.status_code == 200
    assert answer.headers["content-type"].split(";")[0] == "text/plain"
    assert answer.content == GRAPH_TOKEN.encode()
    await _nothing_stored(redis_store, "microsoft-graph")


def _lifecycle(state: str) -> bytes:
    # The lifecycle notification shape (learn.microsoft.com/graph/
    # change-notifications-lifecycle-events#structure-of-a-lifecycle-notification).
    notice = {
        "subscriptionId": "f5a7f7a0-7c6d-4d09-9d84-1f4a1e7f8b1c",
        "subscriptionExpirationDateTime": "2019-03-20T11:00:00.0000000Z",
        "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
        "clientState": state,
        "lifecycleEvent": "reauthorizationRequired",
    }
    return json.dumps({"value": [notice, {**notice, "lifecycleEvent": "missed"}]}).encode()


async def test_graph_lifecycle_notifications_get_202_and_are_not_stored(redis_store):
    async with gateway_client(GRAPH, redis_store) as client:
        answer = await client.post(
            "/webhooks/microsoft-graph", content=_lifecycle("SecretClientState")
        )
        forged = await client.post("/webhooks/microsoft-graph", content=_lifecycle("guess"))
    # "Acknowledge receipt of the lifecycle notification by responding to the POST call
    # with 202 - Accepted response code."
    assert answer.status_code == 202
    assert forged.status_code == 401  # the clientState is checked first
    assert "notification 0" in forged.json()["detail"]
    await _nothing_stored(redis_store, "microsoft-graph")


# --- Meta ---------------------------------------------------------------------------------


def _hub(token: str) -> dict[str, str]:
    # https://developers.facebook.com/docs/graph-api/webhooks/getting-started#verification-requests
    return {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": token}


@pytest.mark.parametrize("name", ["facebook", "instagram", "whatsapp"])
async def test_meta_challenge_is_echoed_only_for_the_right_verify_token(redis_store, name):
    cfg = _cfg(
        **{name: {"type": name, "secrets": [META_SECRET], "verify_token": META_VERIFY_TOKEN}}
    )
    async with gateway_client(cfg, redis_store) as client:
        right = await client.get(f"/webhooks/{name}", params=_hub(META_VERIFY_TOKEN))
        wrong = await client.get(f"/webhooks/{name}", params=_hub(META_VERIFY_TOKEN + "x"))
        other = await client.get(f"/webhooks/{name}", params={"challenge": "1"})
    assert right.status_code == 200
    assert right.content == b"1158201444"
    assert right.headers["content-type"].split(";")[0] == "text/plain"
    assert wrong.status_code == 403
    assert wrong.json()["reason"] == "verify_token"
    assert b"1158201444" not in wrong.content
    assert other.status_code == 405
    await _nothing_stored(redis_store, name)


async def test_meta_challenge_without_a_configured_verify_token_is_403(redis_store):
    cfg = _cfg(facebook={"type": "facebook", "secrets": [META_SECRET]})
    async with gateway_client(cfg, redis_store) as client:
        answer = await client.get("/webhooks/facebook", params=_hub(""))
    assert answer.status_code == 403
    assert "verify_token" in answer.json()["detail"]
    await _nothing_stored(redis_store, "facebook")


# --- Asana and Notion: the secret is kept, never trusted by itself ------------------------

ASANA_EVENTS = b'{"events":[{"action":"added","resource":{"gid":"1","resource_type":"task"}}]}'


async def test_asana_secret_is_kept_for_the_operator_and_not_trusted_until_configured(
    redis_store,
):
    handed = "d4c3b2a1" * 8
    before = _cfg(asana={"type": "asana", "secrets": []})
    async with gateway_client(before, redis_store) as client:
        handshake = await client.post("/webhooks/asana", headers={"X-Hook-Secret": handed})
        # Strangers who know the URL send their own: kept after the first, never in front,
        # and a flood cannot push the first one out (the first ten are kept).
        for i in range(12):
            await client.post("/webhooks/asana", headers={"X-Hook-Secret": f"stranger-{i}"})
        early = await client.post(
            "/webhooks/asana",
            content=ASANA_EVENTS,
            headers=asana_sign(ASANA_EVENTS, 0, handed).headers,
        )
    assert handshake.status_code == 200
    assert handshake.headers["x-hook-secret"] == handed
    assert early.status_code == 401  # anyone can send a handshake: it proves nothing
    kept = [s for _, s in await redis_store.handshake_secrets("asana")]
    assert kept == [handed, *(f"stranger-{i}" for i in range(9))]
    assert await raw_entries(redis_store, "asana") == []

    after = _cfg(asana={"type": "asana", "secrets": [handed]})  # the operator's step
    async with gateway_client(after, redis_store) as client:
        event = await client.post(
            "/webhooks/asana",
            content=ASANA_EVENTS,
            headers=asana_sign(ASANA_EVENTS, 0, handed).headers,
        )
        late = await client.post("/webhooks/asana", headers={"X-Hook-Secret": "late"})
    assert event.status_code == 200, event.text
    assert len(await raw_entries(redis_store, "asana")) == 1
    assert late.status_code == 200 and late.headers["x-hook-secret"] == "late"
    assert [s for _, s in await redis_store.handshake_secrets("asana")] == kept


NOTION_EVENT = b'{"id":"evt-1","type":"page.created","timestamp":"2024-12-05T23:55:34.285Z"}'


async def test_notion_verification_token_is_kept_and_events_wait_for_the_operator(redis_store):
    # The one-time verification request (https://developers.notion.com/reference/webhooks
    # #step-2-verifying-the-subscription): unsigned, the token in the body.
    handshake_body = json.dumps({"verification_token": NOTION_TOKEN}).encode()
    before = _cfg(notion={"type": "notion", "secrets": []})
    async with gateway_client(before, redis_store) as client:
        handshake = await client.post("/webhooks/notion", content=handshake_body)
        early = await client.post(
            "/webhooks/notion", content=NOTION_EVENT, headers=notion_sign(NOTION_EVENT, 0).headers
        )
        forged = await client.post(
            "/webhooks/notion",
            content=handshake_body,
            headers={"X-Notion-Signature": "sha256=" + "0" * 64},
        )
    assert handshake.status_code == 200
    assert early.status_code == 401
    assert forged.status_code == 401  # signed-looking: verified, not taken as a handshake
    assert [s for _, s in await redis_store.handshake_secrets("notion")] == [NOTION_TOKEN]
    assert await raw_entries(redis_store, "notion") == []

    after = _cfg(notion={"type": "notion", "secrets": [NOTION_TOKEN]})
    async with gateway_client(after, redis_store) as client:
        event = await client.post(
            "/webhooks/notion", content=NOTION_EVENT, headers=notion_sign(NOTION_EVENT, 0).headers
        )
    assert event.status_code == 200, event.text
    assert [e["delivery_id"] for e in await raw_entries(redis_store, "notion")] == ["evt-1"]


@pytest.mark.parametrize("name", ["asana", "notion"])
async def test_a_source_set_up_by_handshake_starts_without_secrets(redis_store, name):
    cfg = config(_cfg(**{name: {"type": name}}))
    async with gateway_client(cfg, redis_store) as client:
        if name == "asana":
            handshake = await client.post("/webhooks/asana", headers={"X-Hook-Secret": "abc"})
            event = await client.post(
                "/webhooks/asana",
                content=ASANA_EVENTS,
                headers=asana_sign(ASANA_EVENTS, 0, "abc").headers,
            )
        else:
            handshake = await client.post(
                "/webhooks/notion", content=b'{"verification_token":"abc"}'
            )
            event = await client.post(
                "/webhooks/notion",
                content=NOTION_EVENT,
                headers=notion_sign(NOTION_EVENT, 0, "abc").headers,
            )
    assert handshake.status_code == 200
    assert event.status_code == 401
    assert "no secret is configured" in event.json()["detail"]
    assert [s for _, s in await redis_store.handshake_secrets(name)] == ["abc"]


# --- Okta ---------------------------------------------------------------------------------

OKTA = _cfg(okta={"type": "okta", "secrets": [OKTA_SECRET]})


async def test_okta_verification_is_answered_in_json(redis_store):
    async with gateway_client(OKTA, redis_store) as client:
        answer = await client.get(
            "/webhooks/okta", headers={"X-Okta-Verification-Challenge": "b0b1c9b9-5ff3"}
        )
    # '{ "verification" : "value_from_header" }'
    # (https://developer.okta.com/docs/concepts/event-hooks/#one-time-verification-request)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"verification": "b0b1c9b9-5ff3"}
    await _nothing_stored(redis_store, "okta")


async def test_okta_authorization_value_is_checked_and_never_stored(redis_store):
    body = b'{"eventId":"e-1","data":{"events":[{"eventType":"user.session.start"}]}}'
    async with gateway_client(OKTA, redis_store) as client:
        missing = await client.post("/webhooks/okta", content=body)
        accepted = await client.post(
            "/webhooks/okta", content=body, headers={"Authorization": OKTA_SECRET}
        )
    assert missing.status_code == 401
    assert accepted.status_code == 200
    [entry] = await raw_entries(redis_store, "okta")
    assert OKTA_SECRET not in entry["headers"]  # the shared value is the secret itself
