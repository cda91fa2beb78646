"""Replay, events tail and the quarantine, against real Redis (functions and commands)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import msgspec
import pytest

from gateway.config import parse_config
from gateway.replay import parse_time, quarantine_entries, replay, rerun_quarantine, tail_events
from gateway.worker import NormalizeWorker
from tests.conftest import expected_message_id
from tests.test_cli import cli
from tests.test_worker import put, stripe_event

CFG = """
redis_url: {url}
key_prefix: {prefix}
sources:
  stripe: {{type: stripe, secrets: [whsec_w]}}
  gh: {{type: github, secrets: [x]}}
"""
FIX = """
    mappings:
      - when: "zen != null"
        event: Hook Pinged
"""


def config(url: str, prefix: str, fixed: bool = False):
    text = CFG.format(url=url, prefix=prefix)
    if fixed:
        text = text.replace(
            "  gh: {type: github, secrets: [x]}\n",
            "  gh:\n    type: github\n    secrets: [x]\n" + FIX,
        )
    return parse_config(text, "r.yaml", {})


async def normalized(cfg, store) -> NormalizeWorker:
    worker = NormalizeWorker(cfg, store, "w")
    await worker.ensure_groups()
    await worker.read_once()
    return worker


async def test_replay_appends_byte_identical_events(redis_url, redis_store):
    cfg = config(redis_url, redis_store.keys.prefix)
    for i in range(3):
        await put(redis_store, "stripe", f"evt_{i}", stripe_event(f"evt_{i}"))
    await normalized(cfg, redis_store)
    first = await tail_events(redis_store, 10)
    done = await replay(cfg, redis_store, "stripe")
    assert (done.deliveries, done.events, done.failed) == (3, 3, 0)
    after = await tail_events(redis_store, 10)
    assert after == first + first  # same ids, same timestamps, same bytes


NOON = 1714564800000  # 2024-05-01T12:00:00Z in unix ms
HOUR = 3_600_000


@pytest.mark.parametrize(
    ("args", "replayed"),
    [
        (("--until", "2024-05-01T11:30:00Z"), ["evt_10", "evt_11"]),
        (("--until", "1714563000"), ["evt_10", "evt_11"]),  # unix seconds, 11:30Z
        (("--until", "2024-05-01T11:00:00Z"), ["evt_10", "evt_11"]),  # inclusive
        (("--since", "2024-05-01T11:30:00Z"), ["evt_12", "evt_13"]),
        (("--since", "2024-05-01T11:00:00Z"), ["evt_11", "evt_12", "evt_13"]),  # inclusive
        (
            ("--since", "2024-05-01T10:30:00Z", "--until", "2024-05-01T12:30:00Z"),
            ["evt_11", "evt_12"],
        ),
        (("--delivery", "evt_12"), ["evt_12"]),
        ((), ["evt_10", "evt_11", "evt_12", "evt_13"]),
    ],
)
async def test_replay_command_replays_only_the_deliveries_in_its_window(
    redis_url, redis_store, tmp_path, args, replayed
):
    """Four deliveries stored at 10:00, 11:00, 12:00 and 13:00 UTC; the command picks."""
    path = tmp_path / "config.yaml"
    path.write_text(CFG.format(url=redis_url, prefix=redis_store.keys.prefix))
    for hour in (10, 11, 12, 13):
        await redis_store.client.xadd(
            redis_store.keys.raw("stripe"),
            {
                "source": "stripe",
                "delivery_id": f"evt_{hour}",
                "received_at": NOON + (hour - 12) * HOUR,
                "headers": "{}",
                "body": stripe_event(f"evt_{hour}"),
            },
            id=f"{NOON + (hour - 12) * HOUR}-0",
        )
    r = cli("replay", "--source", "stripe", *args, "--config", str(path))
    assert r.returncode == 0, r.stderr
    n = len(replayed)
    assert r.stdout == f"replayed {n} deliveries into {n} events (0 failed)\n"
    stored = await redis_store.client.xrange(redis_store.keys.events())
    assert [f[b"delivery_id"].decode() for _, f in stored] == replayed
    assert [f[b"message_id"].decode() for _, f in stored] == [
        expected_message_id("stripe", d, 0, "Charge Succeeded") for d in replayed
    ]


async def test_quarantine_rerun_after_a_fix(redis_url, redis_store):
    prefix = redis_store.keys.prefix
    await put(redis_store, "gh", "ping-1", b'{"zen": "Keep it logically awesome."}')
    await normalized(config(redis_url, prefix), redis_store)  # no X-GitHub-Event: quarantined
    [item] = await quarantine_entries(redis_store)
    assert item["delivery_id"] == "ping-1" and "X-GitHub-Event" in item["reason"]

    fixed, failing, reasons = await rerun_quarantine(config(redis_url, prefix), redis_store)
    assert (fixed, failing) == (0, 1)
    assert "X-GitHub-Event" in reasons[0]
    assert len(await quarantine_entries(redis_store)) == 1  # still there, not duplicated
    fixed, failing, _ = await rerun_quarantine(config(redis_url, prefix, fixed=True), redis_store)
    assert (fixed, failing) == (1, 0)
    assert await quarantine_entries(redis_store) == []
    [event] = await tail_events(redis_store, 5)
    assert msgspec.json.decode(event)["event"] == "Hook Pinged"


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2024-05-01T12:00:00Z", 1714564800000),
        ("1714564800", 1714564800000),
        ("1714564800000", 1714564800000),
        ("2h", 1714564800000 - 7_200_000),
    ],
)
def test_parse_time(text, ms):
    assert parse_time(text, now=1714564800) == ms


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("yesterday", "not a time: 'yesterday' (ISO 8601 like 2024-05-01T12:00:00Z"),
        ("2024-05-01T12:00:00", "'2024-05-01T12:00:00' has no time zone (add Z for UTC)"),
    ],
)
def test_parse_time_refuses_what_it_cannot_read(text, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_time(text, now=0)


async def test_commands(redis_url, redis_store, tmp_path):
    prefix = redis_store.keys.prefix
    path = tmp_path / "config.yaml"
    path.write_text(CFG.format(url=redis_url, prefix=prefix))
    for i in range(3):
        await put(redis_store, "stripe", f"evt_{i}", stripe_event(f"evt_{i}"))
    await put(redis_store, "gh", "g1", b"{}")
    await normalized(config(redis_url, prefix), redis_store)

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args, "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env=os.environ,
        )

    tail = run("events", "tail", "-n", "2")
    assert tail.returncode == 0, tail.stderr
    lines = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [e["context"]["source"]["deliveryId"] for e in lines] == ["evt_1", "evt_2"]

    replayed = run("replay", "--source", "stripe")
    assert replayed.returncode == 0, replayed.stderr
    assert "replay stripe: 3/3 deliveries, 3 events, 0 failed" in replayed.stderr
    assert "replayed 3 deliveries into 3 events (0 failed)" in replayed.stdout

    listed = run("quarantine", "list")
    assert listed.returncode == 0
    assert "gh  g1  [normalize]" in listed.stdout and "X-GitHub-Event" in listed.stdout

    rerun = run("quarantine", "rerun")
    assert rerun.returncode == 1
    assert "0 now normalized, 1 still in the quarantine" in rerun.stdout

    bad = run("replay", "--source", "stripe", "--since", "last tuesday")
    assert bad.returncode == 2 and "not a time" in bad.stderr
