"""`webhook-gateway quarantine list`, and what lands in the quarantine, as a user sees it.

The commands run in a subprocess against the real Redis; deliveries reach the quarantine
through the real normalize worker (in-process, or inside a real `serve`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
import redis as redis_sync
from standardwebhooks.webhooks import Webhook

from gateway.config import parse_config
from gateway.worker import NormalizeWorker
from tests.conftest import drop_keys, until
from tests.destinations.conftest import wait_for
from tests.test_cli import Server, cli
from tests.test_replay import CFG, FIX
from tests.test_worker import put, stripe_event

NO_EVENT_HEADER = "no X-GitHub-Event header: cannot tell what happened"
NOT_STRIPE = 'not a Stripe event (no "object": "event")'


@pytest.fixture
async def quarantined(redis_url, redis_store, tmp_path):
    """Two deliveries in the quarantine (gh/g1, stripe/evt_bad) and one normalized; the
    config file the commands read, and the raw stream ids of the quarantined ones."""
    text = CFG.format(url=redis_url, prefix=redis_store.keys.prefix)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    await put(redis_store, "gh", "g1", b"{}")  # no X-GitHub-Event header
    await put(redis_store, "stripe", "evt_bad", b'{"id": "evt_bad", "object": "charge"}')
    await put(redis_store, "stripe", "evt_ok", stripe_event("evt_ok"))
    worker = NormalizeWorker(parse_config(text, "q.yaml", {}), redis_store, "w")
    await worker.ensure_groups()
    assert await worker.read_once() == 3
    raw_ids = {}
    for source in ("gh", "stripe"):
        for entry_id, fields in await redis_store.client.xrange(redis_store.keys.raw(source)):
            raw_ids[fields[b"delivery_id"].decode()] = entry_id.decode()
    return path, raw_ids


def listing(path, *args: str):
    r = cli("quarantine", "list", *args, "--config", str(path))
    assert r.returncode == 0, r.stderr
    return r


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        ((), [("gh", "g1", NO_EVENT_HEADER), ("stripe", "evt_bad", NOT_STRIPE)]),
        (("--source", "gh"), [("gh", "g1", NO_EVENT_HEADER)]),
        (("--source", "stripe"), [("stripe", "evt_bad", NOT_STRIPE)]),
        (("--source", "shopify"), []),
    ],
)
async def test_quarantine_list_shows_each_with_its_reason(quarantined, args, shown):
    path, _ = quarantined
    r = listing(path, *args)
    pattern = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  (\S+)  (\S+)  \[normalize\] (.*)$")
    lines = [pattern.match(line) for line in r.stdout.splitlines()]
    assert all(lines), r.stdout
    assert sorted(m.groups() for m in lines) == sorted(shown)
    assert r.stderr == f"{len(shown)} quarantined\n"


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (("--json",), ["evt_bad", "g1"]),
        (("--source", "gh", "--json"), ["g1"]),
        (("--json", "--source", "stripe"), ["evt_bad"]),
    ],
)
async def test_quarantine_list_json_gives_one_object_per_line(quarantined, args, shown):
    path, raw_ids = quarantined
    started_ms = int(time.time() * 1000) - 60_000
    r = listing(path, *args)
    items = [json.loads(line) for line in r.stdout.splitlines()]
    assert sorted(i["delivery_id"] for i in items) == shown
    expected = {
        "g1": {"source": "gh", "stage": "normalize", "reason": NO_EVENT_HEADER},
        "evt_bad": {"source": "stripe", "stage": "normalize", "reason": NOT_STRIPE},
    }
    for item in items:
        assert set(item) == {"id", "source", "raw_id", "delivery_id", "stage", "reason", "at"}
        assert {k: item[k] for k in ("source", "stage", "reason")} == expected[item["delivery_id"]]
        assert item["raw_id"] == raw_ids[item["delivery_id"]]  # what `rerun` reads again
        assert started_ms <= int(item["at"]) <= int(time.time() * 1000)
        assert re.fullmatch(r"\d+-\d+", item["id"])
    assert r.stderr == ""  # nothing but JSON lines to parse


# A signed body that is not JSON, from sources whose delivery id is not in the body.
NOT_JSON = b"event=signup&plan=pro (not JSON)"
SVIX_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SIGNED_SOURCES = f"""\
redis_url: ${{REDIS_URL}}
key_prefix: ${{PREFIX}}
sources:
  plain-hmac:
    type: hmac
    secrets: [s3cret]
    signature_header: X-Sig
  svix:
    type: standard-webhooks
    secrets: ["{SVIX_SECRET}"]
"""


def hmac_signed(body: bytes) -> tuple[dict[str, str], str]:
    """Headers signing `body` for plain-hmac, and the delivery id (SHA-256 of the body)."""
    return (
        {"x-sig": hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()},
        "sha256:" + hashlib.sha256(body).hexdigest(),
    )


def svix_signed(body: bytes) -> tuple[dict[str, str], str]:
    """Standard Webhooks headers made with the standardwebhooks library."""
    msg_id = "msg_2b7XkqLd1pRYl0dm5v3q9Jm8kZt"
    now = int(time.time())
    when = datetime.fromtimestamp(now, tz=UTC)
    signature = Webhook(SVIX_SECRET).sign(msg_id, when, body.decode())
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(now), "webhook-signature": signature}
    return headers, msg_id


@pytest.mark.parametrize(("source", "sign"), [("plain-hmac", hmac_signed), ("svix", svix_signed)])
def test_a_signed_body_that_is_not_json_is_accepted_then_quarantined(
    tmp_path, redis_url, source, sign
):
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    env = {"REDIS_URL": redis_url, "PREFIX": prefix, "LOG_LEVEL": "info"}
    server = Server(tmp_path, env, config=SIGNED_SOURCES)  # with its normalize worker
    path = tmp_path / "config.yaml"
    try:
        headers, delivery_id = sign(NOT_JSON)
        r = httpx.post(
            f"{server.url}/webhooks/{source}",
            content=NOT_JSON,
            headers={"content-type": "text/plain", **headers},
        )
        assert r.status_code == 200
        assert r.json() == {"status": "accepted", "delivery_id": delivery_id}

        items: list[dict] = []

        def listed() -> bool:
            out = cli("quarantine", "list", "--json", "--config", str(path), env=env)
            assert out.returncode == 0, out.stderr
            items[:] = [json.loads(line) for line in out.stdout.splitlines()]
            return bool(items)

        assert wait_for(listed), server.stop()
        [item] = items
        assert (item["source"], item["delivery_id"]) == (source, delivery_id)
        assert (item["stage"], item["reason"]) == ("normalize", "the body is not JSON")
        plain = cli("quarantine", "list", "--source", source, "--config", str(path), env=env)
        assert f"  {source}  {delivery_id}  [normalize] the body is not JSON\n" in plain.stdout
    finally:
        log = server.stop()
        drop_keys(redis_url, prefix)
    assert '"event":"delivery.quarantined"' in log and "the body is not JSON" in log
    assert "event=signup" not in log  # never a body in the logs


# --- rerun: one at a time, read page by page ------------------------------------------------

PINGS = 3


@pytest.fixture
async def pings(redis_url, redis_store, tmp_path):
    """PINGS GitHub pings without their event header, quarantined by the real normalize
    worker; the fixed config (a mapping that recognises them) and its file."""
    from tests.test_replay import config as replay_config

    broken = replay_config(redis_url, redis_store.keys.prefix)
    for n in range(PINGS):
        await put(redis_store, "gh", f"ping-{n}", b'{"zen": "Keep it simple.", "hook_id": 7}')
    worker = NormalizeWorker(broken, redis_store, "w")
    await worker.ensure_groups()
    assert await worker.read_once() == PINGS
    assert await redis_store.client.xlen(redis_store.keys.quarantine()) == PINGS
    fixed = replay_config(redis_url, redis_store.keys.prefix, fixed=True)
    path = tmp_path / "fixed.yaml"
    path.write_text(
        CFG.format(url=redis_url, prefix=redis_store.keys.prefix).replace(
            "  gh: {type: github, secrets: [x]}\n",
            "  gh:\n    type: github\n    secrets: [x]\n" + FIX,
        )
    )
    return fixed, path


async def _events(store) -> list[dict]:
    out = []
    for key in store.keys.event_streams(1):
        out += [json.loads(f[b"data"]) for _, f in await store.client.xrange(key)]
    return out


async def test_two_reruns_at_once_normalize_each_delivery_once(redis_store, pings):
    from gateway.replay import RerunRunning, rerun_quarantine

    fixed, _ = pings
    results = await asyncio.gather(
        rerun_quarantine(fixed, redis_store), rerun_quarantine(fixed, redis_store),
        return_exceptions=True,
    )  # fmt: skip
    refused = [r for r in results if isinstance(r, RerunRunning)]
    assert len(refused) == 1, results
    assert "a rerun is already running" in str(refused[0])
    assert [r for r in results if not isinstance(r, Exception)] == [(PINGS, 0, [])]
    sent = await _events(redis_store)
    assert sorted(e["context"]["source"]["deliveryId"] for e in sent) == [
        f"ping-{n}" for n in range(PINGS)
    ]  # one event each, not two
    assert await redis_store.client.xlen(redis_store.keys.quarantine()) == 0
    assert not await redis_store.client.exists(redis_store.keys.quarantine_rerun_lock())
    # Released: the next rerun runs (and finds nothing left).
    assert await rerun_quarantine(fixed, redis_store) == (0, 0, [])


async def test_the_cli_rerun_says_when_another_runs_and_exits_1(redis_store, pings):
    _, path = pings
    lock = redis_store.keys.quarantine_rerun_lock()
    await redis_store.client.set(lock, "the-console", px=60_000)
    r = await asyncio.to_thread(cli, "quarantine", "rerun", "--config", str(path))
    assert r.returncode == 1
    assert "a rerun is already running" in r.stderr and r.stdout == ""
    assert await redis_store.client.xlen(redis_store.keys.quarantine()) == PINGS
    assert await redis_store.client.get(lock) == b"the-console"
    await redis_store.client.delete(lock)
    r = await asyncio.to_thread(cli, "quarantine", "rerun", "--config", str(path))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{PINGS} now normalized, 0 still in the quarantine\n"


def _monitor(url: str, seen: list[str], stop: str) -> None:
    """Every command Redis runs (MONITOR), until one mentions `stop`."""
    client = redis_sync.Redis.from_url(url)
    with client.monitor() as m:
        for command in m.listen():
            seen.append(command["command"])
            if stop in command["command"]:
                return


async def test_the_quarantine_is_read_a_page_at_a_time(redis_url, redis_store, pings):
    """A quarantine of a million entries is never one XRANGE: listing and rerunning read
    it 500 entries at a time (COUNT 500), and see every entry."""
    from gateway.replay import quarantine_entries, rerun_quarantine

    fixed, _ = pings
    key = redis_store.keys.quarantine()
    extra = 1100  # not rerunnable (no raw delivery): they stay
    pipe = redis_store.client.pipeline(transaction=False)
    for n in range(extra):
        pipe.xadd(key, {"source": "gh", "delivery_id": f"gone-{n}", "raw_id": "1-1"})
    await pipe.execute()
    marker = uuid.uuid4().hex
    seen: list[str] = []
    watcher = threading.Thread(target=_monitor, args=(redis_url, seen, f"end-{marker}"))
    watcher.start()
    try:

        async def watching() -> bool:
            await redis_store.client.echo(f"start-{marker}")
            return any(marker in c for c in seen)

        await until(watching, what="MONITOR to start")
        listed = await quarantine_entries(redis_store)
        fixed_n, failing, _ = await rerun_quarantine(fixed, redis_store)
    finally:
        await redis_store.client.echo(f"end-{marker}")
        watcher.join(10)
    assert len(listed) == PINGS + extra
    assert [i["delivery_id"] for i in listed[PINGS:]] == [f"gone-{n}" for n in range(extra)]
    assert (fixed_n, failing) == (PINGS, extra)
    reads = [c for c in seen if c.upper().startswith("XRANGE") and key in c]
    assert len(reads) == 2 * 3  # (3 pages: 500 + 500 + 103) for each
    assert all(c.upper().endswith("COUNT 500") for c in reads), reads


async def test_a_rerun_never_releases_a_lock_it_no_longer_holds(
    redis_url, redis_store, pings, monkeypatch
):
    """A rerun whose lease ran out (and another rerun took the lock) leaves that other
    rerun's lock alone when it ends."""
    from gateway import replay

    fixed, _ = pings
    lock = redis_store.keys.quarantine_rerun_lock()
    taker = redis_sync.Redis.from_url(redis_url)

    class TakenOver(replay.Pipeline):
        def run(self, *args, **kwargs):  # the first delivery: meanwhile, the lease expired
            taker.set(lock, "the-next-rerun", px=60_000)
            return super().run(*args, **kwargs)

    monkeypatch.setattr(replay, "Pipeline", TakenOver)
    try:
        assert await replay.rerun_quarantine(fixed, redis_store) == (PINGS, 0, [])
        assert taker.get(lock) == b"the-next-rerun"
        assert 0 < taker.pttl(lock) <= 60_000
    finally:
        taker.close()


async def test_a_rerun_that_lost_its_lease_stops_at_its_next_renewal(
    redis_url, redis_store, pings, monkeypatch
):
    """The lease renewed before each delivery (RERUN_RENEW_S 0): once another rerun holds
    the lock, this one stops instead of normalizing the same deliveries."""
    from gateway import replay

    fixed, _ = pings
    lock = redis_store.keys.quarantine_rerun_lock()
    taker = redis_sync.Redis.from_url(redis_url)
    ran = []

    class TakenOver(replay.Pipeline):
        def run(self, *args, **kwargs):
            ran.append(args[1])
            taker.set(lock, "the-next-rerun", px=60_000)
            return super().run(*args, **kwargs)

    monkeypatch.setattr(replay, "Pipeline", TakenOver)
    monkeypatch.setattr(replay, "RERUN_RENEW_S", 0)
    try:
        with pytest.raises(replay.RerunStopped, match="the rerun stopped"):
            await replay.rerun_quarantine(fixed, redis_store)
        assert len(ran) == 1  # the first delivery only
        assert await redis_store.client.xlen(redis_store.keys.quarantine()) == PINGS - 1
        assert taker.get(lock) == b"the-next-rerun"
    finally:
        taker.close()
