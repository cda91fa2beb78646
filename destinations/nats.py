"""`nats`: NATS JetStream, published with `Nats-Msg-Id` = the messageId, so the stream's
duplicate window drops copies. The stream must exist (or set `create_stream`).
https://docs.nats.io/nats-concepts/jetstream/streams#deduplication
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import nats
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js.errors import NoStreamResponseError, NotFoundError

from gateway.config import Secret

from .base import OK, Destination, DestinationConfig, Result, encode_json, fail, register, retry


class NatsConfig(DestinationConfig, tag="nats", kw_only=True):
    url: Secret
    """nats://host:4222 (credentials may be in it)."""
    subject: str = "events.{type}"
    """The subject; {type} and {source} are filled in per event."""
    create_stream: str | None = None
    """Create a stream of this name for the subjects if there is none."""


@register
class NatsDestination(Destination):
    config_type = NatsConfig
    max_batch: ClassVar[int] = 1000
    max_bytes: ClassVar[int] = 16 * 1024 * 1024

    def __init__(self, name: str, config: NatsConfig) -> None:
        super().__init__(name, config)
        self.nc: Any = None
        self.js: Any = None

    async def start(self) -> None:
        config: NatsConfig = self.config  # type: ignore[assignment]
        if self.nc is None or self.nc.is_closed:
            self.nc = await nats.connect(
                config.url.reveal(),
                connect_timeout=float(config.timeout),
                max_reconnect_attempts=-1,
                allow_reconnect=True,
            )
            self.js = self.nc.jetstream(timeout=float(config.timeout))
            if config.create_stream:
                subjects = [config.subject.replace("{type}", "*").replace("{source}", "*")]
                try:
                    await self.js.stream_info(config.create_stream)
                except NotFoundError:
                    await self.js.add_stream(name=config.create_stream, subjects=subjects)

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.drain()

    async def send(self, batch: list[dict[str, Any]], now: float) -> list[Result]:
        config: NatsConfig = self.config  # type: ignore[assignment]
        try:
            await self.start()
        except (OSError, TimeoutError, NatsError) as e:
            return [retry(f"NATS unreachable: {type(e).__name__}")] * len(batch)

        async def publish(event: dict[str, Any]) -> Result:
            subject = config.subject.format(
                type=event["type"],
                source=event.get("context", {}).get("source", {}).get("name", ""),
            )
            try:
                await self.js.publish(
                    subject, encode_json(event), headers={"Nats-Msg-Id": event["messageId"]}
                )
            except (NotFoundError, NoRespondersError, NoStreamResponseError):
                return fail(
                    f"no JetStream stream takes subject {subject!r} (create one, or "
                    "set create_stream)"
                )
            except (TimeoutError, NatsError, OSError) as e:
                return retry(f"NATS: {type(e).__name__}: {e}")
            return OK

        return list(await asyncio.gather(*(publish(e) for e in batch)))
