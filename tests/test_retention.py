"""Retention settings, as docs/configuration.md's tables promise them, on the real Redis.

`raw_retention`, `events_retention` and `dead_letter_retention` keep their streams to
about that many entries (Redis's approximate MAXLEN trims whole stream nodes, so "about"
means at least that many and less than one node more); `delivery_log_retention` is the
TTL of the `<key_prefix>:log:*` keys, and `0` writes none.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json

import pytest

from gateway.config import parse_config
from gateway.store import Store
from gateway.worker import NormalizeWorker
from tests.conftest import expected_message_id, gateway_client, until
from tests.destinations.conftest import VendorServer
from tests.destinations.test_deliver import idle, running
from tests.test_cli import cli
from tests.test_worker import put

CFG = """
redis_url: {redis_url}
key_prefix: {prefix}
{settings}
sources:
  forms:
    type: hmac
    secrets: [x]
    signature_header: Sig
    delivery_id_header: Id
    {source_settings}
    mappings:
      - event: Form Submitted
        properties: {{form: form}}
destinations:
  hook: {{type: http, url: "{vendor}/hook", batch: true, start: earliest}}
"""


def message_id(source: str, delivery_id: str, index: int = 0) -> str:
    return expected_message_id(source, delivery_id, index, "Form Submitted")


def configure(
    store: Store, redis_url: str, vendor: VendorServer, settings: str = "", source: str = ""
):
    """The config (and its text) with top-level `settings` and the source's `source`."""
    text = CFG.format(
        redis_url=redis_url,
        prefix=store.keys.prefix,
        settings=settings,
        source_settings=source,
        vendor=vendor.url,
    )
    return parse_config(text, "retention.yaml", {}), text


async def node_size(store: Store) -> int:
    """Entries per stream node: approximate trimming removes only whole nodes."""
    reply = await store.client.config_get("stream-node-max-entries")
    return int(reply["stream-node-max-entries"])


async def assert_about(store: Store, key: str, retention: int) -> None:
    length = await store.client.xlen(key)
    assert retention <= length < retention + await node_size(store), (key, length)


async def normalize_all(cfg, store: Store) -> None:
    worker = NormalizeWorker(cfg, store, "n")
    await worker.ensure_groups()
    # Everything is stored before this reads: a short batch is the last one.
    while await worker.read_once() == cfg.worker.batch:
        pass


@contextlib.asynccontextmanager
async def delivering(cfg, store: Store):
    worker, stop, task = await running(cfg, store)
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def signed(delivery: str) -> dict[str, str]:
    return {"sig": hmac.new(b"x", b"{}", hashlib.sha256).hexdigest(), "id": delivery}


def sent(vendor: VendorServer) -> list[dict]:
    return [e for r in vendor.requests for e in r.json()]


async def test_raw_stream_keeps_about_raw_retention(redis_url, redis_store, vendor):
    cfg, _ = configure(redis_store, redis_url, vendor, source="raw_retention: 10")
    async with gateway_client(cfg, redis_store) as client:
        for i in range(300):
            r = await client.post("/webhooks/forms", content=b"{}", headers=signed(f"d-{i}"))
            assert r.json()["status"] == "accepted"
    key = redis_store.keys.raw("forms")
    await assert_about(redis_store, key, 10)
    [(_, newest)] = await redis_store.client.xrevrange(key, count=1)
    assert newest[b"delivery_id"] == b"d-299"  # the oldest go first


async def test_events_stream_keeps_about_events_retention(redis_url, redis_store, vendor):
    cfg, _ = configure(redis_store, redis_url, vendor, "events_retention: 10")
    for i in range(300):
        await put(redis_store, "forms", f"f{i}", b'{"form": "signup"}')
    await normalize_all(cfg, redis_store)
    key = redis_store.keys.events()
    await assert_about(redis_store, key, 10)
    [(_, newest)] = await redis_store.client.xrevrange(key, count=1)
    assert newest[b"message_id"].decode() == message_id("forms", "f299")


async def test_dead_letters_keep_about_dead_letter_retention(redis_url, redis_store, vendor):
    cfg, _ = configure(redis_store, redis_url, vendor, "dead_letter_retention: 10")
    vendor.default = (401, {}, b'{"error": "invalid token"}')  # every event dead-lettered
    for i in range(300):
        await put(redis_store, "forms", f"f{i}", b'{"form": "signup"}')
    await normalize_all(cfg, redis_store)
    async with delivering(cfg, redis_store) as worker:
        await until(lambda: idle(redis_store, *worker.runners), what="every event handled")
    assert len(sent(vendor)) == 300
    key = redis_store.keys.dead_letters()
    await assert_about(redis_store, key, 10)
    [(_, newest)] = await redis_store.client.xrevrange(key, count=1)
    assert newest[b"message_id"].decode() == message_id("forms", "f299")


async def log_keys(store: Store) -> dict[str, int]:
    """The delivery log's keys and their TTLs (ms)."""
    keys = [k async for k in store.client.scan_iter(match=f"{store.keys.prefix}:log:*", count=1000)]
    return {k.decode(): await store.client.pttl(k) for k in keys}


async def one_good_one_bad(cfg, store: Store, vendor: VendorServer) -> None:
    """f1 becomes an event and is sent; `bad` (not JSON) goes to the quarantine."""
    async with delivering(cfg, store) as worker:
        await put(store, "forms", "f1", b'{"form": "signup"}')
        await put(store, "forms", "bad", b"not json")
        await normalize_all(cfg, store)
        await until(lambda: idle(store, *worker.runners), what="the event handled")
    assert [e["messageId"] for e in sent(vendor)] == [message_id("forms", "f1")]


@pytest.mark.parametrize(("setting", "ttl_ms"), [("90s", 90_000), ("2h", 7_200_000)])
async def test_delivery_log_keys_live_delivery_log_retention(
    redis_url, redis_store, vendor, setting, ttl_ms
):
    cfg, _ = configure(redis_store, redis_url, vendor, f"delivery_log_retention: {setting}")
    await one_good_one_bad(cfg, redis_store, vendor)
    prefix = redis_store.keys.prefix
    keys = await log_keys(redis_store)
    assert sorted(keys) == sorted(
        [
            f"{prefix}:log:delivery:forms:f1",
            f"{prefix}:log:delivery:forms:bad",
            f"{prefix}:log:event:{message_id('forms', 'f1')}",
        ]
    )
    for key, pttl in keys.items():
        assert ttl_ms - 60_000 < pttl <= ttl_ms, key


async def test_delivery_log_off_writes_no_log_keys_and_the_commands_say_so(
    redis_url, redis_store, vendor, tmp_path
):
    cfg, text = configure(redis_store, redis_url, vendor, "delivery_log_retention: 0")
    await one_good_one_bad(cfg, redis_store, vendor)
    assert await log_keys(redis_store) == {}
    path = tmp_path / "config.yaml"
    path.write_text(text)
    for args in (
        ("deliveries", "show", "f1"),
        ("deliveries", "show", "f1", "--json"),
        ("events", "show", message_id("forms", "f1")),
    ):
        r = await asyncio.to_thread(cli, *args, "--config", str(path))
        assert r.returncode == 1, args
        assert r.stdout == ""
        assert (
            f"the delivery log is off (delivery_log_retention: 0 in {path}): nothing is "
            "recorded; set it (e.g. 7d) to keep what deliveries become"
        ) in r.stderr, args


async def test_deliveries_show_reads_the_log_when_it_is_on(
    redis_url, redis_store, vendor, tmp_path
):
    cfg, text = configure(redis_store, redis_url, vendor, "delivery_log_retention: 1h")
    await one_good_one_bad(cfg, redis_store, vendor)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    r = await asyncio.to_thread(cli, "deliveries", "show", "f1", "--json", "--config", str(path))
    assert r.returncode == 0, r.stderr
    [report] = json.loads(r.stdout)
    assert (report["source"], report["status"]) == ("forms", "normalized into 1 event(s)")
    [event] = report["events"]
    assert (event["message_id"], event["event"]) == (message_id("forms", "f1"), "Form Submitted")
    [attempt] = event["attempts"]
    assert (attempt["destination"], attempt["attempt"], attempt["outcome"]) == ("hook", 1, "ok")
    bad = await asyncio.to_thread(cli, "deliveries", "show", "bad", "--config", str(path))
    assert bad.stdout == "forms bad: quarantined: the body is not JSON\n"


async def test_a_successful_attempt_records_its_http_status(redis_url, redis_store, vendor):
    cfg, _ = configure(redis_store, redis_url, vendor, "delivery_log_retention: 1h")
    await one_good_one_bad(cfg, redis_store, vendor)
    key = f"{redis_store.keys.prefix}:log:event:{message_id('forms', 'f1')}"
    [attempt] = [json.loads(x) for x in await redis_store.client.lrange(key, 0, -1)]
    assert attempt["status"] == 200
