"""Every Redis key and script the gateway uses lives here.

Keys (all of one source share the hash tag `{<source>}`, so Redis Cluster keeps them on
one slot and the accept script may touch them together):

    <prefix>:{<source>}:raw               stream of raw deliveries, oldest trimmed first
    <prefix>:{<source>}:seen:<dedupe>     a delivery seen recently; value = its stream id
    <prefix>:{events}:stream              normalized events (fields: message_id, source,
                                          delivery_id, type, event, data = the event JSON):
                                          partition 0; the others' tags: partition_tags()
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
import contextlib
import functools
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit
from zlib import crc32

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    MovedError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from .errors import StoreUnavailable

CLUSTER_ERRORS = (RedisError, RedisClusterException)
"""What the redis package raises when Redis is away; its cluster client's own exception
(no node answers at all) is not a RedisError."""

try:  # hiredis >= 2.1 packs commands in C (a dependency: redis[hiredis])
    from hiredis import pack_command as _c_pack
except ImportError:  # pragma: no cover
    _c_pack = None

# KEYS[1] the raw stream; KEYS[2..] one seen key per delivery.
# ARGV[1] seen TTL (ms); ARGV[2] stream retention (approximate MAXLEN); ARGV[3] source;
# ARGV[4] "1" under `durability: replicated`; then 4 per delivery: delivery_id,
# received_at, headers, body.
# Reply: per delivery {1, entry id} (accepted) or {0, entry id of the first copy}. Under
# replicated a duplicate's seen mark is written again unchanged, so that the WAIT after
# the call covers the first copy's write (made on another connection, maybe not
# replicated yet); otherwise a duplicate writes nothing (and is answered even when Redis
# is out of memory).
# The first write is the XADD: if Redis refuses it (OOM), nothing was written; once a
# script has written, Redis lets it finish, so the seen mark never exists without the entry.
ACCEPT_SCRIPT = """
local out = {}
for i = 2, #KEYS do
  local first = redis.call('GET', KEYS[i])
  if first then
    if ARGV[4] == '1' then redis.call('SET', KEYS[i], first, 'KEEPTTL') end
    out[#out + 1] = {0, first}
  else
    local j = 5 + (i - 2) * 4
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
# ttl, retention, source, replicated, then per message: how many counter keys and limiter arguments
# it has, delivery id, received at, headers, body, the limiter's now and (window, limit,
# lease) per bucket. Reply per message: {2, waits...} when a limit refuses it (nothing
# stored or counted), else {accepted 0/1, entry id} as ACCEPT's.
LIMITED_ACCEPT_SCRIPT = (
    RATE_LUA
    + """
local out, k, a = {}, 2, 5
while a <= #ARGV do
  local nkeys, nargs = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local rate, refused = rate_check(KEYS, k, ARGV, a + 6, nkeys / 2)
  if refused then
    table.insert(rate, 1, 2)
    out[#out + 1] = rate
  else
    local first = redis.call('GET', KEYS[k])
    if first then
      if ARGV[4] == '1' then redis.call('SET', KEYS[k], first, 'KEEPTTL') end  -- as ACCEPT
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

PATIENCE = 20.0
"""How long a worker's `replicated` write waits for a replica before it gives up (and the
batch is redone): well under the default worker.claim_idle (60 s), after which another
worker would take the same entries over."""

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


def _unavailable(error: BaseException) -> StoreUnavailable:
    if isinstance(error, StoreUnavailable):
        return error
    return StoreUnavailable(f"Redis is unavailable ({type(error).__name__}); retry later")


def _fail(batch: Batch, error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What `redis_url` names: one Redis, a Redis Cluster or a Sentinel-managed primary."""

    kind: str  # "single", "cluster" or "sentinel"
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    """cluster: some of its nodes (the rest are discovered); sentinel: the sentinels."""
    master: str = ""
    """sentinel: the name the sentinels monitor the primary by."""
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    """The sentinels' own credentials (`?sentinel_password=`), if they require any."""

    def label(self) -> str:
        """Where it is, for logs and the CLI: hosts and ports, never a password."""
        if self.kind == "single":
            url = urlsplit(self.url)
            if url.scheme == "unix":
                return f"unix://{url.path}"
            return f"{url.scheme}://{url.hostname}:{url.port or 6379}{url.path or ''}"
        hosts = ",".join(f"{h}:{p}" for h, p in self.nodes)
        if self.kind == "cluster":
            return f"Redis Cluster {hosts}"
        return f"Sentinel {hosts}, primary {self.master!r} db {self.db}"


def parse_redis_url(url: str) -> RedisTarget:
    """`redis://host:6379/0`, `rediss://...`, `unix:///path` (one Redis);
    `redis+cluster://host:port,host:port` (a cluster: any of its nodes);
    `redis+sentinel://host:port,host:port/<master name>[/<db>]` (Sentinel). A user and
    password go before the hosts (`redis+cluster://:secret@h1:7000,h2:7000`) and are used
    for every node (sentinels too). ValueError with a readable message otherwise."""
    expected = (
        "expected a URL such as redis://host:6379/0, rediss://..., unix:///path, "
        "redis+cluster://host:port,host:port or redis+sentinel://host:port,host:port/<master>"
    )
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        try:
            urlsplit(url).port  # noqa: B018 (raises ValueError for a port that is not a number)
        except ValueError:
            raise ValueError(expected) from None
        return RedisTarget("single", url)
    base, _, kind = scheme.partition("+")
    if not sep or base not in ("redis", "rediss") or kind not in ("cluster", "sentinel"):
        raise ValueError(expected)
    rest, _, query = rest.partition("?")
    options = {k: unquote(v) for k, _, v in (p.partition("=") for p in query.split("&") if p)}
    allowed = {"sentinel_username", "sentinel_password"} if kind == "sentinel" else set()
    if set(options) - allowed:
        raise ValueError(
            f"unknown URL option {sorted(set(options) - allowed)[0]!r}"
            + (" (sentinel_username and sentinel_password are read)" if allowed else "")
        )
    auth, at, hosts_and_path = rest.rpartition("@")
    if not at:
        auth, hosts_and_path = "", rest
    hosts, _, path = hosts_and_path.partition("/")
    nodes = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = item.strip(), "26379" if kind == "sentinel" else "6379"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item.strip() or '(empty)'!r} is not host:port")
        nodes.append((host, int(port)))
    username, _, password = auth.partition(":")
    master, db = "", 0
    segments = [unquote(x) for x in path.split("/") if x]
    if kind == "sentinel":
        if not segments:
            raise ValueError(
                "name the primary the sentinels monitor: redis+sentinel://host:port/<master name>"
            )
        master = segments[0]
        if len(segments) > 1:
            if not segments[1].isdigit():
                raise ValueError(f"{segments[1]!r} is not a database number")
            db = int(segments[1])
    elif segments:
        raise ValueError("a Redis Cluster has only database 0: leave the path out")
    return RedisTarget(
        kind,
        url,
        tuple(nodes),
        master,
        db,
        unquote(username) or None,
        unquote(password) or None,
        base == "rediss",
        options.get("sentinel_username") or None,
        options.get("sentinel_password") or None,
    )


@functools.cache
def partition_tags(partitions: int) -> tuple[str, ...]:
    """The hash tags of the events stream's partitions: `events` for partition 0 (the key
    a single stream always had), then `events:<i>` (or `events:<i>:<k>`, the first k that
    fits) chosen so that the N partitions' slots fall in N different N-ths of the 16384
    slots. A Redis Cluster gives each primary a contiguous range of slots, so the
    partitions spread over the primaries as evenly as their count allows (plain tags
    would land where CRC16 happens to put them: 16 of them on 3 primaries as 3, 6 and 7)."""
    if partitions <= 1:
        return ("events",)
    width = 16384 / partitions
    home = int(key_slot(b"events") // width)
    tags = ["events"]
    for i, share in enumerate((n for n in range(partitions) if n != home), start=1):
        tag, k = f"events:{i}", 0
        while int(key_slot(tag.encode()) // width) != share:
            k += 1
            tag = f"events:{i}:{k}"
        tags.append(tag)
    return tuple(tags)


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def raw(self, source: str) -> str:
        return f"{self.prefix}:{{{source}}}:raw"

    def seen(self, source: str, dedupe_key: str) -> str:
        if len(dedupe_key) > 200:
            dedupe_key = "sha256:" + hashlib.sha256(dedupe_key.encode()).hexdigest()
        return f"{self.prefix}:{{{source}}}:seen:{dedupe_key}"

    def events(self, partition: int = 0, partitions: int = 1) -> str:
        """Partition `partition` of the events stream (of `partitions`), read by the
        destinations' groups. Partition 0 is the key a single stream always had."""
        return f"{self.prefix}:{{{partition_tags(max(1, partitions))[partition]}}}:stream"

    def event_streams(self, partitions: int) -> list[str]:
        """Every partition's key, in partition order (Config.partition_count() of them)."""
        return [self.events(i, partitions) for i in range(max(1, partitions))]

    @staticmethod
    def partition_of(
        user_id: str | None, anonymous_id: str | None, message_id: str, partitions: int
    ) -> int:
        """The partition an event goes to: a stable hash (CRC-32, the same in every process
        and version) of its person, the userId, else the anonymousId (else, with neither,
        its messageId), modulo the partition count. One person's events share one
        partition, so a destination reads them in the order they were written."""
        if partitions <= 1:
            return 0
        person = user_id or anonymous_id or message_id or ""
        return crc32(person.encode()) % partitions

    def quarantine(self) -> str:
        """Deliveries and events that could not be normalized or broke the plan."""
        return f"{self.prefix}:{{quarantine}}:stream"

    def quarantine_rerun_lock(self) -> str:
        """Held (SET NX PX, owner's token) by the one quarantine rerun running: two reruns
        at once would normalize the same deliveries twice (duplicate events)."""
        return f"{self.prefix}:{{quarantine}}:rerun-lock"

    def retries(self, destination: str) -> tuple[str, str]:
        """A destination's retry set (message id -> due time) and retry data (hash)."""
        tag = f"{self.prefix}:{{dest:{destination}}}"
        return f"{tag}:retry", f"{tag}:retry-data"

    def dead_letters(self) -> str:
        """Events a destination will never take, with the reason."""
        return f"{self.prefix}:{{dlq}}:stream"

    def dead_letters_of(self, destination: str) -> str:
        """A destination's dead letters: their entry ids, scored by ms (the console's
        filter by destination reads a page of it, not the whole stream)."""
        return f"{self.prefix}:{{dlq}}:of:{destination}"

    def dead_letters_indexed_since(self) -> str:
        """The first dead letter the indexes hold (older ones, written before they
        existed, are found by reading the stream)."""
        return f"{self.prefix}:{{dlq}}:indexed-since"

    def dead_letter_of_message(self, message_id: str) -> str:
        """The entry ids of an event's dead letters, a set (the console's filter by id)."""
        return f"{self.prefix}:{{dlq}}:message:{message_id}"

    def attempts(self, message_id: str) -> str:
        """The delivery log of one event: every attempt at every destination."""
        return f"{self.prefix}:log:event:{message_id}"

    def delivery_log(self, source: str, delivery_id: str) -> str:
        """The events one inbound delivery became (message id -> event name)."""
        return f"{self.prefix}:log:delivery:{source}:{delivery_id}"

    def delivery_index(self, source: str, outcome: str) -> str:
        """A source's deliveries that ended one way (ignored, quarantined, dead_lettered):
        delivery id scored by the ms it was received, for the console's search."""
        return f"{self.prefix}:{{{source}}}:index:{outcome}"

    def turned_away(self, source: str, outcome: str) -> str:
        """A capped stream of the source's newest rejected or duplicate deliveries."""
        return f"{self.prefix}:{{{source}}}:{outcome}"

    def activity(self, unit: str, bucket: int) -> str:
        """Counts of one minute (`m`) or hour (`h`) of every process (activity.py)."""
        return f"{self.prefix}:activity:{unit}:{bucket}"

    def destination_errors(self) -> str:
        """Each destination's last error (name -> JSON)."""
        return f"{self.prefix}:activity:destination-errors"

    def audit(self) -> str:
        """The console's audit log: who did what (replay, purge, rerun), and when."""
        return f"{self.prefix}:console:audit"

    def console_secret(self) -> str:
        """The key console session cookies are signed with (unless session_secret)."""
        return f"{self.prefix}:console:session-secret"

    def console_logout(self, nonce: str) -> str:
        """A logged-out session (its nonce), until its cookie would have expired."""
        return f"{self.prefix}:console:logged-out:{nonce}"

    def logins(self, name: str) -> str:
        """Failed console logins of one user name (a counter that expires)."""
        return f"{self.prefix}:console:failed-logins:{name}"

    def handshakes(self, source: str) -> str:
        """Signing secrets a vendor handed over in a handshake (Asana, Notion)."""
        return f"{self.prefix}:{{{source}}}:handshakes"

    # Alerts (gateway/alerts/): every key under one hash tag, so that a transition and the
    # notifications it queues are one script on a Redis Cluster too.

    def alert_known(self) -> str:
        """The (rule, subject) pairs whose alert state is not ok: a set, so that one whose
        rule or subject left the config is found without a SCAN."""
        return f"{self.prefix}:{{alerts}}:known"

    def alert(self, rule: str, subject: str) -> str:
        """One rule's state for one subject (a destination, a source, or redis)."""
        return f"{self.prefix}:{{alerts}}:state:{rule}:{subject}"

    def alert_outbox(self) -> tuple[str, str]:
        """Notifications not sent yet: job id -> JSON (hash), job id -> due ms (sorted set)."""
        return f"{self.prefix}:{{alerts}}:outbox", f"{self.prefix}:{{alerts}}:due"

    def alert_lock(self) -> str:
        """Held for one evaluate_every by the process that evaluates the rules this tick."""
        return f"{self.prefix}:{{alerts}}:lock"

    def pattern(self) -> str:
        return f"{self.prefix}:*"


class Store:
    """The gateway's Redis: accepts raw deliveries, answers readiness probes.

    On a Redis Cluster, `client` is the `redis` package's cluster client (slot routing,
    MOVED/ASK and re-discovery for every command the code sends through it) and
    `execute()` routes its pipelines per slot itself, to the primaries' own connections.
    On Sentinel, `client` asks the sentinels for the primary whenever it connects, so a
    failover is followed by reconnecting."""

    def __init__(
        self,
        client: Any,
        prefix: str = "gw",
        timeout: float = 2.0,
        *,
        embedded: bool = False,
        target: RedisTarget | None = None,
        durability: str = "memory",
    ) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.timeout = timeout
        self.embedded = embedded
        self.target = target
        self.cluster = isinstance(client, RedisCluster)
        self.replicas = 1 if durability == "replicated" else 0
        """Replicas that must confirm a write before it counts (`durability: replicated`)."""
        self._nodes: dict[tuple[str, int], redis.Redis] = {}
        self._topology_lock = asyncio.Lock()
        self._refreshing: asyncio.Task[None] | None = None
        self._scripts_loaded = False
        self._pending: list[tuple[RawDelivery, asyncio.Future[AcceptResult]]] = []
        self._scheduled = False
        self._in_flight = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def connect(
        cls, url: str, prefix: str = "gw", timeout: float = 2.0, durability: str = "memory"
    ) -> Store:
        """A store on the Redis at `url` (see parse_redis_url); an empty url gives the
        in-memory development store."""
        if not url:
            import fakeredis

            return cls(fakeredis.FakeAsyncRedis(), prefix, timeout, embedded=True)
        target = parse_redis_url(url)
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        }
        client: Any
        if target.kind == "single":
            client = redis.Redis.from_url(
                url,
                **options,
                # One immediate retry replaces a pooled connection that died with a restart;
                # anything longer is the vendor's retry, after our 503.
                retry=Retry(NoBackoff(), 1),
                health_check_interval=30,
            )
        elif target.kind == "cluster":
            client = RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in target.nodes],
                username=target.username,
                password=target.password,
                ssl=target.ssl,
                # Fail fast while a primary is down (our 503, the vendor's retry), rather
                # than the client's default of ten rounds of re-discovery per command.
                retry=AsyncRetry(NoBackoff(), 2),
                **options,
            )
        else:
            auth = {"username": target.username, "password": target.password, "ssl": target.ssl}
            # The password in the URL is the primary's; sentinels usually have none (and
            # refuse an AUTH then): theirs, if any, comes as ?sentinel_password=.
            sentinel_auth = {
                "username": target.sentinel_username,
                "password": target.sentinel_password,
                "ssl": target.ssl,
            }
            sentinel = Sentinel(
                list(target.nodes), sentinel_kwargs={**sentinel_auth, **options}, **auth, **options
            )
            client = sentinel.master_for(
                target.master, db=target.db, retry=Retry(NoBackoff(), 1), **options
            )
        return cls(client, prefix, timeout, target=target, durability=durability)

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            await asyncio.gather(self._refreshing, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.timeout)
        for node in self._nodes.values():
            await node.aclose()
        await self.client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.client.ping(), self.timeout))
        except (*CLUSTER_ERRORS, OSError, TimeoutError):
            return False

    async def fewest_replicas(self) -> int | None:
        """Connected replicas of the primary (on a cluster: of the primary with fewest);
        None if Redis does not say."""
        try:
            if self.cluster:
                infos = await self.client.info("replication", target_nodes=RedisCluster.PRIMARIES)
                counts = [int(i.get("connected_slaves", 0)) for i in infos.values()]
                return min(counts) if counts else None
            info = await self.client.info("replication")
            return int(info.get("connected_slaves", 0))
        except (*CLUSTER_ERRORS, OSError, TimeoutError, AttributeError, ValueError):
            return None

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
                if isinstance(reply, Exception):  # this call's Redis failed it
                    _fail(items, _unavailable(reply))
                    continue
                for (_, future), answer in zip(items, reply, strict=True):
                    if future.done():
                        continue
                    if int(answer[0]) == 2:  # refused by its rate limits
                        waits = tuple(int(w) for w in answer[1:])
                        future.set_result(AcceptResult(False, "", waits))
                    else:
                        future.set_result(AcceptResult(bool(int(answer[0])), answer[1].decode()))
        except (*CLUSTER_ERRORS, OSError) as e:
            _fail(batch, _unavailable(e))
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
        args: list[Any] = [first.ttl_ms, first.retention, first.source, int(bool(self.replicas))]
        for d, _ in items:
            keys.append(self.keys.seen(d.source, d.dedupe_key))
            args += (d.delivery_id, d.received_at_ms, d.headers, d.body)
        return ("EVALSHA", ACCEPT_SHA, len(keys), *keys, *args)

    def _limited_args(self, items: list[tuple[RawDelivery, Any]]) -> tuple[Any, ...]:
        first = items[0][0]
        keys = [self.keys.raw(first.source)]
        args: list[Any] = [first.ttl_ms, first.retention, first.source, int(bool(self.replicas))]
        for d, _ in items:
            limit_keys, limit_args = d.limits  # type: ignore[misc]
            keys += (self.keys.seen(d.source, d.dedupe_key), *limit_keys)
            args += (len(limit_keys), len(limit_args), d.delivery_id, d.received_at_ms,
                     d.headers, d.body, *limit_args)  # fmt: skip
        return ("EVALSHA", LIMITED_ACCEPT_SHA, len(keys), *keys, *args)

    async def _run_scripts(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        """Each script call's reply, or the error it met (a cluster node that is down or
        has no replica fails only the calls it serves)."""
        if self.replicas and not self._scripts_loaded:
            # Loaded before the first call: a NOSCRIPT round would cost a WAIT of its own
            # (Redis waits even when every command was refused), two of them more than a
            # request may wait. (After a failover it can still happen: a 503 then.)
            try:
                await self.client.script_load(ACCEPT_SCRIPT)
                await self.client.script_load(LIMITED_ACCEPT_SCRIPT)
                self._scripts_loaded = True
            except (*CLUSTER_ERRORS, OSError) as e:
                return [e] * len(calls)
        replies = await self.execute(calls, replicated=True, partial=True)
        redo = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if redo:
            # Redis restarted, failed over to a replica or flushed its script cache: load
            # (on every primary of a cluster), then run those again. A NOSCRIPT reply means
            # that script call did nothing.
            try:
                await self.client.script_load(ACCEPT_SCRIPT)
                await self.client.script_load(LIMITED_ACCEPT_SCRIPT)
            except CLUSTER_ERRORS as e:
                for i in redo:
                    replies[i] = e
                return replies
            again = await self.execute([calls[i] for i in redo], replicated=True, partial=True)
            for i, reply in zip(redo, again, strict=True):
                replies[i] = reply
        return replies

    async def execute(
        self,
        calls: list[tuple[Any, ...]],
        *,
        replicated: bool = False,
        patient: bool = False,
        partial: bool = False,
    ) -> list[Any]:
        """Send commands in one write per Redis (a pipeline: one on a single Redis, one
        per primary on a cluster) and read every reply; raises the first error reply after
        reading them all.

        `replicated`: under `durability: replicated`, each Redis written to also waits
        (WAIT, within the store's timeout) until a replica has every write, else
        NotReplicated (the writes were made on the primary, not yet on a replica).
        `patient` (the workers, before they acknowledge): instead of failing at once, keep
        waiting on the same connection (which covers these writes) for up to a minute.
        `partial`: return each command's error in its place instead of raising, a node's
        failure (down, no replica) as the error of each command sent there.

        This bypasses redis-py's command path on purpose: its asyncio packer copies a
        growing buffer for every argument (quadratic in a batch of 4 KB bodies) and its
        per-command bookkeeping costs more than the write itself on the hot paths.
        """
        if self.embedded:  # fakeredis has no socket to write to
            out: list[Any] = []
            for c in calls:
                try:
                    out.append(await self.client.execute_command(*c))
                except RedisError as e:
                    if not partial:
                        raise
                    out.append(e)
            return out
        wait = self.replicas if replicated else 0
        if self.cluster:
            replies = await self._execute_cluster(calls, wait, patient, partial)
        elif partial:
            try:
                replies = await self._pipeline(self.client, calls, wait, patient)
            except (RedisError, OSError, TimeoutError) as e:
                replies = [e] * len(calls)
        else:
            replies = await self._pipeline(self.client, calls, wait, patient)
        if not partial:
            errors = [r for r in replies if isinstance(r, Exception)]
            if errors:
                raise errors[0]
        return replies

    async def execute_durably(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        """execute(calls, replicated=True, patient=True), for the workers' writes before
        an acknowledgement, except the delivery log: on a cluster its keys are on every
        shard, and a record of what happened need not hold up the work (it goes in the
        same round trip, without a WAIT of its own)."""
        if not (self.cluster and self.replicas):
            return await self.execute(calls, replicated=True, patient=True)
        log = f"{self.keys.prefix}:log:"
        durable = [i for i, c in enumerate(calls) if not (command_key(c) or "").startswith(log)]
        if len(durable) == len(calls):
            return await self.execute(calls, replicated=True, patient=True)
        kept = set(durable)
        rest = [i for i in range(len(calls)) if i not in kept]
        # A shard that is away fails its log records only (partial): not the work
        first, second = await asyncio.gather(
            self.execute([calls[i] for i in durable], replicated=True, patient=True),
            self.execute([calls[i] for i in rest], partial=True),
        )
        replies: list[Any] = [None] * len(calls)
        for i, reply in zip(durable + rest, [*first, *second], strict=True):
            replies[i] = reply
        return replies

    async def _pipeline(
        self, client: Any, calls: list[tuple[Any, ...]], wait: int, patient: bool = False
    ) -> list[Any]:
        """`calls` on one Redis, in one write; their replies, error replies as exception
        objects. With `wait`, a WAIT follows them and NotReplicated is raised when fewer
        replicas than that confirm in time (unless every command was refused: then it
        wrote nothing and the errors are the answer)."""
        wait_ms = 0
        if wait:
            # 30% of the time a request may wait: a call that meets NOSCRIPT (a fresh
            # primary after a failover) loads the scripts and runs again, WAIT and all.
            wait_ms = max(1, int(self.timeout * 300))
            calls = [*calls, ("WAIT", wait, wait_ms)]
        pool = client.connection_pool
        for attempt in (1, 2):
            conn = await pool.get_connection()
            try:
                await conn.send_packed_command(b"".join(map(pack_command, calls)), False)
                replies = await _read_replies(conn, len(calls), self.timeout)
                if any(isinstance(r, ReadOnlyError) for r in replies):
                    # A failover made this connection's Redis a replica: it wrote nothing.
                    # Connect again (Sentinel names the new primary) and send them again.
                    await conn.disconnect()
                    if attempt == 2:
                        raise next(r for r in replies if isinstance(r, ReadOnlyError))
                    continue
                if wait:
                    confirmed = replies.pop()
                    if all(isinstance(r, Exception) for r in replies):
                        return replies  # nothing was written: the refusals are the answer
                    if patient:
                        try:
                            confirmed = await self._wait_longer(conn, wait, confirmed)
                        except (ConnectionError, RedisConnectionError, OSError) as e:
                            # The writes were made: never send them again from here.
                            await conn.disconnect()
                            raise NotReplicated(
                                "the connection was lost while waiting for a replica"
                            ) from e
                    if isinstance(confirmed, Exception) or int(confirmed) < wait:
                        raise NotReplicated(
                            f"no replica confirmed the write within {wait_ms} ms; retry later"
                        )
                return replies
            except (ConnectionError, RedisConnectionError) as e:
                await conn.disconnect()
                if getattr(e, "replies_read", 0):
                    # Redis ran the first commands before the connection went: sending
                    # them again could write twice.
                    if wait:
                        raise NotReplicated(
                            "the connection was lost while waiting for a replica"
                        ) from e
                    raise
                # A pooled connection can be dead after a Redis restart (no reply at
                # all): one fresh try. (Not after a timeout: Redis may have run the
                # commands, and not all are idempotent the way the accept script is.)
                if attempt == 2:
                    raise
                continue
            except NotReplicated:
                raise
            except BaseException:
                await conn.disconnect()  # a reply may be left unread: never reuse it
                raise
            finally:
                await pool.release(conn)
        raise AssertionError("unreachable")

    async def _wait_longer(self, conn: Any, wait: int, confirmed: Any) -> Any:
        """WAIT again on the connection that wrote, for up to PATIENCE seconds: a worker's
        writes must be on a replica before it acknowledges, and redoing them would only
        add copies (a shard whose replica is being replaced stalls the work meanwhile).
        An error reply (this Redis became a replica, say) ends it at once."""
        step = max(1, min(1000, int(self.timeout * 800)))
        deadline = asyncio.get_running_loop().time() + PATIENCE
        while (
            not isinstance(confirmed, Exception)
            and int(confirmed) < wait
            and asyncio.get_running_loop().time() < deadline
        ):
            await conn.send_packed_command(pack_command(("WAIT", wait, step)), False)
            [confirmed] = await _read_replies(conn, 1, self.timeout)
        return confirmed

    # --- Redis Cluster ----------------------------------------------------------------------

    async def _execute_cluster(
        self, calls: list[tuple[Any, ...]], wait: int, patient: bool, partial: bool
    ) -> list[Any]:
        """One pipeline per primary, sent at once; commands answered MOVED (the slot moved,
        say after a failover) or ASK (a slot being migrated) did nothing and go again
        where Redis said, after the topology is read again. A primary that fails (down,
        no replica for a `replicated` write) fails the commands sent there: raised, or
        with `partial` each of them answered with the error."""
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        asking: dict[int, tuple[str, int]] = {}
        for _ in range(3):
            groups: dict[tuple[str, int], list[int]] = {}
            where: tuple[str, int] | None = None
            for i in todo:
                key = command_key(calls[i])
                try:
                    if i in asking:
                        where = asking[i]
                    elif key is not None:
                        where = await self._node_for(key)
                    elif where is None:  # keyless, nothing before it: any primary
                        where = await self._node_for("")
                except RedisConnectionError as e:  # no primary serves its slot now
                    if not partial:
                        raise
                    replies[i] = e
                    continue
                groups.setdefault(where, []).append(i)
            results = await asyncio.gather(
                *(
                    self._pipeline(self._node(node), _asking(calls, idx, asking), wait, patient)
                    for node, idx in groups.items()
                ),
                return_exceptions=True,
            )
            todo, retry, moved, failure = [], {}, False, None
            for (_, idx), result in zip(groups.items(), results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, Exception):
                        raise result  # cancelled
                    if not isinstance(result, NotReplicated):
                        # a primary is down or hangs: read the slot map again next time
                        self._spawn_refresh()
                    failure = failure or result
                    for i in idx:
                        replies[i] = result
                    continue
                for i, reply in zip(idx, _without_asking(result, idx, asking), strict=True):
                    if isinstance(reply, AskError):
                        retry[i] = (reply.host, int(reply.port))
                        todo.append(i)
                    elif isinstance(reply, MovedError):
                        moved = True
                        todo.append(i)
                    else:
                        replies[i] = reply
            if failure is not None and not partial:
                raise failure
            asking = retry
            if not todo:
                return replies
            if moved:
                await self._forget_topology()
        unavailable = StoreUnavailable("the Redis Cluster kept moving the keys' slots; retry later")
        if not partial:
            raise unavailable
        for i in todo:
            replies[i] = unavailable
        return replies

    def _spawn_refresh(self) -> None:
        """Read the slot map again in the background (not in the way of this batch's
        answers, nor of the next batch)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self._forget_topology())

    async def _node_for(self, key: str) -> tuple[str, int]:
        manager = self.client.nodes_manager
        try:
            if not manager.slots_cache:
                async with self._topology_lock:
                    if not manager.slots_cache:
                        await self.client.initialize()
            node = manager.get_node_from_slot(key_slot(key.encode()))
        except (*CLUSTER_ERRORS, OSError, IndexError, KeyError) as e:
            # no node answers, or a slot no primary serves (the cluster is failing over)
            raise RedisConnectionError(f"no primary serves {key!r}'s slot ({e})") from e
        return node.host, int(node.port)

    def _node(self, where: tuple[str, int]) -> redis.Redis:
        """A plain client of one cluster node, for the pipelines execute() sends there."""
        node = self._nodes.get(where)
        if node is None:
            kwargs = self.client.nodes_manager.connection_kwargs
            node = self._nodes[where] = redis.Redis(
                host=where[0],
                port=where[1],
                username=kwargs.get("username"),
                password=kwargs.get("password"),
                ssl=bool(self.target and self.target.ssl),
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 1),
            )
        return node

    async def _forget_topology(self) -> None:
        """Read the cluster's slots again (after MOVED, or a primary that stopped answering)."""
        async with self._topology_lock:
            # no node answers now: the next command tries again
            with contextlib.suppress(*CLUSTER_ERRORS, OSError):
                await self.client.nodes_manager.initialize()


class GroupReader:
    """XREADGROUP over several streams for one consumer, blocking until any has entries.

    On one Redis that is one command. A Redis Cluster refuses a command whose keys are
    on several slots, so there each slot's streams get a read of their own, running at
    once: read() returns what the first ones to answer brought, and a read still waiting
    carries on into the next call (its entries are never dropped; close() cancels it,
    and what Redis handed it then stays pending, to be reclaimed like a crashed
    consumer's)."""

    def __init__(
        self,
        store: Store,
        group: str,
        consumer: str,
        keys: list[str],
        count: int,
        block_ms: int,
        *,
        share: bool = False,
    ) -> None:
        """`share`: `count` is for all the streams together (partitions filled evenly),
        else for each (XREADGROUP's own COUNT: sources, one of which may carry it all)."""
        self.store = store
        self.share = share
        self.group = group
        self.consumer = consumer
        self.count = count
        self.block_ms = block_ms
        by_slot: dict[int, list[str]] = {}
        for key in keys:
            slot = key_slot(key.encode()) if store.cluster else 0
            by_slot.setdefault(slot, []).append(key)
        self.groups = list(by_slot.values())
        self.streams = len(keys) or 1
        self._reads: dict[int, asyncio.Task[Any]] = {}

    def _read(self, keys: list[str], block: int | None) -> Any:
        # COUNT is per stream: shared out, one read of N streams brings about `count`
        # entries, not N times as many (held in memory, unclaimed meanwhile)
        each = max(1, -(-self.count // self.streams)) if self.share else self.count
        return self.store.client.xreadgroup(
            self.group, self.consumer, dict.fromkeys(keys, ">"), count=each, block=block
        )

    def unreturned(self) -> set[tuple[str, str]]:
        """(stream key, entry id) of entries a read carried over has already brought in
        but read() has not returned yet: they are this consumer's, not abandoned."""
        out: set[tuple[str, str]] = set()
        for task in self._reads.values():
            if task.done() and not task.cancelled() and task.exception() is None:
                for key, items in task.result() or []:
                    name = key.decode() if isinstance(key, bytes) else str(key)
                    out.update((name, _text(eid)) for eid, _ in items)
        return out

    async def read(self, block: bool = True) -> list[Any]:
        """[[stream key, [(entry id, fields), ...]], ...] as XREADGROUP answers."""
        block_ms = self.block_ms if block else None
        if len(self.groups) == 1:
            return await self._read(self.groups[0], block_ms) or []
        for n, keys in enumerate(self.groups):
            if n not in self._reads:
                self._reads[n] = asyncio.ensure_future(self._read(keys, block_ms))
        await asyncio.wait(self._reads.values(), return_when=asyncio.FIRST_COMPLETED)
        out: list[Any] = []
        error: BaseException | None = None
        for n, task in list(self._reads.items()):
            if task.done():
                del self._reads[n]
                if task.exception() is not None:
                    error = error or task.exception()
                else:
                    out.extend(task.result() or [])
        if error is not None and not out:
            raise error
        return out

    async def close(self) -> None:
        for task in self._reads.values():
            task.cancel()
        if self._reads:
            await asyncio.wait(self._reads.values())
        self._reads.clear()


MAX_SEQ = 18446744073709551615  # the largest half of a stream entry id (2**64 - 1)
_ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")


def is_entry_id(text: str) -> bool:
    """Whether `text` is a stream entry id Redis takes (`ms-seq`, both below 2**64)."""
    if not _ENTRY_ID.fullmatch(text):
        return False
    ms, _, seq = text.partition("-")
    return int(ms) <= MAX_SEQ and int(seq) <= MAX_SEQ


def entry_key(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id as (ms, seq): the order Redis keeps entries in."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


async def stream_entries(
    store: Store, key: str, since_ms: int | None, until_ms: int | None, page: int = 500
) -> AsyncIterator[tuple[bytes, dict[bytes, bytes]]]:
    """A stream's entries written in a time range (unix ms, both ends included), oldest
    first, read `page` at a time: never the whole stream in one request."""
    start = f"{since_ms}-0" if since_ms is not None else "-"
    end = f"{until_ms}-{MAX_SEQ}" if until_ms is not None else "+"
    while True:
        entries = await store.client.xrange(key, start, end, count=page)
        for entry in entries:
            yield entry
        if len(entries) < page:
            return
        start = "(" + entries[-1][0].decode()


class NotReplicated(StoreUnavailable):
    """`durability: replicated` and no replica confirmed a write in time (503: the vendor
    retries; if the write did land, the retry is a duplicate)."""


def command_key(call: tuple[Any, ...]) -> str | None:
    """The key a command is routed by on a cluster (its first; a script's first KEYS
    entry), or None for a command without one (WAIT, SCRIPT, PING)."""
    name = call[0].upper() if isinstance(call[0], str) else call[0].decode().upper()
    if name in ("EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "FCALL", "FCALL_RO"):
        return _text(call[3]) if int(call[2]) > 0 else None
    if name in ("WAIT", "SCRIPT", "PING", "ASKING", "INFO", "FUNCTION") or len(call) < 2:
        return None
    return _text(call[1])


def _asking(
    calls: list[tuple[Any, ...]], idx: list[int], asking: dict[int, tuple[str, int]]
) -> list[tuple[Any, ...]]:
    """The calls at `idx`, each one Redis said to ASK another node for preceded by ASKING."""
    out: list[tuple[Any, ...]] = []
    for i in idx:
        if i in asking:
            out.append(("ASKING",))
        out.append(calls[i])
    return out


def _without_asking(
    result: list[Any], idx: list[int], asking: dict[int, tuple[str, int]]
) -> list[Any]:
    """The replies of a pipeline built by _asking() without the ASKINGs' own."""
    if not asking:
        return result
    out, n = [], 0
    for i in idx:
        n += i in asking  # skip the OK of its ASKING
        out.append(result[n])
        n += 1
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
    out = []
    try:
        async with asyncio.timeout(timeout):
            for _ in range(count):
                out.append(await parser.read_response())
    except (ConnectionError, RedisConnectionError) as e:
        e.replies_read = len(out)  # type: ignore[union-attr]
        raise
    return out


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
