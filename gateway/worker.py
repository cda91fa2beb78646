"""The normalize worker: raw streams -> events stream, through a consumer group.

Each source's raw stream is read with XREADGROUP (group `normalize`, one consumer per
worker); every delivery becomes events (built-in normalizer and/or YAML mappings,
then the tracking plan), which are appended to the events stream before the raw entry
is acknowledged. A worker that dies mid-batch leaves its entries pending; another takes
them over with XAUTOCLAIM after `worker.claim_idle`. Redoing a delivery is harmless:
its events carry the same messageIds, and destinations dedupe on them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from redis.exceptions import ResponseError

from normalizers import Delivery, Event, Mapper, NormalizeError, normalize

from .config import Config
from .enrich import Enricher
from .errors import StoreUnavailable
from .metrics import Metrics
from .store import CLUSTER_ERRORS, GroupReader, Store
from .tracking import violations

GROUP = "normalize"
_encode = msgspec.json.Encoder().encode
_decode_headers = msgspec.json.Decoder(dict[str, str]).decode


@dataclass
class Outcome:
    """What one raw delivery became: events to append, and problems for the quarantine."""

    events: list[Event] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    delivery: tuple[str, str] | None = None
    """(source, delivery id), for the delivery log."""
    raw: tuple[str, int] | None = None
    """(raw entry id, received at unix ms), for the delivery log and its index."""


class Pipeline:
    """Normalization as the worker, replay and quarantine re-runs all do it."""

    def __init__(self, config: Config, store: Store, metrics: Metrics | None = None) -> None:
        self.config = config
        self.store = store
        self.mappers = {
            name: Mapper(source.mappings, source.user_id) for name, source in config.sources.items()
        }
        self.enricher = Enricher(config, store, metrics)
        self.partitions = config.partition_count()
        self.event_streams = store.keys.event_streams(self.partitions)
        # Each partition trims to its share of events_retention (they fill evenly).
        self.retention = -(-config.events_retention // self.partitions)
        self.log = structlog.get_logger("gateway.worker")

    async def write(self, outcomes: list[Outcome], extra: Iterable[tuple[Any, ...]] = ()) -> None:
        """Enrich the outcomes' events against the identity graph (one round trip), then
        store them, their quarantine entries and delivery log, with `extra`, in one more
        (and, when a batch joined histories, clear what was pending in a third)."""
        clears = await self.enricher.enrich(outcomes)
        commands = [c for outcome in outcomes for c in self.commands(outcome)]
        commands += extra
        if commands:
            # Under `durability: replicated` the events are on a replica before the raw
            # entries are acknowledged: on a cluster they live on other shards than the
            # raw streams, and a failover there must not lose what the ack calls done.
            await self.store.execute_durably(commands)
        if clears:
            # Only once the merge (alias) events are stored: a write refused part-way (a
            # pipeline is not a transaction) or a crash here sends them again on the
            # redo, with the same messageIds, instead of never.
            await self.store.execute(clears)

    def delivery(self, source: str, fields: dict[bytes, bytes]) -> Delivery | None:
        config = self.config.sources.get(source)
        if config is None:
            return None
        try:
            headers = _decode_headers(fields.get(b"headers", b"{}"))
        except msgspec.DecodeError:
            headers = {}
        return Delivery(
            source=source,
            source_type=config.__struct_config__.tag,  # type: ignore[arg-type]
            delivery_id=fields.get(b"delivery_id", b"").decode("utf-8", "replace"),
            received_at_ms=int(fields.get(b"received_at", b"0") or 0),
            headers=headers,
            body=fields.get(b"body", b""),
            config=config,
        )

    def run(self, source: str, entry_id: str, fields: dict[bytes, bytes]) -> Outcome:
        """Normalize one stored delivery; whatever goes wrong lands in the quarantine."""
        base = {
            "source": source,
            "raw_id": entry_id,
            "delivery_id": fields.get(b"delivery_id", b"").decode("utf-8", "replace"),
        }
        try:
            outcome = self._run(source, fields, base)
        except Exception as e:  # a stored entry this code did not expect: never fatal
            self.log.exception("delivery.unexpected_error", **base)
            reason = f"unexpected {type(e).__name__}: {e}"
            outcome = Outcome(quarantine=[{**base, "stage": "normalize", "reason": reason}])
        outcome.delivery = (source, base["delivery_id"])
        try:
            received = int(fields.get(b"received_at") or entry_id.partition("-")[0])
        except ValueError:
            received = 0
        outcome.raw = (entry_id, received)
        return outcome

    def _run(self, source: str, fields: dict[bytes, bytes], base: dict[str, str]) -> Outcome:
        outcome = Outcome()
        delivery = self.delivery(source, fields)
        if delivery is None:
            outcome.quarantine.append(
                {**base, "stage": "normalize", "reason": f"source {source!r} is not in the config"}
            )
            return outcome
        try:
            events = normalize(delivery, self.mappers[source])
        except NormalizeError as e:
            outcome.quarantine.append({**base, "stage": "normalize", "reason": str(e)})
            return outcome
        mode = delivery.config.schema or self.config.schema
        for event in events:
            problems = violations(event, self.config.events) if mode != "off" else []
            if problems and mode == "enforce":
                outcome.quarantine.append(
                    {
                        **base,
                        "stage": "schema",
                        "reason": "; ".join(problems),
                        "event": _encode(event),
                    }
                )
                continue
            outcome.warnings.extend(problems)
            outcome.events.append(event)
        return outcome

    def commands(self, outcome: Outcome) -> list[tuple[Any, ...]]:
        """The Redis commands that store an outcome (events, then the quarantine)."""
        keys = self.store.keys
        out: list[tuple[Any, ...]] = []
        streams, partitions, partition_of = self.event_streams, self.partitions, keys.partition_of
        for event in outcome.events:
            source = event.context.source
            stream = streams[0]
            if partitions > 1:  # one person's events, one partition: read in this order
                n = partition_of(event.user_id, event.anonymous_id, event.message_id, partitions)
                stream = streams[n]
            out.append((
                "XADD", stream, "MAXLEN", "~", self.retention, "*",
                "message_id", event.message_id, "source", source.name,
                "delivery_id", source.delivery_id, "type", event.type,
                "event", event.event or "", "data", _encode(event),
            ))  # fmt: skip
        for item in outcome.quarantine:
            fields = [x for pair in {**item, "at": int(time.time() * 1000)}.items() for x in pair]
            out.append(("XADD", keys.quarantine(), "MAXLEN", "~", 100_000, "*", *fields))
        retention = int(self.config.delivery_log_retention)
        if retention and outcome.delivery is not None:
            # The delivery log: what this delivery became (`deliveries show`).
            key = keys.delivery_log(outcome.delivery[0], outcome.delivery[1])
            status = (
                "quarantined: " + "; ".join(q["reason"] for q in outcome.quarantine)
                if outcome.quarantine
                else f"normalized into {len(outcome.events)} event(s)"
            )
            pairs = [x for e in outcome.events for x in (e.message_id, e.event or e.type)]
            if outcome.raw is not None:  # where the console finds its body and time
                pairs += ["_raw", outcome.raw[0], "_at", outcome.raw[1]]
            out.append(("HSET", key, "_status", status, *pairs))
            out.append(("EXPIRE", key, retention))
            ended = "quarantined" if outcome.quarantine else None if outcome.events else "ignored"
            if ended is not None and outcome.raw is not None:
                # The console searches by outcome without a scan: the few deliveries
                # that did not simply become events are indexed by time.
                index = keys.delivery_index(outcome.delivery[0], ended)
                out.append(("ZADD", index, outcome.raw[1], outcome.delivery[1]))
                out.append(("ZREMRANGEBYSCORE", index, "-inf", outcome.raw[1] - retention * 1000))
                out.append(("EXPIRE", index, retention))  # a source gone quiet: all of it
        return out


@dataclass
class Stats:
    deliveries: int = 0
    events: int = 0
    quarantined: int = 0


class NormalizeWorker:
    """Reads the raw streams of every configured source until told to stop."""

    def __init__(
        self,
        config: Config,
        store: Store,
        consumer: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics or Metrics()
        self.pipeline = Pipeline(config, store, self.metrics)
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.streams = {store.keys.raw(name): name for name in config.sources}
        self.claim_idle_ms = max(1, int(config.worker.claim_idle * 1000))
        # A blocking read must end before the socket timeout would cut it.
        self.block_ms = max(10, min(1000, int(store.timeout * 500)))
        self.stats = Stats()
        self._reported: dict[str, int] = {}
        self._reader: GroupReader | None = None
        self.log = structlog.get_logger("gateway.worker").bind(consumer=self.consumer)

    async def ensure_groups(self) -> None:
        for key in self.streams:
            try:
                await self.store.client.xgroup_create(key, GROUP, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; Redis outages are waited out, not fatal."""
        if not self.streams:
            self.log.info("worker.idle", reason="no sources configured")
            await stop.wait()
            return
        self.log.info("worker.started", sources=sorted(self.streams.values()))
        next_claim = 0.0
        ready = False
        while not stop.is_set():
            try:
                if not ready:
                    await self.ensure_groups()
                    ready = True
                if time.monotonic() >= next_claim:
                    await self.reclaim(stop)
                    next_claim = time.monotonic() + min(self.claim_idle_ms / 1000, 30)
                handled = await self.read_once()
                if not handled and self.store.embedded:
                    await asyncio.sleep(0.1)  # the in-memory store cannot block on reads
            except (*CLUSTER_ERRORS, StoreUnavailable, OSError) as e:
                self.log.warning("worker.redis_unavailable", error=type(e).__name__)
                ready = False
                await _sleep_or_stop(stop, 1.0)
            except Exception:
                # A bug must not silently stop normalization while the front door keeps
                # accepting: log it, wait a little, go on (entries stay pending, then are
                # reclaimed).
                self.log.exception("worker.error")
                await _sleep_or_stop(stop, 1.0)
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        self.log.info("worker.stopped", **vars(self.stats))

    async def read_once(self) -> int:
        """Read and handle one batch of new deliveries; how many there were."""
        if self._reader is None:
            self._reader = GroupReader(
                self.store,
                GROUP,
                self.consumer,
                list(self.streams),
                self.config.worker.batch,
                self.block_ms,
            )
        reply = await self._reader.read()
        entries = [
            (self.streams[key.decode()], eid.decode(), fields)
            for key, items in reply or []
            for eid, fields in items
        ]
        await self.handle(entries)
        return len(entries)

    async def reclaim(self, stop: asyncio.Event | None = None) -> int:
        """Take over deliveries a crashed worker read but never finished."""
        total = 0
        for key, source in self.streams.items():
            await self.check_trimmed(key, source)
            start = "0-0"
            while stop is None or not stop.is_set():
                reply = await self.store.client.xautoclaim(
                    key,
                    GROUP,
                    self.consumer,
                    self.claim_idle_ms,
                    start_id=start,
                    count=self.config.worker.batch,
                )
                # Redis 7 adds the ids of trimmed entries; Redis 6.2 replies with two items.
                next_start, items = reply[0], reply[1]
                deleted = reply[2] if len(reply) > 2 else []
                if deleted:
                    # Trimmed from the raw stream before anyone normalized them.
                    await self.store.client.xack(key, GROUP, *deleted)
                    self.log.error(
                        "worker.deliveries_lost",
                        source=source,
                        count=len(deleted),
                        reason="trimmed from the raw stream before normalization; "
                        "raise raw_retention",
                    )
                # not those a read of ours brought in and read_once() has yet to return
                ours = self._reader.unreturned() if self._reader is not None else set()
                entries = [
                    (source, eid.decode(), f)
                    for eid, f in items
                    if f and (key, eid.decode()) not in ours
                ]
                if entries:
                    self.log.warning("worker.reclaimed", source=source, count=len(entries))
                    await self.handle(entries)
                    total += len(entries)
                start = next_start.decode() if isinstance(next_start, bytes) else next_start
                if start == "0-0":
                    break
        return total

    async def check_trimmed(self, key: str, source: str) -> None:
        """Log when raw deliveries were trimmed before this group read them."""
        lost = await trimmed_unread(self.store, key, GROUP, self._reported)
        if lost:
            self.log.error(
                "worker.deliveries_lost",
                source=source,
                count=lost,
                reason="raw deliveries were trimmed before they were normalized; raise "
                "raw_retention or add workers",
            )

    async def handle(self, entries: Iterable[tuple[str, str, dict[bytes, bytes]]]) -> None:
        """Normalize entries, append their events, then acknowledge them (in that order)."""
        entries = list(entries)
        if not entries:
            return
        outcomes: list[Outcome] = []
        names: collections.Counter[str] = collections.Counter()
        quarantined = self.stats.quarantined
        for source, entry_id, fields in entries:
            outcome = self.pipeline.run(source, entry_id, fields)
            outcomes.append(outcome)
            self.stats.deliveries += 1
            self.stats.events += len(outcome.events)
            self.stats.quarantined += len(outcome.quarantine)
            if outcome.events:
                self.metrics.produced(source, len(outcome.events))
            for item in outcome.quarantine:
                self.metrics.quarantine(source, item["stage"])
                self.log.warning(
                    "delivery.quarantined",
                    source=source,
                    delivery_id=item["delivery_id"],
                    stage=item["stage"],
                    reason=item["reason"],
                )
            for problem in outcome.warnings:
                self.log.warning("event.off_plan", source=source, problem=problem)
            if outcome.events or not outcome.quarantine:
                self.log.debug(
                    "delivery.normalized",
                    source=source,
                    delivery_id=fields.get(b"delivery_id", b"").decode("utf-8", "replace"),
                    events=[e.event or e.type for e in outcome.events],
                )
        await self.pipeline.write(outcomes)
        names.update(e.event or e.type for o in outcomes for e in o.events)
        # Acknowledge only after the events are in (execute raised otherwise): a crash in
        # between means a redo (same messageIds), never a loss.
        by_stream: dict[str, list[str]] = {}
        for source, entry_id, _ in entries:
            by_stream.setdefault(self.store.keys.raw(source), []).append(entry_id)
        await self.store.execute([("XACK", key, GROUP, *ids) for key, ids in by_stream.items()])
        # One line per batch (per delivery at debug): the worker is a hot path too.
        self.log.info(
            "normalize.batch",
            deliveries=len(entries),
            events=dict(names),
            quarantined=self.stats.quarantined - quarantined,
        )


async def trimmed_unread(store: Store, key: str, group_name: str, reported: dict[str, int]) -> int:
    """Entries trimmed from a stream before `group_name` read them, not reported yet (Redis 7+).

    Trimming drops the oldest entries and a group reads in order, so entries were lost
    when more were trimmed than the group had read.
    """
    try:
        stream = await store.client.xinfo_stream(key)
        groups = await store.client.xinfo_groups(key)
    except ResponseError:
        return 0
    names = (group_name, group_name.encode())
    group = next((g for g in groups if g.get("name") in names), None)
    added = stream.get("entries-added")
    if group is None or not isinstance(added, int):
        return 0
    trimmed = added - int(stream.get("length", 0))
    read = group.get("entries-read")
    if read is None:
        if _stream_id(group.get("last-delivered-id", b"0-0")) != (0, 0):
            return 0  # Redis could not count what was read: no reliable answer
        read = 0
    already = reported.get(key, 0)
    if trimmed - read <= already:
        return 0
    reported[key] = trimmed - read
    return trimmed - read - already


def _stream_id(value: bytes | str) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else str(value)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
