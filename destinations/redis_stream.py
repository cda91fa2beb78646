"""`redis-stream`: events appended to a Redis stream another system reads.

Entry fields: `message_id`, `type`, `event` (the name), `data` (the event's JSON).
"""

from __future__ import annotations

from typing import Any, ClassVar

import redis.asyncio as redis
from redis.exceptions import RedisError

from gateway.config import Secret

from .base import OK, Destination, DestinationConfig, Result, encode_json, register, retry


class RedisStreamConfig(DestinationConfig, tag="redis-stream", kw_only=True):
    url: Secret
    """The Redis to write to (redis://...; may hold a password)."""
    stream: str
    """The stream's key."""
    maxlen: int = 1_000_000
    """Approximate length the stream is trimmed to."""


@register
class RedisStreamDestination(Destination):
    config_type = RedisStreamConfig
    max_batch: ClassVar[int] = 1000
    max_bytes: ClassVar[int] = 16 * 1024 * 1024

    def __init__(self, name: str, config: RedisStreamConfig) -> None:
        super().__init__(name, config)
        self.client: redis.Redis | None = None

    async def start(self) -> None:
        config: RedisStreamConfig = self.config  # type: ignore[assignment]
        self.client = redis.Redis.from_url(
            config.url.reveal(), socket_timeout=float(config.timeout)
        )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def send(self, batch: list[dict[str, Any]], now: float) -> list[Result]:
        assert self.client is not None
        config: RedisStreamConfig = self.config  # type: ignore[assignment]
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for event in batch:
                    pipe.xadd(
                        config.stream,
                        {
                            "message_id": event["messageId"],
                            "type": event["type"],
                            "event": event.get("event") or "",
                            "data": encode_json(event),
                        },
                        maxlen=config.maxlen,
                        approximate=True,
                    )
                await pipe.execute()
        except (RedisError, OSError) as e:
            return [retry(f"Redis: {type(e).__name__}: {e}")] * len(batch)
        return [OK] * len(batch)
