"""`webhook-gateway dlq purge / replay` as an operator runs them, against the real Redis.

Dead letters are written where docs/operations.md says the deliver worker keeps them
(`<key_prefix>:{dlq}:stream`, with `destination`, `message_id`, ..., `data`), at chosen
stream ids so that their times differ; replayed ones go back to the destination's retry
set (`<key_prefix>:{dest:<name>}:retry`), from which a real `worker` process sends them.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as sync_redis

from tests.conftest import drop_keys
from tests.destinations.conftest import VendorServer, event, wait_for
from tests.test_cli import Worker, cli

CONFIG = """\
redis_url: {url}
key_prefix: {prefix}
destinations:
  hook: {{type: http, url: "{vendor}/hook", backoff: 50ms}}
  other: {{type: http, url: "{vendor}/other", backoff: 50ms}}
"""
NOON = 1714564800000  # 2024-05-01T12:00:00Z in unix ms


def mid(n: int) -> str:
    """The messageId of tests.destinations.conftest.event(n), written out."""
    return f"00000000-0000-5000-8000-{n:012d}"


@dataclass
class Dlq:
    path: Path
    prefix: str
    client: sync_redis.Redis
    vendor: VendorServer

    def run(self, *args: str):
        return cli(*args, "--config", str(self.path))

    def dead_letter(self, destination: str, n: int, at_ms: int) -> str:
        """A dead letter of event(n) for `destination`, stored at `at_ms`; its entry id."""
        entry_id = f"{at_ms}-0"
        self.client.xadd(
            f"{self.prefix}:{{dlq}}:stream",
            {
                "destination": destination,
                "message_id": mid(n),
                "source": "stripe",
                "delivery_id": f"evt_{n}",
                "event": "Order Completed",
                "attempts": 3,
                "reason": "HTTP 400: invalid payload",
                "at": at_ms,
                "data": json.dumps(event(n)),
            },
            id=entry_id,
        )
        return entry_id

    def left(self) -> list[tuple[str, str]]:
        """(destination, messageId) of the dead letters still stored, oldest first."""
        return [
            (f[b"destination"].decode(), f[b"message_id"].decode())
            for _, f in self.client.xrange(f"{self.prefix}:{{dlq}}:stream")
        ]

    def queued(self, destination: str) -> list[str]:
        """The messageIds in a destination's retry set."""
        members = self.client.zrange(f"{self.prefix}:{{dest:{destination}}}:retry", 0, -1)
        return sorted(m.decode() for m in members)


@pytest.fixture
def dlq(tmp_path, redis_url, vendor):
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(url=redis_url, prefix=prefix, vendor=vendor.url))
    client = sync_redis.Redis.from_url(redis_url)
    yield Dlq(path, prefix, client, vendor)
    client.close()
    drop_keys(redis_url, prefix)


@pytest.mark.parametrize(
    ("args", "deleted", "left"),
    [
        pytest.param((), 3, [], id="all"),
        pytest.param(
            ("--destination", "hook"), 2, [("other", mid(2))], id="one destination's only"
        ),
        pytest.param(
            ("--destination", "nobody"),
            0,
            [("hook", mid(0)), ("hook", mid(1)), ("other", mid(2))],
            id="an unknown destination: none",
        ),
    ],
)
def test_dlq_purge(dlq, args, deleted, left):
    dlq.dead_letter("hook", 0, NOON)
    dlq.dead_letter("hook", 1, NOON + 1000)
    dlq.dead_letter("other", 2, NOON + 2000)
    r = dlq.run("dlq", "purge", *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{deleted} dead letter(s) deleted\n"
    assert dlq.left() == left
    listed = dlq.run("dlq", "list")
    assert f"{len(left)} dead letter(s)" in listed.stderr


@pytest.mark.parametrize("by", ["entry id", "messageId"])
def test_dlq_replay_id_requeues_only_that_one(dlq, by):
    dlq.dead_letter("hook", 0, NOON)
    entry_id = dlq.dead_letter("hook", 1, NOON + 1000)
    dlq.dead_letter("hook", 2, NOON + 2000)
    r = dlq.run("dlq", "replay", "--id", entry_id if by == "entry id" else mid(1))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "1 dead letter(s) queued to be sent again (by the running workers)\n"
    assert dlq.queued("hook") == [mid(1)]
    assert dlq.left() == [("hook", mid(0)), ("hook", mid(2))]


def test_dlq_replay_since_requeues_only_the_recent_ones(dlq):
    now_ms = int(time.time() * 1000)
    hour = 3_600_000
    dlq.dead_letter("hook", 0, now_ms - 3 * hour)
    dlq.dead_letter("other", 1, now_ms - 3 * hour + 1)
    dlq.dead_letter("hook", 2, now_ms - hour // 2)
    dlq.dead_letter("other", 3, now_ms - 60_000)
    r = dlq.run("dlq", "replay", "--since", "2h")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("2 dead letter(s) queued")
    assert (dlq.queued("hook"), dlq.queued("other")) == ([mid(2)], [mid(3)])
    assert dlq.left() == [("hook", mid(0)), ("other", mid(1))]


def test_dlq_replay_skips_a_destination_no_longer_configured(dlq):
    entry_id = dlq.dead_letter("gone", 4, NOON)
    r = dlq.run("dlq", "replay")
    assert r.returncode == 1
    assert f"skipped: {entry_id}: destination 'gone' is not in the config" in r.stderr
    assert dlq.left() == [("gone", mid(4))]  # kept, not lost


def test_replayed_dead_letters_are_sent_with_their_message_id_and_timestamp(dlq):
    dlq.dead_letter("hook", 7, NOON)
    dlq.dead_letter("other", 8, NOON + 1000)
    worker = Worker(dlq.path)
    try:
        r = dlq.run("dlq", "replay", "--destination", "hook")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("1 dead letter(s) queued")
        assert wait_for(lambda: dlq.vendor.requests and not dlq.queued("hook")), worker.stop()
    finally:
        log = worker.stop()
    [sent] = dlq.vendor.requests  # `other`'s dead letter was not replayed
    assert sent.path == "/hook", log
    assert sent.headers["webhook-id"] == mid(7)
    body = sent.json()
    assert body["messageId"] == mid(7)
    assert body["timestamp"] == "2024-05-01T12:00:00.000Z"
    assert body["receivedAt"] == "2024-05-01T12:00:01.000Z"
    assert body["properties"] == {"order_id": "o7", "revenue": 17.0, "currency": "USD"}
    assert dlq.left() == [("other", mid(8))]


def test_a_replayed_dead_letter_numbers_its_attempts_on(dlq):
    """The dead letter had 3 attempts: its replay is attempt 4 in the delivery log (not a
    second attempt 1), and the successful send shows its HTTP status."""
    dlq.dead_letter("hook", 7, NOON)  # attempts: 3
    worker = Worker(dlq.path)
    try:
        r = dlq.run("dlq", "replay", "--destination", "hook")
        assert r.returncode == 0, r.stderr
        key = f"{dlq.prefix}:log:event:{mid(7)}"
        assert wait_for(lambda: dlq.client.llen(key) >= 1), worker.stop()
    finally:
        worker.stop()
    [attempt] = [json.loads(x) for x in dlq.client.lrange(key, 0, -1)]
    assert (attempt["attempt"], attempt["outcome"], attempt["status"]) == (4, "ok", 200)
    shown = dlq.run("events", "show", mid(7))
    assert "hook  attempt 4  ok  HTTP 200" in shown.stdout, shown.stderr


# --- page by page ---------------------------------------------------------------------------


async def _fill(store, n: int, size: int) -> None:
    """n dead letters of hook with `size`-byte events, as the deliver worker writes them."""
    data = json.dumps({**event(0), "properties": {"blob": "x" * size}})
    for start in range(0, n, 1000):
        await store.execute(
            [
                ("XADD", store.keys.dead_letters(), "*", "destination", "hook",
                 "message_id", f"m-{i}", "source", "stripe", "delivery_id", f"evt_{i}",
                 "attempts", "1", "data", data)
                for i in range(start, min(n, start + 1000))
            ]
        )  # fmt: skip


@pytest.mark.parametrize("action", ["purge", "replay"])
async def test_all_matching_is_done_a_page_at_a_time_in_bounded_memory(redis_store, vendor, action):
    """6,000 dead letters of 4 KB (24 MB of events, 1.5x the bound below even before any
    decoding): purging or replaying them all never holds more than a few pages (500 each)
    of them in memory (tracemalloc's peak)."""
    import tracemalloc

    from gateway.config import parse_config
    from gateway.dlq import purge_dead_letters, replay_dead_letters

    n, size = 6_000, 4_000
    text = CONFIG.format(url="redis://unused", prefix=redis_store.keys.prefix, vendor=vendor.url)
    cfg = parse_config(text, "dlq.yaml", {})
    await _fill(redis_store, n, size)
    tracemalloc.start()
    try:
        if action == "purge":
            done = await purge_dead_letters(redis_store, destination="hook")
        else:
            done, problems = await replay_dead_letters(cfg, redis_store, destination="hook")
            assert problems == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert done == n
    assert await redis_store.client.xlen(redis_store.keys.dead_letters()) == 0
    if action == "replay":
        retry_key, _ = redis_store.keys.retries("hook")
        assert await redis_store.client.zcard(retry_key) == n
    pages = 8 * 500 * size  # reply buffers and decoding included
    assert peak < pages, f"peak {peak / 1e6:.1f} MB for {n * size / 1e6:.0f} MB of events"


async def test_a_delivery_replayed_over_two_pages_leaves_the_dead_lettered_search(
    redis_store, vendor, monkeypatch
):
    """Two events of one delivery, dead-lettered, read in different pages: once both are
    replayed, the delivery is no longer listed as dead-lettered (and one left dead keeps
    its delivery there)."""
    from gateway import dlq
    from gateway.config import parse_config

    monkeypatch.setattr(dlq, "PAGE", 1)
    text = CONFIG.format(url="redis://unused", prefix=redis_store.keys.prefix, vendor=vendor.url)
    cfg = parse_config(text, "dlq.yaml", {})
    keys, client = redis_store.keys, redis_store.client
    index = keys.delivery_index("stripe", "dead_lettered")
    for delivery, mids in (("evt_two", ["a-1", "a-2"]), ("evt_kept", ["b-1", "b-2"])):
        await client.hset(keys.delivery_log("stripe", delivery), mapping={m: "E" for m in mids})
        await client.zadd(index, {delivery: NOON})
        for m in mids:
            attempt = {"destination": "hook", "outcome": "fail", "attempt": 1, "status": 400}
            await client.rpush(keys.attempts(m), json.dumps(attempt))
            data = json.dumps({**event(0), "messageId": m})
            fields = {"destination": "hook", "message_id": m, "source": "stripe"}
            await client.xadd(
                keys.dead_letters(), {**fields, "delivery_id": delivery, "data": data}
            )
    entries = [e.decode() for e, _ in await client.xrange(keys.dead_letters())]
    # evt_two's two events, and only one of evt_kept's.
    done, problems = await dlq.replay_dead_letters(cfg, redis_store, ids=entries[:3])
    assert (done, problems) == (3, [])
    assert [m.decode() for m in await client.zrange(index, 0, -1)] == ["evt_kept"]
