"""Rate limits of the collect API (gateway/ratelimit.py): real Redis, a clock the tests move.

The expected Retry-After values below are worked out by hand from the sliding-window
estimate the limiter documents (Cloudflare's: previous window's count x its share of the
last window + this window's count; https://blog.cloudflare.com/counting-things-a-lot-of-
different-things/), and each is then checked the way a client would see it: one
millisecond before it a fresh limiter still refuses, at it the request goes through.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid

import httpx
import pytest

from gateway.app import create_app
from gateway.errors import ConfigError, StoreUnavailable
from gateway.ratelimit import Limit, RateLimiter, client_bucket, lease_size
from gateway.store import Store
from tests.conftest import Clock, config, free_port, raw_entries, served_gateway

# A day boundary, so that minute and hour windows start exactly here.
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def per(text: str) -> Limit:
    return Limit.parse(text)


async def keys_left(store: Store) -> list[bytes]:
    return sorted([k async for k in store.client.scan_iter(match=f"{store.keys.prefix}:*")])


# --- the config value ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count", "seconds"),
    [
        ("600/1m", 600, 60),
        ("100/s", 100, 1),
        ("50000/1h", 50000, 3600),
        (" 5 / 30s ", 5, 30),
        ("10/1.5m", 10, 90),
        ("7/d", 7, 86400),
        ("3/2000ms", 3, 2),
        ("60/60", 60, 60),  # a bare number of seconds, as durations elsewhere
    ],
)
def test_limit_is_a_count_per_duration(text, count, seconds):
    limit = Limit.parse(text)
    assert (limit.count, limit.window, limit.window_ms) == (count, seconds, seconds * 1000)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("600", "expected a rate limit such as 600/1m"),
        ("600/", "expected a rate limit such as 600/1m"),
        ("/1m", "expected a rate limit such as 600/1m"),
        ("600/fortnight", "expected a rate limit such as 600/1m"),
        ("600 per minute", "expected a rate limit such as 600/1m"),
        ("1e3/1m", "expected a rate limit such as 600/1m"),
        ("-1/1m", "expected a rate limit such as 600/1m"),
        (600, "expected a rate limit such as 600/1m"),
        (True, "expected a rate limit such as 600/1m"),
        ({"count": 600}, "expected a rate limit such as 600/1m"),
        ("0/1m", "the count must be between 1 and"),
        ("2000000000/1m", "the count must be between 1 and"),
        ("600/500ms", "the duration must be between 1s"),
        ("600/0s", "the duration must be between 1s"),
        ("600/2d", "the duration must be between 1s"),
        ("600/20y", "expected a rate limit such as 600/1m"),
    ],
)
def test_limit_refuses_anything_else_and_says_what_would_do(value, says):
    with pytest.raises(ValueError, match="^" + says.replace(".", r"\.")) as e:
        Limit.parse(value)
    assert "null" in str(e.value) or "1s" in str(e.value)  # how to turn it off / the floor


# --- counting --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "at", "wait", "retry_after"),
    [
        # 3/1m, three requests 10 s into a window: this window holds 3, so the 4th waits
        # for the next window, until 3 x (60 - t)/60 + 1 <= 3, i.e. t = 20 s: 50 + 20.
        ([10, 10, 10], 10, 70, 70),
        # Three at the very start: the next window's 20 s, 60 + 20.
        ([0, 0, 0], 0, 80, 80),
        # Three late in the previous window (50 s): at 70 s (10 s into this window) the
        # estimate is 3 x 50/60 + 0 + 1 = 3.5 > 3, and 3 x (60 - t)/60 + 1 <= 3 at t = 20.
        ([50, 50, 50], 70, 10, 10),
        # Two then one more in this window: 2 x (60 - t)/60 + 1 + 1 <= 3 at t = 30.
        ([50, 50, 65], 70, 20, 20),
        # 1/s, half a second after the first: 1 x (1 - t) + 1 <= 1 only at the next
        # window's end, 1.5 s on; Retry-After rounds it up to 2.
        ([0], 0.5, 1.5, 2),
    ],
)
async def test_over_the_limit_is_refused_until_its_retry_after(
    redis_store, history, at, wait, retry_after
):
    limit = per("1/s") if history == [0] else per("3/1m")
    clock = Clock()
    limiter = RateLimiter(redis_store, clock)
    for t in history:
        clock.now = T0 + t
        assert await limiter.check("web", ("ip:192.0.2.1", limit)) is None
    clock.now = T0 + at
    assert await limiter.check("web", ("ip:192.0.2.1", limit)) == retry_after
    # Another process (no memory of that refusal) sees the same from Redis...
    other_clock = Clock(T0 + at + wait - 0.002)
    other = RateLimiter(redis_store, other_clock)
    assert await other.check("web", ("ip:192.0.2.1", limit)) == 1
    # ... and the request is taken once the wait is over.
    other_clock.now = T0 + at + wait
    assert await other.check("web", ("ip:192.0.2.1", limit)) is None


async def test_the_nth_plus_one_request_is_refused(redis_store):
    clock = Clock(T0 + 1)
    limiter = RateLimiter(redis_store, clock)
    answers = [await limiter.check("web", ("key:k1", per("600/1m"))) for _ in range(601)]
    assert answers[:600] == [None] * 600
    assert answers[600] is not None and answers[600] >= 1


async def test_processes_share_the_count(redis_store):
    clock = Clock(T0 + 5)
    one, two = RateLimiter(redis_store, clock), RateLimiter(redis_store, clock)
    bucket = ("ip:198.51.100.7", per("3/1m"))
    assert await one.check("web", bucket) is None
    assert await two.check("web", bucket) is None
    assert await one.check("web", bucket) is None
    assert await two.check("web", bucket) is not None
    assert await one.check("web", bucket) is not None  # it had not refused before


async def test_requests_arriving_together_get_exactly_the_limit(redis_store):
    """Concurrent requests in two processes: the count is atomic, none slips through."""
    clock = Clock(T0 + 5)
    one, two = RateLimiter(redis_store, clock), RateLimiter(redis_store, clock)
    bucket = ("key:k1", per("50/1m"))
    answers = await asyncio.gather(
        *(limiter.check("web", bucket) for _ in range(60) for limiter in (one, two))
    )
    assert answers.count(None) == 50
    assert len(await keys_left(redis_store)) == 1


async def test_buckets_and_sources_are_independent(redis_store):
    clock = Clock(T0 + 5)
    limiter = RateLimiter(redis_store, clock)
    ip_limit, key_limit = per("2/1m"), per("3/1m")

    async def send(ip: str, source: str = "web") -> int | None:
        return await limiter.check(source, (f"ip:{ip}", ip_limit), ("key:k1", key_limit))

    assert [await send("192.0.2.1") for _ in range(2)] == [None, None]
    assert await send("192.0.2.1") is not None  # its IP is over
    assert await send("192.0.2.2") is None  # another IP, same key: 3 of 3
    assert await send("192.0.2.3") is not None  # the write key is over
    assert await send("192.0.2.3", source="shop") is None  # another source's buckets


async def test_a_refused_request_counts_nowhere(redis_store):
    """A flood from one IP, refused by its IP bucket, must not use up the write key's."""
    clock = Clock(T0 + 5)
    limiter = RateLimiter(redis_store, clock)
    ip_limit, key_limit = per("1/1m"), per("2/1m")
    assert await limiter.check("web", ("ip:192.0.2.1", ip_limit), ("key:k", key_limit)) is None
    for _ in range(50):
        assert await RateLimiter(redis_store, clock).check(
            "web", ("ip:192.0.2.1", ip_limit), ("key:k", key_limit)
        )
    assert await limiter.check("web", ("ip:192.0.2.2", ip_limit), ("key:k", key_limit)) is None


async def test_the_wait_is_that_of_the_tightest_limit(redis_store):
    clock = Clock(T0 + 10)
    limiter = RateLimiter(redis_store, clock)
    buckets = (("ip:192.0.2.1", per("1/1m")), ("key:k", per("1/1h")))
    assert await limiter.check("web", *buckets) is None
    # 1/1m: 1 x (60 - t)/60 + 1 <= 1 at the next window's end: 50 + 60 = 110 s.
    # 1/1h: likewise 3590 + 3600 s; both must allow, so the longer.
    assert await limiter.check("web", *buckets) == 7190


async def test_windows_reset(redis_store):
    clock = Clock(T0 + 1)
    limiter = RateLimiter(redis_store, clock)
    bucket = ("key:k", per("5/1m"))
    assert [await limiter.check("web", bucket) for _ in range(6)][-1] is not None
    clock.now = T0 + 120  # two windows on: nothing counts any more
    # Five at the window's start: 5 x (60 - t)/60 + 1 <= 5 at the next window's 12 s.
    assert [await limiter.check("web", bucket) for _ in range(6)] == [None] * 5 + [72]


async def test_no_limit_counts_nothing(redis_store):
    limiter = RateLimiter(redis_store, Clock(T0))
    assert await limiter.check("web", ("ip:192.0.2.1", None), ("key:k", None)) is None
    assert await keys_left(redis_store) == []


async def test_counters_expire_after_two_windows(redis_store):
    clock = Clock(T0 + 15)
    limiter = RateLimiter(redis_store, clock)
    await limiter.check("web", ("ip:192.0.2.1", per("10/1m")), ("key:k", per("10/1h")))
    p = redis_store.keys.prefix
    assert await keys_left(redis_store) == [
        f"{p}:{{web}}:rl:ip:192.0.2.1:{int(T0 * 1000) // 60_000}".encode(),
        f"{p}:{{web}}:rl:key:k:{int(T0 * 1000) // 3_600_000}".encode(),
    ]
    # Each lives to the end of the next window (it is then the previous one), plus 1 s.
    ttls = [await redis_store.client.pttl(k) for k in await keys_left(redis_store)]
    assert 0 < ttls[0] <= (120 - 15 + 1) * 1000
    assert 0 < ttls[1] <= (7200 - 15 + 1) * 1000


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:abcd:ef01:2345:6789", True),  # one /64
        ("2001:db8:1:2::1", "2001:db8:1:3::1", False),  # the next /64
        ("2001:DB8:1:2::1", "2001:db8:1:2:0:0:0:1", True),  # spellings of one address
        ("::ffff:192.0.2.1", "192.0.2.1", True),  # IPv4-mapped IPv6 is the IPv4 client
        ("192.0.2.1", "192.0.2.2", False),  # IPv4: one address, one client
    ],
)
def test_an_ipv6_client_is_its_64(a, b, same):
    assert (client_bucket(a) == client_bucket(b)) is same


def test_client_buckets_read_as_networks():
    assert client_bucket("2001:db8:1:2:abcd::9") == "ip:2001:db8:1:2::/64"
    assert client_bucket("203.0.113.9") == "ip:203.0.113.9"
    assert client_bucket("not an address" * 100).startswith("ip:?")
    assert len(client_bucket("not an address" * 100)) < 40


async def test_one_64_shares_one_count(redis_store):
    limiter = RateLimiter(redis_store, Clock(T0 + 1))
    limit = per("2/1m")
    for address in ("2001:db8:1:2::1", "2001:db8:1:2::2"):
        assert await limiter.check("web", (client_bucket(address), limit)) is None
    assert await limiter.check("web", (client_bucket("2001:db8:1:2:ffff::1"), limit))
    assert await limiter.check("web", (client_bucket("2001:db8:1:3::1"), limit)) is None


async def test_the_embedded_store_limits_too(store):
    """The development store (fakeredis with Lua) runs the same script."""
    limiter = RateLimiter(store, Clock(T0 + 10))
    bucket = ("ip:192.0.2.1", per("3/1m"))
    assert [await limiter.check("web", bucket) for _ in range(4)] == [None, None, None, 70]


# --- leases: a busy bucket is counted in Redis a lease at a time ------------------------


async def counter(store: Store, limiter: RateLimiter, bucket: str, limit: Limit) -> int:
    number = int(limiter.clock() * 1000) // limit.window_ms
    return int(await store.client.get(limiter.key("web", bucket, number)) or 0)


def counting_calls(store: Store) -> list[int]:
    """Count the limiter's pipelines to Redis (each holds one script call per check)."""
    calls: list[int] = []
    execute = store.execute

    async def counted(commands, **options):
        calls.append(len(commands))
        return await execute(commands, **options)

    store.execute = counted  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("3/1m", 1),
        ("600/1m", 1),  # the default per IP: every request counted in the store's call
        ("999/1m", 1),
        ("1000/1m", 10),
        ("60000/1m", 600),
        ("100000/1m", 1000),
        ("1000000000/1s", 1000),
    ],
)
def test_lease_sizes(text, size):
    """1% of the limit, at most 1000; below 1000 a window every request is counted alone."""
    assert per(text).lease == lease_size(per(text).count) == size


async def test_a_busy_bucket_costs_one_script_call_per_lease(redis_store):
    limiter = RateLimiter(redis_store, Clock(T0 + 5))
    limit = per("6400/1m")  # leases of 64
    calls = counting_calls(redis_store)
    assert [await limiter.check("web", ("key:k", limit)) for _ in range(200)] == [None] * 200
    # 200 requests: the first lease, then one more each time half of one is left
    # (after 32, 96, 160 requests): 4 leases of 64, 256 counted, 56 of them unused.
    assert sum(calls) == 4
    assert await counter(redis_store, limiter, "key:k", limit) == 256


async def test_leases_of_several_processes_never_pass_the_limit(redis_store):
    """Two processes racing for one bucket: never more than the limit, and what their
    unused leases hold is at most 1.5% of it each."""
    clock = Clock(T0 + 5)
    one, two = RateLimiter(redis_store, clock), RateLimiter(redis_store, clock)
    limit = per("1000/1m")  # leases of 10
    answers = await asyncio.gather(
        *(limiter.check("web", ("key:k", limit)) for _ in range(700) for limiter in (one, two))
    )
    allowed = answers.count(None)
    assert await counter(redis_store, one, "key:k", limit) == 1000
    assert 1000 - 2 * 15 <= allowed <= 1000
    refused = [a for a in answers if a is not None]
    assert refused and min(refused) >= 1


async def test_the_last_requests_of_a_window_are_counted_exactly(redis_store):
    """Near the limit Redis grants less than a lease, then nothing: one process alone gets
    exactly the limit, as without leases, and the refusal's wait is the exact one."""
    limiter = RateLimiter(redis_store, Clock(T0 + 5))
    answers = [await limiter.check("web", ("key:k", per("1000/1m"))) for _ in range(1001)]
    assert answers[:1000] == [None] * 1000
    # 1000 in this window, 5 s into it: the next window's 55 + 60 x (1 - 999/1000) s.
    assert answers[1000] == 56


async def test_a_lease_is_not_spent_in_the_next_window(redis_store):
    clock = Clock(T0 + 5)
    limiter = RateLimiter(redis_store, clock)
    limit = per("6400/1m")
    assert await limiter.check("web", ("key:k", limit)) is None  # a lease of 64 taken
    clock.now = T0 + 65
    assert await limiter.check("web", ("key:k", limit)) is None
    # Counted again in the new window (its own lease), not from the old one's 63 left.
    assert await counter(redis_store, limiter, "key:k", limit) == 64


async def test_a_refused_request_gives_its_lease_back(redis_store):
    """A request refused by its IP bucket took one from the write key's lease: it is
    given back, so the refusal costs the write key nothing."""
    limiter = RateLimiter(redis_store, Clock(T0 + 5))
    ip_limit, key_limit = per("1/1m"), per("1000/1m")  # the key's leases are of 10
    assert await limiter.check("web", ("ip:192.0.2.1", ip_limit), ("key:k", key_limit)) is None
    for _ in range(20):  # the first is refused by Redis, the rest from memory
        assert await limiter.check("web", ("ip:192.0.2.1", ip_limit), ("key:k", key_limit))
    calls = counting_calls(redis_store)
    for i in range(4):  # 9 left in the lease -> 5: no new lease yet
        answer = await limiter.check(
            "web", (f"ip:192.0.2.{10 + i}", ip_limit), ("key:k", key_limit)
        )
        assert answer is None
    assert await counter(redis_store, limiter, "key:k", key_limit) == 10
    assert sum(calls) == 4  # each new IP counted in Redis, the key from the lease


async def test_a_refused_request_takes_no_new_lease(redis_store):
    """A flood refused by its IP's limit must not take the write key's requests from the
    other processes: the lease it ran low is renewed only by a request that is allowed."""
    limiter = RateLimiter(redis_store, Clock(T0 + 5))
    ip_limit, key_limit = per("1/1m"), per("1000/1m")  # the key's leases are of 10
    for i in range(5):  # 10 taken, 5 used: one more use would leave less than half
        assert (
            await limiter.check("web", (f"ip:192.0.2.{i}", ip_limit), ("key:k", key_limit)) is None
        )
    refused = await limiter.check("web", ("ip:192.0.2.0", ip_limit), ("key:k", key_limit))
    assert refused is not None
    await asyncio.sleep(0)  # a renewal would be on its way now
    assert await counter(redis_store, limiter, "key:k", key_limit) == 10
    # An allowed request at the same point does renew it.
    assert await limiter.check("web", ("ip:192.0.2.9", ip_limit), ("key:k", key_limit)) is None
    await asyncio.gather(*limiter._tasks)
    assert await counter(redis_store, limiter, "key:k", key_limit) == 20


async def test_a_full_limiter_forgets_past_windows_leases_first(redis_store):
    clock = Clock(T0 + 5)
    limiter = RateLimiter(redis_store, clock, remember=3)
    limit = per("1000/1m")
    calls = counting_calls(redis_store)
    for bucket in ("key:a", "key:b"):
        assert await limiter.check("web", (bucket, limit)) is None
    clock.now = T0 + 65  # the next window: a's and b's leases are of no use any more
    for bucket in ("key:c", "key:d"):
        assert await limiter.check("web", (bucket, limit)) is None
    assert len(calls) == 4  # a lease each
    # c's lease was kept when d's made the limiter full: c is served from memory.
    assert await limiter.check("web", ("key:c", limit)) is None
    assert len(calls) == 4
    assert sorted(b for _, b in limiter._leases) == ["key:c", "key:d"]


async def test_a_lease_when_redis_is_away_is_store_unavailable():
    store = Store.connect(f"redis://127.0.0.1:{free_port()}/0", "t", timeout=0.5)
    try:
        with pytest.raises(StoreUnavailable):
            await RateLimiter(store, Clock(T0)).check("web", ("key:k", per("60000/1m")))
    finally:
        await store.close()


# --- Redis away, restarted -----------------------------------------------------------


async def test_redis_away_is_store_unavailable():
    store = Store.connect(f"redis://127.0.0.1:{free_port()}/0", "t", timeout=0.5)
    try:
        with pytest.raises(StoreUnavailable) as e:
            await RateLimiter(store, Clock(T0)).check("web", ("ip:192.0.2.1", per("3/1m")))
    finally:
        await store.close()
    assert e.value.status == 503 and e.value.headers["retry-after"]


async def test_a_refusal_is_remembered_without_redis(private_redis):
    """A flood from one client is answered from the process's memory, not from Redis."""
    store = Store.connect(private_redis.url, "t", timeout=0.5)
    clock = Clock(T0 + 10)
    limiter = RateLimiter(store, clock)
    bucket = ("ip:192.0.2.1", per("1/1m"))
    try:
        assert await limiter.check("web", bucket) is None
        assert await limiter.check("web", bucket) == 110
        private_redis.stop()
        clock.now += 100
        assert await limiter.check("web", bucket) == 10  # from memory: Redis is gone
        clock.now += 10
        with pytest.raises(StoreUnavailable):  # its wait is over: Redis is asked again
            await limiter.check("web", bucket)
    finally:
        await store.close()


async def test_the_script_is_loaded_again_after_a_flush(private_redis):
    store = Store.connect(private_redis.url, "t", timeout=2)
    limiter = RateLimiter(store, Clock(T0 + 10))
    bucket = ("ip:192.0.2.1", per("2/1m"))
    try:
        assert await limiter.check("web", bucket) is None
        await store.client.script_flush()
        assert await limiter.check("web", bucket) is None
        assert await limiter.check("web", bucket) == 80  # the flushed call counted once
    finally:
        await store.close()


# --- through the collect API (gateway/collect.py) -------------------------------------

WRITE_KEY = "wk_rate_0123456789"


def _cfg(**web):
    source = {"type": "collect", "write_keys": [WRITE_KEY], "trusted_proxies": ["10.0.0.0/8"]}
    return config(json.dumps({"sources": {"web": {**source, **web}}}))


def _client(cfg, store: Store, clock: Clock, peer: str = "10.0.0.1") -> httpx.AsyncClient:
    app = create_app(cfg, store=store, clock=clock)
    transport = httpx.ASGITransport(app=app, client=(peer, 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


def _track(ip: str | None = None) -> dict:
    headers = {"X-Forwarded-For": ip} if ip else {}
    message = {"type": "track", "event": "E", "userId": "u", "messageId": str(uuid.uuid4())}
    return {"json": {**message, "writeKey": WRITE_KEY}, "headers": headers}


async def test_collect_refuses_a_client_over_its_limit_with_429(redis_store):
    clock = Clock(T0 + 10)
    async with _client(_cfg(limit_per_ip="3/1m"), redis_store, clock) as client:
        answers = [await client.post("/v1/track", **_track("203.0.113.7")) for _ in range(4)]
        neighbour = await client.post("/v1/track", **_track("203.0.113.8"))
        clock.now = T0 + 80  # the Retry-After given: 70 s on
        again = await client.post("/v1/track", **_track("203.0.113.7"))
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[3]
    assert refused.headers["retry-after"] == "70"
    assert refused.json()["success"] is False
    assert refused.json()["reason"] == "rate_limited"
    assert neighbour.status_code == 200
    assert again.status_code == 200
    assert len(await raw_entries(redis_store, "web")) == 5  # the refused one is not stored


async def test_collect_limits_the_write_key_across_clients(redis_store):
    clock = Clock(T0 + 10)
    cfg = _cfg(limit_per_write_key="3/1m")
    async with _client(cfg, redis_store, clock) as client:
        answers = [
            (await client.post("/v1/track", **_track(f"203.0.113.{i}"))).status_code
            for i in range(4)
        ]
    assert answers == [200, 200, 200, 429]


async def test_collect_limits_default_on_and_null_turns_them_off(redis_store):
    on, off = _cfg(), _cfg(limit_per_ip=None, limit_per_write_key=None)
    web = on.sources["web"]
    assert (web.limit_per_ip.count, web.limit_per_ip.window) == (600, 60)
    assert (web.limit_per_write_key.count, web.limit_per_write_key.window) == (60000, 60)
    assert off.sources["web"].limit_per_ip is None
    clock = Clock(T0 + 10)
    async with _client(off, redis_store, clock) as client:
        assert (await client.post("/v1/track", **_track("203.0.113.7"))).status_code == 200
    assert not [k for k in await keys_left(redis_store) if b":rl:" in k]


def test_a_bad_limit_in_config_names_its_key():
    with pytest.raises(ConfigError) as e:
        _cfg(limit_per_ip="600/fortnight")
    assert "sources.web.limit_per_ip" in str(e.value)
    assert "expected a rate limit such as 600/1m" in str(e.value)


async def test_a_flood_on_the_collect_api_leaves_webhooks_alone(redis_store):
    """The limiter runs on /v1/ only: a webhook from the same address is not counted."""
    cfg = config(
        json.dumps(
            {
                "sources": {
                    "web": {"type": "collect", "write_keys": [WRITE_KEY], "limit_per_ip": "1/1m"},
                    "hook": {"type": "github", "secrets": ["s3cret"]},
                }
            }
        )
    )
    clock = Clock(T0 + 10)
    async with _client(cfg, redis_store, clock, peer="203.0.113.7") as client:
        assert (await client.post("/v1/track", **_track())).status_code == 200
        assert (await client.post("/v1/track", **_track())).status_code == 429
        hook = await client.post("/webhooks/hook", content=b"{}")
    assert hook.status_code == 401  # the front door's own answer (no signature), not 429


async def test_the_id_endpoint_is_limited_per_client_too(redis_store):
    """POST /v1/id faces the internet like the collect API: the source's limit per IP."""
    site = "https://www.example.com"
    cfg = _cfg(limit_per_ip="2/1m", origins=[site])
    clock = Clock(T0 + 10)
    async with _client(cfg, redis_store, clock) as client:
        answers = [
            await client.post(
                "/v1/id",
                json={"url": f"{site}/?utm_source=x"},
                headers={"Origin": site, "X-Forwarded-For": "203.0.113.7"},
            )
            for _ in range(3)
        ]
        track = await client.post("/v1/track", **_track("203.0.113.7"))  # the same budget
        other = await client.post(
            "/v1/id", json={}, headers={"Origin": site, "X-Forwarded-For": "203.0.113.8"}
        )
    assert [a.status_code for a in answers] == [200, 200, 429]
    # Two at 10 s into the window: 2 x (60 - t)/60 + 1 <= 2 at the next window's 30 s: 50 + 30.
    assert answers[2].headers["retry-after"] == "80"
    assert answers[2].headers["access-control-allow-origin"] == site
    assert track.status_code == 429
    assert other.status_code == 200


# --- refused before the body is read -----------------------------------------------------


async def _headers_only(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """POST /v1/batch's headers, announcing a 500 KB body that is never sent; the answer's
    status and headers. A server that waits for the body does not answer: the read's
    deadline then fails the test."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [
        "POST /v1/batch HTTP/1.1",
        "Host: gateway",
        "Content-Type: application/json",
        "Content-Length: 500000",  # within max_body: only the limit may refuse it unread
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    finally:
        writer.close()
    status_line, *fields = head.decode("latin-1").split("\r\n")
    answer = dict(f.split(": ", 1) for f in fields if f)
    return int(status_line.split()[1]), {k.lower(): v for k, v in answer.items()}


def _basic(key: str = WRITE_KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.mark.parametrize(
    "limits",
    [
        {"limit_per_write_key": "1/1m", "limit_per_ip": None},
        {"limit_per_ip": "1/1m", "limit_per_write_key": None},
    ],
    ids=["write key", "client"],
)
async def test_a_flood_with_a_basic_key_is_refused_before_its_body_is_read(redis_store, limits):
    """With the write key in the Basic header, both limits are counted before the body:
    a request over one gets 429 + Retry-After without the gateway reading 500 KB."""
    clock = Clock(T0 + 10)
    message = {"type": "track", "event": "E", "userId": "u", "messageId": str(uuid.uuid4())}
    async with served_gateway(_cfg(**limits), redis_store, clock) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            first = await client.post("/v1/batch", json={"batch": [message]}, headers=_basic())
        status, headers = await _headers_only(url, _basic())
    assert first.status_code == 200
    assert status == 429
    # 1/1m, one request 10 s into the window: allowed again at the next window's end, 50 + 60.
    assert headers["retry-after"] == "110"
    assert len(await raw_entries(redis_store, "web")) == 1


async def test_an_unknown_basic_key_is_refused_before_its_body_is_read(redis_store):
    async with served_gateway(_cfg(), redis_store, Clock(T0 + 10)) as url:
        status, _ = await _headers_only(url, _basic("wk_not_ours"))
    assert status == 401
    assert not [k for k in await keys_left(redis_store) if b":rl:" in k]  # nothing counted


async def test_a_single_message_is_limited_and_stored_in_one_call_even_after_a_flush(
    private_redis,
):
    """analytics.js's one message: its limits ride in the store's script call, which is
    loaded again when Redis forgot its scripts; a refusal stores and counts nothing."""
    store = Store.connect(private_redis.url, "t", timeout=2)
    clock = Clock(T0 + 10)
    try:
        async with _client(_cfg(limit_per_ip="2/1m"), store, clock) as client:
            first = await client.post("/v1/track", **_track("203.0.113.7"))
            await store.client.script_flush()
            second = await client.post("/v1/track", **_track("203.0.113.7"))
            third = await client.post("/v1/track", **_track("203.0.113.7"))
        assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
        assert third.headers["retry-after"] == "80"
        assert await store.client.xlen(store.keys.raw("web")) == 2
        counters = [k async for k in store.client.scan_iter(match="t:{web}:rl:ip:*")]
        assert [int(await store.client.get(k)) for k in counters] == [2]
    finally:
        await store.close()


async def test_single_messages_arriving_together_get_exactly_the_limit_per_client(
    redis_store,
):
    clock = Clock(T0 + 10)
    async with _client(_cfg(limit_per_ip="3/1m"), redis_store, clock) as client:
        answers = await asyncio.gather(
            *(client.post("/v1/track", **_track("203.0.113.9")) for _ in range(6)),
            client.post("/v1/track", **_track("203.0.113.10")),
        )
    codes = [a.status_code for a in answers]
    assert sorted(codes[:6]) == [200, 200, 200, 429, 429, 429] and codes[6] == 200
    assert len(await raw_entries(redis_store, "web")) == 4
