"""The console's dead letters, quarantine, profiles and playground, as an operator uses them.

The gateway app runs with its real workers (create_app(config, workers=True) inside its
lifespan) over the real Redis (own key prefix, dropped after); signed Stripe and GitHub
webhooks go in at the webhook port, the console is used at the operator port (9180) with
a logged-in browser's cookie, and the destination is a real HTTP server on a free port
that first answers 400 (a dead letter), then 200.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis.asyncio as aioredis
import stripe

from gateway.app import create_app
from gateway.config import IdentityConfig, parse_config
from gateway.console import actions
from gateway.graph import Graph, email_id
from gateway.identity import Visitors
from gateway.store import Store
from tests.conftest import OPERATOR, drop_prefix, expected_message_id, until
from tests.destinations.conftest import VendorServer

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"
STRIPE_SECRET = "whsec_console"
GH_SECRET = "gh-console-secret"
ENV = {"ALICE_PW": "alice-pw-123", "BOB_PW": "bob-pw-456"}
# GitHub's ping carries `zen`; without X-GitHub-Event the github normalizer refuses it, and
# the "fix" is a mapping rule that recognises it (as tests/test_replay.py does).
GH_FIX = """
    mappings:
      - when: "zen != null"
        event: Hook Pinged
"""


def config_text(
    redis_url: str,
    prefix: str,
    hook: str,
    *,
    fixed: bool = False,
    show_bodies: bool = False,
    show_personal_data: bool = False,
    graph: bool = True,
) -> str:
    gh = f"\n    type: github\n    secrets: [{GH_SECRET}]\n" + (GH_FIX if fixed else "")
    return f"""
redis_url: {redis_url}
key_prefix: {prefix}
operator: {{listen: "127.0.0.1:9180"}}
identity: {{graph: {str(graph).lower()}}}
console:
  enabled: true
  show_bodies: {str(show_bodies).lower()}
  show_personal_data: {str(show_personal_data).lower()}
  users:
    alice: {{password: "${{ALICE_PW}}", role: operator}}
    bob: {{password: "${{BOB_PW}}"}}
sources:
  stripe: {{type: stripe, secrets: ["{STRIPE_SECRET}"]}}
  gh:{gh}
destinations:
  hook:
    type: http
    url: "{hook}/in"
    events: ["Charge Succeeded", "Hook Pinged"]
    max_attempts: 1
    linger: 10ms
    start: earliest   # its group may be made after the first event is written (a race)
"""


@dataclass
class Gateway:
    app: object
    transport: httpx.ASGITransport
    webhooks: httpx.AsyncClient
    stack: AsyncExitStack

    async def login(self, name: str) -> httpx.AsyncClient:
        """A browser logged in as `name` (its session cookie kept by the client)."""
        client = await self.stack.enter_async_context(
            httpx.AsyncClient(transport=self.transport, base_url=OPERATOR)
        )
        password = ENV["ALICE_PW" if name == "alice" else "BOB_PW"]
        r = await client.post("/console/login", data={"name": name, "password": password})
        assert r.status_code == 303, r.text
        return client

    async def stripe(self, event_id: str) -> None:
        event = json.loads((FIXTURES / "charge.succeeded.json").read_text())
        event["id"] = event_id
        body = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(body, STRIPE_SECRET)
        r = await self.webhooks.post(
            "/webhooks/stripe", content=body, headers={"stripe-signature": header}
        )
        assert r.status_code == 200 and r.json()["status"] == "accepted", r.text

    async def github_ping(self, delivery: str) -> None:
        """A signed GitHub ping without its X-GitHub-Event header (the normalizer refuses it)."""
        body = b'{"zen": "Keep it logically awesome.", "hook_id": 7}'
        signature = "sha256=" + hmac.new(GH_SECRET.encode(), body, hashlib.sha256).hexdigest()
        r = await self.webhooks.post(
            "/webhooks/gh",
            content=body,
            headers={"x-hub-signature-256": signature, "x-github-delivery": delivery},
        )
        assert r.status_code == 200, r.text


@asynccontextmanager
async def gateway(text: str) -> AsyncIterator[Gateway]:
    """The app of `text` with its workers running, until the block ends (a "restart" is
    leaving one block and entering another over the same Redis)."""
    app = create_app(parse_config(text, "console.yaml", ENV), workers=True)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        transport = httpx.ASGITransport(app=app)
        webhooks = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")
        )
        yield Gateway(app, transport, webhooks, stack)


@dataclass
class Env:
    redis_url: str
    prefix: str
    redis: aioredis.Redis
    hook: VendorServer

    def config(self, **options: bool) -> str:
        return config_text(self.redis_url, self.prefix, self.hook.url, **options)

    @property
    def dlq(self) -> str:
        return f"{self.prefix}:{{dlq}}:stream"

    @property
    def quarantine(self) -> str:
        return f"{self.prefix}:{{quarantine}}:stream"

    async def dead_letters(self) -> list[tuple[str, str]]:
        """(entry id, messageId) of the stored dead letters, oldest first."""
        return [
            (e.decode(), f[b"message_id"].decode()) for e, f in await self.redis.xrange(self.dlq)
        ]

    async def dead_letter(self, destination: str, n: int, at_ms: int) -> str:
        """A dead letter as the deliver worker writes it, at stream id `at_ms`-0."""
        entry_id = f"{at_ms}-0"
        data = {"type": "track", "event": "Order Completed", "messageId": f"m-{n}"}
        await self.redis.xadd(
            self.dlq,
            {
                "destination": destination,
                "message_id": f"m-{n}",
                "source": "stripe",
                "delivery_id": f"evt_{n}",
                "event": "Order Completed",
                "attempts": 1,
                "reason": f"HTTP 400: refused #{n}",
                "at": at_ms,
                "data": json.dumps({**data, "properties": {"email": f"p{n}@example.com"}}),
            },
            id=entry_id,
        )
        return entry_id

    async def audit(self) -> list[dict[str, str]]:
        rows = await self.redis.xrange(f"{self.prefix}:console:audit")
        return [{k.decode(): v.decode() for k, v in f.items()} for _, f in rows]

    async def retry_set(self, destination: str = "hook") -> list[str]:
        members = await self.redis.zrange(f"{self.prefix}:{{dest:{destination}}}:retry", 0, -1)
        return [m.decode() for m in members]


@pytest.fixture
async def env(redis_url) -> AsyncIterator[Env]:
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    hook = VendorServer()
    hook.start()
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield Env(redis_url, prefix, client, hook)
    finally:
        hook.stop(wait=False)
        await drop_prefix(client, prefix)
        await client.aclose()


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', html).group(1)


def done_of(response: httpx.Response) -> str:
    """What a redirected action says happened (its `done`)."""
    assert response.status_code == 303, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["done"][0]


def rows_of(html: str, table: str) -> list[str]:
    """The data-entry ids of a list page's rows, in page order."""
    body = html.split(f'<table id="{table}">', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<tr data-entry="([^"]+)"', body)


# --- dead letters ---------------------------------------------------------------------------


async def test_replay_a_dead_letter_sends_it_again_and_it_leaves_the_list(env):
    env.hook.reply((400, {}, b'{"error": "amount must be positive"}'))  # then 200
    async with gateway(env.config()) as gw:
        await gw.stripe("evt_console_1")
        await until(lambda: env.redis.xlen(env.dlq), what="the 400 to become a dead letter")
        alice = await gw.login("alice")

        page = await alice.get("/console/dead-letters")
        assert page.status_code == 200
        [(entry_id, message_id)] = await env.dead_letters()
        assert rows_of(page.text, "dead-letters") == [entry_id]
        # The documented messageId, computed independently (uuid5 of source, id, index).
        assert message_id == expected_message_id("stripe", "evt_console_1", 0, "Charge Succeeded")
        assert "Charge Succeeded" in page.text
        assert "amount must be positive" in page.text  # the destination's own words
        assert 'href="/console/deliveries/stripe/evt_console_1"' in page.text
        # Bodies are not shown (show_bodies: false): the event's shape, no values.
        assert "jennyrosen@example.com" not in page.text and "•••" in page.text

        r = await alice.post(
            "/console/dead-letters/replay",
            data={
                "csrf": csrf_of(page.text),
                "confirm": "yes",
                "scope": "selected",
                "id": entry_id,
            },
        )
        assert done_of(r).startswith("replayed 1 dead letter(s)")
        shown = await alice.get(r.headers["location"])
        assert "replayed 1 dead letter(s)" in shown.text  # the notice
        assert rows_of(shown.text, "dead-letters") == []

        # The running deliver worker sends it again: same messageId, and it is taken.
        await until(lambda: len(env.hook.requests) == 2, what="the replayed event to be sent")
        first, again = (json.loads(r.body) for r in env.hook.requests)
        assert again["messageId"] == first["messageId"] == message_id
        assert await env.dead_letters() == []

        async def last_attempt() -> dict | None:
            raw = await env.redis.lrange(f"{env.prefix}:log:event:{message_id}", -1, -1)
            return json.loads(raw[0]) if raw else None

        attempt = await until(
            lambda: _outcome_ok(last_attempt()), what="the delivery log to show the new attempt"
        )
        assert attempt["attempt"] == 2 and attempt["status"] == 200

        audit = await env.audit()
        assert [(a["user"], a["action"]) for a in audit] == [("alice", "dlq.replay")]
        assert audit[0]["target"] == f"selected: {entry_id}"
        log = await alice.get("/console/audit")
        assert "dlq.replay" in log.text and "alice" in log.text and "replayed 1" in log.text


async def _outcome_ok(pending) -> dict | None:
    found = await pending
    return found if found and found.get("outcome") == "ok" else None


async def test_purge_selected_or_matching_and_an_empty_selection_does_nothing(env):
    now_ms = int(time.time() * 1000)
    hour = 3_600_000
    old_hook = await env.dead_letter("hook", 0, now_ms - 3 * hour)
    gone_a = await env.dead_letter("gone", 1, now_ms - 3 * hour + 1)
    new_hook = await env.dead_letter("hook", 2, now_ms - 60_000)
    gone_b = await env.dead_letter("gone", 3, now_ms - 30_000)
    async with gateway(env.config()) as gw:
        alice = await gw.login("alice")
        csrf = csrf_of((await alice.get("/console/dead-letters")).text)
        base = {"csrf": csrf, "confirm": "yes"}

        # Nothing ticked: nothing replayed or deleted (not "no filter, so everything").
        for path in ("/console/dead-letters/replay", "/console/dead-letters/purge"):
            r = await alice.post(path, data={**base, "scope": "selected"})
            assert re.match(r"nothing (replayed|deleted): no dead letter was selected", done_of(r))
        assert len(await env.dead_letters()) == 4 and await env.retry_set() == []

        r = await alice.post(
            "/console/dead-letters/purge", data={**base, "scope": "selected", "id": gone_a}
        )
        assert done_of(r) == "deleted 1 dead letter(s)"
        assert [e for e, _ in await env.dead_letters()] == [old_hook, new_hook, gone_b]

        # All matching a time filter: only the last 2 hours' (of every destination).
        r = await alice.post(
            "/console/dead-letters/purge", data={**base, "scope": "all", "since": "2h"}
        )
        assert done_of(r) == "deleted 2 dead letter(s)"
        assert "since=2h" in r.headers["location"]  # back to the same filter
        assert [e for e, _ in await env.dead_letters()] == [old_hook]

        # All matching a destination.
        await env.dead_letter("gone", 4, now_ms - 10_000)
        r = await alice.post(
            "/console/dead-letters/purge", data={**base, "scope": "all", "destination": "hook"}
        )
        assert done_of(r) == "deleted 1 dead letter(s)"
        assert [m for _, m in await env.dead_letters()] == ["m-4"]

        audit = await env.audit()
        assert [a["action"] for a in audit] == ["dlq.replay"] + ["dlq.purge"] * 4
        assert {a["user"] for a in audit} == {"alice"}
        # The filter as given, and the absolute range it meant (2 hours before the post).
        since = re.fullmatch(
            r"matching: since=2h \(from (\S+Z) to the last\)", audit[-2]["target"]
        ).group(1)
        meant = datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
        assert abs(meant - (time.time() - 7200)) < 60
        assert audit[-2]["result"] == "deleted 2 dead letter(s)"


async def test_replay_all_matching_a_time_range_requeues_only_those(env):
    now_ms = int(time.time() * 1000)
    hour = 3_600_000
    await env.dead_letter("hook", 0, now_ms - 5 * hour)
    await env.dead_letter("hook", 1, now_ms - 3 * hour)
    await env.dead_letter("hook", 2, now_ms - 10_000)
    async with gateway(env.config()) as gw:
        alice = await gw.login("alice")
        page = await alice.get("/console/dead-letters?since=4h&until=2h")
        assert [m for m in re.findall(r'data-message-id="([^"]+)"', page.text)] == ["m-1"]
        r = await alice.post(
            "/console/dead-letters/replay",
            data={
                "csrf": csrf_of(page.text),
                "confirm": "yes",
                "scope": "all",
                "since": "4h",
                "until": "2h",
            },
        )
        assert done_of(r).startswith("replayed 1 dead letter(s)")
        assert sorted(m for _, m in await env.dead_letters()) == ["m-0", "m-2"]
        # m-1 went to hook's retry set; the worker sends it (the server answers 200).
        await until(lambda: len(env.hook.requests) == 1, what="the replayed event")
        assert json.loads(env.hook.requests[0].body)["messageId"] == "m-1"


async def test_dead_letter_pages_are_newest_first_filtered_and_paged(env, monkeypatch):
    start = 1_714_564_800_000  # 2024-05-01T12:00:00Z
    lone = await env.dead_letter("other", 999, start - 60_000)  # the oldest of all
    ids = [await env.dead_letter("hook", n, start + n * 1000) for n in range(120)]
    async with gateway(env.config()) as gw:
        bob = await gw.login("bob")  # reading needs no operator
        first = await bob.get("/console/dead-letters")
        assert rows_of(first.text, "dead-letters") == ids[::-1][:50]
        assert "121 stored" in first.text
        older = re.search(r'<a href="\?([^"]+)">Older', first.text).group(1)
        second = await bob.get(f"/console/dead-letters?{older.replace('&amp;', '&')}")
        assert rows_of(second.text, "dead-letters") == ids[::-1][50:100]
        # Read-only: no checkboxes and no action forms.
        assert 'name="id"' not in first.text and "/dead-letters/purge" not in first.text

        # A time range: the stream ids themselves, no scan.
        r = await bob.get(
            "/console/dead-letters?since=2024-05-01T12:00:10Z&until=2024-05-01T12:00:12Z"
        )
        assert rows_of(r.text, "dead-letters") == [ids[12], ids[11], ids[10]]
        # A message id, and an entry id.
        r = await bob.get("/console/dead-letters?message=m-7")
        assert rows_of(r.text, "dead-letters") == [ids[7]]
        r = await bob.get(f"/console/dead-letters?message={ids[3]}")
        assert rows_of(r.text, "dead-letters") == [ids[3]]
        r = await bob.get("/console/dead-letters?since=yesterday")
        assert r.status_code == 400 and "not a time: &#39;yesterday&#39;" in r.text

        # A filter no index covers reads at most SCAN_BUDGET entries per page, says so,
        # and offers to look further back.
        monkeypatch.setattr(actions, "SCAN_BUDGET", 50)
        r = await bob.get("/console/dead-letters?destination=other")
        assert rows_of(r.text, "dead-letters") == []
        assert "stopped after 50 entries with 0 match(es)" in r.text
        pages = 1
        while not rows_of(r.text, "dead-letters"):
            further = re.search(r'<a href="\?([^"]+)">look further back', r.text).group(1)
            r = await bob.get(f"/console/dead-letters?{further.replace('&amp;', '&')}")
            pages += 1
        assert rows_of(r.text, "dead-letters") == [lone] and pages == 3


async def test_an_action_without_a_clear_scope_does_nothing(env):
    now_ms = int(time.time() * 1000)
    ids = [await env.dead_letter("hook", n, now_ms - 10_000 + n) for n in range(3)]
    async with gateway(env.config()) as gw:
        alice = await gw.login("alice")
        base = {"csrf": csrf_of((await alice.get("/console/dead-letters")).text), "confirm": "yes"}
        for path in ("/console/dead-letters/purge", "/console/dead-letters/replay"):
            # One entry named, no scope (or a misspelt one): never "everything".
            for scope in ({}, {"scope": "Selected"}, {"scope": "everything"}):
                r = await alice.post(path, data={**base, **scope, "id": ids[0]})
                assert done_of(r) == (
                    "nothing done: the form says neither scope=selected nor scope=all"
                )
            # Entries ticked and scope=all: which one was meant is unclear.
            r = await alice.post(path, data={**base, "scope": "all", "id": ids[1]})
            assert done_of(r) == "nothing done: entries were ticked and scope=all sent: choose one"
        assert [e for e, _ in await env.dead_letters()] == ids
        assert await env.retry_set() == [] and await env.audit() == []
        # The notice is shown on the page it goes back to.
        shown = await alice.get(r.headers["location"])
        assert "entries were ticked and scope=all sent" in shown.text

        r = await alice.post(
            "/console/dead-letters/purge", data={**base, "scope": "selected", "id": ids[0]}
        )
        assert done_of(r) == "deleted 1 dead letter(s)"
        assert [e for e, _ in await env.dead_letters()] == ids[1:]


def _action_fields(html: str, path: str) -> dict[str, str]:
    """The fields of the page's form posting to `path` (the "all matching" ones)."""
    start = html.index(f'method="post" action="{path}"')
    form = html[start : html.index("</form>", start)]
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form))
    fields["confirm"] = "yes"
    return {k: _unescape(v) for k, v in fields.items()}


async def test_all_matching_covers_the_range_the_page_showed_not_a_later_one(env):
    """`until=5m` means "5 minutes before the page was shown": a dead letter written after
    that moment (in the stream, by its id) was not on the page and is not purged, however
    long the operator took to confirm."""
    now_ms = int(time.time() * 1000)
    shown = await env.dead_letter("hook", 0, now_ms - 600_000)
    async with gateway(env.config()) as gw:
        alice = await gw.login("alice")
        asked = time.time()
        page = await alice.get("/console/dead-letters?until=5m")
        answered = time.time()
        assert rows_of(page.text, "dead-letters") == [shown]
        fields = _action_fields(page.text, "/console/dead-letters/purge")
        assert fields["scope"] == "all" and fields["until"] == "5m"
        until_ms = int(fields["until_ms"])
        # The absolute time the page used: 5 minutes before it was shown (stdlib clock).
        assert (asked - 300) * 1000 - 1 <= until_ms <= (answered - 300) * 1000 + 1
        # The confirmation says it in UTC, to the millisecond.
        utc = datetime.fromtimestamp(until_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        question = re.search(r"Yes, delete every dead letter matching this filter[^<]*", page.text)
        assert f"to {utc[:-3]}Z" in _unescape(question.group(0))

        # Written just after the page's range ended (as if it came in meanwhile), and the
        # clock moved on past it: a re-read `5m` would now cover it.
        later = await env.dead_letter("hook", 1, until_ms + 1)
        await until(
            lambda: time.time() * 1000 - 300_000 > until_ms + 1, what="the clock to move on"
        )
        r = await alice.post("/console/dead-letters/purge", data=fields)
        assert done_of(r) == "deleted 1 dead letter(s)"
        assert [e for e, _ in await env.dead_letters()] == [later]
        [audit] = await env.audit()
        assert audit["target"] == f"matching: until=5m (from the first to {utc[:-3]}Z)"


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("/console/dead-letters?since=1900-01-01T00:00:00Z", "since: "),
        ("/console/dead-letters?since=99999999999999999999999", "since: "),
        ("/console/dead-letters?until=99999999999999999999999", "until: "),
        ("/console/dead-letters?before=99999999999999999999-1", "bad filter: "),
        ("/console/dead-letters?before=garbage", "bad filter: "),
        ("/console/quarantine?before=99999999999999999999-1", "bad filter: "),
    ],
)
async def test_a_bad_filter_is_a_400_not_redis_down(env, path, said):
    await env.dead_letter("hook", 0, int(time.time() * 1000) - 1000)
    async with gateway(env.config()) as gw:
        bob = await gw.login("bob")
        r = await bob.get(path)
        assert r.status_code == 400, (r.status_code, r.text[:300])
        assert said in _unescape(r.text) and "Redis does not answer" not in r.text
        # An entry id Redis cannot hold, as a message filter: simply nothing found.
        r = await bob.get("/console/dead-letters?message=99999999999999999999-99999999999999999999")
        assert r.status_code == 200 and rows_of(r.text, "dead-letters") == []


# --- the quarantine -------------------------------------------------------------------------


async def test_a_rerun_while_another_runs_does_nothing_and_says_so(env):
    async with gateway(env.config(fixed=True)) as gw:
        await gw.github_ping("ping-lock")
        await until(lambda: env.redis.xlen(f"{env.prefix}:{{events}}:stream"), what="the event")
        # Put it (back) in the quarantine, as a broken mapping had done.
        raw = await env.redis.xrange(f"{env.prefix}:{{gh}}:raw")
        fields = {"source": "gh", "delivery_id": "ping-lock", "raw_id": raw[0][0].decode()}
        await env.redis.xadd(env.quarantine, {**fields, "stage": "normalize", "reason": "x"})
        alice = await gw.login("alice")
        form = {"csrf": csrf_of((await alice.get("/console/quarantine")).text), "confirm": "yes"}
        # Another rerun (another operator, the CLI) holds the lock.
        lock = f"{env.prefix}:{{quarantine}}:rerun-lock"
        await env.redis.set(lock, "someone-else", px=60_000)
        r = await alice.post("/console/quarantine/rerun", data=form)
        assert done_of(r) == (
            "nothing rerun: a rerun is already running: wait for it to finish, then look at "
            "the quarantine again"
        )
        assert await env.redis.xlen(env.quarantine) == 1
        assert await env.redis.get(lock) == b"someone-else"  # not ours to release
        await env.redis.delete(lock)

        # Double submit: both at once; one reruns, the other is told; one copy of the event.
        events = f"{env.prefix}:{{events}}:stream"
        before = await env.redis.xlen(events)
        said = [done_of(r) for r in await asyncio.gather(
            *(alice.post("/console/quarantine/rerun", data=form) for _ in range(2))
        )]  # fmt: skip
        # (Usually one is told a rerun is running; on a slow machine the first may end
        # before the second starts, which then finds nothing left: either way, one copy.)
        assert not any(x.startswith("failed") for x in said), said
        assert await env.redis.xlen(events) == before + 1
        assert await env.redis.xlen(env.quarantine) == 0
        assert not await env.redis.exists(lock)  # released at the end


async def test_rerun_a_quarantined_delivery_after_fixing_the_mapping(env):
    async with gateway(env.config()) as gw:
        await gw.github_ping("ping-1")
        await until(lambda: env.redis.xlen(env.quarantine), what="the ping to be quarantined")
        alice = await gw.login("alice")
        page = await alice.get("/console/quarantine?source=gh")
        assert "no X-GitHub-Event header" in page.text
        assert '<a href="/console/deliveries/gh/ping-1">' in page.text
        broken_fingerprint = _fingerprint(page.text, "gh")

        # Rerun with the config this process loaded: still failing, and says why.
        r = await alice.post(
            "/console/quarantine/rerun",
            data={"csrf": csrf_of(page.text), "confirm": "yes", "source": "gh"},
        )
        said = done_of(r)
        assert "0 now normalized, 1 still in the quarantine" in said
        assert "ping-1: no X-GitHub-Event header" in said
        assert await env.redis.xlen(env.quarantine) == 1

    # The mapping fixed, the gateway restarted over the same Redis.
    async with gateway(env.config(fixed=True)) as gw:
        alice = await gw.login("alice")
        page = await alice.get("/console/quarantine")
        assert _fingerprint(page.text, "gh") != broken_fingerprint
        r = await alice.post(
            "/console/quarantine/rerun", data={"csrf": csrf_of(page.text), "confirm": "yes"}
        )
        assert "1 now normalized, 0 still in the quarantine" in done_of(r)
        assert await env.redis.xlen(env.quarantine) == 0
        await until(lambda: len(env.hook.requests) == 1, what="the fixed event to be sent")
        sent = json.loads(env.hook.requests[0].body)
        assert sent["event"] == "Hook Pinged"
        assert sent["messageId"] == expected_message_id("gh", "ping-1", 0, "Hook Pinged")

    audit = await env.audit()
    assert [(a["user"], a["action"], a["target"]) for a in audit] == [
        ("alice", "quarantine.rerun", "source=gh"),
        ("alice", "quarantine.rerun", "all sources"),
    ]
    assert "1 now normalized" in audit[1]["result"]


def _fingerprint(html: str, source: str) -> str:
    return re.search(rf'<tr data-source="{source}">.*?<code>([0-9a-f]{{12}})</code>', html).group(1)


# --- refusals -------------------------------------------------------------------------------

ACTIONS = [
    ("/console/dead-letters/replay", {"scope": "all"}),
    ("/console/dead-letters/replay", {"scope": "selected"}),  # + the entry id
    ("/console/dead-letters/purge", {"scope": "all"}),
    ("/console/quarantine/rerun", {}),
]


@pytest.mark.parametrize(
    ("who", "form", "status", "why"),
    [
        pytest.param("bob", "valid", 403, "has the read-only role", id="read-only user"),
        pytest.param("alice", "no csrf", 403, "CSRF token is missing", id="no CSRF token"),
        pytest.param("alice", "bob's csrf", 403, "CSRF token is missing", id="another's token"),
        pytest.param("alice", "no confirm", 403, "not confirmed", id="not confirmed"),
        pytest.param(None, "valid", 401, "log in first", id="no session"),
    ],
)
async def test_actions_are_refused_and_change_nothing(env, who, form, status, why):
    entry_id = await env.dead_letter("hook", 0, int(time.time() * 1000) - 1000)
    async with gateway(env.config()) as gw:
        await gw.github_ping("ping-r")
        await until(lambda: env.redis.xlen(env.quarantine), what="a quarantined delivery")
        alice, bob = await gw.login("alice"), await gw.login("bob")
        tokens = {
            name: csrf_of((await client.get("/console/playground")).text)
            for name, client in (("alice", alice), ("bob", bob))
        }
        if who is None:
            client = await gw.stack.enter_async_context(
                httpx.AsyncClient(transport=gw.transport, base_url=OPERATOR)
            )
        else:
            client = {"alice": alice, "bob": bob}[who]
        fields = {"csrf": tokens[who or "alice"], "confirm": "yes", "id": entry_id}
        if form == "no csrf":
            del fields["csrf"]
        elif form == "bob's csrf":
            fields["csrf"] = tokens["bob"]
        elif form == "no confirm":
            del fields["confirm"]
        for path, extra in ACTIONS:
            r = await client.post(path, data={**fields, **extra})
            assert r.status_code == status, (path, r.text)
            assert why in r.text
        assert await env.dead_letters() == [(entry_id, "m-0")]
        assert await env.retry_set() == []
        assert await env.redis.xlen(env.quarantine) == 1
        assert await env.audit() == []


# --- playground -----------------------------------------------------------------------------


async def test_playground_shows_the_events_or_a_clear_error_and_stores_nothing(env):
    payload = json.loads((FIXTURES / "charge.succeeded.json").read_text())
    async with gateway(env.config()) as gw:
        bob = await gw.login("bob")  # read-only users may use it
        csrf = csrf_of((await bob.get("/console/playground")).text)
        r = await bob.post(
            "/console/playground",
            data={"csrf": csrf, "source": "stripe", "payload": json.dumps(payload)},
        )
        assert r.status_code == 200
        events = [
            json.loads(_unescape(e))
            for e in re.findall(r'<pre class="event">(.*?)</pre>', r.text, re.S)
        ]
        charge = [e for e in events if e.get("event") == "Charge Succeeded"]
        assert len(charge) == 1
        index = events.index(charge[0])
        assert charge[0]["messageId"] == expected_message_id(
            "stripe", payload["id"], index, "Charge Succeeded"
        )
        assert charge[0]["properties"]["revenue"] == payload["data"]["object"]["amount"] / 100
        assert "jennyrosen@example.com" in r.text  # the user's own payload, shown back

        # Headers reach the source as in `map`: the github normalizer reads its event
        # header (a ping becomes no events), the delivery id comes from its own header,
        # and a header the source does not keep is named.
        r = await bob.post(
            "/console/playground",
            data={
                "csrf": csrf,
                "source": "gh",
                "payload": '{"zen": "hi"}',
                "headers": "X-GitHub-Event: ping\nX-GitHub-Delivery: d-77\n\nX-Other: 1",
            },
        )
        assert r.status_code == 200, r.text
        assert "0 events" in r.text and "delivery id d-77" in r.text
        assert "this source does not store x-other" in r.text
        r = await bob.post(
            "/console/playground", data={"csrf": csrf, "source": "gh", "payload": '{"zen": "hi"}'}
        )
        assert r.status_code == 400 and "no X-GitHub-Event header" in r.text

        bad = await bob.post(
            "/console/playground", data={"csrf": csrf, "source": "stripe", "payload": "{oops"}
        )
        assert bad.status_code == 400
        assert "this payload cannot be normalized: the body is not JSON" in bad.text
        r = await bob.post(
            "/console/playground",
            data={"csrf": csrf, "source": "gh", "payload": "{}", "headers": "no colon here"},
        )
        assert r.status_code == 400 and "headers, line 1" in r.text

        refused = await bob.post(
            "/console/playground", data={"source": "stripe", "payload": json.dumps(payload)}
        )
        assert refused.status_code == 403 and "CSRF token is missing" in refused.text
        # Nothing stored: no raw delivery, no event, nothing to audit.
        assert await env.redis.xlen(f"{env.prefix}:{{stripe}}:raw") == 0
        assert await env.redis.xlen(f"{env.prefix}:{{events}}:stream") == 0
        assert await env.audit() == []


def _unescape(text: str) -> str:
    import html

    return html.unescape(text)


# --- profiles -------------------------------------------------------------------------------


@pytest.mark.parametrize("show_personal_data", [False, True])
async def test_profile_lookup_masks_personal_data_unless_allowed(env, show_personal_data):
    store = Store.connect(env.redis_url, env.prefix)
    try:
        graph = Graph(store)
        anon = str(uuid.uuid4())
        linked = await graph.link(
            ["user:u-42", f"anon:{anon}", email_id("Ada@Example.com")], 1_700_000_000_000
        )
        await Visitors(store, IdentityConfig()).record(
            anon, {"clickIds": {"gclid": "g-secret"}, "at": 1}, {"ad_storage": "granted"}, 1
        )
        attrs = [("a:firstName", "Ada", 5), ("a:ip", "203.0.113.7", 5)]
        await graph.observe([], [([f"anon:{anon}"], attrs, ("", ""))], 1_700_000_000_000)
    finally:
        await store.close()
    async with gateway(env.config(show_personal_data=show_personal_data)) as gw:
        bob = await gw.login("bob")
        search = await bob.get("/console/profiles")
        assert 'id="no-collect"' in search.text  # no collect source in this config
        csrf = csrf_of(search.text)
        r = await bob.post("/console/profiles", data={"csrf": csrf, "id": "ada@example.com"})
        assert r.status_code == 303
        assert r.headers["location"] == f"/console/profiles/{linked.profile_id}"
        assert "example.com" not in r.headers["location"]  # the address never in a URL
        shown = await bob.get(r.headers["location"])
        assert shown.status_code == 200
        assert "user:u-42" in shown.text and email_id("ada@example.com") in shown.text
        text = _unescape(shown.text)
        personal = ('"firstName": "Ada"', "203.0.113.7", "g-secret")
        if show_personal_data:
            assert all(p in text for p in personal)
        else:
            assert not any(p in text for p in personal)
            assert '"firstName": "•••"' in text and 'id="masked-note"' in text

        r = await bob.post("/console/profiles", data={"csrf": csrf, "id": "nobody-here"})
        assert r.status_code == 404 and "no profile has &#39;nobody-here&#39;" in r.text
        r = await bob.post("/console/profiles", data={"id": "u-42"})
        assert r.status_code == 403  # no CSRF token


async def test_profiles_page_says_when_the_identity_graph_is_off(env):
    async with gateway(env.config(graph=False)) as gw:
        bob = await gw.login("bob")
        page = await bob.get("/console/profiles")
        assert 'id="graph-off"' in page.text and "identity.graph: false" in page.text


# --- docs -----------------------------------------------------------------------------------


def test_the_documented_console_config_is_valid_and_means_what_the_page_says():
    doc = (Path(__file__).parents[1] / "docs" / "console.md").read_text()
    example = re.search(r"```yaml\n(console:.*?)```", doc, re.S).group(1)
    env = {
        "CONSOLE_ALICE_PASSWORD": "a",
        "CONSOLE_BOB_PASSWORD": "b",
        "CONSOLE_SESSION_SECRET": "s",
    }
    console = parse_config(example, "docs/console.md", env).console
    assert console.enabled and not console.show_bodies and not console.show_personal_data
    assert {n: u.role for n, u in console.users.items()} == {
        "alice": "operator",
        "bob": "read-only",
    }
    assert console.users["alice"].password.reveal() == "a"
    assert float(console.session_ttl) == 12 * 3600
    for name in ("overview", "delivery", "dead-letters", "quarantine", "playground"):
        assert f"(img/console-{name}.png)" in doc


async def test_a_destinations_dead_letters_are_found_by_its_index_not_a_scan(env, monkeypatch):
    """The deliver worker indexes each dead letter by destination and messageId: the page
    filtered by either finds it under any number of newer dead letters of others (here
    more than the scan budget), and forgets it once it was replayed."""
    env.hook.reply((400, {}, b'{"error": "amount must be positive"}'))  # then 200
    monkeypatch.setattr(actions, "SCAN_BUDGET", 50)
    async with gateway(env.config()) as gw:
        await gw.stripe("evt_indexed")
        await until(lambda: env.redis.xlen(env.dlq), what="the 400 to become a dead letter")
        [(entry_id, message_id)] = await env.dead_letters()
        newer = int(entry_id.partition("-")[0]) + 1000
        for n in range(120):  # another destination's, all newer
            await env.dead_letter("other", n, newer + n)
        alice = await gw.login("alice")
        by_destination = await alice.get("/console/dead-letters?destination=hook")
        by_message = await alice.get(f"/console/dead-letters?message={message_id}")
        for page in (by_destination, by_message):
            assert rows_of(page.text, "dead-letters") == [entry_id]
            assert "stopped after" not in page.text
        # Replayed: gone from the stream, and from the index as the page meets it.
        r = await alice.post(
            "/console/dead-letters/replay",
            data={"csrf": csrf_of(by_destination.text), "confirm": "yes", "scope": "selected",
                  "id": entry_id},
        )  # fmt: skip
        assert done_of(r).startswith("replayed 1 dead letter(s)")
        after = await alice.get("/console/dead-letters?destination=hook")
        assert rows_of(after.text, "dead-letters") == []
        index = f"{env.prefix}:{{dlq}}:of:hook"
        assert await env.redis.zcard(index) == 0
