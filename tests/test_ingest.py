"""The front door: status codes, what is stored, concurrency, limits."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re

import httpx
import pytest

from gateway.errors import PayloadError
from gateway.ingest import read_body
from gateway.store import Store
from tests.conftest import Clock, gateway_client, raw_entries, served_gateway, until

SECRET = "s3cret"
CFG = f"""
sources:
  acme:
    type: hmac
    secrets: [{SECRET}]
    signature_header: X-Acme-Signature
    delivery_id_header: X-Acme-Delivery
    keep_headers: [X-Acme-Event]
    max_body: 64KiB
    dedupe_ttl: 1h
"""


def signed(body: bytes, delivery: str = "d-1", **extra: str) -> dict[str, str]:
    sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"x-acme-signature": sig, "x-acme-delivery": delivery, **extra}


async def test_accepted_delivery_is_stored_exactly(store):
    body = bytes(range(256)) * 3  # not UTF-8, not JSON: stored byte for byte
    headers = signed(
        body,
        "d-42",
        **{
            "x-acme-event": "order.paid",
            "content-type": "x/y",
            "authorization": "Bearer never-stored",
        },
    )
    async with gateway_client(CFG, store, Clock(1_700_000_000.123)) as client:
        r = await client.post("/webhooks/acme", content=body, headers=headers)
    assert r.status_code == 200
    assert r.json() == {"status": "accepted", "delivery_id": "d-42"}
    [entry] = await raw_entries(store, "acme")
    assert entry["body"] == body
    assert entry["source"] == "acme"
    assert entry["delivery_id"] == "d-42"
    assert entry["received_at"] == "1700000000123"
    assert json.loads(entry["headers"]) == {
        "content-type": "x/y",
        "x-acme-signature": headers["x-acme-signature"],
        "x-acme-delivery": "d-42",
        "x-acme-event": "order.paid",
    }


async def test_seen_mark_lives_for_dedupe_ttl(store):
    body = b"{}"
    async with gateway_client(CFG, store) as client:
        await client.post("/webhooks/acme", content=body, headers=signed(body))
    ttl = await store.client.pttl(store.keys.seen("acme", "d-1"))
    assert 3_590_000 < ttl <= 3_600_000


async def test_fifty_concurrent_copies_one_accepted(store):
    body = b'{"n": 1}'
    async with gateway_client(CFG, store) as client:
        replies = await asyncio.gather(
            *(client.post("/webhooks/acme", content=body, headers=signed(body)) for _ in range(50))
        )
    statuses = [r.json()["status"] for r in replies]
    assert {r.status_code for r in replies} == {200}
    assert statuses.count("accepted") == 1
    assert statuses.count("duplicate") == 49
    assert len(await raw_entries(store, "acme")) == 1


async def test_two_gateway_processes_share_the_seen_set(redis_url, redis_store):
    """Two apps, each with its own connection pool (as two processes would have)."""
    other = Store.connect(redis_url, redis_store.keys.prefix)
    body = b"{}"
    try:
        async with gateway_client(CFG, redis_store) as a, gateway_client(CFG, other) as b:
            replies = await asyncio.gather(
                *(
                    (a if i % 2 else b).post("/webhooks/acme", content=body, headers=signed(body))
                    for i in range(50)
                )
            )
    finally:
        await other.close()
    assert [r.json()["status"] for r in replies].count("accepted") == 1
    assert len(await raw_entries(redis_store, "acme")) == 1


async def test_many_deliveries_at_once_are_all_stored(store):
    async with gateway_client(CFG, store) as client:
        replies = await asyncio.gather(
            *(
                client.post("/webhooks/acme", content=b"{}", headers=signed(b"{}", f"d-{i}"))
                for i in range(600)  # more than one script call's batch
            )
        )
    assert all(r.json()["status"] == "accepted" for r in replies)
    entries = await raw_entries(store, "acme")
    assert sorted(e["delivery_id"] for e in entries) == sorted(f"d-{i}" for i in range(600))


async def test_raw_stream_is_trimmed_to_about_raw_retention(redis_store):
    cfg = CFG + "    raw_retention: 10\n"
    async with gateway_client(cfg, redis_store) as client:
        for i in range(400):
            await client.post("/webhooks/acme", content=b"{}", headers=signed(b"{}", f"d-{i}"))
    length = await redis_store.client.xlen(redis_store.keys.raw("acme"))
    assert 10 <= length < 400  # MAXLEN ~ trims whole stream nodes, so "about"


@pytest.mark.parametrize(
    ("method", "path", "status", "reason"),
    [
        ("GET", "/webhooks/acme", 405, "method_not_allowed"),
        ("PUT", "/webhooks/acme", 405, "method_not_allowed"),
        ("POST", "/webhooks/nobody", 404, "unknown_source"),
    ],
)
async def test_wrong_method_or_source(store, method, path, status, reason):
    async with gateway_client(CFG, store) as client:
        r = await client.request(method, path, content=b"{}")
    assert r.status_code == status
    assert r.json()["reason"] == reason
    if status == 405:
        assert r.headers["allow"] == "POST"


async def test_declared_oversize_body_is_413(store):
    async with gateway_client(CFG, store) as client:
        r = await client.post(
            "/webhooks/acme", content=b"x" * (64 * 1024 + 1), headers=signed(b"x")
        )
    assert r.status_code == 413
    assert "65536" in r.json()["detail"]


async def test_streamed_oversize_body_is_413(store):
    async def chunks():
        for _ in range(100):
            yield b"x" * 4096

    async with gateway_client(CFG, store) as client:
        r = await client.post("/webhooks/acme", content=chunks(), headers=signed(b"x"))
    assert r.status_code == 413


async def test_body_at_the_limit_is_fine(store):
    body = b"x" * (64 * 1024)
    async with gateway_client(CFG, store) as client:
        r = await client.post("/webhooks/acme", content=body, headers=signed(body))
    assert r.status_code == 200


def test_a_content_length_that_is_not_a_number_is_a_payload_error():
    """The app's own guard, for ASGI servers that pass such a header on (uvicorn does not)."""

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    with pytest.raises(PayloadError, match="Content-Length header is not a number"):
        asyncio.run(read_body(receive, "lots", 1024))


async def _exchange(port: int, request: bytes, *, close: bool = True) -> bytes:
    """Send raw bytes to the server and read one response (head and body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await _read_response(reader)
    finally:
        if close:
            writer.close()


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    return head + await asyncio.wait_for(reader.readexactly(length), 10)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_a_bad_content_length_is_400_from_the_real_server_and_nothing_is_stored(store):
    async with served_gateway(CFG, store) as url:
        reply = await _exchange(
            _port(url),
            b"POST /webhooks/acme HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n{}",
        )
        # Not valid HTTP: uvicorn refuses it before the gateway sees it (as docs/sources.md says).
        assert reply.startswith(b"HTTP/1.1 400 ")
        assert reply.endswith(b"Invalid HTTP request received.")
        ok = await _exchange(_port(url), _post(b"{}", "after"))  # still serving
    assert ok.startswith(b"HTTP/1.1 200 ")
    assert [e["delivery_id"] for e in await raw_entries(store, "acme")] == ["after"]


def _post(body: bytes, delivery: str, chunked: bool = False) -> bytes:
    head = [b"POST /webhooks/acme HTTP/1.1", b"Host: gateway"]
    head += [f"{k}: {v}".encode() for k, v in signed(body, delivery).items()]
    if not chunked:
        return b"\r\n".join([*head, b"Content-Length: %d" % len(body), b"", body])
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7)
    )
    return b"\r\n".join([*head, b"Transfer-Encoding: chunked", b"", chunks + b"0\r\n\r\n"])


async def test_a_chunked_body_is_stored_byte_for_byte(store):
    body = b'{"a": "\r\n0\r\n\r\n"}' + bytes(range(256))  # CRLFs and chunk syntax inside
    async with served_gateway(CFG, store) as url:
        reply = await _exchange(_port(url), _post(body, "chunky", chunked=True))
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert reply.endswith(b'{"status":"accepted","delivery_id":"chunky"}')
    [entry] = await raw_entries(store, "acme")
    assert entry["body"] == body


async def test_one_keep_alive_connection_carries_several_deliveries(store):
    async with served_gateway(CFG, store) as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
        replies = []
        for delivery in ("k1", "k2", "k1"):
            writer.write(_post(b"{}", delivery))
            await writer.drain()
            replies.append(await _read_response(reader))
        writer.close()
    assert [r.split(b"\r\n\r\n", 1)[1] for r in replies] == [
        b'{"status":"accepted","delivery_id":"k1"}',
        b'{"status":"accepted","delivery_id":"k2"}',
        b'{"status":"duplicate","delivery_id":"k1"}',
    ]


async def test_a_client_gone_mid_body_stores_nothing(store):
    from structlog.testing import capture_logs

    with capture_logs() as logged:
        async with served_gateway(CFG, store) as url:
            full = _post(b'{"n": 1}' + b" " * 1000, "cut")
            _, writer = await asyncio.open_connection("127.0.0.1", _port(url))
            writer.write(full[: len(full) - 500])  # the head and half the body, then gone
            await writer.drain()
            writer.close()
            await until(
                lambda: [e for e in logged if e.get("reason") == "client_disconnected"],
                what="the gateway to see the client leave",
            )
            retry = await _exchange(_port(url), full)
    assert retry.endswith(b'{"status":"accepted","delivery_id":"cut"}')  # not a duplicate
    [entry] = await raw_entries(store, "acme")
    assert entry["body"] == full[full.index(b"\r\n\r\n") + 4 :]


async def test_concurrent_copies_on_separate_connections_one_accepted(store):
    body = b'{"n": 2}'
    fresh = httpx.Limits(max_keepalive_connections=0)  # a connection per request
    async with served_gateway(CFG, store) as url, httpx.AsyncClient(limits=fresh) as client:
        replies = await asyncio.gather(
            *(
                client.post(url + "/webhooks/acme", content=body, headers=signed(body, "c"))
                for _ in range(30)
            )
        )
    assert {r.status_code for r in replies} == {200}
    statuses = sorted(r.json()["status"] for r in replies)
    assert statuses == ["accepted"] + ["duplicate"] * 29
    assert len(await raw_entries(store, "acme")) == 1


async def test_missing_delivery_id_is_400(store):
    body = b"{}"
    headers = signed(body)
    del headers["x-acme-delivery"]
    async with gateway_client(CFG, store) as client:
        r = await client.post("/webhooks/acme", content=body, headers=headers)
    assert r.status_code == 400
    assert "x-acme-delivery" in r.json()["detail"]
    assert await raw_entries(store, "acme") == []


async def test_health_and_readiness(store):
    async with gateway_client(CFG, store) as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"
        ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
