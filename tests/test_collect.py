"""The collect API (/v1/...), Segment-compatible: real clients, real Redis, real HTTP.

The Python client is Segment's own (segment-analytics-python, `host=` pointed at a real
uvicorn serving the gateway); analytics.js's way of sending (text/plain JSON with the
write key in the body, from a page's origin) is reproduced with httpx.
"""

from __future__ import annotations

import base64
import gzip
import json
import uuid

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from segment.analytics import Client

from gateway.store import Store
from gateway.worker import Pipeline
from normalizers.collect import validate_message
from tests.conftest import (
    OPERATOR,
    Clock,
    config,
    drop_prefix,
    gateway_client,
    raw_entries,
    served_gateway,
)

WRITE_KEY = "wk_test_0123456789"
SITE = "https://www.example.com"

CONFIG = {
    "sources": {
        "web": {
            "type": "collect",
            "write_keys": [WRITE_KEY],
            "origins": [SITE],
            "trusted_proxies": ["10.0.0.0/8"],
        }
    }
}


def _cfg(**web):
    cfg = json.loads(json.dumps(CONFIG))
    cfg["sources"]["web"].update(web)
    return config(json.dumps(cfg))


def _basic(key: str = WRITE_KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


async def _events(store: Store, cfg) -> list:
    pipeline = Pipeline(cfg, store)
    out = []
    for entry in await raw_entries(store, "web"):
        fields = {k.encode(): (v.encode() if isinstance(v, str) else v) for k, v in entry.items()}
        out.append(pipeline.run("web", entry["id"], fields))
    return out


@pytest.mark.parametrize("compress", [False, True])
async def test_segments_python_client_is_taken_as_is(redis_store, compress):
    cfg = _cfg()
    errors = []
    async with served_gateway(cfg, redis_store) as url:
        client = Client(
            WRITE_KEY,
            host=url,
            sync_mode=True,
            gzip=compress,
            max_retries=0,
            on_error=lambda e, batch: errors.append(e),
        )
        import asyncio

        def send() -> None:
            client.identify("user-42", {"email": "ada@example.com"}, anonymous_id="anon-1")
            client.track("user-42", "Signed Up", {"plan": "pro"}, anonymous_id="anon-1")
            client.page("user-42", "Docs", "Pricing", {"path": "/pricing"})

        await asyncio.to_thread(send)
    assert errors == []
    entries = await raw_entries(redis_store, "web")
    assert len(entries) == 3
    outcomes = await _events(redis_store, cfg)
    events = [e for o in outcomes for e in o.events]
    assert [e.type for e in events] == ["identify", "track", "page"]
    track = events[1]
    assert track.event == "Signed Up"
    assert track.user_id == "user-42" and track.anonymous_id == "anon-1"
    assert track.properties == {"plan": "pro"}
    assert track.message_id == json.loads(entries[1]["body"])["messageId"]
    assert track.context.library.name == "analytics-python"
    # A server library's request comes from the server: its address is not the person's.
    assert track.context.ip is None and track.context.user_agent is None
    assert events[0].traits == {"email": "ada@example.com"}
    assert events[2].name == "Pricing"


async def test_analytics_js_style_text_plain_with_the_key_in_the_body_and_cors(redis_store):
    body = {
        "writeKey": WRITE_KEY,
        "type": "track",
        "event": "Clicked",
        "anonymousId": "a-1",
        "messageId": "ajs-next-1",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "sentAt": "2026-01-01T00:00:01.000Z",
        "context": {"page": {"url": SITE + "/x"}, "userAgent": "Mozilla/5.0 (page)"},
    }
    async with gateway_client(_cfg(), redis_store) as client:
        pre = await client.options(
            "/v1/t",
            headers={"Origin": SITE, "Access-Control-Request-Method": "POST"},
        )
        answer = await client.post(
            "/v1/t",
            content=json.dumps(body),
            headers={"Content-Type": "text/plain", "Origin": SITE, "User-Agent": "curl/8"},
        )
        stranger = await client.options("/v1/t", headers={"Origin": "https://evil.example"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == SITE
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"success": True}
    assert answer.headers["access-control-allow-origin"] == SITE
    assert stranger.status_code == 403
    assert "access-control-allow-origin" not in stranger.headers
    [entry] = await raw_entries(redis_store, "web")
    assert entry["delivery_id"] == "ajs-next-1"
    assert b"writeKey" not in entry["body"]  # a credential, not part of the message
    [outcome] = await _events(redis_store, _cfg())
    [event] = outcome.events
    # A browser's request: its address is the person's; the page's own agent wins.
    assert event.context.ip == "127.0.0.1"
    assert event.context.user_agent == "Mozilla/5.0 (page)"
    assert event.context.page == {"url": SITE + "/x"}


async def test_a_resent_message_is_a_duplicate_and_the_answer_is_segments(redis_store):
    message = {"type": "track", "event": "E", "userId": "u", "messageId": "m-1"}
    async with gateway_client(_cfg(), redis_store) as client:
        first = await client.post("/v1/batch", json={"batch": [message]}, headers=_basic())
        again = await client.post("/v1/batch", json={"batch": [message]}, headers=_basic())
        single = await client.post("/v1/track", json=message, headers=_basic())
    assert first.json() == again.json() == single.json() == {"success": True}
    assert len(await raw_entries(redis_store, "web")) == 1


async def test_bad_messages_in_a_good_batch_are_counted_and_quarantined(redis_store):
    cfg = _cfg()
    batch = [
        {"type": "track", "event": "Fine", "userId": "u1", "messageId": "ok-1"},
        {"type": "track", "userId": "u1", "messageId": "no-event"},
        {"type": "identify", "messageId": "nobody"},
        {"type": "track", "event": "Big", "userId": "u1", "messageId": "big",
         "properties": {"x": "y" * 40_000}},
    ]  # fmt: skip
    async with gateway_client(cfg, redis_store) as client:
        answer = await client.post("/v1/batch", json={"batch": batch}, headers=_basic())
    assert answer.status_code == 200
    reply = answer.json()
    assert reply["success"] is True and reply["refused"] == 3
    assert reply["reasons"][0].startswith("message 1:") and "event" in reply["reasons"][0]
    assert reply["reasons"][1].startswith("message 2:")
    assert reply["reasons"][2].startswith("message 3: over 32000 bytes")
    # Nothing is lost: all four are stored; the worker quarantines the three with the reason.
    assert len(await raw_entries(redis_store, "web")) == 4
    outcomes = await _events(redis_store, cfg)
    assert [len(o.events) for o in outcomes] == [1, 0, 0, 0]
    assert [q["reason"] for o in outcomes for q in o.quarantine] == reply["reasons"]


@pytest.mark.parametrize(
    ("headers", "body", "status", "detail"),
    [
        ({}, b'{"batch": []}', 401, "no write key"),
        (_basic("wk_unknown"), b'{"batch": []}', 401, "unknown write key"),
        (_basic(), b'{"batch": [', 400, "not valid JSON"),
        (_basic(), b"[1, 2]", 400, "JSON object"),
        (_basic(), b'{"batch": {"type": "track"}}', 400, "a list of messages"),
        (_basic(), b'{"sentAt": "2026-12-02T10:00:00Z"}', 400, "a list of messages"),
        (_basic(), b'{"batch": [], "sentAt": }', 400, "not valid JSON"),
        ({**_basic(), "Content-Encoding": "br"}, b"x", 400, "Content-Encoding"),
        ({**_basic(), "Content-Encoding": "gzip"}, b"not gzip", 400, "not valid gzip"),
    ],
)
async def test_refusals_say_why(redis_store, headers, body, status, detail):
    async with gateway_client(_cfg(), redis_store) as client:
        answer = await client.post("/v1/batch", content=body, headers=headers)
    assert answer.status_code == status
    assert detail in answer.json()["detail"]
    assert answer.json()["success"] is False


async def test_size_limits_hold_while_reading_and_inflating(redis_store):
    bomb = gzip.compress(b'{"batch": [' + b" " * 50_000_000 + b"]}")
    assert len(bomb) < 100_000
    huge = b'{"batch": [' + b" " * (10 * 1024 * 1024) + b"]}"
    async with gateway_client(_cfg(), redis_store) as client:
        inflated = await client.post(
            "/v1/batch", content=bomb, headers={**_basic(), "Content-Encoding": "gzip"}
        )
        large = await client.post("/v1/batch", content=huge, headers=_basic())
    assert inflated.status_code == 413
    assert "inflated" in inflated.json()["detail"]
    assert large.status_code == 413


async def test_time_is_corrected_for_the_clients_clock(redis_store):
    cfg = _cfg()
    clock = Clock(1_767_225_600.0)  # 2026-01-01T00:00:00Z at the gateway
    message = {
        "type": "track", "event": "E", "userId": "u", "messageId": "skew",
        # The client's clock is one hour fast: it says it happened 10 s before it sent.
        "timestamp": "2026-01-01T00:59:50.000Z", "sentAt": "2026-01-01T01:00:00.000Z",
    }  # fmt: skip
    async with gateway_client(cfg, redis_store, clock) as client:
        await client.post("/v1/track", json=message, headers=_basic())
    [outcome] = await _events(redis_store, cfg)
    [event] = outcome.events
    assert event.received_at == "2026-01-01T00:00:00.000Z"
    assert event.timestamp == "2025-12-31T23:59:50.000Z"
    assert event.original_timestamp == "2026-01-01T00:59:50.000Z"


async def test_client_ip_believes_x_forwarded_for_only_from_trusted_proxies(redis_store):
    cfg = _cfg()
    message = {"type": "track", "event": "E", "userId": "u"}
    for peer, forwarded, expected in [
        ("10.1.2.3", "203.0.113.7, 10.9.9.9", "203.0.113.7"),
        ("198.51.100.1", "203.0.113.7", "198.51.100.1"),  # an untrusted peer's claim
    ]:
        transport = httpx.ASGITransport(
            app=__import__("gateway.app", fromlist=["create_app"]).create_app(
                cfg, store=redis_store
            ),
            client=(peer, 5000),
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            await client.post(
                "/v1/track",
                json={**message, "messageId": str(uuid.uuid4())},
                headers={**_basic(), "X-Forwarded-For": forwarded},
            )
        entry = (await raw_entries(redis_store, "web"))[-1]
        assert json.loads(entry["headers"])["x-collect-ip"] == expected


async def test_analytics_js_settings_point_at_this_gateway(redis_store):
    async with gateway_client(_cfg(), redis_store) as client:
        ok = await client.get(f"/v1/projects/{WRITE_KEY}/settings", headers={"Origin": SITE})
        unknown = await client.get("/v1/projects/nope/settings")
    assert ok.status_code == 200
    segment = ok.json()["integrations"]["Segment.io"]
    assert segment["apiKey"] == WRITE_KEY
    assert segment["apiHost"] == "gateway/v1"
    assert ok.headers["access-control-allow-origin"] == SITE
    assert unknown.status_code == 404


async def test_redis_away_is_503_with_retry_after(private_redis):
    store = Store.connect(private_redis.url, "t", timeout=0.5)
    private_redis.stop()
    try:
        async with gateway_client(_cfg(), store) as client:
            answer = await client.post(
                "/v1/track", json={"type": "track", "event": "E", "userId": "u"}, headers=_basic()
            )
    finally:
        await store.close()
    assert answer.status_code == 503
    assert answer.headers["retry-after"]


async def test_segments_node_client_is_taken_as_is(redis_store):
    """@segment/analytics-node (npm) with `host` pointed at the gateway."""
    import asyncio
    import subprocess

    from tests.services import require_js

    js = require_js("@segment/analytics-node")
    cfg = _cfg()
    async with served_gateway(cfg, redis_store) as url:
        done = await asyncio.to_thread(
            subprocess.run,
            ["node", str(js / "send_node.mjs"), url, WRITE_KEY],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    outcomes = await _events(redis_store, cfg)
    events = [e for o in outcomes for e in o.events]
    assert [e.type for e in events] == ["identify", "track"]
    assert events[1].event == "Node Event" and events[1].user_id == "node-user"
    assert events[1].context.library.name == "@segment/analytics-node"


async def test_metrics_count_collected_messages_not_requests(redis_store):
    batch = [
        {"type": "track", "event": "E", "userId": "u", "messageId": f"metric-{i}"} for i in range(3)
    ]
    async with gateway_client(_cfg(), redis_store) as client:
        await client.post("/v1/batch", json={"batch": batch}, headers=_basic())
        await client.post("/v1/batch", json={"batch": batch[:2]}, headers=_basic())
        text = (await client.get(OPERATOR + "/metrics")).text
    assert 'gateway_deliveries_total{outcome="accepted",source="web"} 3.0' in text
    assert 'gateway_deliveries_total{outcome="duplicate",source="web"} 2.0' in text


# --- a batch's messages: stored as sent, checked as a decode of the whole would -------


async def test_batch_messages_are_stored_byte_for_byte_with_the_batchs_sent_at(redis_store):
    """The stored body is the message as the client wrote it (escapes, spacing, number
    spelling), with only the batch's sentAt put in front when the message has none."""
    first = (
        b'{ "type": "track", "event": "Caf\\u00e9", "userId": "u", "messageId": "b-1",\n'
        b'  "properties": {"price": 1.50e1, "tags": [ ]} }'
    )
    second = b'{"type":"identify","userId":"u","messageId":"b-2","sentAt":"2026-01-01T00:00:09Z"}'
    third = b"{ }"  # no type, no id: refused, and stored all the same
    body = b'{"batch": [%s, %s, %s], "sentAt": "2026-01-01T00:00:10Z"}' % (first, second, third)
    async with gateway_client(_cfg(), redis_store) as client:
        answer = await client.post("/v1/batch", content=body, headers=_basic())
    assert answer.status_code == 200
    assert answer.json()["refused"] == 1
    entries = await raw_entries(redis_store, "web")
    sent_at = b'{"sentAt":"2026-01-01T00:00:10Z",'
    assert [e["body"] for e in entries] == [
        sent_at + first[1:],
        second,
        b'{"sentAt":"2026-01-01T00:00:10Z" }',
    ]
    assert [e["delivery_id"] for e in entries][:2] == ["b-1", "b-2"]
    assert json.loads(entries[2]["headers"])["x-collect-refused"].startswith("message 2: ")
    [outcome, _, _] = await _events(redis_store, _cfg())
    [event] = outcome.events
    assert event.event == "Café" and event.properties == {"price": 15.0, "tags": []}


@pytest.mark.parametrize("path", ["/v1/track", "/v1/batch"])
async def test_a_body_that_is_not_utf8_is_400_not_500(redis_store, path):
    message = b'{"type": "track", "event": "\xff", "userId": "u"}'
    body = message if path == "/v1/track" else b'{"batch": [%s]}' % message
    async with gateway_client(_cfg(), redis_store) as client:
        answer = await client.post(path, content=body, headers=_basic())
    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["detail"]
    assert await raw_entries(redis_store, "web") == []


_TIMES = ["2026-01-01T00:00:00.000Z", "2026-01-01T01:00:00+01:00", "yesterday", ""]
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
_objects = st.dictionaries(st.text(max_size=6), _values, max_size=3)
_ids = st.sampled_from(["u-1", "u-2", ""]) | st.integers(0, 9) | _values
_FIELDS = {
    "type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias", "x"])
    | _values,
    "event": st.sampled_from(["Signed Up", " "]) | _values,
    "userId": _ids,
    "anonymousId": _ids,
    "previousId": _ids,
    "groupId": _ids,
    "messageId": st.uuids().map(str) | st.sampled_from(["", "x" * 101, "bell\x07"]) | _values,
    "timestamp": st.sampled_from(_TIMES) | _values,
    "sentAt": st.sampled_from(_TIMES) | _values,
    "originalTimestamp": st.sampled_from(_TIMES) | _values,
    "properties": _objects | _values,
    "traits": _objects | _values,
    "context": _objects | _values,
    "integrations": _objects | _values,
    "name": _values,
    "writeKey": st.just(WRITE_KEY),
}
_VALID = {
    "type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]),
    "event": st.just("Signed Up"),
    "userId": st.sampled_from(["u-1", "u-2"]),
    "previousId": st.just("p-1"),
    "groupId": st.just("g-1"),
    "messageId": st.uuids().map(str),
}
_VALID_OPTIONAL = {
    "anonymousId": st.just("a-1"),
    **{k: st.sampled_from(_TIMES[:2]) for k in ("timestamp", "sentAt", "originalTimestamp")},
    **{k: _objects for k in ("properties", "traits", "context", "integrations")},
    "writeKey": st.just(WRITE_KEY),
}


@st.composite
def _message(draw: st.DrawFn) -> dict:
    """A valid message, then up to two fields changed to anything or removed: each check
    of validate_message gets messages that only it refuses."""
    message = draw(st.fixed_dictionaries(_VALID, optional=_VALID_OPTIONAL))
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(sorted(_FIELDS)))
        if draw(st.booleans()):
            message[key] = draw(_scalars | _FIELDS[key])
        else:
            message.pop(key, None)
    return message


_messages = st.one_of(_message(), _message(), _message(), _values)


def _expected(payload: dict) -> list:
    """What each message of a batch should be stored as: the Segment rules, applied to the
    batch decoded whole (the gateway's own code is not used)."""
    shared = {k: payload[k] for k in ("sentAt", "context", "integrations") if k in payload}
    out = []
    for message in payload["batch"]:
        if isinstance(message, dict):
            message = {k: v for k, v in message.items() if k != "writeKey"}
            if "sentAt" in shared:
                message.setdefault("sentAt", shared["sentAt"])
            for key in ("context", "integrations"):
                if isinstance(shared.get(key), dict) and isinstance(message.get(key, {}), dict):
                    message[key] = {**shared[key], **message.get(key, {})}
        out.append(message)
    return out


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batch=st.lists(_messages, max_size=8),
    sent_at=st.none() | st.sampled_from(_TIMES) | _values,
    context=st.one_of(st.none(), st.none(), st.none(), _objects),  # defaults: rare
    key_in_body=st.booleans(),
    indent=st.sampled_from([None, 1]),
    ascii_only=st.booleans(),
)
def test_a_batch_is_answered_and_stored_as_a_decode_of_the_whole_would(
    redis_url, batch, sent_at, context, key_in_body, indent, ascii_only
):
    """The gateway decodes only what its checks read of each message and stores the rest
    as sent: the answer (refused count and reasons) and what the worker reads must be
    those of the whole batch decoded and checked with validate_message."""
    import asyncio

    payload: dict = {"batch": batch}
    if sent_at is not None:
        payload["sentAt"] = sent_at
    if context is not None:
        payload["context"] = context
    headers = _basic()
    if key_in_body:
        payload["writeKey"] = WRITE_KEY
        headers = {}
    body = json.dumps(payload, indent=indent, ensure_ascii=ascii_only).encode()
    expected = _expected(payload)
    limit = 400  # max_message: some messages are over it
    reasons = []
    for i, message in enumerate(expected):
        size = len(msgspec.json.encode(message))
        reason = f"over {limit} bytes ({size})" if size > limit else validate_message(message)
        if reason is not None:
            reasons.append(f"message {i}: {reason}")

    async def run() -> tuple[httpx.Response, list]:
        store = Store.connect(redis_url, f"test-collect-{uuid.uuid4().hex[:8]}")
        try:
            async with gateway_client(_cfg(max_message=limit), store) as client:
                answer = await client.post("/v1/batch", content=body, headers=headers)
            return answer, await raw_entries(store, "web")
        finally:
            await drop_prefix(store.client, store.keys.prefix)
            await store.close()

    answer, entries = asyncio.run(run())
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    assert reply.get("refused", 0) == len(reasons)
    assert reply.get("reasons", []) == reasons[:10]
    # Stored once per message id (a repeated id is a duplicate), each as the worker reads it.
    seen, kept = set(), []
    for message in expected:
        mid = message.get("messageId") if isinstance(message, dict) else None
        valid = isinstance(mid, str) and mid and len(mid) <= 100 and mid.isprintable()
        key = mid if valid else json.dumps(message)
        if key not in seen:
            seen.add(key)
            kept.append(message)
    stored = [json.loads(e["body"]) for e in entries]
    assert stored == kept
    # Spacing does not count against the limit, and nothing is stored over it unrefused.
    for entry, message in zip(entries, kept, strict=True):
        if len(msgspec.json.encode(message)) <= limit:
            assert len(entry["body"]) <= limit
