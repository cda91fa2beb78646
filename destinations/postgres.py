"""`postgres`: a warehouse table, one row per event, keyed by message_id.

The table is created if missing:

    message_id   text primary key        -- the event's messageId
    type         text not null           -- track, identify, ...
    event        text                    -- the event name (track)
    user_id      text
    anonymous_id text
    timestamp    timestamptz not null    -- when it happened at the vendor
    received_at  timestamptz not null    -- when the gateway accepted it
    source       text                    -- the source's name
    delivery_id  text                    -- the vendor's delivery id
    properties   jsonb
    traits       jsonb
    context      jsonb
    loaded_at    timestamptz not null default now()

Rows are upserted in batches (ON CONFLICT (message_id) DO UPDATE), so redeliveries and
replays never duplicate a row, and a replay after a mapping fix that changed only
properties (or ids, times) corrects the row in place; `loaded_at` then says when. The
update skips rows that would not change, so a plain resend rewrites nothing. (A fix
that renames an event gives it a new messageId: a new row, beside the old one.)
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Any, ClassVar

import asyncpg

from gateway.config import Secret
from gateway.errors import ConfigError

from .base import OK, Destination, DestinationConfig, Result, encode_json, fail, register, retry

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")

# SQLSTATE classes worth retrying: connection, transaction rollback (deadlock,
# serialization), insufficient resources, object in use (lock_timeout while a migration
# holds the table), operator intervention (statement timeout, shutdown), system errors.
_TRANSIENT = frozenset({"08", "40", "53", "55", "57", "58"})

CREATE = """
CREATE TABLE IF NOT EXISTS {table} (
    message_id   text PRIMARY KEY,
    type         text NOT NULL,
    event        text,
    user_id      text,
    anonymous_id text,
    timestamp    timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    source       text,
    delivery_id  text,
    properties   jsonb,
    traits       jsonb,
    context      jsonb,
    loaded_at    timestamptz NOT NULL DEFAULT now()
)
"""
INSERT = """
INSERT INTO {table} AS existing (message_id, type, event, user_id, anonymous_id, timestamp,
                                 received_at, source, delivery_id, properties, traits, context)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::timestamptz[], $7::timestamptz[], $8::text[], $9::text[],
                     $10::text[]::jsonb[], $11::text[]::jsonb[], $12::text[]::jsonb[])
ON CONFLICT (message_id) DO UPDATE SET
    type = EXCLUDED.type, event = EXCLUDED.event, user_id = EXCLUDED.user_id,
    anonymous_id = EXCLUDED.anonymous_id, timestamp = EXCLUDED.timestamp,
    received_at = EXCLUDED.received_at, source = EXCLUDED.source,
    delivery_id = EXCLUDED.delivery_id, properties = EXCLUDED.properties,
    traits = EXCLUDED.traits, context = EXCLUDED.context, loaded_at = now()
WHERE (existing.type, existing.event, existing.user_id, existing.anonymous_id,
       existing.timestamp, existing.received_at, existing.source, existing.delivery_id,
       existing.properties, existing.traits, existing.context)
    IS DISTINCT FROM
      (EXCLUDED.type, EXCLUDED.event, EXCLUDED.user_id, EXCLUDED.anonymous_id,
       EXCLUDED.timestamp, EXCLUDED.received_at, EXCLUDED.source, EXCLUDED.delivery_id,
       EXCLUDED.properties, EXCLUDED.traits, EXCLUDED.context)
"""


class PostgresConfig(DestinationConfig, tag="postgres", kw_only=True):
    dsn: Secret
    """postgresql://user:password@host:5432/database"""
    table: str = "events"
    """The table (optionally schema.table); created if missing."""

    def check(self) -> None:
        super().check()
        if not _IDENTIFIER.match(self.table):
            raise ConfigError(
                "must be a plain table name (letters, digits, _; schema.table)", path="table"
            )


@register
class PostgresDestination(Destination):
    config_type = PostgresConfig
    max_batch: ClassVar[int] = 1000
    max_bytes: ClassVar[int] = 16 * 1024 * 1024

    def __init__(self, name: str, config: PostgresConfig) -> None:
        super().__init__(name, config)
        self.pool: asyncpg.Pool | None = None
        self.insert = INSERT.format(table=config.table)
        self.created = False
        self.creating = asyncio.Lock()

    async def start(self) -> None:
        config: PostgresConfig = self.config  # type: ignore[assignment]
        if self.pool is None:
            self.pool = await asyncpg.create_pool(
                config.dsn.reveal(),
                min_size=0,
                max_size=config.concurrency,
                timeout=float(config.timeout),
                command_timeout=float(config.timeout),
            )

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def ensure_table(self) -> None:
        """CREATE TABLE IF NOT EXISTS, once: run concurrently, PostgreSQL can fail it with a
        unique violation on pg_type (it checks before it locks)."""
        async with self.creating:
            if self.created:
                return
            assert self.pool is not None
            config: PostgresConfig = self.config  # type: ignore[assignment]
            async with self.pool.acquire() as conn:
                await conn.execute(CREATE.format(table=config.table))
            self.created = True

    async def send(self, batch: list[dict[str, Any]], now: float) -> list[Result]:
        try:
            await self.start()
            await self.ensure_table()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            # Not the events' fault: they wait for the table (or the server), never fail.
            return [retry(f"PostgreSQL: cannot prepare the table: {type(e).__name__}: {e}")] * len(
                batch
            )
        try:
            assert self.pool is not None
            async with self.pool.acquire() as conn:
                await conn.execute(self.insert, *_columns(_latest(batch)))
        except (OSError, TimeoutError, asyncpg.InterfaceError) as e:
            return [retry(f"PostgreSQL unreachable: {type(e).__name__}: {e}")] * len(batch)
        except asyncpg.PostgresError as e:
            state = e.sqlstate or ""
            if state == "42P01":  # the table went away: create it again, then retry
                self.created = False
                return [retry(f"PostgreSQL: {e}")] * len(batch)
            if state[:2] in _TRANSIENT or state == "25006":
                return [retry(f"PostgreSQL {state}: {e}")] * len(batch)
            if state[:2] in ("22", "23") and len(batch) > 1:
                # A value PostgreSQL refuses (e.g. \u0000 in a property): find the row.
                half = len(batch) // 2
                return await self.send(batch[:half], now) + await self.send(batch[half:], now)
            return [fail(f"PostgreSQL refused the rows: {state}: {e}")] * len(batch)
        return [OK] * len(batch)


def _latest(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One event per messageId, the last in stream order (a redo's copy, or a replay's
    correction): an upsert cannot touch one row twice in a statement (SQLSTATE 21000)."""
    by_id = {e["messageId"]: e for e in batch}
    return batch if len(by_id) == len(batch) else list(by_id.values())


def _columns(batch: list[dict[str, Any]]) -> list[list[Any]]:
    def time(value: Any) -> datetime | None:
        return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None

    def jsonb(value: Any) -> str | None:
        return encode_json(value).decode() if value else None

    source = [e.get("context", {}).get("source", {}) for e in batch]
    return [
        [e["messageId"] for e in batch],
        [e["type"] for e in batch],
        [e.get("event") for e in batch],
        [e.get("userId") for e in batch],
        [e.get("anonymousId") for e in batch],
        [time(e.get("timestamp")) for e in batch],
        [time(e.get("receivedAt")) for e in batch],
        [s.get("name") for s in source],
        [s.get("deliveryId") for s in source],
        [jsonb(e.get("properties")) for e in batch],
        [jsonb(e.get("traits")) for e in batch],
        [jsonb(e.get("context")) for e in batch],
    ]
