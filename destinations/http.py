"""`http`: POST events as JSON to any URL, signed per Standard Webhooks.

One event per request by default (`batch: true` sends a JSON array). Headers
`webhook-id` (the messageId; for a batch, an id derived from its messageIds, the same on
every retry), `webhook-timestamp` and `webhook-signature` (`v1,<base64>` of
`id.timestamp.body`, with the `whsec_` secret), so the receiver can verify with any
Standard Webhooks library and dedupe on webhook-id.
https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from standardwebhooks.webhooks import Webhook

from gateway.config import Secret
from gateway.errors import ConfigError
from gateway.sources.standard_webhooks import valid_secret

from .base import DestinationConfig, HttpDestination, encode_json, register

_BATCH_NS = uuid.UUID("3f1b2c4d-5e6f-5a7b-8c9d-0e1f2a3b4c5d")


class HttpConfig(DestinationConfig, tag="http", kw_only=True):
    url: str
    """Where to POST."""
    secret: Secret | None = None
    """A Standard Webhooks secret (whsec_...) to sign with; null: unsigned."""
    headers: dict[str, Secret] = {}
    """Extra request headers (e.g. Authorization: "Bearer ${TOKEN}")."""
    batch: bool = False
    """Send a JSON array of events per request instead of one event."""

    def check(self) -> None:
        super().check()
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError("must be an http:// or https:// URL", path="url")
        if self.secret is not None and not valid_secret(self.secret.reveal()):
            raise ConfigError("not a Standard Webhooks secret (whsec_ + base64)", path="secret")


@register
class HttpEventsDestination(HttpDestination):
    config_type = HttpConfig
    max_batch: ClassVar[int] = 500

    def __init__(self, name: str, config: HttpConfig) -> None:
        super().__init__(name, config)
        if not config.batch:
            self.batch_size = 1
        self.hook = Webhook(config.secret.reveal()) if config.secret else None
        self.extra = {k.lower(): v.reveal() for k, v in config.headers.items()}

    def request(self, batch: list[dict[str, Any]], now: float) -> tuple[str, dict[str, str], bytes]:
        config: HttpConfig = self.config  # type: ignore[assignment]
        body = encode_json(batch if config.batch else batch[0])
        if len(batch) == 1:
            msg_id = batch[0]["messageId"]
        else:
            msg_id = str(uuid.uuid5(_BATCH_NS, ",".join(e["messageId"] for e in batch)))
        headers = {
            "content-type": "application/json",
            **self.extra,
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now)),
        }
        if self.hook is not None:
            when = datetime.fromtimestamp(int(now), tz=UTC)
            headers["webhook-signature"] = self.hook.sign(msg_id, when, body.decode())
        return config.url, headers, body
