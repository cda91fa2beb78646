"""The deliver worker on real Redis: routing, batching, retries, dead letters, crashes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from destinations.base import Result
from gateway.config import parse_config
from gateway.deliver import DeliverWorker, Item
from gateway.metrics import Metrics
from gateway.store import Store
from gateway.worker import trimmed_unread
from tests.conftest import group_settled, pending_idle, until
from tests.destinations.conftest import event

_encode = msgspec.json.encode


def config(prefix: str, destinations: str):
    return parse_config(
        f"key_prefix: {prefix}\nworker: {{claim_idle: 300ms}}\ndestinations:\n{destinations}",
        "d.yaml",
        {},
    )


async def publish(store: Store, *events: dict) -> None:
    """Append events to the events stream at once (a reader gets all of them or none)."""
    async with store.client.pipeline(transaction=True) as pipe:
        for e in events:
            pipe.xadd(
                store.keys.events(),
                {
                    "message_id": e["messageId"],
                    "source": e["context"]["source"]["name"],
                    "delivery_id": e["context"]["source"]["deliveryId"],
                    "type": e["type"],
                    "event": e.get("event") or "",
                    "data": _encode(e),
                },
            )
        await pipe.execute()


async def idle(store: Store, *runners) -> bool:
    """Each destination's group has read every entry of the events stream and settled it
    (nothing pending), no runner holds or sends anything and no retry is waiting: nothing
    more will go out."""
    for runner in runners:
        if not await group_settled(store.client, store.keys.events(), runner.group):
            return False
        if runner.holding or runner.inflight or await store.client.zcard(runner.retry_key):
            return False
    return True


async def _eq(value, expected) -> bool:
    return (await value) == expected


async def running(cfg, store: Store):
    worker = DeliverWorker(cfg, store, "t")
    for runner in worker.runners:
        await runner.ensure_group()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    return worker, stop, task


async def dead_letters(store: Store) -> list[dict]:
    return [
        {k.decode(): v.decode() for k, v in f.items() if k != b"data"}
        for _, f in await store.client.xrange(store.keys.dead_letters())
    ]


async def test_routed_batched_and_acknowledged(redis_store, vendor):
    cfg = config(
        redis_store.keys.prefix,
        f"  orders:\n    type: http\n    url: {vendor.url}/o\n    batch: true\n"
        f"    batch_size: 3\n    linger: 300ms\n    events: ['Order *']\n"
        f"  people:\n    type: http\n    url: {vendor.url}/p\n    types: [identify]\n",
    )
    worker, stop, task = await running(cfg, redis_store)
    await publish(
        redis_store,
        *[event(i) for i in range(7)],
        event(90, name="Charge Succeeded"),
        event(91, kind="identify"),
    )

    def paths():
        return [r.path for r in vendor.requests]

    await until(
        lambda: (
            sum(len(r.json()) if r.path == "/o" else 0 for r in vendor.requests) == 7
            and "/p" in paths()
        ),
        what="7 orders and 1 person sent",
    )
    stop.set()
    await asyncio.wait_for(task, 10)
    order_batches = [r.json() for r in vendor.requests if r.path == "/o"]
    assert [len(b) for b in order_batches] == [3, 3, 1]  # batch_size, then linger
    assert {e["event"] for b in order_batches for e in b} == {"Order Completed"}
    [person] = [r.json() for r in vendor.requests if r.path == "/p"]
    assert person["type"] == "identify"
    for runner in worker.runners:
        pending = await redis_store.client.xpending(redis_store.keys.events(), runner.group)
        assert pending["pending"] == 0


async def test_retries_with_backoff_then_success(redis_store, vendor):
    vendor.reply((500, {}, b"down"), (503, {}, b"down"))
    cfg = config(
        redis_store.keys.prefix,
        f"  hook:\n    type: http\n    url: {vendor.url}/h\n    backoff: 50ms\n"
        f"    backoff_max: 100ms\n",
    )
    worker, stop, task = await running(cfg, redis_store)
    await publish(redis_store, event(1))
    await until(lambda: len(vendor.requests) == 3, 15)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert len({r.headers["webhook-id"] for r in vendor.requests}) == 1  # the same event
    runner = worker.runners[0]
    assert (runner.stats.sent, runner.stats.retried) == (1, 2)
    assert await redis_store.client.zcard(runner.retry_key) == 0
    assert await dead_letters(redis_store) == []
    log = [
        msgspec.json.decode(x)
        for x in await redis_store.client.lrange(
            redis_store.keys.attempts(event(1)["messageId"]), 0, -1
        )
    ]
    assert [(a["attempt"], a["outcome"], a["status"]) for a in log] == [
        (1, "retry", 500),
        (2, "retry", 503),
        (3, "ok", 200),
    ]


async def test_retry_after_is_honoured(redis_store, vendor):
    vendor.reply((429, {"retry-after": "1"}, b"slow down"))
    cfg = config(
        redis_store.keys.prefix,
        f"  hook:\n    type: http\n    url: {vendor.url}/h\n    backoff: 10ms\n",
    )
    _, stop, task = await running(cfg, redis_store)
    await publish(redis_store, event(1))
    await until(lambda: len(vendor.requests) == 2, 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    first, second = vendor.requests
    assert second.at - first.at >= 0.95


async def test_permanent_failures_and_exhausted_retries_are_dead_lettered(redis_store, vendor):
    def judge(seen):
        return (400, {}, b'{"error": "bad"}') if "/bad" in seen.path else (500, {}, b"down")

    vendor.default = judge
    cfg = config(
        redis_store.keys.prefix,
        f"  bad:\n    type: http\n    url: {vendor.url}/bad\n"
        f"  flaky:\n    type: http\n    url: {vendor.url}/flaky\n    max_attempts: 3\n"
        f"    backoff: 10ms\n    backoff_max: 20ms\n",
    )
    _, stop, task = await running(cfg, redis_store)
    await publish(redis_store, event(1))

    async def both() -> bool:
        return len(await dead_letters(redis_store)) == 2

    await until(both, 15)
    stop.set()
    await asyncio.wait_for(task, 10)
    letters = {d["destination"]: d for d in await dead_letters(redis_store)}
    assert letters["bad"]["attempts"] == "1"
    assert letters["bad"]["reason"] == 'HTTP 400: {"error": "bad"}'
    assert letters["flaky"]["attempts"] == "3"
    assert letters["flaky"]["reason"].startswith("gave up after 3 attempts: HTTP 500")
    assert letters["bad"]["message_id"] == event(1)["messageId"]
    assert letters["bad"]["delivery_id"] == "evt_1"
    assert sum(1 for r in vendor.requests if r.path == "/flaky") == 3


async def test_one_failing_destination_does_not_hold_up_another(redis_store, vendor):
    vendor.default = lambda seen: (500, {}, b"") if seen.path == "/down" else (200, {}, b"{}")
    cfg = config(
        redis_store.keys.prefix,
        f"  down:\n    type: http\n    url: {vendor.url}/down\n    backoff: 1s\n"
        f"  up:\n    type: http\n    url: {vendor.url}/up\n",
    )
    _, stop, task = await running(cfg, redis_store)
    await publish(redis_store, *[event(i) for i in range(20)])
    await until(lambda: sum(r.path == "/up" for r in vendor.requests) == 20, 10)
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_retries_survive_a_restart_and_a_lost_lease(redis_store, vendor):
    """Retry state lives in Redis; a send that died mid-way is handed out again, but only
    once its lease has ended."""
    vendor.default = (500, {}, b"down")
    cfg = config(
        redis_store.keys.prefix,
        f"  hook:\n    type: http\n    url: {vendor.url}/h\n    batch: true\n"
        f"    backoff: 10ms\n    backoff_max: 20ms\n",
    )
    first, second = event(1)["messageId"], event(2)["messageId"]

    def sends(message_id: str) -> int:
        return sum(e["messageId"] == message_id for r in vendor.requests for e in r.json())

    worker, stop, task = await running(cfg, redis_store)
    await publish(redis_store, event(1), event(2))
    runner = worker.runners[0]

    async def scheduled() -> int:
        return await redis_store.client.zcard(runner.retry_key)

    await until(lambda: _eq(scheduled(), 2), what="both events scheduled for a retry")
    stop.set()
    await asyncio.wait_for(task, 10)
    vendor.default = (200, {}, b"{}")
    tried = sends(first)
    assert tried == sends(second) >= 1
    # A process leases both retries and dies before sending them.
    leased = await runner.due_retries(time.time() + 1)
    assert sorted(i.event["messageId"] for i in leased) == [first, second]
    assert await runner.due_retries(time.time() + 1) == []  # leased: not handed out twice
    # The second one's lease ends; the first one's has a minute to go.
    await redis_store.client.zadd(runner.retry_key, {second: time.time()})

    worker2, stop2, task2 = await running(cfg, redis_store)
    # The pass of the retry loop that hands out the second one would hand out the first
    # one with it (same batch) if its lease were ignored: once the second one is settled,
    # that pass is over.
    await until(
        lambda: _eq(redis_store.client.zscore(runner.retry_key, second), None),
        what="the second event's retry sent and settled",
    )
    assert (sends(first), sends(second)) == (tried, tried + 1)  # the first is still leased
    # After its lease it comes back.
    await redis_store.client.zadd(runner.retry_key, {first: time.time()})
    await until(lambda: _eq(scheduled(), 0), what="the first event's retry sent")
    stop2.set()
    await asyncio.wait_for(task2, 10)
    assert (sends(first), sends(second)) == (tried + 1, tried + 1)
    assert worker2.runners[0].stats.sent == 2


@pytest.mark.parametrize("start", ["latest", "earliest"])
async def test_a_new_destination_starts_where_told(redis_store, vendor, start):
    await publish(redis_store, event(1))
    cfg = config(
        redis_store.keys.prefix,
        f"  hook:\n    type: http\n    url: {vendor.url}/h\n    start: {start}\n",
    )
    worker, stop, task = await running(cfg, redis_store)
    await publish(redis_store, event(2))
    await until(lambda: idle(redis_store, *worker.runners), what="the stream read and settled")
    stop.set()
    await asyncio.wait_for(task, 10)
    got = sorted(r.json()["messageId"] for r in vendor.requests)
    expected = (
        [event(1)["messageId"], event(2)["messageId"]]
        if start == "earliest"
        else [event(2)["messageId"]]
    )
    assert got == expected


async def test_batches_respect_batch_bytes(redis_store, vendor):
    cfg = config(
        redis_store.keys.prefix,
        f"  hook:\n    type: http\n    url: {vendor.url}/h\n    batch: true\n"
        f"    batch_bytes: 2KiB\n    linger: 300ms\n",
    )
    _, stop, task = await running(cfg, redis_store)
    await publish(redis_store, *[event(i) for i in range(10)])
    await until(lambda: sum(len(r.json()) for r in vendor.requests) == 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert len(vendor.requests) > 1
    # the events' own bytes stay within batch_bytes; the array adds [ , ] only
    assert all(len(r.body) <= 2048 + len(r.json()) + 1 for r in vendor.requests)


async def test_no_attempt_limit_by_default_only_max_age(redis_store, vendor):
    """An outage of many retries must not dead-letter events still within max_age."""
    vendor.default = (503, {}, b"down")
    cfg = config(
        redis_store.keys.prefix,
        f"  hook:\n    type: http\n    url: {vendor.url}/h\n    backoff: 1ms\n"
        f"    backoff_max: 5ms\n    linger: 10ms\n",
    )
    assert cfg.destinations["hook"].max_attempts is None
    _, stop, task = await running(cfg, redis_store)
    await publish(redis_store, event(1))
    await until(lambda: len(vendor.requests) >= 15, 20)
    assert await dead_letters(redis_store) == []
    vendor.default = (200, {}, b"{}")
    runner_sent = len(vendor.requests)
    await until(lambda: len(vendor.requests) > runner_sent, 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert await dead_letters(redis_store) == []


async def test_an_event_failing_past_max_age_is_dead_lettered(redis_store, vendor):
    vendor.default = (500, {}, b"down")
    cfg = config(
        redis_store.keys.prefix,
        f"  hook:\n    type: http\n    url: {vendor.url}/h\n    max_age: 300ms\n"
        f"    backoff: 10ms\n    backoff_max: 20ms\n    linger: 10ms\n",
    )
    worker, stop, task = await running(cfg, redis_store)
    runner = worker.runners[0]
    await publish(redis_store, event(1))

    async def dead() -> list[dict]:
        return await dead_letters(redis_store)

    await until(dead, what="a dead letter")
    await until(lambda: idle(redis_store, runner), what="the worker idle")
    stop.set()
    await asyncio.wait_for(task, 10)
    [letter] = await dead()
    assert letter["destination"] == "hook"
    assert letter["message_id"] == event(1)["messageId"]
    assert letter["reason"] == "gave up after 0.3 s: HTTP 500: down"
    attempts = int(letter["attempts"])
    assert attempts >= 2 and len(vendor.requests) == attempts
    # given up only once max_age had passed since the first attempt
    log = [
        msgspec.json.decode(x)
        for x in await redis_store.client.lrange(
            redis_store.keys.attempts(event(1)["messageId"]), 0, -1
        )
    ]
    assert [a["outcome"] for a in log] == ["retry"] * (attempts - 1) + ["fail"]
    assert log[-1]["at"] - log[0]["at"] >= 0.3 - 0.001  # (rounded to the millisecond)
    assert await redis_store.client.zcard(runner.retry_key) == 0
    assert await redis_store.client.hlen(runner.retry_data) == 0


async def test_a_failed_acknowledgement_strands_nothing(redis_store, vendor):
    """Redis failing mid-admit: the entries stay pending and are reclaimed, not held."""
    cfg = config(
        redis_store.keys.prefix,
        f"  hook:\n    type: http\n    url: {vendor.url}/h\n    batch: true\n"
        f"    events: [Order Completed]\n",
    )
    worker = DeliverWorker(cfg, redis_store, "t")
    runner = worker.runners[0]
    await runner.ensure_group()
    await publish(redis_store, event(1), event(2, name="Other"))
    real = redis_store.execute

    async def broken(commands, **options):
        raise ConnectionError("Redis went away")

    redis_store.execute = broken
    with pytest.raises(ConnectionError):
        await runner.read(10, 0)
    assert runner.holding == set()
    redis_store.execute = real

    # the entries look abandoned once they have been pending for claim_idle (300ms)
    await until(
        lambda: pending_idle(redis_store.client, redis_store.keys.events(), runner.group, 300),
        what="the pending entries idle for 300ms",
    )
    items = await runner.reclaim()
    assert [i.event["messageId"] for i in items] == [event(1)["messageId"]]
    # the unwanted one is acknowledged this time
    pending = await redis_store.client.xpending(redis_store.keys.events(), runner.group)
    assert pending["pending"] == 1


async def test_a_batch_waiting_for_a_slot_is_not_taken_over(redis_store, vendor):
    """Behind slow sends, read entries wait for a slot longer than claim_idle: another
    worker must not reclaim and send them too."""
    cfg = config(
        redis_store.keys.prefix,
        f"  hook:\n    type: http\n    url: {vendor.url}/h\n    batch_size: 1\n"
        f"    concurrency: 1\n    linger: 10ms\n",
    )
    # The slow vendor is the situation under test: each send takes 0.7 s, so the entry
    # behind it waits for A's one slot more than twice claim_idle (300ms), long enough
    # for B's reclaim, which runs every claim_idle, to find it if it looked abandoned.
    vendor.default = lambda seen: (time.sleep(0.7), (200, {}, b"{}"))[1]
    a, b = DeliverWorker(cfg, redis_store, "A"), DeliverWorker(cfg, redis_store, "B")
    await a.runners[0].ensure_group()
    await publish(redis_store, *[event(i) for i in range(3)])
    stop = asyncio.Event()
    first = asyncio.create_task(a.run(stop))

    async def pending() -> int:
        return (await redis_store.client.xpending(redis_store.keys.events(), "deliver:hook"))[
            "pending"
        ]

    # A sends e0 and holds e1, waiting for its slot
    await until(lambda: vendor.requests and _eq(pending(), 2), what="A sending e0 and holding e1")
    second = asyncio.create_task(b.run(stop))
    runners = [a.runners[0], b.runners[0]]
    await until(lambda: idle(redis_store, *runners), 15, what="every event sent and settled")
    stop.set()
    await asyncio.wait_for(asyncio.gather(first, second), 15)
    sends = Counter(r.json()["messageId"] for r in vendor.requests)
    assert sends == {event(i)["messageId"]: 1 for i in range(3)}


async def test_backoff_after_very_many_attempts_stays_capped(redis_store, vendor):
    cfg = config(
        redis_store.keys.prefix,
        f"  hook:\n    type: http\n    url: {vendor.url}/h\n    backoff_max: 30s\n",
    )
    runner = DeliverWorker(cfg, redis_store, "A").runners[0]
    assert 0 <= runner.backoff(5000, None) <= 30
    now = time.time()
    stuck = Item(event(1), None, attempts=1024, first_at=now - 60)
    await runner.settle([stuck], [Result("retry", "HTTP 503")], now, 1.0)
    due = await redis_store.client.zscore(runner.retry_key, event(1)["messageId"])
    assert due is not None and now <= due <= now + 30


async def test_a_new_group_does_not_count_entries_trimmed_before_it_as_lost(redis_store, vendor):
    key = redis_store.keys.events()
    for i in range(50):
        await redis_store.client.xadd(key, {"x": i}, maxlen=10, approximate=False)
    cfg = config(
        redis_store.keys.prefix,
        f"  hook:\n    type: http\n    url: {vendor.url}/h\n    start: earliest\n",
    )
    runner = DeliverWorker(cfg, redis_store, "A").runners[0]
    await runner.ensure_group()
    assert await trimmed_unread(redis_store, key, runner.group, {}) == 0
    # while entries trimmed after the group read nothing are lost, and counted
    for i in range(30):
        await redis_store.client.xadd(key, {"x": i}, maxlen=10, approximate=False)
    assert await trimmed_unread(redis_store, key, runner.group, {}) == 30


def samples(metrics: Metrics) -> dict[tuple[str, frozenset], float]:
    """The Prometheus text a scrape gets, parsed: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }


async def test_metrics_count_events_by_outcome_and_time_each_batch(redis_store, vendor):
    flaky = iter([(500, {}, b"down")])

    def judge(seen):
        if seen.path == "/slow":
            time.sleep(0.3)  # a slow vendor: the batch's time is measured
            return (200, {}, b"{}")
        if seen.path == "/flaky":
            return next(flaky, (200, {}, b"{}"))
        return (400, {}, b'{"error": "bad"}')

    vendor.default = judge
    cfg = config(
        redis_store.keys.prefix,
        "".join(
            f"  {name}:\n    type: http\n    url: {vendor.url}/{name}\n    batch: true\n"
            f"    backoff: 10ms\n    backoff_max: 20ms\n"
            for name in ("slow", "flaky", "bad")
        ),
    )
    metrics = Metrics()
    worker = DeliverWorker(cfg, redis_store, "t", metrics)
    for runner in worker.runners:
        await runner.ensure_group()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await publish(redis_store, event(1), event(2), event(3))
    await until(lambda: idle(redis_store, *worker.runners), what="every destination done")
    stop.set()
    await asyncio.wait_for(task, 10)
    got = samples(metrics)

    def value(name: str, **labels: str) -> float | None:
        return got.get((name, frozenset(labels.items())))

    events = "gateway_destination_events_total"
    assert value(events, destination="slow", outcome="sent") == 3
    assert value(events, destination="flaky", outcome="retried") == 3
    assert value(events, destination="flaky", outcome="sent") == 3
    assert value(events, destination="bad", outcome="dead_lettered") == 3
    for destination, outcome in (
        ("slow", "retried"),
        ("slow", "dead_lettered"),
        ("flaky", "dead_lettered"),
        ("bad", "sent"),
        ("bad", "retried"),
    ):
        assert value(events, destination=destination, outcome=outcome) in (None, 0)
    # one observation per batch: the flaky one's batch went twice; the refused batch was
    # bisected into 5 requests but is one batch
    batches = "gateway_destination_batch_seconds_count"
    assert [r.path for r in vendor.requests].count("/bad") == 5
    assert value(batches, destination="slow") == 1
    assert value(batches, destination="flaky") == 2
    assert value(batches, destination="bad") == 1
    assert value("gateway_destination_batch_seconds_sum", destination="slow") >= 0.3
    assert value("gateway_destination_batch_seconds_bucket", destination="slow", le="0.25") == 0
