"""A replay after a mapping fix: what each kind of fix does to messageIds and the warehouse.

An event's messageId covers what it says (type and name): renaming it in a fixed mapping
makes a new id, so destinations that dedupe take the corrected event; a fix of its
properties keeps the id, and the `postgres` table upserts the corrected row.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import asyncpg
import pytest

from gateway.config import parse_config
from gateway.deliver import DeliverWorker
from gateway.replay import replay
from gateway.worker import NormalizeWorker
from tests.conftest import expected_message_id, until
from tests.destinations.conftest import event
from tests.destinations.test_types import make
from tests.services import PG_DSN, require_postgres
from tests.test_worker import put

CFG = """
key_prefix: {prefix}
sources:
  forms:
    type: hmac
    secrets: [x]
    signature_header: Sig
    mappings:
      - when: "kind == 'submit'"
        event: {name}
        properties: {{plan: {plan}}}
destinations:
  warehouse:
    type: postgres
    dsn: {dsn}
    table: {table}
    start: earliest
    linger: 10ms
"""
BODY = b'{"kind": "submit", "plan": "pro", "tier": "gold"}'


@pytest.fixture
async def pg_table():
    conn = await asyncpg.connect(require_postgres(PG_DSN), timeout=3)
    table = f"corrections_{uuid.uuid4().hex[:8]}"
    yield conn, table
    await conn.execute(f"DROP TABLE IF EXISTS {table}")
    await conn.close()


async def rows(conn: asyncpg.Connection, table: str) -> dict[str, tuple]:
    """message_id -> (event, properties) of every row, or {} before the table exists."""
    try:
        found = await conn.fetch(f"SELECT message_id, event, properties FROM {table}")
    except asyncpg.UndefinedTableError:
        return {}
    return {r["message_id"]: (r["event"], json.loads(r["properties"])) for r in found}


async def test_a_corrected_replay_lands_in_the_warehouse(redis_store, pg_table):
    conn, table = pg_table

    def config(name: str, plan: str):
        text = CFG.format(
            prefix=redis_store.keys.prefix, name=name, plan=plan, dsn=PG_DSN, table=table
        )
        return parse_config(text, "c.yaml", {})

    wrong = config("Form Sent", "tier")  # the first mapping: wrong property, wrong name
    await put(redis_store, "forms", "f1", BODY)
    normalize = NormalizeWorker(wrong, redis_store, "n")
    await normalize.ensure_groups()
    assert await normalize.read_once() == 1

    deliver = DeliverWorker(wrong, redis_store, "d")
    for runner in deliver.runners:
        await runner.ensure_group()
    stop = asyncio.Event()
    task = asyncio.create_task(deliver.run(stop))
    try:
        sent = expected_message_id("forms", "f1", 0, "Form Sent")
        await until(
            lambda: _eq(rows(conn, table), {sent: ("Form Sent", {"plan": "gold"})}),
            what="the first event in the table",
        )

        # Fix the property: same messageId, the row is corrected in place.
        done = await replay(config("Form Sent", "plan"), redis_store, "forms")
        assert (done.deliveries, done.events) == (1, 1)
        await until(
            lambda: _eq(rows(conn, table), {sent: ("Form Sent", {"plan": "pro"})}),
            what="the row corrected by the replay",
        )

        # Fix the name: a new messageId, so it lands as a new row (the old one stays).
        await replay(config("Form Submitted", "plan"), redis_store, "forms")
        submitted = expected_message_id("forms", "f1", 0, "Form Submitted")
        assert submitted != sent
        await until(
            lambda: _eq(
                rows(conn, table),
                {
                    sent: ("Form Sent", {"plan": "pro"}),
                    submitted: ("Form Submitted", {"plan": "pro"}),
                },
            ),
            what="the renamed event as a new row",
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _eq(value, expected) -> bool:
    return (await value) == expected


async def test_postgres_upserts_corrections_and_leaves_unchanged_rows_alone(pg_table):
    conn, table = pg_table
    dest = make(f"    type: postgres\n    dsn: {PG_DSN}\n    table: {table}\n")
    await dest.start()
    try:
        first = event(1)
        assert all(r.ok for r in await dest.send([first, event(2)], time.time()))
        loaded = dict(await conn.fetch(f"SELECT message_id, loaded_at FROM {table}"))

        # The same events again (a redo after a crash): nothing is rewritten.
        assert all(r.ok for r in await dest.send([first, event(2)], time.time()))
        assert dict(await conn.fetch(f"SELECT message_id, loaded_at FROM {table}")) == loaded

        # A correction of event 1; and event 4 arriving in one batch behind its own
        # uncorrected copy (its first delivery and the replay read together): the later
        # one wins, and every event counts as sent.
        fixed = event(1, properties={"order_id": "o1", "revenue": 99.0, "currency": "EUR"})
        fixed_4 = event(4, properties={"order_id": "o4", "revenue": 44.0, "currency": "EUR"})
        results = await dest.send([fixed, event(4), fixed_4], time.time())
        assert [r.ok for r in results] == [True, True, True]
    finally:
        await dest.close()
    got = {
        r["message_id"]: (json.loads(r["properties"])["revenue"], r["loaded_at"])
        for r in await conn.fetch(f"SELECT message_id, properties, loaded_at FROM {table}")
    }
    assert got[first["messageId"]][0] == 99.0
    assert got[first["messageId"]][1] > loaded[first["messageId"]]  # loaded_at: corrected
    assert got[event(2)["messageId"]] == (12.0, loaded[event(2)["messageId"]])
    assert got[event(4)["messageId"]][0] == 44.0
