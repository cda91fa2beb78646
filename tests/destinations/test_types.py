"""Each destination type against a local server (or the real PostgreSQL / Redis)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from standardwebhooks.webhooks import Webhook

from destinations import DESTINATION_TYPES
from gateway.config import parse_config
from tests.conftest import until
from tests.destinations.conftest import event
from tests.services import PG_DSN, require_postgres

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def make(text: str, **env: str):
    cfg = parse_config(f"destinations:\n  d:\n{text}", "d.yaml", env).destinations["d"]
    return DESTINATION_TYPES[cfg.__struct_config__.tag]("d", cfg)


async def test_http_signs_per_standard_webhooks(vendor):
    dest = make(
        f"    type: http\n    url: {vendor.url}/in\n    secret: {SECRET}\n"
        "    headers: {Authorization: 'Bearer ${TOKEN}'}\n",
        TOKEN="t0k",
    )
    await dest.start()
    [result] = await dest.send([event(7)], time.time())
    await dest.close()
    assert result.ok
    [seen] = vendor.requests
    assert seen.path == "/in" and seen.headers["authorization"] == "Bearer t0k"
    assert seen.headers["webhook-id"] == event(7)["messageId"]
    # The receiver's own library accepts it.
    Webhook(SECRET).verify(seen.body, seen.headers)
    assert seen.json()["messageId"] == event(7)["messageId"]


async def test_http_batch_has_a_stable_id(vendor):
    dest = make(f"    type: http\n    url: {vendor.url}/in\n    batch: true\n")
    await dest.start()
    for _ in range(2):
        await dest.send([event(1), event(2)], time.time())
    await dest.close()
    first, second = vendor.requests
    assert len(first.json()) == 2
    assert first.headers["webhook-id"] == second.headers["webhook-id"]  # a retry is the same


async def test_posthog_batch_capture_shape(vendor):
    dest = make(f"    type: posthog\n    api_key: phc_test\n    host: {vendor.url}\n")
    await dest.start()
    results = await dest.send([event(1), event(2, kind="identify", userId="u_2")], time.time())
    await dest.close()
    assert all(r.ok for r in results)
    [seen] = vendor.requests
    assert seen.path == "/batch/"
    body = seen.json()
    assert body["api_key"] == "phc_test"
    track, identify = body["batch"]
    assert track["event"] == "Order Completed" and track["uuid"] == event(1)["messageId"]
    assert track["distinct_id"] == "stripe:cus_1"
    assert track["timestamp"] == "2024-05-01T12:00:00.000Z"
    assert track["properties"]["revenue"] == 11.0
    assert identify["event"] == "$identify" and identify["distinct_id"] == "u_2"
    assert identify["properties"]["$set"] == {"email": "u2@example.com"}


@pytest.mark.parametrize(
    ("setting", "marked"), [("", False), ("historical_migration: true\n", True)]
)
async def test_posthog_historical_migration_marks_the_batch(vendor, setting, marked):
    """PostHog's /batch/ takes `historical_migration: true` beside `api_key` and `batch`
    (as posthog-python's batch_post sends it); live traffic goes without it."""
    dest = make(f"    type: posthog\n    api_key: phc_test\n    host: {vendor.url}\n    {setting}")
    await dest.start()
    [result] = await dest.send([event(1)], time.time())
    await dest.close()
    assert result.ok
    [seen] = vendor.requests
    body = seen.json()
    assert body.get("historical_migration", False) is marked
    assert [e["uuid"] for e in body["batch"]] == [event(1)["messageId"]]


async def test_segment_batch_with_basic_auth_and_the_32kb_limit(vendor):
    dest = make(f"    type: segment\n    write_key: wk_123\n    endpoint: {vendor.url}/v1/batch\n")
    await dest.start()
    huge = event(3)
    huge["properties"]["blob"] = "x" * 40_000
    results = await dest.send([event(1), huge, event(2)], time.time())
    await dest.close()
    assert [r.outcome for r in results] == ["ok", "fail", "ok"]
    assert "32 KB" in results[1].reason
    [seen] = vendor.requests
    assert seen.headers["authorization"] == "Basic " + base64.b64encode(b"wk_123:").decode()
    assert [e["messageId"] for e in seen.json()["batch"]] == [
        event(1)["messageId"],
        event(2)["messageId"],
    ]


async def test_file_appends_json_lines(tmp_path):
    path = tmp_path / "out" / "events.jsonl"
    dest = make(f"    type: file\n    path: {path}\n")
    await dest.start()
    await dest.send([event(1)], time.time())
    await dest.send([event(2), event(3)], time.time())
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["messageId"] for e in lines] == [event(i)["messageId"] for i in (1, 2, 3)]


async def test_redis_stream(redis_url):
    key = f"test-{uuid.uuid4().hex[:8]}:out"
    dest = make(f"    type: redis-stream\n    url: {redis_url}\n    stream: {key}\n")
    await dest.start()
    await dest.send([event(1), event(2, kind="identify")], time.time())
    await dest.close()
    client = aioredis.Redis.from_url(redis_url)
    entries = await client.xrange(key)
    await client.delete(key)
    await client.aclose()
    assert [f[b"type"] for _, f in entries] == [b"track", b"identify"]
    assert msgspec.json.decode(entries[0][1][b"data"])["messageId"] == event(1)["messageId"]


async def test_redis_stream_is_trimmed_to_about_maxlen(redis_url):
    key = f"test-{uuid.uuid4().hex[:8]}:out"
    dest = make(
        f"    type: redis-stream\n    url: {redis_url}\n    stream: {key}\n    maxlen: 10\n"
    )
    await dest.start()
    results = await dest.send([event(i) for i in range(500)], time.time())
    await dest.close()
    client = aioredis.Redis.from_url(redis_url)
    try:
        length = await client.xlen(key)
        [(_, newest)] = await client.xrevrange(key, count=1)
        # `MAXLEN ~` trims whole stream nodes only: up to one node more than asked
        node = int((await client.config_get("stream-node-max-entries"))["stream-node-max-entries"])
    finally:
        await client.delete(key)
        await client.aclose()
    assert all(r.ok for r in results)
    assert 10 <= length <= 10 + node < 500
    assert newest[b"message_id"] == event(499)["messageId"].encode()


@pytest.fixture
async def pg_table():
    conn = await asyncpg.connect(require_postgres(PG_DSN), timeout=3)
    table = f"events_test_{uuid.uuid4().hex[:8]}"
    yield conn, table
    await conn.execute(f"DROP TABLE IF EXISTS {table}")
    await conn.close()


async def test_postgres_creates_the_table_and_never_duplicates_a_row(pg_table):
    conn, table = pg_table
    dest = make(f"    type: postgres\n    dsn: {PG_DSN}\n    table: {table}\n")
    await dest.start()
    assert all(
        r.ok
        for r in await dest.send([event(1), event(2, kind="identify", userId="u2")], time.time())
    )
    assert all(r.ok for r in await dest.send([event(1), event(3)], time.time()))  # a redo
    await dest.close()
    rows = await conn.fetch(f"SELECT * FROM {table} ORDER BY message_id")
    assert [r["message_id"] for r in rows] == [event(i)["messageId"] for i in (1, 2, 3)]
    first = rows[0]
    assert first["type"] == "track" and first["event"] == "Order Completed"
    assert first["anonymous_id"] == "stripe:cus_1" and first["source"] == "stripe"
    assert first["delivery_id"] == "evt_1"
    assert first["timestamp"].isoformat() == "2024-05-01T12:00:00+00:00"
    assert json.loads(first["properties"])["revenue"] == 11.0
    assert json.loads(rows[1]["traits"]) == {"email": "u2@example.com"}
    assert rows[1]["user_id"] == "u2"


async def test_postgres_unreachable_is_retried():
    dest = make(
        "    type: postgres\n    dsn: postgresql://postgres@127.0.0.1:9/test\n    timeout: 1s\n"
    )
    [result] = await dest.send([event(1)], time.time())
    await dest.close()
    assert result.outcome == "retry"


async def test_postgres_concurrent_first_batches_all_land(pg_table):
    """Batches in flight at once must not race to create the table (and dead-letter)."""
    conn, table = pg_table
    dest = make(f"    type: postgres\n    dsn: {PG_DSN}\n    table: {table}\n    concurrency: 8\n")
    await dest.start()
    batches = [[event(i * 10 + j) for j in range(10)] for i in range(8)]
    results = await asyncio.gather(*(dest.send(b, time.time()) for b in batches))
    await dest.close()
    assert all(r.ok for batch in results for r in batch)
    assert (await conn.fetchval(f"SELECT count(*) FROM {table}")) == 80


async def test_postgres_dead_letters_only_the_row_it_refuses(pg_table):
    """\\u0000 is valid JSON but not jsonb: bisect to that row, load the rest."""
    conn, table = pg_table
    dest = make(f"    type: postgres\n    dsn: {PG_DSN}\n    table: {table}\n")
    await dest.start()
    batch = [event(i) for i in range(6)]
    batch[4]["properties"]["note"] = "nul\u0000byte"
    results = await dest.send(batch, time.time())
    await dest.close()
    assert [r.outcome for r in results] == ["ok"] * 4 + ["fail", "ok"]
    assert "22P05" in results[4].reason
    assert (await conn.fetchval(f"SELECT count(*) FROM {table}")) == 5


@pytest.mark.parametrize("lock_timeout", [None, 200])
async def test_postgres_a_locked_table_is_retried_not_dead_lettered(pg_table, lock_timeout):
    """Client timeout, or the server's lock_timeout (55P03) while a migration holds it."""
    conn, table = pg_table
    dsn = PG_DSN if lock_timeout is None else f"{PG_DSN}?lock_timeout={lock_timeout}"
    dest = make(f"    type: postgres\n    dsn: '{dsn}'\n    table: {table}\n    timeout: 1s\n")
    await dest.start()
    assert all(r.ok for r in await dest.send([event(1)], time.time()))
    async with conn.transaction():
        await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        [waited] = await dest.send([event(2)], time.time())
    assert waited.outcome == "retry"
    assert all(r.ok for r in await dest.send([event(2)], time.time()))
    await dest.close()
    assert (await conn.fetchval(f"SELECT count(*) FROM {table}")) == 2


async def blocked_by(conn: asyncpg.Connection, other: asyncpg.Connection) -> int:
    """How many backends wait for a lock `other` holds."""
    return await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        other.get_server_pid(),
    )


@pytest.mark.parametrize(
    ("conflict", "sqlstate"),
    [
        # another writer inserted a row of the batch and waits for a row the batch inserted:
        # PostgreSQL breaks the cycle by aborting the batch (it waited first; its
        # deadlock_timeout, 1 s by default, passes first)
        ("deadlock", "40P01"),
        # under repeatable read, a row of the batch committed by another writer meanwhile
        ("serialization", "40001"),
    ],
)
async def test_postgres_deadlocks_and_serialization_failures_are_retried(
    pg_table, conflict, sqlstate
):
    conn, table = pg_table
    dsn = (
        PG_DSN
        if conflict == "deadlock"
        else f"{PG_DSN}?default_transaction_isolation=repeatable%20read"
    )
    dest = make(f"    type: postgres\n    dsn: '{dsn}'\n    table: {table}\n    timeout: 10s\n")
    await dest.start()
    assert all(r.ok for r in await dest.send([event(0)], time.time()))  # creates the table
    first, second = event(1), event(2)
    other = await asyncpg.connect(PG_DSN, timeout=3)
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        # Only the batch's session may find the deadlock (and be its victim), however late
        # the other writer gets to wait on a loaded machine. Needs a superuser, as in CI.
        await other.execute("SET deadlock_timeout = '60s'")
    insert = (
        f"INSERT INTO {table} (message_id, type, timestamp, received_at) "
        "VALUES ($1, 'track', now(), now())"
    )
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute(insert, second["messageId"])
        sending = asyncio.create_task(dest.send([first, second], time.time()))
        # the batch has inserted `first` and now waits for `other`'s `second`
        await until(lambda: blocked_by(conn, other), what="the batch to wait for the other writer")
        if conflict == "deadlock":
            closing = asyncio.create_task(other.execute(insert, first["messageId"]))
            results = await sending
            await closing  # the batch's rollback let it through
            await tx.commit()
        else:
            await tx.commit()
            results = await sending
        assert [r.outcome for r in results] == ["retry", "retry"]
        assert f"PostgreSQL {sqlstate}" in results[0].reason
    finally:
        await other.close()
    assert all(r.ok for r in await dest.send([first, second], time.time()))  # the retry
    await dest.close()
    assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 3
