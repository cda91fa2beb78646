"""Operations over stored data: replay raw deliveries, read events, re-run the quarantine.

Replayed deliveries become the same events as the first time (same timestamps; same
messageIds unless a fixed mapping changed an event's type or name), appended to the
events stream again; destinations drop the copies of what they already have and take
what a fixed mapping now produces.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from redis.exceptions import ResponseError

from .config import Config, Duration
from .store import Store, entry_key, stream_entries
from .worker import Outcome, Pipeline

PAGE = 500


def parse_time(text: str, now: float | None = None) -> int:
    """Unix ms from ISO 8601, unix seconds, or a duration ago (`2h`, `7d`)."""
    text = text.strip()
    now = time.time() if now is None else now
    if re.fullmatch(r"\d+(\.\d+)?", text):
        value = float(text)
        return int(value if value >= 1e11 else value * 1000)
    try:
        return int((now - Duration.parse(text)) * 1000)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (ISO 8601 like 2024-05-01T12:00:00Z, unix seconds, "
            "or a duration ago like 2h or 7d)"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (add Z for UTC)")
    return int(moment.timestamp() * 1000)


@dataclass
class Progress:
    deliveries: int = 0
    events: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


async def raw_entries(
    store: Store, source: str, since_ms: int | None, until_ms: int | None
) -> AsyncIterator[tuple[str, dict[bytes, bytes]]]:
    """The source's stored raw deliveries in a time range, oldest first, page by page."""
    async for entry_id, fields in stream_entries(store, store.keys.raw(source), since_ms, until_ms):
        yield entry_id.decode(), fields


async def replay(
    config: Config,
    store: Store,
    source: str,
    since_ms: int | None = None,
    until_ms: int | None = None,
    delivery_id: str | None = None,
    report: Callable[[Progress], None] | None = None,
) -> Progress:
    """Normalize stored deliveries again and append their events (same times; same ids
    unless an event's type or name changed)."""
    pipeline = Pipeline(config, store)
    progress = Progress()
    batch: list[Outcome] = []
    async for entry_id, fields in raw_entries(store, source, since_ms, until_ms):
        if delivery_id is not None and fields.get(b"delivery_id", b"").decode() != delivery_id:
            continue
        outcome = pipeline.run(source, entry_id, fields)
        progress.deliveries += 1
        progress.events += len(outcome.events)
        if outcome.quarantine:
            progress.failed += 1
            progress.failures.extend(
                f"{q['delivery_id']}: {q['reason']}" for q in outcome.quarantine
            )
        batch.append(Outcome(events=outcome.events))
        if len(batch) >= PAGE:
            await _write(pipeline, batch)
            batch = []
            if report:
                report(progress)
    await _write(pipeline, batch)
    if report:
        report(progress)
    return progress


async def _write(pipeline: Pipeline, outcomes: list[Outcome]) -> None:
    await pipeline.write(outcomes)


async def tail_events(store: Store, count: int, partitions: int = 1) -> list[bytes]:
    """The newest `count` events (their JSON) of every partition, oldest first: merged by
    entry id, that is by the time each was written (to the millisecond)."""
    keys = store.keys.event_streams(partitions)
    pages = await asyncio.gather(
        *(store.client.xrevrange(key, "+", "-", count=count) for key in keys)
    )
    if len(pages) == 1:
        return [fields[b"data"] for _, fields in reversed(pages[0])]
    merged = sorted(
        ((entry_key(eid), n, fields[b"data"]) for n, page in enumerate(pages)
         for eid, fields in page),
        reverse=True,
    )[:count]  # fmt: skip
    return [data for _, _, data in reversed(merged)]


@dataclass
class PartitionLag:
    """One destination's reading of one partition of the events stream."""

    partition: int
    stream: str
    length: int  # entries in the partition now
    destination: str
    lag: int | None  # entries its group has not read yet (None: Redis cannot tell)
    pending: int  # read and not acknowledged (being sent, or left by a crashed worker)
    settled: bool  # nothing here left for it: read up to the last entry, nothing pending
    note: str = ""


async def partition_lag(
    config: Config, store: Store, partitions: int | None = None
) -> list[PartitionLag]:
    """Every configured destination's lag and pending entries on every partition (the
    config's count, or `partitions`): what `events lag` shows, and the drain before a
    change of events_partitions waits for (all settled)."""
    n = config.partition_count() if partitions is None else partitions
    keys = store.keys.event_streams(n)
    client = store.client
    infos: list[tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]] = []
    for key in keys:
        try:
            stream = await client.xinfo_stream(key)
            groups = {_text(g.get("name")): g for g in await client.xinfo_groups(key)}
        except ResponseError:  # no such stream: nothing was ever written there
            stream, groups = None, {}
        infos.append((stream, groups))
    rows = []
    for name, destination in config.destinations.items():
        group = f"deliver:{name}"
        reads_some = any(group in groups for _, groups in infos)
        from_start = reads_some or getattr(destination, "start", "latest") == "earliest"
        for i, (key, (stream, groups)) in enumerate(zip(keys, infos, strict=True)):
            length = int(stream.get("length", 0)) if stream else 0
            info = groups.get(group)
            if info is None:
                # A group is made when the destination's worker starts: it will read
                # this partition from the start if it reads others (or starts earliest).
                waiting = from_start and length > 0
                rows.append(
                    PartitionLag(
                        i, key, length, name, length if waiting else 0, 0, not waiting,
                        "no group yet" + ("" if waiting else " (starts at the latest entry)"),
                    )
                )  # fmt: skip
                continue
            lag = info.get("lag")
            pending = int(info.get("pending", 0))
            last = entry_key(stream.get("last-generated-id") or b"0-0") if stream else (0, 0)
            read_all = entry_key(info.get("last-delivered-id") or b"0-0") >= last
            if isinstance(lag, int):
                read_all = read_all and lag == 0
            else:
                lag = 0 if read_all else None
            rows.append(PartitionLag(i, key, length, name, lag, pending, read_all and not pending))
    return rows


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _quarantined(
    store: Store, source: str | None
) -> AsyncIterator[tuple[str, dict[bytes, bytes]]]:
    """The quarantine's entries (of `source`), oldest first, PAGE at a time: a quarantine
    of a million entries is never one XRANGE."""
    async for entry_id, fields in stream_entries(store, store.keys.quarantine(), None, None, PAGE):
        if source is None or fields.get(b"source", b"").decode("utf-8", "replace") == source:
            yield entry_id.decode(), fields


async def quarantine_entries(store: Store, source: str | None = None) -> list[dict[str, Any]]:
    out = []
    async for entry_id, fields in _quarantined(store, source):
        item = {
            k.decode(): v.decode("utf-8", "replace") for k, v in fields.items() if k != b"event"
        }
        item["id"] = entry_id
        out.append(item)
    return out


class RerunRunning(RuntimeError):
    """Another quarantine rerun holds the lock (the console, another operator, the CLI)."""

    def __init__(
        self,
        why: str = (
            "a rerun is already running: wait for it to finish, then look at the quarantine again"
        ),
    ) -> None:
        super().__init__(why)


class RerunStopped(RerunRunning):
    """A rerun stalled past its lease (another may have begun): it stopped part way."""


RERUN_LOCK_MS = 60_000
"""The rerun lock's lease: renewed while the rerun goes on, so a crashed rerun frees it
within a minute."""
RERUN_RENEW_S = RERUN_LOCK_MS / 3000
"""How often a running rerun renews its lease (a third of it)."""

# KEYS: the lock. ARGV: the owner's token, and (renew) the lease in ms. Only the owner may
# extend or release it: a rerun that outlived its lease must not free another's.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@asynccontextmanager
async def _rerun_lock(store: Store) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Hold the quarantine rerun lock (else RerunRunning); yields `renew`, to call as the
    rerun goes on (it extends the lease every RERUN_RENEW_S)."""
    key, token = store.keys.quarantine_rerun_lock(), uuid.uuid4().hex
    if not await store.client.set(key, token, nx=True, px=RERUN_LOCK_MS):
        raise RerunRunning()
    renewed = time.monotonic()

    async def renew() -> None:
        nonlocal renewed
        if time.monotonic() - renewed >= RERUN_RENEW_S:
            if not await store.client.eval(_RENEW, 1, key, token, RERUN_LOCK_MS):
                # Stalled past the lease, and another rerun may have begun: stop here
                # rather than normalize what it does too.
                raise RerunStopped(
                    "the rerun stopped: it stalled past its lock's lease and another rerun "
                    "may have begun; what it normalized before has left the quarantine"
                )
            renewed = time.monotonic()

    try:
        yield renew
    finally:
        await store.client.eval(_RELEASE, 1, key, token)


async def rerun_quarantine(
    config: Config, store: Store, source: str | None = None
) -> tuple[int, int, list[str]]:
    """Normalize quarantined deliveries again with the current config.

    Those that now pass have their events appended and leave the quarantine; the others
    stay, with the reason they still fail. Returns (fixed, still failing, reasons).
    One rerun at a time (RerunRunning otherwise): two would both append the events of
    the same deliveries.
    """
    pipeline = Pipeline(config, store)
    fixed = failing = 0
    reasons = []
    async with _rerun_lock(store) as renew:
        async for entry_id, fields in _quarantined(store, source):
            await renew()
            item_source = fields.get(b"source", b"").decode("utf-8", "replace")
            delivery_id = fields.get(b"delivery_id", b"").decode("utf-8", "replace")
            raw_id = fields.get(b"raw_id", b"").decode()
            raw_key = store.keys.raw(item_source)
            found = await store.client.xrange(raw_key, raw_id, raw_id) if raw_id else []
            if not found:
                failing += 1
                reasons.append(f"{delivery_id}: the raw delivery is no longer stored")
                continue
            outcome = pipeline.run(item_source, raw_id, found[0][1])
            if outcome.quarantine:
                failing += 1
                reasons.extend(f"{q['delivery_id']}: {q['reason']}" for q in outcome.quarantine)
                continue
            # Events first; the quarantine entry goes only once they are stored.
            await pipeline.write([outcome])
            await store.execute([("XDEL", store.keys.quarantine(), entry_id)])
            fixed += 1
    return fixed, failing, reasons


def progress_line(label: str, total: int | None) -> Callable[[Progress], None]:
    """A `report` callback drawing one updating line on stderr."""
    started = time.monotonic()

    def report(p: Progress) -> None:
        rate = p.deliveries / max(time.monotonic() - started, 1e-6)
        share = f"{p.deliveries}/{total}" if total else str(p.deliveries)
        sys.stderr.write(
            f"\r{label}: {share} deliveries, {p.events} events, {p.failed} failed ({rate:,.0f}/s)"
        )
        sys.stderr.flush()

    return report
