"""Every Redis key and script the gateway uses lives here.

Keys (all of one source share the hash tag `{<source>}`, so Redis Cluster keeps them on
one slot and the accept script may touch them together):

    <prefix>:{<source>}:raw               stream of raw deliveries, oldest trimmed first
    <prefix>:{<source>}:seen:<dedupe>     a delivery seen recently; value = its stream id
    <prefix>:{events}:stream              normalized events (fields: message_id, source,
                                          delivery_id, type, event, data = the event JSON)
    <prefix>:{quarantine}:stream          what could not become events, with the reason
    <prefix>:{dest:<name>}:retry          a destination's retries (zset: message id -> due)
    <prefix>:{dest:<name>}:retry-data     their events, attempts and first attempt (hash)
    <prefix>:{dlq}:stream                 dead letters: destination, message_id, reason, data
    <prefix>:log:delivery:<source>:<id>   what a delivery became (message id -> event name)
    <prefix>:log:event:<message id>       every attempt to send one event (JSON list)
    <prefix>:{<source>}:rl:<bucket>:<n>   a collect rate limit's count in window n (its
                                          script and layout: gateway/ratelimit.py)

Raw stream entry fields: source, delivery_id, received_at (unix ms), headers (JSON object
of the headers that matter), body (the bytes exactly as received).

The accept is one Lua script: the seen check, the append and the seen mark happen
together or not at all, so a vendor's retry after any failure is never mistaken for a
duplicate of a delivery that was not stored. Concurrent requests are grouped into one
script call per source (one Redis round trip for many deliveries).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.retry import Retry

from .errors import StoreUnavailable

try:  # hiredis >= 2.1 packs commands in C (a dependency: redis[hiredis])
    from hiredis import pack_command as _c_pack
except ImportError:  # pragma: no cover
    _c_pack = None

# KEYS[1] the raw stream; KEYS[2..] one seen key per delivery.
# ARGV[1] seen TTL (ms); ARGV[2] stream retention (approximate MAXLEN); ARGV[3] source;
# then 4 per delivery: delivery_id, received_at, headers, body.
# Reply: per delivery {1, entry id} (accepted) or {0, entry id of the first copy}.
# The first write is the XADD: if Redis refuses it (OOM), nothing was written; once a
# script has written, Redis lets it finish, so the seen mark never exists without the entry.
ACCEPT_SCRIPT = """
local out = {}
for i = 2, #KEYS do
  local first = redis.call('GET', KEYS[i])
  if first then
    out[#out + 1] = {0, first}
  else
    local j = 4 + (i - 2) * 4
    local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
      'source', ARGV[3], 'delivery_id', ARGV[j], 'received_at', ARGV[j + 1],
      'headers', ARGV[j + 2], 'body', ARGV[j + 3])
    redis.call('SET', KEYS[i], id, 'PX', ARGV[1])
    out[#out + 1] = {1, id}
  end
end
return out
"""
ACCEPT_SHA = hashlib.sha1(ACCEPT_SCRIPT.encode()).hexdigest()

# The collect API's rate limit (gateway/ratelimit.py), as a Lua function the limiter's own
# script and LIMITED_ACCEPT_SCRIPT share. keys[k0 + 2i - 1], keys[k0 + 2i]: bucket i's
# counters for the current and the previous window (i = 1..n); argv[a0] now (unix ms), then
# per bucket window (ms), limit, and how many requests to take at once (the process's lease,
# 1 for a request on its own). Returns per bucket, when every bucket allows a request, minus
# the requests taken (at least 1, at most those asked for, never over the limit); when one
# refuses, the ms until it would (0 for the buckets that allow). Counts in every bucket only
# if all allow (a refused request counts nowhere, so a flood one IP bucket refuses cannot use
# up the write key's for everyone else). A sliding window from two fixed ones; integer
# arithmetic (exact in Lua's doubles).
RATE_LUA = """
local function rate_check(keys, k0, argv, a0, n)
  local now = tonumber(argv[a0])
  local out, refused = {}, false
  for i = 1, n do
    local window = tonumber(argv[a0 + 3 * i - 2])
    local limit = tonumber(argv[a0 + 3 * i - 1])
    local want = tonumber(argv[a0 + 3 * i])
    local current = tonumber(redis.call('GET', keys[k0 + 2 * i - 1]) or '0')
    local previous = tonumber(redis.call('GET', keys[k0 + 2 * i]) or '0')
    local left = window - now % window
    -- The most requests m with previous * left + (current + m) * window <= limit * window.
    local room = math.floor((limit * window - previous * left) / window) - current
    if room < 1 then
      local wait
      if current < limit then
        -- Allowed once the previous window's weight has shrunk enough, in this window.
        wait = left - window * (limit - 1 - current) / previous
      else
        -- Allowed in the next window, once this window's weight has shrunk enough.
        wait = left + window - window * (limit - 1) / current
      end
      out[i] = math.max(1, math.ceil(wait))
      refused = true
    else
      out[i] = -math.min(want, room)
    end
  end
  if refused then
    for i = 1, n do
      if out[i] < 0 then out[i] = 0 end
    end
  else
    for i = 1, n do
      local key = keys[k0 + 2 * i - 1]
      if redis.call('INCRBY', key, -out[i]) == -out[i] then
        local window = tonumber(argv[a0 + 3 * i - 2])
        redis.call('PEXPIRE', key, window - now % window + window + 1000)
      end
    end
  end
  return out, refused
end
"""

# Collected messages whose requests' rate limits are checked in the same call (a round
# trip and a script call less than checking first; one call for many, like ACCEPT):
# KEYS[1] the raw stream, then per message its seen key and its limiter counters; ARGV:
# ttl, retention, source, then per message: how many counter keys and limiter arguments
# it has, delivery id, received at, headers, body, the limiter's now and (window, limit,
# lease) per bucket. Reply per message: {2, waits...} when a limit refuses it (nothing
# stored or counted), else {accepted 0/1, entry id} as ACCEPT's.
LIMITED_ACCEPT_SCRIPT = (
    RATE_LUA
    + """
local out, k, a = {}, 2, 4
while a <= #ARGV do
  local nkeys, nargs = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local rate, refused = rate_check(KEYS, k, ARGV, a + 6, nkeys / 2)
  if refused then
    table.insert(rate, 1, 2)
    out[#out + 1] = rate
  else
    local first = redis.call('GET', KEYS[k])
    if first then
      table.insert(rate, 1, 0)
      table.insert(rate, 2, first)
      out[#out + 1] = rate
    else
      local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'source', ARGV[3],
        'delivery_id', ARGV[a + 2], 'received_at', ARGV[a + 3], 'headers', ARGV[a + 4],
        'body', ARGV[a + 5])
      redis.call('SET', KEYS[k], id, 'PX', ARGV[1])
      out[#out + 1] = {1, id}
    end
  end
  k = k + 1 + nkeys
  a = a + 6 + nargs
end
return out
"""
)
LIMITED_ACCEPT_SHA = hashlib.sha1(LIMITED_ACCEPT_SCRIPT.encode()).hexdigest()

MAX_BATCH = 256  # deliveries per script call: bounds how long one script blocks Redis
# Script calls on their way at once. One is enough to keep up (the next batch collects
# while it runs) and gives the largest batches; more only split them.
MAX_IN_FLIGHT = 1


@dataclass(slots=True)  # not frozen: a frozen dataclass is slower to build, once per webhook
class RawDelivery:
    source: str
    delivery_id: str
    dedupe_key: str
    received_at_ms: int
    headers: bytes  # JSON
    body: bytes
    ttl_ms: int
    retention: int
    limits: tuple[list[str], list[int]] | None = None
    """Rate limits to check in the same script call: the limiter's counter keys and its
    arguments (now, then window, limit and lease per bucket); see RateLimiter.prepare."""


@dataclass(frozen=True, slots=True)
class AcceptResult:
    accepted: bool  # False: a duplicate of an earlier delivery (or refused by a limit)
    entry_id: str
    waits: tuple[int, ...] = ()
    """Refused by the delivery's rate limits: per bucket, ms until it would allow it."""


Batch = list[tuple[RawDelivery, "asyncio.Future[AcceptResult]"]]


def _fail(batch: Batch, error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def raw(self, source: str) -> str:
        return f"{self.prefix}:{{{source}}}:raw"

    def seen(self, source: str, dedupe_key: str) -> str:
        if len(dedupe_key) > 200:
            dedupe_key = "sha256:" + hashlib.sha256(dedupe_key.encode()).hexdigest()
        return f"{self.prefix}:{{{source}}}:seen:{dedupe_key}"

    def events(self) -> str:
        """The events stream: every normalized event, read by destinations' groups."""
        return f"{self.prefix}:{{events}}:stream"

    def quarantine(self) -> str:
        """Deliveries and events that could not be normalized or broke the plan."""
        return f"{self.prefix}:{{quarantine}}:stream"

    def retries(self, destination: str) -> tuple[str, str]:
        """A destination's retry set (message id -> due time) and retry data (hash)."""
        tag = f"{self.prefix}:{{dest:{destination}}}"
        return f"{tag}:retry", f"{tag}:retry-data"

    def dead_letters(self) -> str:
        """Events a destination will never take, with the reason."""
        return f"{self.prefix}:{{dlq}}:stream"

    def attempts(self, message_id: str) -> str:
        """The delivery log of one event: every attempt at every destination."""
        return f"{self.prefix}:log:event:{message_id}"

    def delivery_log(self, source: str, delivery_id: str) -> str:
        """The events one inbound delivery became (message id -> event name)."""
        return f"{self.prefix}:log:delivery:{source}:{delivery_id}"

    def handshakes(self, source: str) -> str:
        """Signing secrets a vendor handed over in a handshake (Asana, Notion)."""
        return f"{self.prefix}:{{{source}}}:handshakes"

    def pattern(self) -> str:
        return f"{self.prefix}:*"


class Store:
    """The gateway's Redis: accepts raw deliveries, answers readiness probes."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "gw",
        timeout: float = 2.0,
        *,
        embedded: bool = False,
    ) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.timeout = timeout
        self.embedded = embedded
        self._pending: list[tuple[RawDelivery, asyncio.Future[AcceptResult]]] = []
        self._scheduled = False
        self._in_flight = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def connect(cls, url: str, prefix: str = "gw", timeout: float = 2.0) -> Store:
        """A store on the Redis at `url`; an empty url gives the in-memory development store."""
        if not url:
            import fakeredis

            return cls(fakeredis.FakeAsyncRedis(), prefix, timeout, embedded=True)
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One immediate retry replaces a pooled connection that died with a restart;
            # anything longer is the vendor's retry, after our 503.
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
        )
        return cls(client, prefix, timeout)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.timeout)
        await self.client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.client.ping(), self.timeout))
        except (RedisError, OSError, TimeoutError):
            return False

    async def keep_handshake_secret(self, source: str, secret: str, now_ms: int) -> None:
        """Keep a secret a vendor handed over (the first ten, for 30 days) until the operator
        reads it with `webhook-gateway handshakes` and configures it. The first ones, not
        the last: a stranger's flood of set-up requests cannot push the real one out."""
        key = self.keys.handshakes(source)
        try:
            await asyncio.wait_for(
                self.execute(
                    [
                        ("RPUSH", key, f"{now_ms} {secret}"),
                        ("LTRIM", key, 0, 9),
                        ("PEXPIRE", key, 30 * 86_400_000),
                    ]
                ),
                self.timeout,
            )
        except (RedisError, OSError, TimeoutError) as e:
            raise StoreUnavailable("the store did not answer in time") from e

    async def handshake_secrets(self, source: str) -> list[tuple[int, str]]:
        """(received at ms, secret), oldest first."""
        out = []
        for item in await self.client.lrange(self.keys.handshakes(source), 0, -1):
            text = item.decode() if isinstance(item, bytes) else item
            when, _, secret = text.partition(" ")
            out.append((int(when), secret))
        return out

    async def forget_handshake_secrets(self, source: str) -> None:
        await self.client.delete(self.keys.handshakes(source))

    async def accept(self, delivery: RawDelivery) -> AcceptResult:
        """Store a raw delivery unless seen; StoreUnavailable if Redis did not confirm in time.

        Requests arriving together share one script call. A request that times out
        leaves its call running: the outcome is then unknown to the vendor, who retries
        and is told `duplicate` if the write did land.
        """
        [future] = self._enqueue([delivery])
        return await future

    async def accept_many(
        self, deliveries: list[RawDelivery]
    ) -> list[AcceptResult | StoreUnavailable | Exception]:
        """accept() for several deliveries (a collected batch) without a task each: each
        one's result, or the error it got, in order, once every one has its answer."""
        out: list[AcceptResult | StoreUnavailable | Exception] = []
        for future in self._enqueue(deliveries):  # answered together: one real wait
            try:
                out.append(await future)
            except Exception as e:
                out.append(e)
        return out

    def _enqueue(self, deliveries: list[RawDelivery]) -> list[asyncio.Future[AcceptResult]]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[AcceptResult]] = [loop.create_future() for _ in deliveries]
        if not self._pending:
            # One deadline per batch rather than a wait_for per request: this path runs
            # for every webhook, and per-request timers cost more than the Redis write.
            self._deadline = loop.call_later(self.timeout, self._expire, self._pending)
        self._pending.extend(zip(deliveries, futures, strict=True))
        if not self._scheduled and self._in_flight < MAX_IN_FLIGHT:
            self._scheduled = True
            # Let every request that is ready in this loop iteration join the batch.
            loop.call_soon(self._flush)
        return futures

    def _expire(self, batch: Batch) -> None:
        """The batch's deadline passed: answer what is still waiting with 503."""
        _fail(
            batch,
            StoreUnavailable(
                f"Redis did not confirm the write within {self.timeout:g} s; retry later"
            ),
        )
        if batch is self._pending:
            # Never sent (a call is still in flight): drop it, so that requests arriving
            # from now on start a batch with a deadline of their own.
            self._pending = []

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._write(batch, self._deadline))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, batch: Batch, deadline: asyncio.TimerHandle | None) -> None:
        try:
            # Per source (one hash tag per script call), with or without rate limits.
            groups: dict[tuple[str, bool], Batch] = {}
            for item in batch:
                groups.setdefault((item[0].source, item[0].limits is not None), []).append(item)
            calls = []
            for items in groups.values():
                for start in range(0, len(items), MAX_BATCH):
                    calls.append(items[start : start + MAX_BATCH])
            replies = await self._run_scripts(
                [
                    self._limited_args(c) if c[0][0].limits is not None else self._script_args(c)
                    for c in calls
                ]
            )
            for items, reply in zip(calls, replies, strict=True):
                for (_, future), answer in zip(items, reply, strict=True):
                    if future.done():
                        continue
                    if int(answer[0]) == 2:  # refused by its rate limits
                        waits = tuple(int(w) for w in answer[1:])
                        future.set_result(AcceptResult(False, "", waits))
                    else:
                        future.set_result(AcceptResult(bool(int(answer[0])), answer[1].decode()))
        except (RedisError, OSError) as e:
            _fail(
                batch, StoreUnavailable(f"Redis is unavailable ({type(e).__name__}); retry later")
            )
        except BaseException as e:
            # Whatever else went wrong, no request may be left waiting for an answer.
            _fail(batch, e if isinstance(e, Exception) else StoreUnavailable("shutting down"))
            if not isinstance(e, Exception):
                raise
        finally:
            if deadline is not None:
                deadline.cancel()  # or it would keep the batch (bodies and all) alive
            self._in_flight -= 1
            if self._pending and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

    def _script_args(self, items: list[tuple[RawDelivery, Any]]) -> tuple[Any, ...]:
        first = items[0][0]
        keys = [self.keys.raw(first.source)]
        args: list[Any] = [first.ttl_ms, first.retention, first.source]
        for d, _ in items:
            keys.append(self.keys.seen(d.source, d.dedupe_key))
            args += (d.delivery_id, d.received_at_ms, d.headers, d.body)
        return ("EVALSHA", ACCEPT_SHA, len(keys), *keys, *args)

    def _limited_args(self, items: list[tuple[RawDelivery, Any]]) -> tuple[Any, ...]:
        first = items[0][0]
        keys = [self.keys.raw(first.source)]
        args: list[Any] = [first.ttl_ms, first.retention, first.source]
        for d, _ in items:
            limit_keys, limit_args = d.limits  # type: ignore[misc]
            keys += (self.keys.seen(d.source, d.dedupe_key), *limit_keys)
            args += (len(limit_keys), len(limit_args), d.delivery_id, d.received_at_ms,
                     d.headers, d.body, *limit_args)  # fmt: skip
        return ("EVALSHA", LIMITED_ACCEPT_SHA, len(keys), *keys, *args)

    async def _run_scripts(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        try:
            return await self.execute(calls)
        except NoScriptError:
            # Redis restarted or flushed its script cache: load, then run again. A NOSCRIPT
            # reply means that script call did nothing; one that did run is a duplicate
            # (or counted a request once more: harmless for a limit) the second time.
            await self.client.script_load(ACCEPT_SCRIPT)
            await self.client.script_load(LIMITED_ACCEPT_SCRIPT)
            return await self.execute(calls)

    async def execute(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        """Send commands in one write on one pooled connection and read every reply
        (a pipeline); raises the first error reply after reading them all.

        This bypasses redis-py's command path on purpose: its asyncio packer copies a
        growing buffer for every argument (quadratic in a batch of 4 KB bodies) and its
        per-command bookkeeping costs more than the write itself on the hot paths.
        """
        if self.embedded:  # fakeredis has no socket to write to
            return [await self.client.execute_command(*c) for c in calls]
        pool = self.client.connection_pool
        for attempt in (1, 2):
            conn = await pool.get_connection()
            try:
                await conn.send_packed_command(b"".join(map(pack_command, calls)), False)
                replies = await _read_replies(conn, len(calls), self.timeout)
            except (ConnectionError, RedisConnectionError):
                await conn.disconnect()
                # A pooled connection can be dead after a Redis restart: one fresh try.
                # (Not after a timeout: Redis may have run the commands, and not all are
                # idempotent the way the accept script is.)
                if attempt == 2:
                    raise
                continue
            except BaseException:
                await conn.disconnect()  # a reply may be left unread: never reuse it
                raise
            finally:
                await pool.release(conn)
            errors = [r for r in replies if isinstance(r, Exception)]
            if errors:
                raise errors[0]
            return replies
        raise AssertionError("unreachable")


async def _read_replies(conn: Any, count: int, timeout: float) -> list[Any]:
    """`count` replies, error replies as exception objects (not raised).

    One deadline for them all, straight from the connection's parser: redis-py's
    read_response() sets up a timeout and push-message handling for each reply, which
    cost more than parsing it when a pipeline has hundreds.
    """
    parser = getattr(conn, "_parser", None)
    if parser is None or not hasattr(parser, "read_response"):  # another redis-py layout
        out = []
        for _ in range(count):
            try:
                out.append(await conn.read_response())
            except ResponseError as e:
                out.append(e)
        return out
    async with asyncio.timeout(timeout):
        return [await parser.read_response() for _ in range(count)]


def pack_command(args: tuple[Any, ...]) -> bytes:
    """One Redis command in RESP: hiredis's C packer (the same bytes, about 3x faster:
    the worker packs tens of arguments per event), else built with a single join."""
    if _c_pack is not None:
        try:
            return _c_pack(args if isinstance(args, tuple) else tuple(args))
        except TypeError:  # a bool or bytearray argument: the Python packer takes those
            pass
    return _pack_command(args)


def _pack_command(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        elif isinstance(arg, float):
            arg = repr(arg).encode()
        out += (b"$%d\r\n" % len(arg), arg, b"\r\n")
    return b"".join(out)
