"""Review fixes: which statuses are retried, Amplitude's request errors, id lengths,
groups and revenue, Segment's batch bytes, and batches of retries within batch_bytes.

Vendor replies are the vendors' documented ones, served by the local `vendor` server.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from gateway.deliver import RetryState
from tests.conftest import until
from tests.destinations.conftest import event
from tests.destinations.test_deliver import config, running
from tests.destinations.test_vendors import make, send

# --- retried statuses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        # Cloudflare's own 5xx: the origin is down, refused, timed out, or unreachable
        # https://developers.cloudflare.com/support/troubleshooting/http-status-codes/cloudflare-5xx-errors/
        (520, "retry"),
        (521, "retry"),
        (522, "retry"),
        (523, "retry"),
        (524, "retry"),
        (507, "retry"),
        (500, "retry"),
        (503, "retry"),
        (408, "retry"),
        (425, "retry"),
        (429, "retry"),
        # the same request is never implemented / never speaks another HTTP version
        (501, "fail"),
        (505, "fail"),
    ],
)
async def test_every_5xx_but_501_and_505_is_retried(vendor, status, outcome):
    vendor.default = (status, {}, b"origin trouble")
    dest = make(f"    type: http\n    url: {vendor.url}/h\n")
    [result] = await send(dest, [event(1)])
    assert (result.outcome, result.status) == (outcome, status)


# --- Amplitude -----------------------------------------------------------------------------

AMP = "    type: amplitude\n    api_key: amp-secret-key\n    endpoint: {url}/2/httpapi\n"


@pytest.mark.parametrize(
    "reply",
    [
        # https://github.com/amplitude/Amplitude-Swift/issues/260: the reply to a wrong key
        {"code": 400, "error": "Invalid API key: amp-secret-key"},
        # https://amplitude.com/docs/apis/analytics/http-v2 (400: missing_field)
        {"code": 400, "error": "Request missing required field", "missing_field": "api_key"},
    ],
)
async def test_amplitude_request_errors_fail_every_event_without_bisecting(vendor, reply):
    vendor.default = (400, {}, reply)
    dest = make(AMP.format(url=vendor.url))
    results = await send(dest, [event(i) for i in range(4)])
    assert [r.outcome for r in results] == ["fail"] * 4
    assert len(vendor.requests) == 1  # not bisected into 7 requests
    for r in results:
        assert "check this destination's credentials" in r.reason
        assert "amp-secret-key" not in r.reason  # the reply echoes the key: not copied


async def test_amplitude_invalid_id_lengths_dead_letter_only_those_events(vendor):
    # The reply of https://github.com/amplitude/Amplitude-TypeScript/pull/81
    vendor.reply(
        (
            400,
            {},
            {
                "code": 400,
                "events_with_invalid_id_lengths": {"device_id": [1]},
                "error": "Invalid id length for user_id or device_id",
            },
        )
    )
    dest = make(AMP.format(url=vendor.url) + "    min_id_length: 5\n")
    results = await send(dest, [event(1), event(2, anonymousId="abc"), event(3)])
    assert [r.outcome for r in results] == ["retry", "fail", "retry"]
    assert "device_id" in results[1].reason and "min_id_length: 5" in results[1].reason


async def test_amplitude_group_goes_as_groupidentify_with_its_traits(vendor):
    dest = make(AMP.format(url=vendor.url) + "    group_type: company\n")
    group = event(1, kind="group", userId="u1", groupId="acme")
    group["traits"] = {"name": "Acme", "plan": "pro"}
    assert (await send(dest, [group]))[0].ok
    [sent] = vendor.requests[0].json()["events"]
    # Amplitude's group identify event: https://amplitude.com/docs/apis/analytics/group-identify
    # (event_type $groupidentify, groups {type: value}, group_properties {$set: ...})
    assert sent["event_type"] == "$groupidentify"
    assert sent["groups"] == {"company": "acme"}
    assert sent["group_properties"] == {"$set": {"name": "Acme", "plan": "pro"}}
    assert sent["user_id"] == "u1"


async def test_amplitude_revenue_goes_in_its_revenue_fields(vendor):
    dest = make(AMP.format(url=vendor.url))
    order = event(
        1,
        properties={
            "revenue": 54.5,
            "price": 27.25,
            "quantity": 2,
            "product_id": "sku-1",
            "revenueType": "purchase",
        },
    )
    assert (await send(dest, [order, event(2, properties={"order_id": "o2"})]))[0].ok
    paid, unpaid = vendor.requests[0].json()["events"]
    # https://amplitude.com/docs/apis/analytics/http-v2: price, quantity, revenue,
    # productId, revenueType are event fields, not event_properties
    assert (paid["revenue"], paid["price"], paid["quantity"]) == (54.5, 27.25, 2)
    assert (paid["productId"], paid["revenueType"]) == ("sku-1", "purchase")
    assert not {"revenue", "price", "quantity", "productId"} & set(unpaid)


# --- Segment -------------------------------------------------------------------------------


def test_segment_batches_stay_under_475000_bytes():
    # analytics-python keeps BATCH_SIZE_LIMIT = 475000 under Segment's 500 KB:
    # https://github.com/segmentio/analytics-python/blob/master/segment/analytics/consumer.py
    dest = make("    type: segment\n    write_key: wk\n")
    assert dest.batch_bytes == 475_000
    bigger = make("    type: segment\n    write_key: wk\n    batch_bytes: 500KB\n")
    assert bigger.batch_bytes == 475_000


async def test_segment_halves_a_batch_whose_body_passes_batch_bytes(vendor):
    dest = make(
        f"    type: segment\n    write_key: wk\n    endpoint: {vendor.url}/v1/batch\n"
        f"    batch_bytes: 3000\n"
    )
    batch = [event(i, properties={"pad": "x" * 700}) for i in range(8)]
    results = await send(dest, batch)
    assert all(r.ok for r in results)
    assert len(vendor.requests) > 1
    assert all(len(r.body) <= 3000 for r in vendor.requests)
    sent = [e["messageId"] for r in vendor.requests for e in r.json()["batch"]]
    assert sent == [e["messageId"] for e in batch]  # each once, in order


# --- the deliver worker --------------------------------------------------------------------


async def test_due_retries_are_sent_in_batches_within_batch_bytes(redis_store, vendor):
    """Retries come out of the retry set `batch_size` at a time: they are cut by bytes
    too, like new events."""
    cfg = config(
        redis_store.keys.prefix,
        f"  hook:\n    type: http\n    url: {vendor.url}/h\n    batch: true\n"
        f"    batch_bytes: 3000\n",
    )
    events = [event(i, properties={"pad": "x" * 1000}) for i in range(6)]
    retry_key, retry_data = redis_store.keys.retries("hook")
    now = time.time()
    for e in events:
        state = RetryState(e, 1, now, "HTTP 503")
        await redis_store.client.hset(retry_data, e["messageId"], msgspec.json.encode(state))
        await redis_store.client.zadd(retry_key, {e["messageId"]: now})
    _, stop, task = await running(cfg, redis_store)
    try:
        await until(
            lambda: sum(len(r.json()) for r in vendor.requests) == 6, what="the retries sent"
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    sizes = [len(r.body) for r in vendor.requests]
    assert len(sizes) > 1 and all(s <= 3000 + 10 for s in sizes), sizes
