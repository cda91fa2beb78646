"""Shared destination mechanics: routing, shaping, retry classes, Retry-After, splitting."""

from __future__ import annotations

import time

import msgspec
import pytest

from destinations.base import Route, Shaper, retry_after
from destinations.http import HttpEventsDestination
from gateway.config import parse_config
from tests.destinations.conftest import HANG, event


def dest_config(text: str):
    return parse_config(f"destinations:\n  d:\n{text}", "d.yaml", {}).destinations["d"]


@pytest.mark.parametrize(
    ("settings", "wanted"),
    [
        ("    events: ['Order *']\n", {"Order Completed", "Order Refunded"}),
        ("    events: ['*']\n    types: [identify]\n", {"identify"}),
        ("    events: ['Order Completed', identify]\n", {"Order Completed", "identify"}),
        ("    sources: [shopify]\n", set()),
    ],
)
def test_route(settings, wanted):
    route = Route(dest_config("    type: file\n    path: x\n" + settings))
    candidates = {
        ("stripe", "track", "Order Completed"),
        ("stripe", "track", "Order Refunded"),
        ("stripe", "track", "Charge Succeeded"),
        ("stripe", "identify", ""),
    }
    got = {name or kind for source, kind, name in candidates if route.wants(source, kind, name)}
    assert got == wanted


def test_shaper_renames_then_allow_lists():
    shape = Shaper(
        dest_config(
            "    type: file\n    path: x\n"
            "    rename_properties: {revenue: value}\n"
            "    allow_properties: [value, currency]\n"
        )
    )
    assert shape(event(1))["properties"] == {"value": 11.0, "currency": "USD"}


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0), ("soon", None), (None, None)],
)
def test_retry_after(header, seconds):
    now = 1445412480.0  # 10 s before that HTTP date
    assert retry_after(header, now) == seconds


def http_dest(vendor, extra: str = "") -> HttpEventsDestination:
    cfg = dest_config(
        f"    type: http\n    url: {vendor.url}/hook\n    batch: true\n    timeout: 1s\n{extra}"
    )
    return HttpEventsDestination("d", cfg)


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        ((200, {}, b"{}"), "ok"),
        ((202, {}, b""), "ok"),
        ((408, {}, b""), "retry"),
        ((425, {}, b"too early"), "retry"),
        ((429, {}, b"slow down"), "retry"),
        ((500, {}, b"oops"), "retry"),
        ((502, {}, b"bad gateway"), "retry"),
        ((503, {}, b""), "retry"),
        ((504, {}, b"gateway timeout"), "retry"),
        ((400, {}, b'{"error": "invalid event"}'), "fail"),
        ((401, {}, b'{"error": "bad key"}'), "fail"),
        ((404, {}, b""), "fail"),
        ((422, {}, b'{"error": "unprocessable"}'), "fail"),
    ],
    ids=lambda v: str(v[0]) if isinstance(v, tuple) else v,
)
async def test_retry_classes(vendor, answer, outcome):
    dest = http_dest(vendor)
    await dest.start()
    vendor.reply(*[answer] * 4)
    results = await dest.send([event(1)], time.time())
    await dest.close()
    assert [r.outcome for r in results] == [outcome]
    if outcome == "fail":
        assert results[0].reason.startswith(f"HTTP {answer[0]}")


async def test_429_retry_after_is_honoured(vendor):
    dest = http_dest(vendor)
    await dest.start()
    vendor.reply((429, {"retry-after": "30"}, b"slow down"))
    [result] = await dest.send([event(1)], time.time())
    await dest.close()
    assert result.outcome == "retry" and result.retry_after == 30.0 and result.status == 429


async def test_timeouts_and_refused_connections_are_retried(vendor):
    dest = http_dest(vendor)
    await dest.start()
    vendor.reply(HANG)
    [hung] = await dest.send([event(1)], time.time())
    await dest.close()
    assert hung.outcome == "retry" and "timed out" in hung.reason
    closed = http_dest(vendor)
    closed.config = msgspec.structs.replace(closed.config, url="http://127.0.0.1:9/")
    await closed.start()
    [refused] = await closed.send([event(1)], time.time())
    await closed.close()
    assert refused.outcome == "retry" and "connection failed" in refused.reason


@pytest.mark.parametrize("status", [400, 422])
async def test_a_batch_rejected_whole_is_split_to_find_the_bad_event(vendor, status):
    def judge(seen):
        bad = any(e["properties"].get("bad") for e in seen.json())
        return (status, {}, b'{"error": "invalid event"}') if bad else (200, {}, b"{}")

    vendor.default = judge
    dest = http_dest(vendor)
    await dest.start()
    batch = [event(i) for i in range(8)]
    batch[5]["properties"]["bad"] = True
    results = await dest.send(batch, time.time())
    await dest.close()
    assert [r.outcome for r in results] == ["ok"] * 5 + ["fail"] + ["ok"] * 2
    assert results[5].reason == f'HTTP {status}: {{"error": "invalid event"}}'
    # 8 refused -> 0-3 sent, 4-7 refused -> 4-5 refused -> 4 sent, 5 refused alone; 6-7 sent
    assert [len(r.json()) for r in vendor.requests] == [8, 4, 4, 2, 1, 1, 2]
    delivered = [
        e["messageId"]
        for r in vendor.requests
        if r.json()
        for e in r.json()
        if not any(x["properties"].get("bad") for x in r.json())
    ]
    assert sorted(delivered) == sorted(e["messageId"] for i, e in enumerate(batch) if i != 5)


async def test_413_is_split_down_until_it_fits(vendor):
    vendor.default = lambda seen: (
        (413, {}, b"too large") if len(seen.json()) > 2 else (200, {}, b"{}")
    )
    dest = http_dest(vendor)
    await dest.start()
    results = await dest.send([event(i) for i in range(7)], time.time())
    await dest.close()
    assert all(r.ok for r in results)
    delivered = [e["messageId"] for r in vendor.requests if len(r.json()) <= 2 for e in r.json()]
    assert sorted(delivered) == sorted(event(i)["messageId"] for i in range(7))


async def test_one_event_too_large_for_the_vendor_is_dead_lettered(vendor):
    vendor.default = (413, {}, b"payload too large")
    dest = http_dest(vendor)
    await dest.start()
    [result] = await dest.send([event(1)], time.time())
    await dest.close()
    assert result.outcome == "fail" and "413" in result.reason


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_refusals_about_the_destination_are_not_bisected(vendor, status):
    """A bad key refuses every event alike: splitting would only repeat the refusal."""
    vendor.default = (status, {}, b'{"error": "invalid api key"}')
    dest = http_dest(vendor)
    await dest.start()
    results = await dest.send([event(i) for i in range(8)], time.time())
    await dest.close()
    assert [r.outcome for r in results] == ["fail"] * 8
    assert len(vendor.requests) == 1
    if status in (401, 403):
        assert "credentials" in results[0].reason
