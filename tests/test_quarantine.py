"""`webhook-gateway quarantine list`, and what lands in the quarantine, as a user sees it.

The commands run in a subprocess against the real Redis; deliveries reach the quarantine
through the real normalize worker (in-process, or inside a real `serve`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from gateway.config import parse_config
from gateway.worker import NormalizeWorker
from tests.conftest import drop_keys
from tests.destinations.conftest import wait_for
from tests.test_cli import Server, cli
from tests.test_replay import CFG
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
