"""The whole pipeline as a user runs it: signed Stripe webhooks into `webhook-gateway serve`,
rows in the real PostgreSQL and events at a PostHog-like server, then a kill -9."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
import stripe

from tests.conftest import drop_keys, expected_message_id
from tests.destinations.conftest import VendorServer, wait_for
from tests.services import PG_DSN, require_postgres
from tests.test_cli import Server, cli

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"
SECRET = "whsec_e2e"


def config(redis_url: str, prefix: str, table: str, posthog: str, hook: str) -> str:
    return f"""
redis_url: {redis_url}
key_prefix: {prefix}
worker: {{claim_idle: 1s}}
sources:
  stripe: {{type: stripe, secrets: [{SECRET}], tolerance: 1h}}
destinations:
  warehouse: {{type: postgres, dsn: "{PG_DSN}", table: {table}, linger: 50ms}}
  analytics: {{type: posthog, api_key: phc_e2e, host: "{posthog}", linger: 50ms}}
  hook: {{type: http, url: "{hook}/in", events: [Order Refunded], max_attempts: 1}}
"""


def send(url: str, name: str, event_id: str | None = None) -> httpx.Response:
    event = json.loads((FIXTURES / f"{name}.json").read_text())
    if event_id:
        event["id"] = event_id
    body = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body, SECRET)
    return httpx.post(
        url + "/webhooks/stripe", content=body, headers={"Stripe-Signature": header}, timeout=10
    )


@pytest.fixture
def pg():
    import asyncio

    table = f"e2e_{uuid.uuid4().hex[:8]}"

    def query(sql: str):
        async def run():
            conn = await asyncpg.connect(PG_DSN, timeout=3)
            try:
                return await conn.fetch(sql)
            finally:
                await conn.close()

        return asyncio.run(run())

    require_postgres(PG_DSN)
    yield table, query
    query(f"DROP TABLE IF EXISTS {table}")


@pytest.fixture
def prefix(redis_url):
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    drop_keys(redis_url, name)


def test_stripe_webhook_to_postgres_and_posthog(tmp_path, redis_url, pg, prefix):
    table, query = pg
    posthog, hook = VendorServer(), VendorServer()
    hook.default = (400, {}, b'{"error": "this endpoint takes no refunds"}')
    posthog.start()
    hook.start()
    env = {"LOG_LEVEL": "info"}
    server = Server(tmp_path, env, config=config(redis_url, prefix, table, posthog.url, hook.url))
    cfg = str(tmp_path / "config.yaml")
    try:
        for name in ("customer.created", "charge.succeeded", "charge.refunded"):
            assert send(server.url, name).json()["status"] == "accepted"
        assert wait_for(
            lambda: (
                len(query(f"SELECT 1 FROM {table}")) == 3 if _table_exists(query, table) else False
            ),
            20,
        )
        rows = {r["event"] or r["type"]: r for r in query(f"SELECT * FROM {table}")}
        assert set(rows) == {"identify", "Charge Succeeded", "Order Refunded"}
        charge = rows["Charge Succeeded"]
        assert charge["message_id"] == expected_message_id(
            "stripe", "evt_3OkLmN2eZvKYlo2C0charge1", 0, "Charge Succeeded"
        )
        assert charge["user_id"] == "u_4821"
        assert charge["timestamp"].isoformat() == "2023-11-14T22:15:01+00:00"  # Stripe's time
        assert json.loads(charge["properties"])["revenue"] == 54.5
        assert json.loads(rows["Order Refunded"]["properties"])["revenue"] == -20.0

        assert wait_for(lambda: sum(len(r.json()["batch"]) for r in posthog.requests) == 3)
        captured = {e["event"]: e for r in posthog.requests for e in r.json()["batch"]}
        assert set(captured) == {"$identify", "Charge Succeeded", "Order Refunded"}
        assert captured["Charge Succeeded"]["uuid"] == charge["message_id"]
        assert captured["$identify"]["properties"]["$set"]["email"] == "jennyrosen@example.com"

        # The http destination only takes refunds, and refused it: a dead letter.
        assert wait_for(lambda: "Order Refunded" in cli("dlq", "list", "--config", cfg).stdout)
        shown = cli("deliveries", "show", "evt_3OkLmN2eZvKYlo2C0charge1", "--config", cfg)
        assert shown.returncode == 0, shown.stderr
        assert "Charge Succeeded" in shown.stdout
        assert "warehouse  attempt 1  ok" in shown.stdout
        assert "analytics  attempt 1  ok  HTTP 200" in shown.stdout  # PostHog answered 200
        refund_id = "ee015c74-4d91-5486-89f6-7dd2aa8b1f1b"  # as docs/events.md shows it
        attempts = cli("events", "show", refund_id, "--config", cfg)
        assert "hook  attempt 1  fail  HTTP 400" in attempts.stdout

        # The endpoint is fixed: replaying the dead letter delivers it.
        hook.default = (200, {}, b"{}")
        replayed = cli("dlq", "replay", "--destination", "hook", "--config", cfg)
        assert "1 dead letter(s) queued" in replayed.stdout
        assert wait_for(
            lambda: any(
                r.headers.get("webhook-id") == refund_id and r.json()["event"] == "Order Refunded"
                for r in hook.requests[1:]
            )
        )
        assert "0 dead letter(s)" in cli("dlq", "list", "--config", cfg).stderr
    finally:
        server.stop()
        posthog.stop()
        hook.stop()


def _table_exists(query, table: str) -> bool:
    return bool(query(f"SELECT to_regclass('{table}') IS NOT NULL AS ok")[0]["ok"])


def test_kill_dash_9_under_load_every_event_arrives(tmp_path, redis_url, prefix):
    """The gateway is SIGKILLed while webhooks pour in; restarted, it delivers every event,
    and a sink that dedupes on messageId sees each exactly once."""
    sink = VendorServer()
    sink.start()
    text = f"""
redis_url: {redis_url}
key_prefix: {prefix}
worker: {{claim_idle: 1s}}
sources:
  stripe: {{type: stripe, secrets: [{SECRET}], tolerance: 1h}}
destinations:
  sink: {{type: http, url: "{sink.url}/in", batch: true, batch_size: 20, linger: 20ms}}
"""
    total = 300
    accepted: set[int] = set()
    server = Server(tmp_path, {"LOG_LEVEL": "warning"}, config=text)
    port = server.port

    def vendor(indexes: list[int]) -> None:
        """Like Stripe: send, and count only a 200 as done."""
        for i in indexes:
            try:
                if (
                    send(f"http://127.0.0.1:{port}", "charge.succeeded", f"evt_{i}").status_code
                    == 200
                ):
                    accepted.add(i)
            except httpx.TransportError:
                pass

    try:
        threads = [
            threading.Thread(target=vendor, args=(list(range(k, total, 4)),)) for k in range(4)
        ]
        for t in threads:
            t.start()
        assert wait_for(lambda: len(accepted) >= total // 3, 30)
        server.kill()  # SIGKILL, mid-stream
        for t in threads:
            t.join()
        assert len(accepted) < total, "the kill should land before the vendor is done"
        server = Server(tmp_path, {"LOG_LEVEL": "warning"}, config=text, port=port)
        vendor([i for i in range(total) if i not in accepted])  # the vendor retries
        assert len(accepted) == total
        expected = {
            expected_message_id("stripe", f"evt_{i}", 0, "Charge Succeeded") for i in range(total)
        }

        def seen() -> set[str]:
            return {e["messageId"] for r in list(sink.requests) for e in r.json()}

        assert wait_for(lambda: seen() == expected, 60), len(expected - seen())
    finally:
        server.stop()
        sink.stop()
