"""The deliver worker: the events stream -> each destination, batched, retried, dead-lettered.

Each destination reads the events stream through its own consumer group
(`deliver:<name>`, one on each of the stream's partitions, all read at once), so a slow
or failing destination never holds up another. Events its route does not want are
acknowledged at once; the others are batched (count, bytes, linger) and sent. Per event,
the destination answers ok, retry (maybe after a Retry-After) or fail:

- ok: acknowledged.
- fail (the vendor will never take it): dead-lettered with the reason, acknowledged.
- retry: kept in the destination's retry set in Redis (due time, attempts, first
  attempt), acknowledged; sent again after an exponential backoff with full jitter,
  until it succeeds, fails, or passes `max_attempts` / `max_age` (then dead-lettered).

Before that, consent: an event whose person denied the destination's purpose (ads or
analytics, `Destination.consent_purpose`) is, under `consent: skip` (the default), not
sent: acknowledged, logged as skipped with the reason, counted, never retried or
dead-lettered. Under `consent: anonymize` it is sent without personal data.

Retry state lives in Redis, so it survives restarts; a retry being sent is leased, not
removed, so a kill -9 mid-send means it is sent again (with the same messageId).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import structlog
from redis.exceptions import RedisError, ResponseError

from destinations import DESTINATION_TYPES, Destination, Result, Route, Shaper
from destinations.base import anonymize, consent_denied

from .config import Config
from .errors import StoreUnavailable
from .metrics import Metrics
from .store import CLUSTER_ERRORS, GroupReader, Store
from .worker import _sleep_or_stop, trimmed_unread

LEASE_SECONDS = 60.0  # a retry being sent is not handed out again before this

# Hand out due retries: move their due time past a lease, return them with their data.
# KEYS[1] retry set (zset: message id -> due time), KEYS[2] retry data (hash).
LEASE_SCRIPT = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for i, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[3], id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
end
return out
"""

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class RetryState(msgspec.Struct):
    event: dict[str, Any]
    attempts: int
    first_at: float
    reason: str = ""
    earlier: int = 0
    """Attempts before a `dlq replay` (counted in the delivery log's numbering, not
    against max_attempts: a replay gets a fresh count)."""


@dataclass
class Item:
    """An event on its way to a destination."""

    event: dict[str, Any]
    entry: tuple[str, str] | None
    """(events stream partition key, entry id): entry ids of different partitions can be
    equal. None: it came from the retry set."""
    attempts: int = 0
    first_at: float = 0.0
    size: int = 0
    earlier: int = 0  # attempts before a dlq replay, for the delivery log's numbering


@dataclass
class DestStats:
    sent: int = 0
    retried: int = 0
    dead_lettered: int = 0
    skipped: int = 0  # not for this destination (its route)
    withheld: int = 0  # for it, but its person denied consent to its purpose


@dataclass
class Runner:
    """One destination's reader, sender and retry loop."""

    name: str
    destination: Destination
    store: Store
    consumer: str
    claim_idle_ms: int
    log_retention: int
    metrics: Metrics
    dlq_retention: int = 1_000_000
    partitions: int = 1
    """How many partitions the events stream has (Config.partition_count())."""
    stats: DestStats = field(default_factory=DestStats)

    def __post_init__(self) -> None:
        config = self.destination.config
        self.route = Route(config)
        self.shape = Shaper(config)
        self.group = f"deliver:{self.name}"
        keys = self.store.keys
        # Every partition of the events stream, each read through its own group of the
        # same name: a group lives in one stream.
        self.events_keys = keys.event_streams(self.partitions)
        self._key_names = {key.encode(): key for key in self.events_keys}
        self._reader: GroupReader | None = None
        self.retry_key, self.retry_data = keys.retries(self.name)
        self.slots = asyncio.Semaphore(config.concurrency)
        # Entries (partition key, entry id) read by this process and not yet settled.
        self.holding: set[tuple[str, str]] = set()
        self._reported: dict[str, int] = {}
        self.inflight: set[asyncio.Task[None]] = set()
        self.log = structlog.get_logger("gateway.deliver").bind(destination=self.name)
        # A blocking read must end before the socket timeout would cut it.
        self.block_ms = max(
            10, min(int(float(config.linger) * 1000) or 10, int(self.store.timeout * 500))
        )

    # --- the events stream -------------------------------------------------------------

    async def ensure_group(self) -> None:
        """The destination's group on every partition. `start` applies to a destination
        seen for the first time; one that already reads some partitions reads a partition
        new to it (events_partitions was raised) from its first entry: the writers may
        have put events there for it before this reader came up."""
        client = self.store.client
        names = (self.group, self.group.encode())
        missing = []
        for key in self.events_keys:
            try:
                groups = await client.xinfo_groups(key)
            except ResponseError:  # no such stream yet
                groups = []
            if not any(g.get("name") in names for g in groups):
                missing.append(key)
        known = len(missing) < len(self.events_keys)
        earliest = known or self.destination.config.start == "earliest"
        for key in missing:
            entries_read = None
            if earliest:
                # Entries trimmed before this group existed were never its to lose: count
                # them as read (Redis 7+), or they would be reported as lost.
                with contextlib.suppress(ResponseError):
                    info = await client.xinfo_stream(key)
                    if isinstance(info.get("entries-added"), int):
                        entries_read = info["entries-added"] - int(info.get("length", 0))
            try:
                await client.xgroup_create(
                    key,
                    self.group,
                    id="0" if earliest else "$",
                    mkstream=True,
                    entries_read=entries_read,
                )
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    async def read(self, count: int, block_ms: int) -> list[Item]:
        """New entries of every partition (up to `count` from each; waiting up to
        `block_ms` when there are none, not at all for 0): those the route does not want
        are acknowledged right away."""
        reader = self._reader
        if reader is None:
            reader = self._reader = GroupReader(
                self.store,
                self.group,
                self.consumer,
                self.events_keys,
                count,
                self.block_ms,
                share=True,  # the partitions fill evenly
            )
        reader.count = count
        if block_ms > 0:
            reader.block_ms = block_ms
        reply = await reader.read(block=block_ms > 0)
        entries: list[tuple[tuple[str, str], dict[bytes, bytes]]] = []
        for key, found in reply:
            stream = self._key_names.get(key) or (key.decode() if isinstance(key, bytes) else key)
            entries += [((stream, eid.decode()), f) for eid, f in found]
        return await self.admit(entries)

    async def admit(self, entries: list[tuple[tuple[str, str], dict[bytes, bytes]]]) -> list[Item]:
        """Entries ((partition key, entry id), fields) this destination wants, as items;
        the others are acknowledged."""
        items: list[Item] = []
        skip: list[tuple[str, str]] = []
        broken = []
        for entry, fields in entries:
            if not fields or not self.route.wants(
                fields.get(b"source", b"").decode("utf-8", "replace"),
                fields.get(b"type", b"").decode("utf-8", "replace"),
                fields.get(b"event", b"").decode("utf-8", "replace"),
            ):
                skip.append(entry)
                continue
            data = fields.get(b"data", b"{}")
            try:
                event = self.shape(_decode(data))
            except (msgspec.DecodeError, AttributeError, TypeError) as e:
                broken.append((entry, fields, f"the event in the stream is unreadable: {e}"))
                continue
            items.append(Item(event, entry, size=len(data)))
        writes: list[tuple[Any, ...]] = []
        for entry, fields, reason in broken:
            writes.append(
                self.dead_letter(
                    {
                        "messageId": fields.get(b"message_id", b"").decode("utf-8", "replace"),
                        "type": "unknown",
                    },
                    0,
                    reason,
                    time.time(),
                )
            )
            skip.append(entry)
        if writes:
            replies = await self.store.execute_durably(writes)  # on a replica before the ack
            await self.index_dead_letters(writes, replies)
        if skip:
            self.stats.skipped += len(skip)
            await self.store.execute(self.acks(skip))
        # Held from here on: reclaim() leaves them alone until they are settled.
        self.holding.update(item.entry for item in items if item.entry)
        return items

    def acks(self, entries: list[tuple[str, str]]) -> list[tuple[Any, ...]]:
        """XACK commands for (partition key, entry id)s: one per partition."""
        if len(self.events_keys) == 1:
            return [("XACK", self.events_keys[0], self.group, *[e for _, e in entries])]
        by_stream: dict[str, list[str]] = {}
        for stream, entry_id in entries:
            by_stream.setdefault(stream, []).append(entry_id)
        return [("XACK", stream, self.group, *ids) for stream, ids in by_stream.items()]

    async def reclaim(self) -> list[Item]:
        """Entries a crashed process of this destination read but never finished (up to
        `batch_size` from each partition per call)."""
        entries: list[tuple[tuple[str, str], dict[bytes, bytes]]] = []
        lost = 0
        # and entries a read of ours brought in that read() has not returned yet
        ours = self._reader.unreturned() if self._reader is not None else set()
        for key in self.events_keys:
            reply = await self.store.client.xautoclaim(
                key,
                self.group,
                self.consumer,
                self.claim_idle_ms,
                start_id="0-0",
                count=self.destination.batch_size,
            )
            # XAUTOCLAIM also hands back this process's own entries that are still waiting
            # in a batch or for a slow vendor: those are not lost, leave them be.
            for eid, f in reply[1]:
                entry = (key, eid.decode())
                if f and entry not in self.holding and entry not in ours:
                    entries.append((entry, f))
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:
                await self.store.execute([("XACK", key, self.group, *deleted)])
            lost += len(deleted) + await trimmed_unread(self.store, key, self.group, self._reported)
        if lost:
            self.metrics.destination(self.name, "lost", lost)
            self.log.error(
                "deliver.events_lost",
                count=lost,
                reason="trimmed from the events stream before delivery; raise "
                "events_retention, or look at why this destination is behind",
            )
        return await self.admit(entries)

    # --- sending -------------------------------------------------------------------------

    async def dispatch(self, items: list[Item]) -> None:
        """Send a batch when a slot is free (up to `concurrency` batches in flight)."""
        # Kept claimed from now on: a batch waiting for a slot behind slow sends must not
        # look abandoned to another worker's reclaim (or to the retry lease) either.
        keepalive = asyncio.create_task(self.keep_claimed(items))
        try:
            await self.slots.acquire()
        except BaseException:
            keepalive.cancel()
            raise
        task = asyncio.create_task(self._deliver(items, keepalive))
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)
        task.add_done_callback(lambda _t: self.slots.release())

    def withheld(self, event: dict[str, Any]) -> Result | None:
        """A `skipped` result for an event its person denied this destination's purpose
        under `consent: skip`; None for one to send."""
        if self.destination.consent != "skip":
            return None
        purpose = self.destination.consent_purpose
        denied = consent_denied(event, purpose)
        if not denied:
            return None
        return Result("skipped", f"consent: {purpose} denied ({', '.join(denied)})")

    def outgoing(self, event: dict[str, Any]) -> dict[str, Any]:
        """The event as the destination gets it: under `consent: anonymize`, without
        personal data when its person denied the purpose (ids only for analytics tools,
        which count nothing without one). The stored event is left whole."""
        purpose = self.destination.consent_purpose
        if self.destination.consent == "anonymize" and consent_denied(event, purpose):
            return anonymize(event, keep_ids=purpose != "ads")
        return event

    async def _deliver(self, items: list[Item], keepalive: asyncio.Task[None]) -> None:
        try:
            now = time.time()
            started = time.perf_counter()
            todo = list(range(len(items)))
            try:
                gated = [self.withheld(i.event) for i in items]
                todo = [n for n, r in enumerate(gated) if r is None]
                sent = (
                    await self.destination.send([self.outgoing(items[n].event) for n in todo], now)
                    if todo
                    else []
                )
                if len(sent) != len(todo):
                    raise ValueError(f"{len(sent)} results for {len(todo)} events")
                for n, result in zip(todo, sent, strict=True):
                    gated[n] = result
                results: list[Result] = [r for r in gated if r is not None]
            except Exception as e:  # a destination bug must not lose (or strand) the batch
                self.log.exception("deliver.send_failed")
                results = [Result("retry", f"unexpected {type(e).__name__}: {e}")] * len(items)
            latency_ms = round((time.perf_counter() - started) * 1000, 1) if todo else 0.0
            try:
                await self.settle(items, results, now, latency_ms)
            except Exception as e:
                # Unacknowledged entries stay pending and are reclaimed; leased retries
                # come back when their lease ends. Either way they are sent again, not lost.
                self.holding.difference_update(i.entry for i in items if i.entry)
                if isinstance(e, RedisError | OSError):
                    self.log.warning("deliver.settle_failed", error=type(e).__name__)
                else:
                    self.log.exception("deliver.settle_failed")
        finally:
            keepalive.cancel()

    async def settle(
        self, items: list[Item], results: list[Result], now: float, latency_ms: float
    ) -> None:
        """Record what happened to each event, then acknowledge it (in that order)."""
        config = self.destination.config
        writes: list[tuple[Any, ...]] = []
        acks: list[tuple[str, str]] = []
        done: list[str] = []  # retry-set members finished (sent or dead-lettered)
        counts = {"ok": 0, "retry": 0, "fail": 0, "skipped": 0}
        records: dict[tuple[Any, ...], bytes] = {}
        for item, result in zip(items, results, strict=True):
            message_id = item.event.get("messageId", "")
            attempts = item.attempts + 1
            first_at = item.first_at or now
            outcome = result.outcome
            reason = result.reason
            if outcome == "retry":
                if config.max_attempts is not None and attempts >= config.max_attempts:
                    outcome, reason = "fail", f"gave up after {attempts} attempts: {reason}"
                elif now - first_at >= float(config.max_age):
                    outcome = "fail"
                    reason = f"gave up after {float(config.max_age):g} s: {reason}"
            counts[outcome] += 1
            if outcome == "retry":
                delay = self.backoff(attempts, result.retry_after)
                state = RetryState(item.event, attempts, first_at, reason, item.earlier)
                writes.append(("HSET", self.retry_data, message_id, _encode(state)))
                writes.append(("ZADD", self.retry_key, now + delay, message_id))
            elif outcome == "fail":
                # The dead letter counts every attempt, so a replay numbers on from it.
                writes.append(self.dead_letter(item.event, item.earlier + attempts, reason, now))
                writes += self.index_dead_letter(item.event, now)
            if outcome in ("retry", "fail"):
                self.metrics.activity.destination_error(self.name, now, reason)
            if outcome != "retry" and item.entry is None:
                done.append(message_id)
            if item.entry is not None:
                acks.append(item.entry)
            if self.log_retention:
                # The events of a batch mostly share one record: encode each kind once.
                # Numbered on across a dlq replay: its first send is attempt N + 1.
                shape = (item.earlier + attempts, outcome, result.status, reason)
                record = records.get(shape)
                if record is None:
                    record = records[shape] = _encode(
                        {
                            "destination": self.name,
                            "at": round(now, 3),
                            "attempt": item.earlier + attempts,
                            "outcome": outcome,
                            "status": result.status,
                            "latency_ms": latency_ms,
                            "reason": reason[:300],
                        }
                    )
                key = self.store.keys.attempts(message_id)
                writes.append(("RPUSH", key, record))
                writes.append(("EXPIRE", key, self.log_retention))
        if writes:
            # Under `durability: replicated`, retries and dead letters are on a replica
            # before the events are acknowledged: on a cluster they live on other shards.
            replies = await self.store.execute_durably(writes)
            if counts["fail"]:
                await self.index_dead_letters(writes, replies)
        after: list[tuple[Any, ...]] = []
        if acks:
            after += self.acks(acks)
            self.holding.difference_update(acks)
        if done:
            after.append(("ZREM", self.retry_key, *done))
            after.append(("HDEL", self.retry_data, *done))
        if after:
            await self.store.execute(after)
        self.stats.sent += counts["ok"]
        self.stats.retried += counts["retry"]
        self.stats.dead_lettered += counts["fail"]
        self.stats.withheld += counts["skipped"]
        for outcome, label in (
            ("ok", "sent"),
            ("retry", "retried"),
            ("fail", "dead_lettered"),
            ("skipped", "skipped"),
        ):
            if counts[outcome]:
                self.metrics.destination(self.name, label, counts[outcome])
        if counts["skipped"] < len(items):  # a batch withheld whole took no time to send
            self.metrics.batch_seconds.labels(self.name).observe(latency_ms / 1000)
        log = self.log.warning if counts["fail"] or counts["retry"] else self.log.info
        log(
            "deliver.batch",
            sent=counts["ok"],
            retrying=counts["retry"],
            dead_lettered=counts["fail"],
            skipped_by_consent=counts["skipped"],
            latency_ms=latency_ms,
            reason=next((r.reason for r in results if r.outcome in ("retry", "fail")), None),
        )

    async def keep_claimed(self, items: list[Item]) -> None:
        """While a batch is being sent, keep its entries and leases from looking abandoned:
        a slow vendor must not make another worker (or the retry loop) send them again."""
        every = max(0.05, min(self.claim_idle_ms / 1000, LEASE_SECONDS) / 3)
        by_stream: dict[str, list[str]] = {}
        for item in items:
            if item.entry:
                by_stream.setdefault(item.entry[0], []).append(item.entry[1])
        leased = [i.event.get("messageId", "") for i in items if not i.entry]
        while True:
            await asyncio.sleep(every)
            commands: list[tuple[Any, ...]] = [
                # resets their idle time, so XAUTOCLAIM leaves them be
                ("XCLAIM", stream, self.group, self.consumer, 0, *ids, "JUSTID")
                for stream, ids in by_stream.items()
            ]
            if leased:
                until = time.time() + LEASE_SECONDS
                commands.append(
                    ("ZADD", self.retry_key, "XX", *[x for m in leased for x in (until, m)])
                )
            # On failure the next round tries again; at worst a copy goes (same messageId).
            with contextlib.suppress(RedisError, OSError):
                await self.store.execute(commands)

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        """Full jitter (AWS's), capped, and never sooner than a Retry-After."""
        config = self.destination.config
        cap = float(config.backoff_max)
        # (the exponent capped: with no attempt limit, 2 ** 1024 would overflow a float)
        delay = random.uniform(0, min(cap, float(config.backoff) * 2 ** min(attempts - 1, 60)))
        if retry_after is not None:
            delay = max(delay, min(retry_after, cap))
        return delay

    def dead_letter(
        self, event: dict[str, Any], attempts: int, reason: str, now: float
    ) -> tuple[Any, ...]:
        source = event.get("context", {}).get("source", {})
        return (
            "XADD",
            self.store.keys.dead_letters(),
            "MAXLEN",
            "~",
            self.dlq_retention,
            "*",
            "destination",
            self.name,
            "message_id",
            event.get("messageId", ""),
            "source",
            source.get("name", ""),
            "delivery_id",
            source.get("deliveryId", ""),
            "event",
            event.get("event") or event.get("type", ""),
            "attempts",
            attempts,
            "reason",
            reason,
            "at",
            int(now * 1000),
            "data",
            _encode(event),
        )

    async def index_dead_letters(self, writes: list[tuple[Any, ...]], replies: list[Any]) -> None:
        """Index the dead letters just written by the entry ids Redis gave them: by
        destination (a sorted set, capped like the stream) and by messageId (a key that
        expires). The console's filters read a page of these instead of the stream. Best
        effort: a dead letter missing from them is still in the stream, its list and
        every CLI command; an index entry whose dead letter is gone is skipped."""
        keys = self.store.keys
        dead = keys.dead_letters()
        calls: list[tuple[Any, ...]] = []
        for call, reply in zip(writes, replies, strict=True):
            if call[0] != "XADD" or call[1] != dead or isinstance(reply, Exception):
                continue
            entry_id = reply.decode() if isinstance(reply, bytes) else str(reply)
            message_id = call[call.index("message_id") + 1]
            calls.append(
                ("ZADD", keys.dead_letters_of(self.name), entry_id.partition("-")[0], entry_id)
            )
            if message_id:
                by_message = keys.dead_letter_of_message(message_id)
                calls.append(("SADD", by_message, entry_id))
                calls.append(("EXPIRE", by_message, _BY_MESSAGE_TTL))
        if not calls:
            return
        # Where the indexes start: older dead letters are read from the stream.
        calls.append(("SET", keys.dead_letters_indexed_since(), calls[0][3], "NX"))
        calls.append(
            ("ZREMRANGEBYRANK", keys.dead_letters_of(self.name), 0, -self.dlq_retention - 1)
        )
        try:
            await self.store.execute(calls)
        except (RedisError, StoreUnavailable, *CLUSTER_ERRORS, OSError) as e:
            self.log.warning("deliver.dead_letter_index_failed", error=type(e).__name__)

    def index_dead_letter(self, event: dict[str, Any], now: float) -> list[tuple[Any, ...]]:
        """The delivery an event came from, in its source's dead_lettered index (scored by
        when it was received, as the console searches it)."""
        source = event.get("context", {}).get("source", {})
        name, delivery_id = source.get("name"), source.get("deliveryId")
        if not self.log_retention or not name or not delivery_id:
            return []
        received = _unix_ms(event.get("receivedAt")) or int(now * 1000)
        index = self.store.keys.delivery_index(name, "dead_lettered")
        return [
            ("ZADD", index, received, delivery_id),
            ("ZREMRANGEBYSCORE", index, "-inf", received - self.log_retention * 1000),
            ("EXPIRE", index, self.log_retention),
        ]

    # --- the retry set ---------------------------------------------------------------------

    async def due_retries(self, now: float) -> list[Item]:
        """Retries that are due, leased to this process for LEASE_SECONDS."""
        reply = await self.store.client.eval(
            LEASE_SCRIPT,
            2,
            self.retry_key,
            self.retry_data,
            now,
            self.destination.batch_size,
            now + LEASE_SECONDS,
        )
        items, orphans = [], []
        for member, data in zip(reply[::2], reply[1::2], strict=True):
            if not data:
                orphans.append(member)
                continue
            state = msgspec.json.decode(data, type=RetryState)
            items.append(
                Item(
                    state.event,
                    None,
                    state.attempts,
                    state.first_at,
                    len(msgspec.json.encode(state.event)),
                    state.earlier,
                )
            )
        if orphans:
            await self.store.execute([("ZREM", self.retry_key, *orphans)])
        return items

    def by_bytes(self, items: list[Item]) -> list[list[Item]]:
        """Items cut into batches within `batch_bytes` and `batch_size` (each has at least
        one item): due retries come `batch_size` at a time, whatever their size, and
        reclaimed entries up to `batch_size` from each partition."""
        limit = self.destination.batch_bytes
        most = self.destination.batch_size
        batches: list[list[Item]] = []
        size = 0
        for item in items:
            if (
                not batches
                or (size + item.size > limit and batches[-1])
                or len(batches[-1]) >= most
            ):
                batches.append([])
                size = 0
            batches[-1].append(item)
            size += item.size
        return batches

    # --- the loops ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self.log.info("deliver.started", type=self.destination.config.__struct_config__.tag)
        started = False
        ready = False
        next_claim = next_retry = 0.0
        batch: list[Item] = []
        size = 0
        deadline = 0.0
        linger = float(self.destination.config.linger)
        try:
            while not stop.is_set():
                try:
                    if not started:
                        await asyncio.wait_for(
                            self.destination.start(), float(self.destination.config.timeout)
                        )
                        started = True
                    if not ready:
                        await self.ensure_group()
                        ready = True
                    now = time.monotonic()
                    if now >= next_retry:
                        retries = await self.due_retries(time.time())
                        next_retry = now + (
                            0.0 if len(retries) >= self.destination.batch_size else 0.5
                        )
                        for part in self.by_bytes(retries):
                            await self.dispatch(part)
                    if now >= next_claim:
                        claimed = await self.reclaim()
                        next_claim = now + min(self.claim_idle_ms / 1000, 30)
                        if claimed:
                            self.log.warning("deliver.reclaimed", count=len(claimed))
                            for part in self.by_bytes(claimed):
                                await self.dispatch(part)
                    wait_ms = (
                        self.block_ms
                        if not batch
                        else int(max(0.0, deadline - time.monotonic()) * 1000)
                    )
                    new = await self.read(self.destination.batch_size - len(batch), wait_ms)
                    if not new and self.store.embedded and not batch:
                        await asyncio.sleep(0.05)
                    for item in new:
                        if batch and size + item.size > self.destination.batch_bytes:
                            await self.dispatch(batch)  # the next one would not fit
                            batch, size = [], 0
                        if not batch:
                            deadline = time.monotonic() + linger
                        batch.append(item)
                        size += item.size
                        if len(batch) >= self.destination.batch_size:
                            await self.dispatch(batch)
                            batch, size = [], 0
                    if batch and time.monotonic() >= deadline:
                        await self.dispatch(batch)
                        batch, size = [], 0
                except (*CLUSTER_ERRORS, StoreUnavailable, OSError) as e:
                    self.log.warning("deliver.redis_unavailable", error=type(e).__name__)
                    ready = False
                    await _sleep_or_stop(stop, 1.0)
                except Exception as e:
                    if not started:  # the destination cannot connect yet: keep trying
                        self.log.warning("deliver.cannot_start", error=f"{type(e).__name__}: {e}")
                        await _sleep_or_stop(stop, 5.0)
                        continue
                    self.log.exception("deliver.error")
                    await _sleep_or_stop(stop, 1.0)
            if batch:
                await self.dispatch(batch)
        finally:
            if self._reader is not None:
                # A read still waiting on a cluster shard is cancelled: what Redis handed
                # it stays pending, and is reclaimed.
                await self._reader.close()
                self._reader = None
            if self.inflight:
                await asyncio.wait(
                    self.inflight, timeout=float(self.destination.config.timeout) + 5
                )
            await self.destination.close()
            self.log.info("deliver.stopped", **vars(self.stats))


class DeliverWorker:
    """Every configured destination's runner, in one process."""

    def __init__(
        self,
        config: Config,
        store: Store,
        consumer: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        claim_idle_ms = max(1, int(config.worker.claim_idle * 1000))
        metrics = metrics or Metrics()
        self.runners = [
            Runner(
                name,
                DESTINATION_TYPES[dest.__struct_config__.tag](name, dest),
                store,
                self.consumer,
                claim_idle_ms,
                int(config.delivery_log_retention),
                metrics,
                config.dead_letter_retention,
                config.partition_count(),
            )
            for name, dest in config.destinations.items()
        ]

    async def run(self, stop: asyncio.Event) -> None:
        if not self.runners:
            await stop.wait()
            return
        # One destination's failure is its own: the others go on.
        outcomes = await asyncio.gather(
            *(r.run(stop) for r in self.runners), return_exceptions=True
        )
        for runner, outcome in zip(self.runners, outcomes, strict=True):
            if isinstance(outcome, Exception):
                runner.log.error("deliver.stopped", error=f"{type(outcome).__name__}: {outcome}")


_BY_MESSAGE_TTL = 90 * 86400  # seconds an event's dead letters are found by its messageId


def _unix_ms(text: Any) -> int | None:
    """An event's ISO 8601 time as unix ms (None when it has none or it is unreadable)."""
    if not isinstance(text, str):
        return None
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None
