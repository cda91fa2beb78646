"""The events stream in partitions (`events_partitions`), on the real Redis: where each
event goes, and that every destination reads all partitions, once each.

The expected partition of a person is computed here with the standard library, as the
docs/operations.md documents it: CRC-32 (zlib) of the UTF-8 userId, else anonymousId, mod N. Key
names are written out as documented, not taken from the code.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import zlib
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import load_config, parse_config
from gateway.deliver import DeliverWorker
from gateway.errors import ConfigError
from gateway.replay import partition_lag
from gateway.store import Store, partition_tags
from gateway.worker import NormalizeWorker, Pipeline
from normalizers.event import Context, Event, SourceInfo, library
from tests.conftest import OPERATOR, gateway_client, group_settled, pending_idle, until
from tests.destinations.conftest import event as stream_event
from tests.test_cli import cli

WRITE_KEY = "wk_partitions_0123456789"


def expected_partition(person: str, n: int) -> int:
    return zlib.crc32(person.encode("utf-8")) % n


def stream_keys(prefix: str, n: int) -> list[str]:
    """The documented key names: partition 0 keeps the single stream's name; partition i
    is on a tag `events:<i>` or `events:<i>:<k>` (see the spread test below)."""
    return [f"{prefix}:{{{tag}}}:stream" for tag in partition_tags(n)]


def crc16_slot(tag: str) -> int:
    """Redis Cluster's key slot of a hash tag: CRC16/XMODEM mod 16384 (the cluster spec)."""
    return binascii.crc_hqx(tag.encode(), 0) % 16384


@pytest.mark.parametrize("n", [2, 3, 4, 16, 100])
def test_partitions_fall_in_different_nths_of_the_slots(n):
    tags = partition_tags(n)
    assert tags[0] == "events" and len(set(tags)) == n
    for i, tag in enumerate(tags[1:], start=1):
        assert tag == f"events:{i}" or tag.startswith(f"events:{i}:")
    shares = {crc16_slot(tag) * n // 16384 for tag in tags}
    assert len(shares) == n  # one partition in each N-th of the slot space
    # so on 3 primaries with equal slot ranges 16 partitions split 5/5/6 (CRC16 of plain
    # `events:<i>` tags happens to give 3/6/7)
    if n == 16:
        owners = Counter(crc16_slot(t) * 3 // 16384 for t in tags)
        assert sorted(owners.values()) == [5, 5, 6]


def make_config(prefix: str, partitions: int | None = 4, destinations: str = ""):
    text = (
        f"key_prefix: {prefix}\n"
        + (f"events_partitions: {partitions}\n" if partitions is not None else "")
        + "identity: {graph: false}\nworker: {claim_idle: 300ms}\n"
        + f"sources:\n  web:\n    type: collect\n    write_keys: [{WRITE_KEY}]\n"
        + (f"destinations:\n{destinations}" if destinations else "")
    )
    return parse_config(text, "p.yaml", {})


def hook(url: str, extra: str = "") -> str:
    return f"  hook:\n    type: http\n    url: {url}/h\n    batch: true\n    linger: 20ms\n{extra}"


def people(count: int = 40) -> list[dict[str, str]]:
    """Half known by userId (some with an anonymousId too: the userId wins), half only by
    an anonymousId."""
    out = []
    for i in range(count):
        if i % 2 == 0:
            ids = {"userId": f"user-{i}"}
            if i % 4 == 0:
                ids["anonymousId"] = f"anon-of-user-{i}"
        else:
            ids = {"anonymousId": f"anon-{i}"}
        out.append(ids)
    return out


def person_of(event: dict) -> str:
    return event.get("userId") or event["anonymousId"]


async def collect_and_normalize(store: Store, cfg, persons: list[dict], steps: int = 3) -> int:
    """POST each person's `steps` events (interleaved across persons, step by step) to
    /v1/batch, then let the normalize worker write them to the events partitions."""
    batch = [
        {"type": "track", "event": "Step", "messageId": f"m-{p}-{s}", "properties": {"n": s},
         **ids}
        for s in range(1, steps + 1)
        for p, ids in enumerate(persons)
    ]  # fmt: skip
    auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    async with gateway_client(cfg, store) as client:
        answer = await client.post(
            "/v1/batch", json={"batch": batch}, headers={"Authorization": auth}
        )
    assert answer.status_code == 200 and answer.json().get("refused", 0) == 0, answer.text
    worker = NormalizeWorker(cfg, store, "n")
    await worker.ensure_groups()
    while worker.stats.deliveries < len(batch):
        assert await worker.read_once(), "the normalize worker found nothing more to read"
    return len(batch)


async def stream_events(store: Store, key: str) -> list[dict]:
    return [json.loads(f[b"data"]) for _, f in await store.client.xrange(key)]


async def running(cfg, store: Store, consumer: str = "t"):
    worker = DeliverWorker(cfg, store, consumer)
    for runner in worker.runners:
        await runner.ensure_group()
    stop = asyncio.Event()
    return worker, stop, asyncio.create_task(worker.run(stop))


async def idle(store: Store, keys: list[str], *runners) -> bool:
    """Every runner's group has read and settled every partition; nothing held or sent."""
    for runner in runners:
        for key in keys:
            if not await group_settled(store.client, key, runner.group):
                return False
        if runner.holding or runner.inflight:
            return False
    return True


async def xadd(store: Store, key: str, e: dict, entry_id: str = "*") -> None:
    await store.client.xadd(
        key,
        {
            "message_id": e["messageId"],
            "source": e["context"]["source"]["name"],
            "delivery_id": e["context"]["source"]["deliveryId"],
            "type": e["type"],
            "event": e.get("event") or "",
            "data": json.dumps(e),
        },
        id=entry_id,
    )


# --- configuration ---------------------------------------------------------------------------


def test_the_partition_count_defaults_to_the_kind_of_redis_and_is_bounded():
    def count(text: str) -> int:
        return parse_config(text, "c.yaml", {}).partition_count()

    assert count("key_prefix: p\n") == 1
    assert count("redis_url: redis://127.0.0.1:6379/0\n") == 1
    assert count("redis_url: redis+sentinel://127.0.0.1:26379/mymaster\n") == 1
    assert count("redis_url: redis+cluster://127.0.0.1:7000,127.0.0.1:7001\n") == 16
    assert count("redis_url: rediss+cluster://127.0.0.1:7000\n") == 16
    assert count("redis_url: redis+cluster://127.0.0.1:7000\nevents_partitions: 3\n") == 3
    assert count("events_partitions: 1024\n") == 1024
    for bad in (0, -1, 1025):
        with pytest.raises(ConfigError) as e:
            parse_config(f"events_partitions: {bad}\n", "c.yaml", {})
        assert "c.yaml:1: events_partitions: must be from 1 to 1024" in str(e.value)


# --- writing -----------------------------------------------------------------------------


async def test_one_partition_writes_exactly_the_single_streams_key(redis_store):
    prefix = redis_store.keys.prefix
    for partitions in (None, 1):  # the default on one Redis, and said explicitly
        cfg = make_config(prefix, partitions)
        pipeline = Pipeline(cfg, redis_store)
        context = Context(source=SourceInfo("web", "collect", "d1"), library=library())
        events = [
            Event("track", f"m{i}", "t", "t", context, event="E", user_id=f"u{i}")
            for i in range(20)
        ]
        await redis_store.execute(pipeline.commands(_outcome(events)))
        keys = {k.decode() async for k in redis_store.client.scan_iter(f"{prefix}:*events*")}
        assert keys == {f"{prefix}:{{events}}:stream"}
        await redis_store.client.delete(*keys)


def _outcome(events):
    from gateway.worker import Outcome

    return Outcome(events=events)


async def test_each_persons_events_share_one_partition_in_order(redis_store):
    prefix = redis_store.keys.prefix
    cfg = make_config(prefix, 4)
    persons = people(40)
    total = await collect_and_normalize(redis_store, cfg, persons)
    keys = stream_keys(prefix, 4)
    where: dict[str, set[int]] = {}
    steps: dict[str, list[int]] = {}
    counted = 0
    for n, key in enumerate(keys):
        events = await stream_events(redis_store, key)
        assert events, f"partition {n} got none of 40 persons' events"  # spread over all 4
        counted += len(events)
        for e in events:
            where.setdefault(person_of(e), set()).add(n)
            steps.setdefault(person_of(e), []).append(e["properties"]["n"])
    assert counted == total
    for ids in persons:
        person = ids.get("userId") or ids["anonymousId"]
        assert where[person] == {expected_partition(person, 4)}, person
        assert steps[person] == [1, 2, 3], person  # in the order they were written


# --- reading -----------------------------------------------------------------------------


async def test_a_destination_gets_every_event_of_every_partition_once_in_order(redis_store, vendor):
    prefix = redis_store.keys.prefix
    cfg = make_config(prefix, 4, hook(vendor.url, "    concurrency: 1\n    batch_size: 7\n"))
    worker, stop, task = await running(cfg, redis_store)
    persons = people(24)
    total = await collect_and_normalize(redis_store, cfg, persons)
    keys = stream_keys(prefix, 4)
    await until(lambda: idle(redis_store, keys, *worker.runners), 15, what="all delivered")
    stop.set()
    await asyncio.wait_for(task, 10)
    sent = [e for r in vendor.requests for e in r.json()]
    assert len(sent) == total
    assert set(Counter(e["messageId"] for e in sent).values()) == {1}
    # one batch in flight at a time: the vendor saw each person's events in their order
    order: dict[str, list[int]] = {}
    for e in sent:
        order.setdefault(person_of(e), []).append(e["properties"]["n"])
    assert all(steps == [1, 2, 3] for steps in order.values()), order
    for key in keys:
        pending = await redis_store.client.xpending(key, "deliver:hook")
        assert pending["pending"] == 0


async def test_equal_entry_ids_on_two_partitions_are_two_events(redis_store, vendor):
    """Entry ids are per stream: 5-0 on partition 0 and 5-0 on partition 3 are different
    events, each acknowledged on its own partition."""
    prefix = redis_store.keys.prefix
    cfg = make_config(prefix, 4, hook(vendor.url))
    keys = stream_keys(prefix, 4)
    worker, stop, task = await running(cfg, redis_store)
    await xadd(redis_store, keys[0], stream_event(1), "5-0")
    await xadd(redis_store, keys[3], stream_event(2), "5-0")
    await until(lambda: idle(redis_store, keys, *worker.runners), 10, what="both settled")
    stop.set()
    await asyncio.wait_for(task, 10)
    sent = sorted(e["messageId"] for r in vendor.requests for e in r.json())
    assert sent == [stream_event(1)["messageId"], stream_event(2)["messageId"]]


async def test_a_crashed_consumers_entries_on_partition_3_are_reclaimed(redis_store, vendor):
    prefix = redis_store.keys.prefix
    cfg = make_config(prefix, 4, hook(vendor.url))
    keys = stream_keys(prefix, 4)
    crashed = DeliverWorker(cfg, redis_store, "crashed").runners[0]
    await crashed.ensure_group()
    persons = [f"user-{i}" for i in range(200)]
    on_3 = [p for p in persons if expected_partition(p, 4) == 3][:3]
    on_0 = [p for p in persons if expected_partition(p, 4) == 0][:2]
    pipeline = Pipeline(cfg, redis_store)
    context = Context(source=SourceInfo("web", "collect", "d1"), library=library())
    events = [
        Event("track", f"m-{p}", "t", "t", context, event="Step", user_id=p) for p in on_3 + on_0
    ]
    await redis_store.execute(pipeline.commands(_outcome(events)))
    assert await redis_store.client.xlen(keys[3]) == 3
    # It reads every partition, then dies before sending anything.
    items = await crashed.read(100, 0)
    assert Counter(i.entry[0] for i in items) == {keys[0]: 2, keys[3]: 3}
    await until(
        lambda: pending_idle(redis_store.client, keys[3], "deliver:hook", 300),
        what="partition 3's entries idle past claim_idle",
    )
    worker, stop, task = await running(cfg, redis_store, "survivor")
    await until(lambda: idle(redis_store, keys, *worker.runners), 10, what="all reclaimed")
    stop.set()
    await asyncio.wait_for(task, 10)
    sent = Counter(e["messageId"] for r in vendor.requests for e in r.json())
    assert sent == {f"m-{p}": 1 for p in on_3 + on_0}


async def test_a_partition_added_later_is_read_from_its_start(redis_store, vendor):
    """A destination that ran with one partition (start: latest, the default) reads a
    partition added later from its first entry: writers with the new count may have put
    events there before its reader came up."""
    prefix = redis_store.keys.prefix
    before = make_config(prefix, 1, hook(vendor.url))
    await DeliverWorker(before, redis_store, "old").runners[0].ensure_group()
    after = make_config(prefix, 3, hook(vendor.url))
    keys = stream_keys(prefix, 3)
    await xadd(redis_store, keys[2], stream_event(7))  # written before the new reader starts
    worker, stop, task = await running(after, redis_store)
    await until(lambda: idle(redis_store, keys, *worker.runners), 10, what="delivered")
    stop.set()
    await asyncio.wait_for(task, 10)
    assert [e["messageId"] for r in vendor.requests for e in r.json()] == [
        stream_event(7)["messageId"]
    ]


# --- the commands and the metrics ------------------------------------------------------------


def _config_file(tmp_path, redis_url: str, prefix: str, url: str, partitions: int) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"redis_url: {redis_url}\nkey_prefix: {prefix}\nevents_partitions: {partitions}\n"
        "worker: {claim_idle: 300ms}\n"
        f"destinations:\n  hook:\n    type: http\n    url: {url}/h\n    batch: true\n"
        "    start: earliest\n"
    )
    return str(path)


async def test_events_tail_and_show_find_events_on_any_partition(
    redis_url, redis_store, vendor, tmp_path
):
    prefix = redis_store.keys.prefix
    keys = stream_keys(prefix, 4)
    # written in time order round the partitions: 1000-0 on 0, 1001-0 on 1, ...
    for i in range(8):
        await xadd(redis_store, keys[i % 4], stream_event(i), f"{1000 + i}-0")
    path = _config_file(tmp_path, redis_url, prefix, vendor.url, 4)
    tail = await asyncio.to_thread(cli, "events", "tail", "-n", "5", "--config", path)
    assert tail.returncode == 0, tail.stderr
    shown = [json.loads(line)["messageId"] for line in tail.stdout.splitlines()]
    assert shown == [stream_event(i)["messageId"] for i in range(3, 8)]  # oldest first
    # delivered from partition 3: its attempts are in the delivery log like any other's
    cfg = load_config(path)
    worker, stop, task = await running(cfg, redis_store)
    await until(lambda: idle(redis_store, keys, *worker.runners), 10, what="delivered")
    stop.set()
    await asyncio.wait_for(task, 10)
    show = await asyncio.to_thread(
        cli, "events", "show", stream_event(7)["messageId"], "--config", path
    )
    assert show.returncode == 0, show.stderr
    assert "hook  attempt 1  ok  HTTP 200" in show.stdout


async def test_events_lag_reports_each_partition_and_drain_empties_them(
    redis_url, redis_store, vendor, tmp_path
):
    prefix = redis_store.keys.prefix
    keys = stream_keys(prefix, 4)
    path = _config_file(tmp_path, redis_url, prefix, vendor.url, 4)
    cfg = load_config(path)
    await DeliverWorker(cfg, redis_store, "t").runners[0].ensure_group()
    for i, n in enumerate([0, 3, 3, 1, 3]):
        await xadd(redis_store, keys[n], stream_event(i))
    rows = await partition_lag(cfg, redis_store)
    assert [(r.partition, r.length, r.lag, r.pending, r.settled) for r in rows] == [
        (0, 1, 1, 0, False),
        (1, 1, 1, 0, False),
        (2, 0, 0, 0, True),
        (3, 3, 3, 0, False),
    ]
    # A worker reads them all, then dies: nothing left unread, but not settled either.
    await redis_store.client.xreadgroup("deliver:hook", "gone", dict.fromkeys(keys, ">"))
    lag = await asyncio.to_thread(cli, "events", "lag", "--json", "--config", path)
    assert lag.returncode == 1, lag.stderr  # not drained
    rows = {r["partition"]: (r["lag"], r["pending"]) for r in json.loads(lag.stdout)}
    assert rows == {0: (0, 1), 1: (0, 1), 2: (0, 0), 3: (0, 3)}
    drain = await asyncio.to_thread(cli, "events", "drain", "--timeout", "30", "--config", path)
    assert drain.returncode == 0, drain.stderr
    assert "drained" in drain.stderr
    assert Counter(e["messageId"] for r in vendor.requests for e in r.json()) == {
        stream_event(i)["messageId"]: 1 for i in range(5)
    }
    lag = await asyncio.to_thread(cli, "events", "lag", "--config", path)
    assert lag.returncode == 0, lag.stderr
    assert "drained: every destination has read and settled all 4 partition(s)" in lag.stderr


async def test_metrics_sum_the_lag_over_partitions(redis_store, vendor):
    prefix = redis_store.keys.prefix
    cfg = make_config(prefix, 4, hook(vendor.url))
    keys = stream_keys(prefix, 4)
    await DeliverWorker(cfg, redis_store, "t").runners[0].ensure_group()
    for i, n in enumerate([0, 1, 3, 3, 3, 2]):
        await xadd(redis_store, keys[n], stream_event(i))
    async with gateway_client(cfg, redis_store) as client:
        text = (await client.get(OPERATOR + "/metrics")).text
    values = {
        (s.name, s.labels.get("stream"), s.labels.get("group")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert values[("gateway_stream_lag", "events", "deliver:hook")] == 6
