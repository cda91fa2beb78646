"""Alerts: rules on the activity counts, one notification per incident start and end, on a
local Slack-like server, a local Standard Webhooks receiver and a local SMTP server.

The engine tests drive an `Alerts` with a settable clock over the real Redis (counts written
at chosen times, as the processes' flushes would); the process tests run real `webhook-gateway
serve` processes over a real failing destination.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from standardwebhooks.webhooks import Webhook

from gateway.activity import Activity
from gateway.alerts import Alerts
from gateway.alerts.rules import usual_silence
from gateway.alerts.state import Outbox, load, step
from gateway.errors import ConfigError
from gateway.store import Store
from tests.conftest import config, drop_keys, drop_prefix, free_port, until
from tests.destinations.conftest import VendorServer
from tests.test_cli import Server
from tests.test_serve_workers import SECRET, post_webhooks

HOOK_SECRET = "whsec_" + "c2VjcmV0LWZvci1hbGVydC10ZXN0cy0xMjM0NTY3OA=="


# -- the local receivers -----------------------------------------------------------------


@dataclass
class Mailbox:
    """A local SMTP server (aiosmtpd) that keeps every message it is given."""

    port: int = field(default_factory=free_port)
    messages: list[email.message.EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        return "250 OK"

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]


@pytest.fixture
def mailbox():
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    yield box
    controller.stop()


@pytest.fixture
def slack():
    server = VendorServer(default=(200, {}, b"ok"))
    server.start()
    yield server
    server.stop(wait=False)


@pytest.fixture
def hook():
    server = VendorServer(default=(204, {}, b""))
    server.start()
    yield server
    server.stop(wait=False)


def posts(server: VendorServer, kind: str) -> list[str]:
    """The Slack-like server's posts about `kind` (firing / resolved)."""
    return [r.body.decode() for r in server.requests if f"] {kind.upper()}:" in r.body.decode()]


def verified(server: VendorServer, kind: str) -> list[dict]:
    """The webhook receiver's posts of `alert.<kind>`, each verified with standardwebhooks'
    own Webhook.verify (raises on a bad signature)."""
    out = []
    for r in server.requests:
        body = Webhook(HOOK_SECRET).verify(r.body, r.headers)
        if body["type"] == f"alert.{kind}":
            out.append({**body, "webhook-id": r.headers["webhook-id"]})
    return out


def notifiers(slack: VendorServer, hook: VendorServer, mailbox: Mailbox) -> str:
    return f"""\
    oncall: {{type: slack, url: "{slack.url}/services/T0/B0/xyz"}}
    hook: {{type: webhook, url: "{hook.url}/alerts", secret: "{HOOK_SECRET}"}}
    mail: {{type: email, host: 127.0.0.1, port: {mailbox.port}, starttls: false,
           from: gateway@example.com, to: [oncall@example.com]}}
"""


# -- the engine, with a settable clock ---------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def engine_config(prefix: str, redis_url: str, notify: str, rules: str) -> str:
    return f"""\
redis_url: {redis_url}
key_prefix: {prefix}
sources:
  stripe: {{type: stripe, secrets: [whsec_x]}}
destinations:
  crm: {{type: file, path: /dev/null, start: earliest}}
  warehouse: {{type: file, path: /dev/null, start: earliest}}
alerts:
  evaluate_every: 1s
  notify:
{notify}
  rules:
{rules}"""


@pytest.fixture
async def prefixed(redis_url):
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    stores: list[Store] = []

    def make() -> Store:
        st = Store.connect(redis_url, prefix, timeout=2.0)
        stores.append(st)
        return st

    cleaner = make()
    yield prefix, make
    await drop_prefix(cleaner.client, prefix)
    for st in stores:
        await st.close()


async def counted(store: Store, at: float, **counts: int) -> None:
    """Counts of destination `crm` flushed at time `at`, as a gateway process would."""
    activity = Activity()
    for outcome, n in counts.items():
        activity.count("destination", "crm", outcome, n)
    assert await activity.flush(store, now=at)


async def test_failure_flapping_and_a_failed_slack_post_still_one_alert_and_one_resolve(
    prefixed, redis_url, slack, hook, mailbox
):
    """A failure rate that flaps (clear for less than resolve_after, again and again) is
    one incident: one firing and, once clear for good, one resolved, on every channel. A
    Slack 500 is retried until Slack takes it."""
    prefix, make = prefixed
    store = make()
    rules = """\
    - {name: crm failing, when: destination_failure_rate, destination: crm, above: 0.5,
       min_events: 3, window: 10s, resolve_after: 5s, notify: [oncall, hook, mail]}
"""
    cfg = config(engine_config(prefix, redis_url, notifiers(slack, hook, mailbox), rules))
    start = (time.time() // 5) * 5  # a 5 s bucket's start: the seconds below count from it
    clock = Clock(start)
    alerts = Alerts(cfg, store, clock)
    slack.reply((500, {}, b"server_error"))  # Slack fails the first post
    states = []
    async with httpx.AsyncClient() as client:
        alerts.client = client
        # Failing, then clear for 3 s (the 10 s window is the current 5 s bucket and the
        # one before: counts of second 0 leave it at second 10), then failing again, three
        # times over (3 s < resolve_after); then clear for good.
        breaches = {0, 13, 23, 33}
        for second in range(70):
            clock.now = start + second
            if second in breaches:
                await counted(store, clock.now, retried=5)
            await alerts.evaluate(clock.now)
            [s] = await load(store, [("crm failing", "crm")])
            states.append(s.state)
            await alerts.send_due(clock.now)
    # The condition did flap: it cleared and came back (silently) at least three times.
    flaps = sum(1 for a, b in itertools.pairwise(states) if (a, b) == ("resolving", "firing"))
    assert flaps >= 3, states
    assert states[-1] == "ok"

    ok_slack = [r for r in slack.requests if b"FIRING" in r.body]
    assert len(ok_slack) == 2  # the 500, then the retry Slack took
    assert ok_slack[0].body == ok_slack[1].body
    assert len(posts(slack, "resolved")) == 1
    firing = verified(hook, "firing")
    resolved = verified(hook, "resolved")
    assert len(firing) == 1 and len(resolved) == 1
    assert firing[0]["rule"] == "crm failing" and firing[0]["subject"] == "crm"
    assert firing[0]["value"] == 1.0 and firing[0]["threshold"] == 0.5
    assert firing[0]["webhook-id"] != resolved[0]["webhook-id"]
    assert mailbox.subjects() == [
        "[webhook-gateway] FIRING: crm failing crm",
        "[webhook-gateway] RESOLVED: crm failing crm",
    ]
    body = mailbox.messages[0].get_content()
    assert "failure rate 100% (threshold 50%) over 10s" in body


async def test_two_processes_evaluating_the_same_tick_make_one_transition(
    prefixed, redis_url, slack, hook, mailbox
):
    """Two gateway processes' engines (own Redis connections) step the same state at the
    same moment: only one transition is written, so one notification per channel."""
    prefix, make = prefixed
    rules = """\
    - {name: dead letters, when: dead_letters, destination: "*", window: 10s,
       resolve_after: 0s, notify: [oncall]}
"""
    cfg = config(engine_config(prefix, redis_url, notifiers(slack, hook, mailbox), rules))
    now = time.time() - 3600
    one, two = Alerts(cfg, make(), Clock(now)), Alerts(cfg, make(), Clock(now))
    await counted(one.store, now, dead_lettered=2)
    made = await asyncio.gather(*(a.evaluate(now) for a in [one, two] * 4))
    assert sorted(t for one_made in made for t in one_made) == ["firing:dead letters:crm"]
    async with httpx.AsyncClient() as client:
        one.client = two.client = client
        await asyncio.gather(one.send_due(now), two.send_due(now), one.send_due(now))
    assert len(slack.requests) == 1
    assert "2 dead letters (threshold 0) over 10s" in slack.requests[0].body.decode()


async def test_a_transition_written_from_a_stale_state_loses(prefixed, redis_url):
    """Two processes read the same state before either wrote: both step it to firing (at
    their own clock), both try to write; the second write is refused with its
    notifications, so one incident with one notification per channel remains."""
    _, make = prefixed
    one, two = Outbox(make()), Outbox(make())
    [old] = await load(one.store, [("rule", "crm")])
    now = int(time.time() * 1000)
    tries = []
    for outbox, at in ((one, now), (two, now + 300)):
        new, transition = step(old, True, at, 0, 0)
        assert transition == "firing"
        tries.append(
            outbox.save("rule", "crm", old, new, at, {f"rule|crm|{at}|firing|oncall": b"{}"})
        )
    assert sorted(await asyncio.gather(*tries)) == [False, True]
    outbox, due = one.store.keys.alert_outbox()
    assert await one.store.client.hlen(outbox) == 1
    assert await one.store.client.zcard(due) == 1
    [now_state] = await load(one.store, [("rule", "crm")])
    assert now_state.state == "firing" and now_state.version == 1


async def test_a_notification_a_dead_process_claimed_is_sent_after_its_lease(
    prefixed, redis_url, slack, hook, mailbox
):
    """A process claims a notification and dies before sending it: nobody else sends it
    while its lease runs, and one process sends it, once, when the lease is over."""
    prefix, make = prefixed
    rules = """\
    - {name: dead letters, when: dead_letters, destination: crm, window: 10s, notify: [oncall]}
"""
    cfg = config(engine_config(prefix, redis_url, notifiers(slack, hook, mailbox), rules))
    now = time.time() - 3600
    await counted(make(), now, dead_lettered=1)
    async with httpx.AsyncClient() as client:
        dead, alive = (
            Alerts(cfg, make(), Clock(now), client),
            Alerts(cfg, make(), Clock(now), client),
        )
        assert await dead.evaluate(now) == ["firing:dead letters:crm"]
        _, jobs = await dead.outbox.claim(int(now * 1000), int(dead.lease * 1000))
        assert len(jobs) == 1  # ... and the process dies here, holding it
        assert await alive.send_due(now + 1) == 0
        assert await alive.send_due(now + dead.lease - 1) == 0
        assert await alive.send_due(now + dead.lease + 1) == 1
        assert await alive.send_due(now + 2 * dead.lease + 2) == 0
    assert len(slack.requests) == 1


async def test_a_send_slower_than_its_timeout_is_abandoned_well_before_the_lease(
    prefixed, redis_url
):
    """httpx's timeout bounds each read, not the request: a channel trickling its answer a
    byte at a time (each within the 1 s timeout) must not keep the send going past the
    lease (timeout + 30 s), or another process claims the job and posts it again. The send
    gives up at the timeout and the job is retried later, still in the outbox."""
    requests: list[float] = []

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await reader.read(65536)
        requests.append(time.monotonic())
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n")
        try:
            for _ in range(20):  # a byte every 0.5 s: 10 s in all
                await writer.drain()
                await asyncio.sleep(0.5)
                writer.write(b"o")
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(drip, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    prefix, make = prefixed
    store = make()
    url = f"http://127.0.0.1:{port}/services/x"
    notify = f'    oncall: {{type: slack, url: "{url}", timeout: 1s}}\n'
    rules = "    - {name: dlq, when: dead_letters, destination: crm, window: 10s,\n"
    rules += "       notify: [oncall]}\n"
    cfg = config(engine_config(prefix, redis_url, notify, rules))
    now = time.time()
    await counted(store, now, dead_lettered=1)
    try:
        async with httpx.AsyncClient() as client:
            alerts = Alerts(cfg, store, Clock(now), client)
            assert await alerts.evaluate(now) == ["firing:dlq:crm"]
            started = time.monotonic()
            assert await alerts.send_due(now) == 0
            took = time.monotonic() - started
    finally:
        server.close()
    assert len(requests) == 1
    assert took < 2.5 < alerts.lease  # the 1 s timeout, and Redis round trips
    outbox, due = store.keys.alert_outbox()
    [(job_id, due_ms)] = await store.client.zrange(due, 0, -1, withscores=True)
    assert json.loads(await store.client.hget(outbox, job_id))["attempts"] == 1
    assert due_ms == int((now + 2) * 1000)  # the first backoff, not the lease's end


async def test_a_rule_or_subject_leaving_the_config_resolves_and_coming_back_fires_again(
    prefixed, redis_url, slack, hook, mailbox
):
    """A rule removed while firing, and a destination gone from a "*" rule while firing,
    each get a final resolve (reason: no longer configured) instead of staying firing for
    8 days; the rule put back later notifies its next incident (FIRING) again."""
    prefix, make = prefixed
    store = make()
    both = """\
    - {name: dlq, when: dead_letters, destination: crm, window: 10s, resolve_after: 1h,
       notify: [oncall]}
    - {name: any dlq, when: dead_letters, destination: "*", window: 10s, resolve_after: 1h,
       notify: [hook]}
"""
    text = engine_config(prefix, redis_url, notifiers(slack, hook, mailbox), both)
    now = time.time()
    activity = Activity()
    activity.count("destination", "crm", "dead_lettered", 3)
    activity.count("destination", "warehouse", "dead_lettered", 3)
    assert await activity.flush(store, now=now)
    async with httpx.AsyncClient() as client:
        first = Alerts(config(text), store, Clock(now), client)
        assert sorted(await first.evaluate(now)) == [
            "firing:any dlq:crm", "firing:any dlq:warehouse", "firing:dlq:crm"
        ]  # fmt: skip
        assert await first.send_due(now) == 3
        # The config changes: rule `dlq` is gone, and so is the destination warehouse.
        edited = text.replace(both.splitlines()[0] + "\n" + both.splitlines()[1] + "\n", "")
        edited = edited.replace("  warehouse: {type: file, path: /dev/null, start: earliest}\n", "")
        second = Alerts(config(edited), store, Clock(now + 30), client)
        assert sorted(await second.evaluate(now + 30)) == [
            "resolved:any dlq:warehouse", "resolved:dlq:crm"
        ]  # fmt: skip
        assert await second.send_due(now + 30) == 2
        assert await second.evaluate(now + 60) == []  # once
        [resolved] = posts(slack, "resolved")
        assert "no longer configured" in resolved
        [gone] = verified(hook, "resolved")
        assert (gone["subject"], gone["reason"]) == ("warehouse", gone["reason"])
        assert "no longer configured" in gone["reason"]
        assert gone["webhook-id"] != verified(hook, "firing")[1]["webhook-id"]
        # An hour later the rule is put back and crm dead-letters again: a new incident.
        later = now + 3600
        activity.count("destination", "crm", "dead_lettered", 3)
        assert await activity.flush(store, now=later)
        third = Alerts(config(text), store, Clock(later), client)
        assert "firing:dlq:crm" in await third.evaluate(later)
        await third.send_due(later)
    assert len(posts(slack, "firing")) == 2
    assert len(posts(slack, "resolved")) == 1


async def test_an_unusable_url_or_job_is_dropped_once_with_a_log_line(
    prefixed, redis_url, slack, hook, mailbox
):
    """A URL httpx refuses (here set behind the config check's back) and a job that no
    longer decodes are settled at once, logged, and never claimed again; the other jobs go
    out. (The config check refuses such URLs: test_a_url_httpx_would_refuse_...)."""
    from structlog.testing import capture_logs

    from gateway.config import Secret

    prefix, make = prefixed
    store = make()
    rules = """\
    - {name: dlq, when: dead_letters, destination: crm, window: 10s, notify: [oncall, hook]}
"""
    cfg = config(engine_config(prefix, redis_url, notifiers(slack, hook, mailbox), rules))
    cfg.alerts.notify["oncall"].url = Secret("https://hooks.slack.com:443x/services/T/B/SECRET")
    now = time.time()
    await counted(store, now, dead_lettered=1)
    outbox, due = store.keys.alert_outbox()
    await store.client.hset(outbox, "junk", b'{"kind": "firing"')
    await store.client.zadd(due, {"junk": int(now * 1000)})
    async with httpx.AsyncClient() as client:
        alerts = Alerts(cfg, store, Clock(now), client)
        await alerts.evaluate(now)
        with capture_logs() as logs:
            assert await alerts.send_due(now) == 1  # the webhook
            assert await alerts.send_due(now + 3600) == 0
    assert await store.client.hlen(outbox) == 0 and await store.client.zcard(due) == 0
    events = {e["event"]: e for e in logs}
    assert events["alert.notification_dropped"]["job"] == "junk"
    failed = events["alert.notify_failed"]
    assert (failed["channel"], failed["gave_up"]) == ("oncall", True)
    assert "InvalidURL" in failed["error"] and "SECRET" not in str(logs)
    assert len(verified(hook, "firing")) == 1 and not slack.requests


async def test_processes_with_skewed_clocks_keep_for_and_agree_on_redis_time(
    prefixed, redis_url, slack, hook, mailbox
):
    """Two processes, one clock 5 minutes ahead: the one ahead evaluating a second after
    the other must not see `for: 5m` as served (both take the time from Redis)."""
    prefix, make = prefixed
    rules = """\
    - {name: lagging, when: lag, destination: crm, above: 0, for: 5m, notify: [oncall]}
"""
    cfg = config(engine_config(prefix, redis_url, notifiers(slack, hook, mailbox), rules))
    right, ahead = make(), make()
    await right.client.xadd(right.keys.events(), {"n": "1"})  # crm is 1 behind: breached
    async with httpx.AsyncClient() as client:
        one = Alerts(cfg, right, lambda: time.time(), client)
        two = Alerts(cfg, ahead, lambda: time.time() + 301, client)
        for engine in (one, two, one, two):
            await right.client.delete(right.keys.alert_lock())  # the next tick's turn
            await engine.tick()
        [state] = await load(right, [("lagging", "crm")])
    assert state.state == "pending"
    assert abs(state.since / 1000 - time.time()) < 5  # Redis's clock (this machine's)
    assert not slack.requests


async def test_under_replicated_durability_notifications_wait_for_a_replica(
    private_redis, slack, hook, mailbox
):
    """`durability: replicated`: a transition no replica has confirmed is not notified
    (a failover could undo it and notify it again); once a replica is attached, it is,
    once, and the replica holds the state and no unsent job."""
    import redis as sync_redis

    from tests.services import RedisServer

    rules = """\
    - {name: dlq, when: dead_letters, destination: crm, window: 2m, notify: [oncall]}
"""
    text = engine_config("test-alerts-wait", private_redis.url, notifiers(slack, hook, mailbox),
                         rules)  # fmt: skip
    # (A WAIT lasts 30% of the timeout: 0.9 s, for a loaded test machine.)
    store = Store.connect(private_redis.url, "test-alerts-wait", 3.0, durability="replicated")
    alerts = Alerts(config(text), store)
    replica = RedisServer(free_port())
    try:
        await counted(store, time.time(), dead_lettered=1)
        async with httpx.AsyncClient() as client:
            alerts.client = client
            await alerts.tick()  # the transition is written on the primary, unconfirmed
            assert not slack.requests
            assert await store.client.hget(store.keys.alert("dlq", "crm"), "state") == b"firing"
            replica.start()
            sync_redis.Redis(port=replica.port).replicaof("127.0.0.1", private_redis.port)

            async def sent() -> bool:
                await store.client.delete(store.keys.alert_lock())
                await alerts.tick()
                return bool(slack.requests)

            await until(sent, 30, what="the firing once a replica confirms")
        copy = sync_redis.Redis(port=replica.port)
        assert copy.hget(store.keys.alert("dlq", "crm"), "state") == b"firing"
        assert copy.hlen(store.keys.alert_outbox()[0]) == 0
        assert len(posts(slack, "firing")) == 1
    finally:
        replica.stop()
        await store.close()


@pytest.mark.parametrize("window", ["1d", "26h", "3h", "181m", "2h"])
async def test_a_long_window_counts_exactly_what_fell_in_it(prefixed, redis_url, window):
    """Windows of many minutes read whole hours from the hourly counts and minutes at the
    ends: the value is still the sum of the counts whose minute is in the window (the n
    newest minutes, the current one included), computed here from what was written."""
    from gateway.alerts.rules import read

    prefix, make = prefixed
    store = make()
    rules = f"""\
    - {{name: dlq, when: dead_letters, destination: crm, window: {window}, notify: [oncall]}}
    - {{name: rate, when: destination_failure_rate, destination: "*", above: 0.5,
       window: {window}, notify: [oncall]}}
"""
    cfg = config(engine_config(prefix, redis_url, '    oncall: {type: slack, url: "http://x/"}\n',
                               rules))  # fmt: skip
    now = time.time()
    minutes = int(float(cfg.alerts.rules[0].window) // 60)
    last = int(now // 60)
    written: dict[int, int] = {}
    # Every minute of the window and two before it, each its own count.
    for back in range(minutes + 2):
        minute = last - back
        n = 1 + back % 7
        written[minute] = written.get(minute, 0) + n
        await counted(store, minute * 60 + 30, dead_lettered=n, sent=2 * n)
    expected = sum(n for minute, n in written.items() if minute > last - minutes)
    readings = {(r.rule.name, r.subject): r for r in await read(cfg, store, now)}
    assert readings[("dlq", "crm")].value == expected
    assert readings[("rate", "crm")].value == pytest.approx(expected / (3 * expected))
    assert readings[("rate", "warehouse")].value is None


@pytest.mark.parametrize(
    ("hours", "usual"),
    [
        ([1] * 30, 3600.0),  # busy every hour: at least 1 h
        ([1, 0, 0, 0] * 8, 6 * 3600.0),  # 3 silent hours between busy ones: twice that
        ([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] * 3 + [1], 22 * 3600.0),
        ([0] * 20 + [1, 0, 1], None),  # 3 hours of history: too little to judge
        ([1] + [0] * 40, None),  # one busy hour: no gap seen yet
    ],
)
def test_usual_silence_is_twice_the_longest_gap_seen(hours, usual):
    assert usual_silence(hours) == usual


async def test_each_condition_fires_on_its_own_measure(prefixed, redis_url, slack, hook, mailbox):
    """dead_letters, quarantine, lag and source_silent fire for the subject whose figures
    cross the threshold, and only for it."""
    prefix, make = prefixed
    store = make()
    rules = """\
    - {name: dlq, when: dead_letters, destination: "*", above: 1, window: 1m,
       resolve_after: 0s, notify: [hook]}
    - {name: quarantine, when: quarantine, source: "*", window: 30s, resolve_after: 0s,
       notify: [hook]}
    - {name: lag, when: lag, destination: "*", above: 2, resolve_after: 0s, notify: [hook]}
    - {name: silent, when: source_silent, source: "*", longer_than: 2m, resolve_after: 0s,
       notify: [hook]}
"""
    cfg = config(engine_config(prefix, redis_url, notifiers(slack, hook, mailbox), rules))
    now = time.time()
    activity = Activity()
    activity.count("destination", "crm", "dead_lettered", 2)  # above 1: fires
    activity.count("destination", "warehouse", "dead_lettered", 1)  # not above 1
    activity.count("quarantine", "stripe", "schema", 1)
    assert await activity.flush(store, now=now - 20)
    # Three events nobody read: `start: earliest` destinations are 3 behind (above 2).
    for i in range(3):
        await store.client.xadd(store.keys.events(), {"n": str(i)})
    alerts = Alerts(cfg, store, Clock(now))
    made = await alerts.evaluate(now)
    # And stripe accepted nothing in the last 2 minutes: silent.
    assert sorted(made) == [
        "firing:dlq:crm",
        "firing:lag:crm",
        "firing:lag:warehouse",
        "firing:quarantine:stripe",
        "firing:silent:stripe",
    ]
    # Two minutes later: the dead letters and the quarantined delivery have left their
    # windows, both destinations have read everything, stripe accepted one a minute ago.
    activity.count("source", "stripe", "accepted", 1)
    assert await activity.flush(store, now=now + 60)
    for name in ("crm", "warehouse"):
        await store.client.xgroup_create(store.keys.events(), f"deliver:{name}", id="$")
    made = await alerts.evaluate(now + 120)
    assert sorted(made) == [
        "resolved:dlq:crm",
        "resolved:lag:crm",
        "resolved:lag:warehouse",
        "resolved:quarantine:stripe",
        "resolved:silent:stripe",
    ]
    async with httpx.AsyncClient() as client:
        alerts.client = client
        assert await alerts.send_due(now + 120) == 10
    assert sorted((b["rule"], b["subject"]) for b in verified(hook, "firing")) == sorted(
        (b["rule"], b["subject"]) for b in verified(hook, "resolved")
    )
    assert len(verified(hook, "resolved")) == 5


async def test_redis_unavailable_notifies_from_the_process_itself(
    private_redis, slack, hook, mailbox
):
    """Redis down: the process notifies on its own (nothing to agree through), once, and
    once more when Redis answers again."""
    rules = """\
    - {name: redis down, when: redis_unavailable, resolve_after: 0s, notify: [oncall]}
"""
    cfg = config(
        engine_config("test-redis-down", private_redis.url, notifiers(slack, hook, mailbox), rules)
    )
    store = Store.connect(private_redis.url, "test-redis-down", timeout=0.5)
    alerts = Alerts(cfg, store)
    async with httpx.AsyncClient() as client:
        alerts.client = client
        await alerts.tick()
        private_redis.stop()
        for _ in range(3):
            await alerts.tick()
        await until(lambda: len(slack.requests) == 1, what="the firing post")
        private_redis.start()
        for _ in range(3):
            await alerts.tick()
        await until(lambda: len(slack.requests) == 2, what="the resolved post")
    assert "FIRING: redis down redis" in slack.requests[0].body.decode()
    assert "RESOLVED: redis down redis" in slack.requests[1].body.decode()
    await store.close()


# -- real gateway processes -------------------------------------------------------------

PROCESS_CONFIG = """\
redis_url: ${REDIS_URL}
key_prefix: ${PREFIX}
operator: {listen: "127.0.0.1:0"}
sources:
  stripe:
    type: stripe
    secrets: ["${STRIPE_WEBHOOK_SECRET}"]
destinations:
  crm: {type: http, url: "%(dest)s/events", start: earliest, backoff: 100ms,
        backoff_max: 300ms, linger: 10ms}
alerts:
  evaluate_every: 1s
  notify:
%(notify)s
  rules:
    - {name: crm failing, when: destination_failure_rate, destination: "*", above: 0.5,
       min_events: 3, window: 10s, resolve_after: 3s, notify: [oncall, hook, mail]}
"""


@pytest.fixture
def gateway_env(tmp_path, redis_url):
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    env = {
        "REDIS_URL": redis_url,
        "PREFIX": prefix,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "LOG_LEVEL": "info",
    }
    servers: list[Server] = []

    def start(name: str, cfg: str) -> Server:
        home = tmp_path / name
        home.mkdir()
        server = Server(home, env, config=cfg)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.kill()
    drop_keys(redis_url, prefix)


def wait_until(condition, seconds: float = 40, what: str = "the condition"):
    """Poll `condition` until truthy (for tests without an event loop)."""
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds} s for {what}; last value: {result!r}")
        time.sleep(0.05)
    return result


def everywhere(kind: str, slack: VendorServer, hook: VendorServer, mailbox: Mailbox):
    """`kind` has reached all three channels."""
    word = kind.upper()
    return (
        posts(slack, kind)
        and verified(hook, kind)
        and any(f"] {word}:" in subject for subject in mailbox.subjects())
    )


def exactly_one_each(slack: VendorServer, hook: VendorServer, mailbox: Mailbox) -> None:
    assert len(posts(slack, "firing")) == 1
    assert len(posts(slack, "resolved")) == 1
    assert [b["type"] for b in verified(hook, "firing") + verified(hook, "resolved")] == [
        "alert.firing",
        "alert.resolved",
    ]
    assert mailbox.subjects() == [
        "[webhook-gateway] FIRING: crm failing crm",
        "[webhook-gateway] RESOLVED: crm failing crm",
    ]


def log_events(server: Server) -> list[str]:
    return [
        json.loads(x).get("event", "")
        for x in server.log.read_text().splitlines()
        if x.startswith("{")
    ]


@pytest.fixture
def failing_destination():
    server = VendorServer(default=(500, {}, b'{"error": "down"}'))
    server.start()
    yield server
    server.stop(wait=False)


def test_a_failing_destination_alerts_once_and_a_restart_mid_incident_does_not_again(
    gateway_env, failing_destination, slack, hook, mailbox
):
    """A destination answering 500 for the window: one alert on each channel. The gateway
    restarts while it still fails: no second alert. It recovers: one resolve each."""
    dest = failing_destination
    cfg = PROCESS_CONFIG % {"dest": dest.url, "notify": notifiers(slack, hook, mailbox)}
    first = gateway_env("first", cfg)
    assert all(r.status_code == 200 for r in post_webhooks(first.url, ["evt_1", "evt_2", "evt_3"]))
    wait_until(lambda: everywhere("firing", slack, hook, mailbox), what="the alert everywhere")
    first.stop()

    second = gateway_env("second", cfg)
    attempts = len(dest.requests)
    # The restarted gateway keeps retrying (and failing): the incident goes on.
    wait_until(lambda: len(dest.requests) > attempts + 5, what="retries after the restart")
    dest.default = (200, {}, b"{}")
    wait_until(lambda: everywhere("resolved", slack, hook, mailbox), what="the resolve everywhere")
    # A second firing would have been sent before the resolve (same process, same order).
    exactly_one_each(slack, hook, mailbox)
    assert "alert.firing" in log_events(first)
    events = log_events(second)
    assert "alert.firing" not in events and "alert.resolved" in events
    second.stop()


def test_two_gateway_processes_still_alert_once_and_resolve_once(
    gateway_env, failing_destination, slack, hook, mailbox
):
    """Two `serve` processes on one Redis evaluate the same rules: one alert, one resolve."""
    dest = failing_destination
    cfg = PROCESS_CONFIG % {"dest": dest.url, "notify": notifiers(slack, hook, mailbox)}
    one, two = gateway_env("one", cfg), gateway_env("two", cfg)
    post_webhooks(one.url, ["evt_1", "evt_2"])
    post_webhooks(two.url, ["evt_3", "evt_4"])
    wait_until(lambda: everywhere("firing", slack, hook, mailbox), what="the alert everywhere")
    dest.default = (200, {}, b"{}")
    wait_until(lambda: everywhere("resolved", slack, hook, mailbox), what="the resolve everywhere")
    exactly_one_each(slack, hook, mailbox)
    transitions = [e for s in (one, two) for e in log_events(s) if e.startswith("alert.")]
    assert sorted(t for t in transitions if t in ("alert.firing", "alert.resolved")) == [
        "alert.firing",
        "alert.resolved",
    ]
    one.stop()
    two.stop()


# -- config errors -----------------------------------------------------------------------

BASE = """\
sources:
  stripe: {type: stripe, secrets: [whsec_x]}
destinations:
  crm: {type: file, path: /dev/null}
alerts:
  notify:
    oncall: {type: slack, url: "https://hooks.slack.com/services/T/B/x"}
    hook: {type: webhook, url: "https://example.com/hook", secret: "HOOK_SECRET"}
  rules:
    - name: failing
      when: destination_failure_rate
      destination: crm
      above: 0.5
      window: 5m
      notify: [oncall]
""".replace("HOOK_SECRET", HOOK_SECRET)


@pytest.mark.parametrize(
    ("change", "key", "says"),
    [
        (("destination: crm", "destination: crn"), "alerts.rules[0].destination",
         "no destination 'crn' (valid: \"*\", crm)"),
        (("window: 5m", "window: 7s"), "alerts.rules[0].window", "must be a multiple of 5 s"),
        (("window: 5m", "window: 630s"), "alerts.rules[0].window",
         "must be a multiple of 1 minute"),  # past 10 minutes, windows count in minutes
        (("window: 5m", "window: 9d"), "alerts.rules[0].window", "at most 8d"),
        (("notify: [oncall]", "notify: [pager]"), "alerts.rules[0].notify[0]",
         "no notifier 'pager' in alerts.notify (valid: hook, oncall)"),
        (("above: 0.5", "above: 50"), "alerts.rules[0].above", "a failure rate from 0 to 1"),
        (("destination: crm", "source: stripe"), "alerts.rules[0].source",
         "destination_failure_rate does not watch a source"),
        (("when: destination_failure_rate", "when: failures"), "alerts.rules[0].when",
         "invalid value (valid: destination_failure_rate, dead_letters"),
        (('secret: "whsec_', 'secret: "nope_'), "alerts.notify.hook.secret",
         "not a Standard Webhooks secret"),
        (("type: slack,", "type: pager,"), "alerts.notify.oncall.type", "invalid value"),
        (("window: 5m", "longer_than: 2h"), "alerts.rules[0].longer_than",
         "only source_silent has longer_than"),
        (("      notify: [oncall]\n", "      notify: [oncall]\n    - {name: failing, "
          "when: lag, destination: crm, above: 5, notify: [hook]}\n"),
         "alerts.rules[1].name", "two rules named 'failing'"),
        (("window: 5m", "window: 10s"), "alerts.rules[0].window",
         "shorter than alerts.evaluate_every (15s)"),
        (("window: 5m", "window: 5m\n      for: 8d"), "alerts.rules[0].for", "must be under 8d"),
        (("window: 5m", "window: 5m\n      resolve_after: 9d"), "alerts.rules[0].resolve_after",
         "must be under 8d"),
        (("hooks.slack.com/", "hooks.slack.com:443x/"), "alerts.notify.oncall.url",
         "not a valid URL"),
        (('url: "https://example.com/hook"', 'url: "https:///hook"'), "alerts.notify.hook.url",
         "no host"),
        (('url: "https://example.com/hook"', 'url: "ftp://example.com/hook"'),
         "alerts.notify.hook.url", "must be an http:// or https:// URL"),
    ],
)  # fmt: skip
def test_config_errors_name_the_line_and_key(change, key, says):
    """The error names the file, the line of the offending key and its path."""
    text = BASE.replace(*change)
    # The line to expect: where the changed text is (counted here, not by the config code).
    marker = change[1].strip().splitlines()[-1] if "\n" in change[1] else change[1]
    line = next(i for i, x in enumerate(text.splitlines(), 1) if marker.strip() in x)
    with pytest.raises(ConfigError) as e:
        config(text)
    assert str(e.value).startswith(f"test.yaml:{line}: {key}: ")
    assert says in str(e.value)


def test_a_url_httpx_would_refuse_fails_the_config_without_showing_it():
    """The URL is the credential: the error names the key, not the value."""
    with pytest.raises(ConfigError) as e:
        config(BASE.replace('url: "https://hooks.slack.com/services/T/B/x"', 'url: "${URL}"'),
               URL="https://hooks.slack.com:443x/services/T/B/TOPSECRET")  # fmt: skip
    assert "alerts.notify.oncall.url" in str(e.value) and "TOPSECRET" not in str(e.value)


def test_a_window_of_90_seconds_is_valid():
    """Up to 10 minutes, windows count in 5 s buckets: 90s is fine."""
    cfg = config(BASE.replace("window: 5m", "window: 90s"))
    assert float(cfg.alerts.rules[0].window) == 90


def test_the_docs_example_is_a_valid_config():
    """docs/alerts.md's full example, under the sources and destinations it names."""
    doc = (Path(__file__).parent.parent / "docs" / "alerts.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    text = (
        "sources:\n  stripe: {type: stripe, secrets: [whsec_x]}\n"
        "  shopify: {type: shopify, secrets: [x]}\n"
        "destinations:\n  crm: {type: file, path: /dev/null}\n" + example
    )
    cfg = config(
        text,
        SLACK_WEBHOOK_URL="https://hooks.slack.com/services/T/B/x",
        ALERT_WEBHOOK_SECRET=HOOK_SECRET,
        SMTP_PASSWORD="pw",
    )
    assert [r.when for r in cfg.alerts.rules] == [
        "destination_failure_rate",
        "dead_letters",
        "lag",
        "quarantine",
        "source_silent",
        "source_silent",
        "redis_unavailable",
    ]
    assert sorted(cfg.alerts.notify) == ["hook", "mail", "oncall"]
