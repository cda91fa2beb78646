"""Activity: what the gateway did, minute by minute, shared by every process through Redis.

The console's charts and the alerts read it; Prometheus keeps its own counters (metrics.py).
Each process counts in memory (no Redis call on the webhook path: Metrics counts here as it
counts for Prometheus) and adds its counts to Redis every FLUSH_EVERY seconds, so the
figures are those of every process, and survive restarts:

    {prefix}:activity:s:<n>        hash "<kind>|<name>|<outcome>" -> count per STEP seconds
                                   (5 s: alert windows), kept STEPS_KEPT
    {prefix}:activity:m:<minute>   the same per minute, kept MINUTES_KEPT
    {prefix}:activity:h:<hour>     the same per hour, kept HOURS_KEPT (the day view, alerts
                                   over hours)

kinds: `source` (webhooks and collected messages: accepted, duplicate, rejected,
unavailable, handshake, rate_limited), `events` (events a source's deliveries became:
produced), `quarantine` (by source: normalize, schema, ...), `destination` (sent, retried,
dead_lettered, skipped, lost).

Counts are attributed to the bucket of the flush that carries them (at most FLUSH_EVERY
late); a process killed with SIGKILL loses its last FLUSH_EVERY seconds of counts (not of
webhooks: those are in Redis before their 200).

Beside the counts, what the console shows of requests that stored nothing: the newest
rejected and duplicate deliveries of each source (capped streams, TURNED_AWAY_KEPT each),
and each destination's last error.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from redis.exceptions import RedisError

from .errors import StoreUnavailable
from .store import CLUSTER_ERRORS, Store

FLUSH_EVERY = 2.0
STEP = 5  # seconds: the finest buckets
STEPS_KEPT = 2 * 3600
MINUTES_KEPT = 26 * 3600  # seconds: a day of minutes, and the alert windows over it
HOURS_KEPT = 8 * 86400
TURNED_AWAY_KEPT = 10_000  # per source and outcome (approximately: MAXLEN ~)
_BUFFERED = 1_000  # turned-away deliveries held between flushes (the newest win)
_UNSENT = 20_000  # commands kept while Redis refuses them (the newest win)
_TRIES = 150  # flushes (5 minutes) before a command Redis keeps refusing is dropped
UNITS = {"s": STEP, "m": 60, "h": 3600}  # bucket unit -> seconds

Key = tuple[str, str, str]  # (kind, name, outcome)

_encode = msgspec.json.Encoder().encode


class Activity:
    """One process's counts since its last flush."""

    def __init__(self) -> None:
        self.counts: collections.Counter[Key] = collections.Counter()
        self.turned: collections.deque[tuple[str, str, dict[str, Any]]] = collections.deque(
            maxlen=_BUFFERED
        )
        self.errors: dict[str, tuple[float, str]] = {}
        # Commands a flush could not send, with how many times they were tried.
        self.unsent: list[tuple[tuple[Any, ...], int]] = []
        self.log = structlog.get_logger("gateway.activity")

    def count(self, kind: str, name: str, outcome: str, n: int = 1) -> None:
        self.counts[(kind, name, outcome)] += n

    def turned_away(self, source: str, outcome: str, at: float, **fields: Any) -> None:
        """A rejected or duplicate delivery, for the console (no body, no headers)."""
        fields = {k: v for k, v in fields.items() if v is not None}
        self.turned.append((source, outcome, {"at": int(at * 1000), **fields}))

    def destination_error(self, destination: str, at: float, reason: str) -> None:
        self.errors[destination] = (at, reason[:500])

    def commands(self, store: Store, now: float) -> list[tuple[Any, ...]]:
        """Take what was counted since the last call, as the Redis commands that add it."""
        keys = store.keys
        out: list[tuple[Any, ...]] = []
        counts, self.counts = self.counts, collections.Counter()
        if counts:
            for unit, ttl in (("s", STEPS_KEPT), ("m", MINUTES_KEPT), ("h", HOURS_KEPT)):
                key = keys.activity(unit, int(now // UNITS[unit]))
                out += [("HINCRBY", key, "|".join(k), n) for k, n in counts.items() if n]
                out.append(("EXPIRE", key, ttl))
        turned, self.turned = self.turned, collections.deque(maxlen=_BUFFERED)
        for source, outcome, fields in turned:
            pairs = [x for kv in fields.items() for x in kv]
            key = keys.turned_away(source, outcome)
            out.append(("XADD", key, "MAXLEN", "~", TURNED_AWAY_KEPT, "*", *pairs))
        errors, self.errors = self.errors, {}
        if errors:
            pairs = [
                x
                for name, (at, reason) in errors.items()
                for x in (name, _encode({"at": at, "reason": reason}))
            ]
            out.append(("HSET", keys.destination_errors(), *pairs))
        return out

    async def flush(self, store: Store, now: float | None = None) -> bool:
        """Send what was counted (and what an earlier flush could not) to Redis. A command
        Redis refused, or could not be sent (a node down), is kept as it was, for its own
        bucket, and sent again with the next flushes (up to _TRIES times); the others are
        not sent twice. (A command Redis carried out but whose reply was lost, a timeout,
        is sent again: counted twice. Rare, and only ever over-counted.)"""
        fresh = self.commands(store, time.time() if now is None else now)
        pending = self.unsent + [(call, 0) for call in fresh]
        self.unsent = []
        if not pending:
            return True
        calls = [call for call, _ in pending]
        try:
            replies = await store.execute(calls, partial=True)
        except (StoreUnavailable, RedisError, *CLUSTER_ERRORS, OSError) as e:
            replies = [e] * len(calls)
        failed = [
            (call, tries + 1)
            for (call, tries), reply in zip(pending, replies, strict=True)
            if isinstance(reply, Exception) and tries + 1 < _TRIES
        ]
        self.unsent = failed[-_UNSENT:]  # Redis away for long: the oldest counts go
        errors = [r for r in replies if isinstance(r, Exception)]
        if errors:
            self.log.warning(
                "activity.flush_failed", error=type(errors[0]).__name__, kept=len(self.unsent)
            )
        return not errors

    async def run(self, store: Store, stop: asyncio.Event, every: float = FLUSH_EVERY) -> None:
        """Flush every `every` seconds until `stop`, then once more."""
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            await self.flush(store)


@dataclass
class Series:
    """Counts per bucket (oldest first) of `buckets` buckets of `unit` seconds ending with
    the one holding `now`."""

    unit: int
    first: int  # the first bucket's number (its start = first * unit)
    buckets: int
    values: dict[Key, list[int]] = field(default_factory=dict)

    def of(self, kind: str, name: str, outcome: str) -> list[int]:
        return self.values.get((kind, name, outcome), [0] * self.buckets)

    def total(self, kind: str, name: str, outcome: str, last: int | None = None) -> int:
        """The sum over the last `last` buckets (all of them by default)."""
        values = self.of(kind, name, outcome)
        return sum(values[-last:] if last else values)

    def outcomes(self, kind: str, name: str) -> dict[str, int]:
        return {o: sum(v) for (k, n, o), v in self.values.items() if k == kind and n == name}


async def series(
    store: Store,
    unit: str,
    buckets: int,
    now: float | None = None,
    fields: list[str] | None = None,
) -> Series:
    """The counts of the last `buckets` steps of 5 s (`unit="s"`), minutes (`"m"`) or
    hours (`"h"`), the current one included. `fields` ("<kind>|<name>|<outcome>"): only
    those (HMGET; the others are not read, nor parsed), for callers that know what they
    need (the alerts)."""
    seconds = UNITS[unit]
    now = time.time() if now is None else now
    last = int(now // seconds)
    first = last - buckets + 1
    out = Series(seconds, first, buckets)
    if fields is not None:
        if not fields:
            return out
        replies = await store.execute(
            [("HMGET", store.keys.activity(unit, b), *fields) for b in range(first, last + 1)]
        )
        for i, reply in enumerate(replies):
            for field_name, count in zip(fields, reply, strict=True):
                if count is not None:
                    kind, name, outcome = field_name.split("|", 2)
                    row = out.values.setdefault((kind, name, outcome), [0] * buckets)
                    row[i] += int(count)
        return out
    replies = await store.execute(
        [("HGETALL", store.keys.activity(unit, b)) for b in range(first, last + 1)]
    )
    for i, reply in enumerate(replies):
        for field_name, count in _pairs(reply):
            parts = field_name.split("|", 2)
            if len(parts) != 3:
                continue
            row = out.values.setdefault((parts[0], parts[1], parts[2]), [0] * buckets)
            row[i] += int(count)
    return out


def _pairs(reply: Any) -> Iterable[tuple[str, bytes]]:
    if isinstance(reply, dict):
        items: Iterable[Any] = reply.items()
    else:  # a raw pipeline reply: a flat list
        items = zip(reply[::2], reply[1::2], strict=True)
    for k, v in items:
        yield (k.decode() if isinstance(k, bytes) else str(k)), v


async def turned_away(
    store: Store,
    source: str,
    outcome: str,
    since_ms: int | None = None,
    until_ms: int | None = None,
    count: int = 50,
    before: str | None = None,
) -> list[dict[str, str]]:
    """The newest rejected or duplicate deliveries of a source, newest first."""
    end = f"({before}" if before else (f"{until_ms}" if until_ms is not None else "+")
    start = f"{since_ms}" if since_ms is not None else "-"
    reply = await store.client.xrevrange(
        store.keys.turned_away(source, outcome), end, start, count=count
    )
    out = []
    for entry_id, fields in reply:
        item = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
        item["entry"] = entry_id.decode()
        item["source"] = source
        item["outcome"] = outcome
        out.append(item)
    return out


async def destination_errors(store: Store) -> dict[str, dict[str, Any]]:
    """Each destination's last error: {name: {"at": unix seconds, "reason": text}}."""
    raw = await store.client.hgetall(store.keys.destination_errors())
    return {k.decode(): msgspec.json.decode(v) for k, v in raw.items()}
