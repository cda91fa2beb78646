"""Alerts: rules on what the gateway counts, one notification per incident start and end.

`Alerts(config, store).run(stop)` runs in every gateway process (serve and worker). Each
second a process tries to take the evaluation lock (SET NX PX evaluate_every): the one that
gets it reads the rules' values (rules.py) and steps each (rule, subject) through the
state machine (state.py), writing back with a compare-and-set that also queues the
notifications; every process then sends due notifications from the shared outbox.

Redis being down cannot be agreed on through Redis: each process watches it on its own,
and notifies once per outage itself (docs/alerts.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable

import httpx
import msgspec
import structlog
from redis.exceptions import RedisError

from ..config import AlertRule, Config
from ..errors import StoreUnavailable
from ..store import CLUSTER_ERRORS, Store
from .notify import Memo, Notification, NotifyError, send
from .rules import Reading, read
from .state import Outbox, State, forget, known, load, step

__all__ = ["Alerts", "Notification"]

GIVE_UP_AFTER = 86400.0  # s: a notification still failing a day later is dropped (logged)
BACKOFF_FIRST, BACKOFF_MAX = 2.0, 300.0
_STORE_ERRORS = (StoreUnavailable, RedisError, *CLUSTER_ERRORS, OSError, TimeoutError)
_decode = msgspec.json.Decoder(Notification).decode
_decode_memo = msgspec.json.Decoder(Memo).decode


class Alerts:
    """Evaluates the alert rules and sends their notifications, in one process."""

    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Callable[[], float] = time.time,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.config, self.store, self.clock = config, store, clock
        self.settings = config.alerts
        self.outbox = Outbox(store)
        self.client = client
        self.token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # The longest a send may take, and then some: a job claimed this long ago by a
        # process that did not settle it (it died) is due again.
        self.lease = max((float(n.timeout) for n in self.settings.notify.values()), default=10)
        self.lease += 30
        self.local: dict[str, State] = {}  # redis_unavailable, per process
        self.log = structlog.get_logger("gateway.alerts")
        self._direct: set[asyncio.Task[None]] = set()
        self._failing = False

    async def run(self, stop: asyncio.Event) -> None:
        """Evaluate and send until `stop`."""
        every = min(1.0, float(self.settings.evaluate_every))
        own_client = self.client is None
        if own_client:
            self.client = httpx.AsyncClient()
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                except Exception as e:  # a bug here must not end the workers beside it
                    self.log.exception("alert.tick_failed", error=type(e).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every)
        finally:
            if self._direct:  # notifications of a Redis outage still being retried
                _, late = await asyncio.wait(self._direct, timeout=5)
                for task in late:
                    task.cancel()
            if own_client and self.client is not None:
                await self.client.aclose()

    async def tick(self) -> None:
        up = await self.store.ping()
        if any(r.when == "redis_unavailable" for r in self.settings.rules):
            self.watch_redis(up, self.clock())  # this process's own view: its own clock
        if not up:
            return
        try:
            ttl = int(float(self.settings.evaluate_every) * 1000)
            # Redis's clock, not this process's: `for`, `resolve_after` and the outbox
            # leases compare times written by different processes, whose clocks may differ.
            took, now = await self.outbox.lock(self.token, ttl)
            started = time.monotonic()
            if took:
                await self.evaluate(now)
            await self.send_due(now + (time.monotonic() - started))
            self._failing = False
        except _STORE_ERRORS as e:
            if not self._failing:  # once per spell, not once a second
                self.log.warning("alert.evaluate_failed", error=type(e).__name__)
            self._failing = True

    # -- rules read from Redis, state in Redis -------------------------------------------

    async def evaluate(self, now: float) -> list[str]:
        """One evaluation of every rule; returns the transitions this process made."""
        readings = await read(self.config, self.store, now)
        pairs = [(r.rule.name, r.subject) for r in readings]
        states = await load(self.store, pairs)
        listed = set(await known(self.store))
        made = await self._unconfigured(sorted(listed - set(pairs)), now)
        now_ms = int(now * 1000)
        # The known set follows the states: one that expired (ok now) leaves it; one
        # written before the set existed joins it.
        await forget(self.store, [p for p, s in zip(pairs, states, strict=True)
                                  if (s.state == "ok") == (p in listed)], listed)  # fmt: skip
        for reading, old in zip(readings, states, strict=True):
            rule = reading.rule
            new, transition = step(
                old,
                reading.breached,
                now_ms,
                int(float(rule.for_) * 1000),
                int(float(rule.resolve_after) * 1000),
            )
            if new == old:
                continue
            jobs, memo = {}, b""
            if transition:
                jobs = self._jobs(
                    rule, reading, new if transition == "firing" else old, transition, now
                )
            if transition == "firing":
                memo = self._memo(rule, reading, new, now)
            saved = await self.outbox.save(rule.name, reading.subject, old, new, now_ms, jobs, memo)
            if saved and transition:
                made.append(f"{transition}:{rule.name}:{reading.subject}")
                self.log.info(
                    f"alert.{transition}",
                    rule=rule.name,
                    subject=reading.subject,
                    value=reading.value,
                    threshold=reading.threshold,
                )
        return made

    async def _unconfigured(self, gone: list[tuple[str, str]], now: float) -> list[str]:
        """End the incidents of (rule, subject) pairs the config no longer has (a rule
        removed or renamed, a destination or source gone from a "*" rule): a firing one
        resolves (notified, reason: no longer configured), a pending one is dropped.
        Otherwise it would stay firing, unresolved, and a rule put back would continue it
        silently instead of notifying its next incident."""
        if not gone:
            return []
        made = []
        now_ms = int(now * 1000)
        for (rule, subject), old in zip(gone, await load(self.store, gone), strict=True):
            jobs = self._memo_jobs(old, now) if old.state in ("firing", "resolving") else {}
            new = State("ok", 0, 0, old.version)
            if not await self.outbox.save(rule, subject, old, new, now_ms, jobs):
                continue  # another process stepped it meanwhile: the next evaluation sees
            if old.state == "ok":  # gone already (expired): just out of the set
                continue
            self.log.info("alert.unconfigured", rule=rule, subject=subject, state=old.state,
                          notified=sorted(jobs))  # fmt: skip
            if jobs:
                made.append(f"resolved:{rule}:{subject}")
        return made

    def _memo(self, rule: AlertRule, reading: Reading, s: State, now: float) -> bytes:
        n = self._notification(rule, reading.subject, reading.value, reading.threshold,
                               "firing", s.since / 1000, f"{rule.name}|{reading.subject}|"
                               f"{s.since}", "", now)  # fmt: skip
        return msgspec.json.encode(Memo(notification=n, channels=list(rule.notify)))

    def _memo_jobs(self, s: State, now: float) -> dict[str, bytes]:
        """The resolves of an incident whose rule or subject left the config."""
        try:
            memo = _decode_memo(s.memo)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return {}  # a state written before memos existed: nothing to say it with
        jobs = {}
        for channel in memo.channels:
            if channel not in self.settings.notify:
                continue
            n = msgspec.structs.replace(
                memo.notification,
                kind="resolved",
                channel=channel,
                value=None,
                resolved_at=(s.clear_since or int(now * 1000)) / 1000,
                created=now,
                attempts=0,
                reason="no longer configured (the rule or its subject left the config)",
            )
            jobs[f"{n.incident}|resolved|{channel}"] = msgspec.json.encode(n)
        return jobs

    def _jobs(
        self, rule: AlertRule, reading: Reading, s: State, kind: str, now: float
    ) -> dict[str, bytes]:
        started = s.since / 1000
        incident = f"{rule.name}|{reading.subject}|{s.since}"
        jobs = {}
        for channel in rule.notify:
            n = self._notification(rule, reading.subject, reading.value, reading.threshold,
                                   kind, started, incident, channel, now)  # fmt: skip
            if kind == "resolved":  # (clear_since is 0 if it resolved in the same step)
                n.resolved_at = (s.clear_since or int(now * 1000)) / 1000
            jobs[f"{incident}|{kind}|{channel}"] = msgspec.json.encode(n)
        return jobs

    def _notification(
        self,
        rule: AlertRule,
        subject: str,
        value: float | None,
        threshold: float,
        kind: str,
        started: float,
        incident: str,
        channel: str,
        now: float,
    ) -> Notification:
        windowed = rule.when in ("destination_failure_rate", "dead_letters", "quarantine")
        return Notification(
            kind=kind,  # type: ignore[arg-type]
            rule=rule.name,
            subject=subject,
            condition=rule.when,
            value=value,
            threshold=threshold,
            window=float(rule.window) if windowed else None,
            started_at=started,
            incident=incident,
            channel=channel,
            created=now,
        )

    async def send_due(self, now: float) -> int:
        """Send the notifications due now (claimed, so each by one process); returns how
        many went out."""
        token, jobs = await self.outbox.claim(int(now * 1000), int(self.lease * 1000))
        if not jobs:
            return 0
        results = await asyncio.gather(*(self._send_job(i, j, token, now) for i, j in jobs.items()))
        return sum(results)

    async def _send_job(self, job_id: str, raw: bytes, token: int, now: float) -> bool:
        try:
            n = _decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            # (Written by another version of the gateway, say.) Nothing can send it: drop
            # it, once, instead of claiming it again every lease.
            self.log.error("alert.notification_dropped", job=job_id, error=str(e))
            await self.outbox.done(job_id, token)
            return False
        notifier = self.settings.notify.get(n.channel)
        if notifier is None:  # the channel left the config since: nobody to tell
            await self.outbox.done(job_id, token)
            return False
        try:
            assert self.client is not None
            await send(notifier, n, self.client, self.settings.console_url)
        except NotifyError as e:
            n.attempts += 1
            gave_up = not e.retryable or now - n.created >= GIVE_UP_AFTER
            self.log.warning(
                "alert.notify_failed",
                rule=n.rule,
                subject=n.subject,
                kind=n.kind,
                channel=n.channel,
                error=str(e),
                attempts=n.attempts,
                gave_up=gave_up,
            )
            if gave_up:
                await self.outbox.done(job_id, token)
            else:
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (n.attempts - 1))
                await self.outbox.retry(job_id, token, int((now + delay) * 1000), n)
            return False
        await self.outbox.done(job_id, token)
        self.log.info("alert.notified", rule=n.rule, subject=n.subject, kind=n.kind,
                      channel=n.channel)  # fmt: skip
        return True

    # -- Redis itself: each process on its own -------------------------------------------

    def watch_redis(self, up: bool, now: float) -> None:
        now_ms = int(now * 1000)
        for rule in self.settings.rules:
            if rule.when != "redis_unavailable":
                continue
            old = self.local.get(rule.name, State())
            new, transition = step(old, not up, now_ms, int(float(rule.for_) * 1000),
                                   int(float(rule.resolve_after) * 1000))  # fmt: skip
            self.local[rule.name] = new
            if transition is None:
                continue
            s = new if transition == "firing" else old
            self.log.info(f"alert.{transition}", rule=rule.name, subject="redis")
            # Every process sees the outage at about the same time: the incident is named
            # after its minute, so the webhook-id is usually the same in every process.
            incident = f"{rule.name}|redis|{s.since // 60000 * 60000}"
            for channel in rule.notify:
                n = self._notification(rule, "redis", None, 0.0, transition, s.since / 1000,
                                       incident, channel, now)  # fmt: skip
                if transition == "resolved":
                    n.resolved_at = (s.clear_since or now_ms) / 1000
                task = asyncio.create_task(self._send_direct(n))
                self._direct.add(task)
                task.add_done_callback(self._direct.discard)

    async def _send_direct(self, n: Notification) -> None:
        """Send with retries from this process (Redis is not there to hold the job)."""
        notifier = self.settings.notify[n.channel]
        delay = BACKOFF_FIRST
        while True:
            try:
                assert self.client is not None
                await send(notifier, n, self.client, self.settings.console_url)
                self.log.info("alert.notified", rule=n.rule, subject=n.subject, kind=n.kind,
                              channel=n.channel)  # fmt: skip
                return
            except NotifyError as e:
                n.attempts += 1
                gave_up = not e.retryable or self.clock() - n.created >= GIVE_UP_AFTER
                self.log.warning("alert.notify_failed", rule=n.rule, subject=n.subject,
                                 kind=n.kind, channel=n.channel, error=str(e),
                                 attempts=n.attempts, gave_up=gave_up)  # fmt: skip
                if gave_up:
                    return
            await asyncio.sleep(delay)
            delay = min(BACKOFF_MAX, delay * 2)

    def __repr__(self) -> str:  # never the notifiers' secrets
        return f"Alerts(rules={len(self.settings.rules)})"
