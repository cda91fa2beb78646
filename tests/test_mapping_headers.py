"""Mappings that read request headers: the live worker sees what `map` and `test` see.

`header('X-Name')` reads a header stored with the raw delivery. A source stores only the
headers it keeps, so it keeps every one its mappings name; before, `webhook-gateway test`
passed while the worker (which reads the stored delivery) made no such event.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import urlencode

import msgspec
import pytest

from gateway.config import parse_config
from gateway.worker import NormalizeWorker
from tests.conftest import gateway_client, raw_entries
from tests.test_cli import cli

SECRET = "acme-headers-secret"
SOURCES = """\
sources:
  acme:
    type: hmac
    secrets: [acme-headers-secret]
    signature_header: X-Acme-Signature
    delivery_id_header: X-Acme-Delivery
    mappings:
      - when: "header('X-Acme-Topic') == 'order.paid'"
        event: Order Paid
        timestamp: paid_at
        properties: {order: id, shop: "header('X-Acme-Shop')"}
      - when: "header('X-Acme-Topic') == 'form.sent'"
        event: Form Sent
        timestamp: paid_at
        properties: {order: id, field: name}
    tests:
      - name: paid
        payload: {id: o1, paid_at: 1700000000}
        headers: {X-Acme-Topic: order.paid, X-Acme-Shop: shop-7}
        expect:
          - {event: Order Paid, properties: {order: o1, shop: shop-7}}
      - name: form
        payload: "id=o2&name=Ada+L&paid_at=1700000000"
        headers: {Content-Type: application/x-www-form-urlencoded, X-Acme-Topic: form.sent}
        expect:
          - {event: Form Sent, properties: {order: o2, field: Ada L}}
"""
JSON_BODY = b'{"id": "o1", "paid_at": 1700000000}'
FORM_BODY = urlencode({"id": "o2", "name": "Ada L", "paid_at": "1700000000"}).encode()
CASES = {
    # name: (body, request headers besides the signature and the delivery id, event)
    "json": (JSON_BODY, {"X-Acme-Topic": "order.paid", "X-Acme-Shop": "shop-7"}, "Order Paid"),
    "form": (
        FORM_BODY,
        {"Content-Type": "application/x-www-form-urlencoded", "X-Acme-Topic": "form.sent"},
        "Form Sent",
    ),
}


def signed(body: bytes, delivery: str, headers: dict[str, str]) -> dict[str, str]:
    # The generic type's default scheme as docs/sources.md documents it: hex HMAC-SHA256 of the
    # raw body, written out here with the standard library.
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Acme-Signature": signature, "X-Acme-Delivery": delivery, **headers}


async def through_the_worker(store, body: bytes, headers: dict[str, str]) -> list[dict]:
    """POST the delivery to the gateway, run the normalize worker once, return the events."""
    config = parse_config(f"key_prefix: {store.keys.prefix}\n{SOURCES}", "h.yaml", {})
    worker = NormalizeWorker(config, store, "w1")
    await worker.ensure_groups()
    async with gateway_client(config, store) as client:
        r = await client.post("/webhooks/acme", content=body, headers=headers)
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    assert await worker.read_once() == 1
    entries = await store.client.xrange(store.keys.events())
    return [msgspec.json.decode(fields[b"data"]) for _, fields in entries]


async def test_a_mapping_reading_a_header_makes_its_event_in_the_live_worker(redis_store):
    headers = signed(JSON_BODY, "d-1", {**CASES["json"][1], "X-Unrelated": "not kept"})
    [event] = await through_the_worker(redis_store, JSON_BODY, headers)
    assert (event["event"], event["properties"]) == (
        "Order Paid",
        {"order": "o1", "shop": "shop-7"},
    )
    [raw] = await raw_entries(redis_store, "acme")
    stored = json.loads(raw["headers"])
    assert stored["x-acme-topic"] == "order.paid" and stored["x-acme-shop"] == "shop-7"
    assert "x-unrelated" not in stored  # only what the source keeps is stored


@pytest.mark.parametrize("case", sorted(CASES))
async def test_map_test_and_the_worker_agree(redis_store, tmp_path, case):
    body, extra, name = CASES[case]
    headers = signed(body, f"d-{case}", extra)
    [from_worker] = await through_the_worker(redis_store, body, headers)

    path = tmp_path / "config.yaml"
    path.write_text(SOURCES)
    (tmp_path / "body").write_bytes(body)
    args = [f"--header={k}: {v}" for k, v in {**headers, "X-Unrelated": "1"}.items()]
    mapped = cli("map", "--source", "acme", "--config", str(path), *args, str(tmp_path / "body"))
    assert mapped.returncode == 0, mapped.stderr
    [from_map] = [json.loads(line) for line in mapped.stdout.splitlines()]
    # Only when it was received differs: map runs now, the worker ran on the delivery.
    assert from_map["event"] == name
    assert {**from_map, "receivedAt": None} == {**from_worker, "receivedAt": None}
    assert "does not store x-unrelated, so (as in the worker)" in mapped.stderr

    tested = cli("test", "--config", str(path))
    assert tested.returncode == 0, tested.stdout
    assert "2 passed, 0 failed" in tested.stdout


def test_check_config_refuses_a_header_name_it_cannot_know(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(SOURCES.replace("header('X-Acme-Shop')", "header(shop_header)"))
    r = cli("check-config", "--config", str(path))
    assert r.returncode != 0
    assert (
        "config.yaml:11: sources.acme.mappings[0].properties.shop: header() needs the header's "
        "name as quoted text, e.g. header('X-Event-Kind')"
    ) in r.stderr
