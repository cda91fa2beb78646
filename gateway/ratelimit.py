"""Rate limits for the collect API: per client IP and per write key, shared through Redis.

The collect API faces the open internet with a write key every page shows and no
signature, so a request is counted in buckets (`ip:<address>` and `key:<key id>`), each
with a `Limit` such as `600/1m` from the source's config. Several gateway processes share
the counts in Redis; a refused request gets 429 with Retry-After.

Keys (one source's buckets share its hash tag, the one its raw stream already has):

    <prefix>:{<source>}:rl:<bucket>:<window number>    requests counted in that window

Each counter lives two windows (it is the "previous window" of the next one), then
expires: nothing stays.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import msgspec
from redis.exceptions import NoScriptError

from .errors import StoreUnavailable
from .store import CLUSTER_ERRORS, RATE_LUA, Store

# --- the config value: "600/1m" --------------------------------------------------------

_UNIT = r"(?:ms|s|m|h|d|w)"
LIMIT_RE = re.compile(rf"^\s*(\d+)\s*/\s*((?:\d+(?:\.\d+)?\s*{_UNIT}?)|{_UNIT})\s*$")
_MAX_COUNT = 1_000_000_000
_MAX_WINDOW = 86_400.0
_INVALID = (
    "expected a rate limit such as 600/1m, 100/s or 50000/1h (a count, '/', a duration), "
    "or null to turn it off"
)


LEASE_SHARE = 100  # a lease is 1/LEASE_SHARE of a bucket's limit ...
LEASE_MIN = 10  # ... when that is at least this many requests (else none) ...
LEASE_MAX = 1000  # ... and at most this many


def lease_size(count: int) -> int:
    """How many requests a process takes from Redis at once for a bucket of `count` a window:
    1 (every request counted in Redis) below 1000 a window, then 1% of the limit, at most
    1000. What a process takes and does not use before the window ends is lost, so a client
    gets at least the limit less 1.5% of it per gateway process, and never more.

    Below 1000 there is no lease: such a bucket is a client's (`limit_per_ip`, 600/1m by
    default), most of whose requests are the first of the window, so a lease would only add
    a round trip before them; a request counted on its own shares the store's script call."""
    size = min(LEASE_MAX, count // LEASE_SHARE)
    return size if size >= LEASE_MIN else 1


class Limit:
    """At most `count` requests per `window` seconds; written `600/1m`, `100/s`, `50000/1h`."""

    __slots__ = ("count", "lease", "window", "window_ms")

    def __init__(self, count: int, window: float) -> None:
        self.count = count
        self.window = window
        self.window_ms = round(window * 1000)
        self.lease = lease_size(count)  # see lease_size

    @classmethod
    def parse(cls, value: Any) -> Limit:
        # Imported here: config.py imports this module to decode the type.
        from .config import Duration

        if isinstance(value, Limit):
            return value
        m = LIMIT_RE.match(value) if isinstance(value, str) else None
        if not m:
            # The value is not repeated: it may have come from an environment variable.
            raise ValueError(_INVALID)
        count, span = int(m.group(1)), m.group(2)
        if not 1 <= count <= _MAX_COUNT:
            raise ValueError(
                f"the count must be between 1 and {_MAX_COUNT} (null turns the limit off)"
            )
        try:
            window = float(Duration.parse(span if span[0].isdigit() else f"1{span}"))
        except ValueError:
            window = -1.0
        if not 1 <= window <= _MAX_WINDOW:
            raise ValueError(
                "the duration must be between 1s (Retry-After counts whole seconds) and 1d"
            )
        return cls(count, window)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Limit) and (other.count, other.window) == (self.count, self.window)

    def __hash__(self) -> int:
        return hash((self.count, self.window))

    def __str__(self) -> str:
        return f"{self.count}/{self.window:g}s"

    def __repr__(self) -> str:
        return f"Limit({str(self)!r})"


def limit(text: str) -> Any:
    """A struct field defaulting to the limit `text` (shown as such in the JSON Schema)."""
    factory = lambda: Limit.parse(text)  # noqa: E731
    factory.shown = text  # type: ignore[attr-defined]
    return msgspec.field(default_factory=factory)


# --- buckets ---------------------------------------------------------------------------


def client_bucket(address: str) -> str:
    """The bucket of a client address: an IPv4 address is one client, an IPv6 one is its
    /64 (what a provider hands one subscriber, who can use any address in it)."""
    # inet_pton/inet_ntop rather than ipaddress: the same strict parsing, in C (this runs
    # for every collect request; ipaddress takes microseconds per address).
    try:
        return "ip:" + socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, address))
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, address)
    except OSError:
        # Not an address (a unix socket peer, a zone id, a proxy's odd header): bounded.
        return "ip:?" + hashlib.sha256(address.encode()).hexdigest()[:16]
    if packed[:12] == _V4_MAPPED:  # ::ffff:192.0.2.1 is the IPv4 client 192.0.2.1
        return "ip:" + socket.inet_ntop(socket.AF_INET, packed[12:])
    return "ip:" + socket.inet_ntop(socket.AF_INET6, packed[:8] + bytes(8)) + "/64"


_V4_MAPPED = bytes(10) + b"\xff\xff"


# --- the limiter -------------------------------------------------------------------------

# KEYS: per bucket, its counter for the current window and for the previous one.
# ARGV[1] now (unix ms); then per bucket: window (ms), limit, lease. Reply: RATE_LUA's, per
# bucket minus the requests taken when all allow, else the ms until each would (0 if it
# does). The request is counted in every bucket only if all allow it: a refused request
# counts nowhere, so a flood one IP bucket refuses cannot use up the write key's bucket for
# everyone else. The estimate is integer arithmetic (exact in Lua's doubles), so no
# rounding decides.
RATE_SCRIPT = (
    RATE_LUA
    + """
local out = rate_check(KEYS, 0, ARGV, 1, (#ARGV - 1) / 3)
return out
"""
)
RATE_SHA = hashlib.sha1(RATE_SCRIPT.encode()).hexdigest()

Bucket = tuple[str, Limit | None]


class _Lease:
    """Requests a process took from Redis for a bucket and has not used yet: valid in the
    window they were counted in, which ends at `until_ms`."""

    __slots__ = ("left", "number", "until_ms")

    def __init__(self, number: int, left: int, until_ms: int) -> None:
        self.number = number
        self.left = left
        self.until_ms = until_ms


class RateLimiter:
    """Counts requests in named buckets shared by every gateway process through Redis.

    A sliding window, approximated from two fixed windows the way Cloudflare describes it
    (https://blog.cloudflare.com/counting-things-a-lot-of-different-things/): the count is
    this window's plus the previous window's weighted by how much of it still overlaps the
    last `window` seconds. A plain fixed window lets 2x the limit through around a window
    boundary; a log of every request costs memory per request (60000 a minute for a write
    key); this costs two small counters per bucket.

    Leases: for a limit of 1000 or more a window, a process takes several requests from
    Redis at once (1% of the limit, at most 1000; `lease_size`) and spends them from
    memory, so a write key at 60000/1m costs Redis one script call per 300 to 600 requests,
    not one each. (A lease must outlast the requests that arrive while the next one is on
    its way: with leases of 64 a busy process kept running dry, and its requests waited.)
    They are counted in Redis when taken, so the processes together never let more than
    the limit through; what a process took and did not use by the window's end is lost (at
    most 1.5% of the limit per process and window: the next lease is taken when half of
    one is left). One lease per bucket is on its way at a time, and a request that finds
    none waits for it; when Redis grants no more (the limit is near), requests are counted
    one by one again, so the last requests of a window are as exact as without leases.

    One script call per request that needs Redis, whatever the number of buckets: over
    keys that share the group's hash tag (a source's, so Redis Cluster adds no new slot to
    it), which also makes the request count in all its buckets or in none. The calls of
    requests arriving together go to Redis in one write (a pipeline), as the store's
    accepts do.

    When Redis does not answer, `check` raises StoreUnavailable (503 + Retry-After): the
    collect path cannot store the messages without Redis anyway, so failing open would let
    a flood through only to be refused a moment later by the write.

    A refusal is also remembered in this process until its Retry-After: a flood from one
    client is then answered without Redis at all. That is never stricter than Redis would
    be, as counts only grow within a window and a refused request adds nothing.
    """

    def __init__(
        self, store: Store, clock: Callable[[], float] = time.time, remember: int = 10_000
    ) -> None:
        self.store = store
        self.clock = clock
        self.remember = remember
        self._refused: dict[tuple[str, str], float] = {}  # (group, bucket) -> refused until
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._leasing: dict[tuple[str, str], asyncio.Task[None]] = {}  # leases on their way
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[list[int]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def key(self, group: str, bucket: str, number: int) -> str:
        """The counter of `bucket` in window `number` (unix ms // window ms)."""
        return f"{self.store.keys.prefix}:{{{group}}}:rl:{bucket}:{number}"

    async def check(self, group: str, *buckets: Bucket) -> int | None:
        """Count a request in `group`'s buckets: None if every limit allows it, else the
        seconds until all would (Retry-After: rounded up, at least 1). A bucket whose
        limit is None is not counted."""
        prepared = await self.prepare(group, *buckets)
        if prepared is None or isinstance(prepared, int):
            return prepared
        keys, args, settle = prepared
        return settle(await self.run(keys, args))

    async def prepare(
        self, group: str, *buckets: Bucket
    ) -> int | tuple[list[str], list[int], Callable[[list[int]], int | None]] | None:
        """What `check` sends, for a caller that runs it inside another script call
        (Store's LIMITED_ACCEPT_SCRIPT): None if the request is allowed without Redis (no
        limit applies, or this process's leases of its buckets allow it), the seconds to
        wait if this process already knows a bucket refuses, else (counter keys,
        arguments, a function that takes the script's reply and gives `check`'s answer).
        Waits only for a lease on its way."""
        now = self.clock()
        if self._refused:
            wait = self._remembered(group, buckets, now)
            if wait:
                return _seconds(wait)
        now_ms = int(now * 1000)
        taken: list[_Lease] = []  # leases this request used (given back if it is refused)
        low: list[tuple[str, Limit, int]] = []  # leases to renew once the request is allowed
        asked: list[str] = []  # buckets counted in Redis for this request alone
        keys: list[str] = []
        args: list[int] = [now_ms]
        for bucket, lim in buckets:
            if lim is None:
                continue
            number = now_ms // lim.window_ms
            if lim.lease > 1:
                lease = self._leases.get((group, bucket))
                if lease is None or lease.number != number or lease.left <= 0:
                    lease = await self._wait_lease(group, bucket, lim, now_ms, number)
                if lease is not None:
                    lease.left -= 1
                    taken.append(lease)
                    if lease.left < lim.lease // 2:  # the next one, while this is spent
                        low.append((bucket, lim, number))
                    continue
            asked.append(bucket)
            keys += (self.key(group, bucket, number), self.key(group, bucket, number - 1))
            args += (lim.window_ms, lim.count, 1)
        if not asked:
            self._renew(group, low, now_ms)
            return None

        def settle(reply: list[int]) -> int | None:
            if not any(v > 0 for v in reply):
                self._renew(group, low, now_ms)
                return None
            for lease in taken:
                lease.left += 1  # a refused request counts nowhere
            for bucket, ms in zip(asked, reply, strict=True):
                if ms > 0:
                    self._remember(group, bucket, now + ms / 1000)
            return _seconds(max(reply) / 1000)

        return keys, args, settle

    def _renew(self, group: str, low: list[tuple[str, Limit, int]], now_ms: int) -> None:
        """Take the next lease of buckets whose lease runs low, for a request that was
        allowed: a refused one (a flood over its IP's limit, say) takes none, so it cannot
        take the write key's requests from the other processes."""
        for bucket, lim, number in low:
            self._refill(group, bucket, lim, now_ms, number)

    async def _wait_lease(
        self, group: str, bucket: str, lim: Limit, now_ms: int, number: int
    ) -> _Lease | None:
        """The bucket's lease once the one on its way (or a new one) has come: None when
        there is still none (Redis granted nothing, or failed): the request is then
        counted in Redis on its own, which also gives the wait of a refusal or the 503."""
        await asyncio.wait([self._refill(group, bucket, lim, now_ms, number)])
        lease = self._leases.get((group, bucket))
        if lease is not None and lease.number == number and lease.left > 0:
            return lease
        return None

    def _refill(
        self, group: str, bucket: str, lim: Limit, now_ms: int, number: int
    ) -> asyncio.Task[None]:
        """The task taking the bucket's next lease: the one on its way, else a new one."""
        task = self._leasing.get((group, bucket))
        if task is None:
            task = self._spawn(self._take_lease(group, bucket, lim, now_ms, number))
            self._leasing[(group, bucket)] = task
        return task

    async def _take_lease(
        self, group: str, bucket: str, lim: Limit, now_ms: int, number: int
    ) -> None:
        """Take the bucket's next lease (up to `lim.lease` requests) from Redis.
        A refusal or a failure only means no lease: a request that finds none asks Redis
        on its own and gets the answer (the wait, or 503)."""
        keys = [self.key(group, bucket, number), self.key(group, bucket, number - 1)]
        try:
            reply = await self.run(keys, [now_ms, lim.window_ms, lim.count, lim.lease])
        except Exception:
            return
        finally:
            self._leasing.pop((group, bucket), None)
        if reply[0] < 0:
            self._lease(group, bucket, lim, number, -reply[0])

    async def run(self, keys: list[str], args: list[int]) -> list[int]:
        """Send a prepared check (see `prepare`) on its own; the script's reply."""
        return await self._run(("EVALSHA", RATE_SHA, len(keys), *keys, *args))

    async def _run(self, call: tuple[Any, ...]) -> list[int]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        self._pending.append((call, future))
        if len(self._pending) == 1:
            # Let every request that is ready in this loop iteration join the write.
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        self._spawn(self._send(batch))

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[list[int]]]]) -> None:
        calls = [call for call, _ in batch]
        try:
            async with asyncio.timeout(self.store.timeout):
                try:
                    replies = await self.store.execute(calls)
                except NoScriptError:
                    # Redis restarted or flushed its scripts: NOSCRIPT means the calls did
                    # nothing (short of a flush in the middle of the pipeline, which could
                    # count a request twice: harmless for a limit).
                    await self.store.client.script_load(RATE_SCRIPT)  # every primary
                    replies = await self.store.execute(calls)
        except (*CLUSTER_ERRORS, OSError, TimeoutError) as e:
            _fail(
                batch,
                StoreUnavailable(
                    f"Redis is unavailable ({type(e).__name__}) to count requests; retry later"
                ),
            )
            return
        except BaseException as e:
            # Whatever else went wrong, no request may be left waiting for an answer.
            _fail(batch, e if isinstance(e, Exception) else StoreUnavailable("shutting down"))
            if not isinstance(e, Exception):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if not future.done():  # its request may have gone (client disconnected)
                future.set_result([int(ms) for ms in reply])

    def _remembered(self, group: str, buckets: tuple[Bucket, ...], now: float) -> float:
        wait = 0.0
        for bucket, lim in buckets:
            if lim is None:
                continue
            until = self._refused.get((group, bucket))
            if until is not None:
                if until > now:
                    wait = max(wait, until - now)
                else:
                    del self._refused[(group, bucket)]
        return wait

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _lease(self, group: str, bucket: str, lim: Limit, number: int, left: int) -> None:
        """Add `left` requests taken in window `number` to the bucket's lease."""
        key = (group, bucket)
        lease = self._leases.pop(key, None)  # back in last: the dict's order is by last lease
        if lease is None or lease.number != number:
            lease = _Lease(number, 0, (number + 1) * lim.window_ms)
        lease.left += left
        if len(self._leases) >= self.remember:
            # Full: forget the leases of past windows, then if need be those leased longest
            # ago (their requests are lost: stricter, never looser).
            now_ms = int(self.clock() * 1000)
            self._leases = {k: x for k, x in self._leases.items() if x.until_ms > now_ms}
            if len(self._leases) >= self.remember:
                items = list(self._leases.items())
                self._leases = dict(items[len(items) // 2 :])
        self._leases[key] = lease

    def _remember(self, group: str, bucket: str, until: float) -> None:
        if len(self._refused) >= self.remember:
            now = self.clock()
            self._refused = {k: t for k, t in self._refused.items() if t > now}
            if len(self._refused) >= self.remember:
                # Still full of live refusals: forget the older half (Redis still counts).
                items = list(self._refused.items())
                self._refused = dict(items[len(items) // 2 :])
        self._refused[(group, bucket)] = until


def _fail(batch: list[tuple[Any, asyncio.Future[list[int]]]], error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)


def _seconds(wait: float) -> int:
    return max(1, math.ceil(wait))
