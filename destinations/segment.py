"""`segment`: the Segment HTTP Tracking API's /v1/batch (and compatible collectors).

Events are already Segment Spec, so they go as they are; `messageId` lets Segment drop
copies. Set `endpoint` for RudderStack (https://<dataplane>/v1/batch), Jitsu or any other
Segment-compatible collector. Limits: 500 KB per batch, 32 KB per event; batches are
kept under 475,000 bytes, the margin Segment's own SDK keeps, and a batch whose request
body would still pass `batch_bytes` is halved before it is sent.
https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/#batch

alias (the identity graph joining a vendor id to a person) goes as Segment's own alias
call, `{"type": "alias", "userId", "previousId"}` in the batch: each Segment destination
then joins the histories its own way (or not at all: not every destination takes alias,
and Segment Unify profiles ignore it).
https://segment.com/docs/connections/spec/alias/
"""

from __future__ import annotations

import base64
import time
from typing import Any, ClassVar

from gateway.config import Secret

from .base import DestinationConfig, HttpDestination, Result, encode_json, fail, register

MAX_EVENT_BYTES = 32 * 1024
# "Our servers only accept batches less than 500KB. Here limit is set slightly lower to
# leave space for extra data that will be added later, eg. "sentAt"." - Segment's
# analytics-python, segment/analytics/consumer.py (BATCH_SIZE_LIMIT = 475000)
# https://github.com/segmentio/analytics-python/blob/master/segment/analytics/consumer.py
MAX_BATCH_BYTES = 475_000


class SegmentConfig(DestinationConfig, tag="segment", kw_only=True):
    write_key: Secret
    endpoint: str = "https://api.segment.io/v1/batch"
    """https://events.eu1.segmentapis.com/v1/batch in the EU; a RudderStack data plane..."""


@register
class SegmentDestination(HttpDestination):
    config_type = SegmentConfig
    consent_purpose: ClassVar[str | None] = "analytics"
    max_batch: ClassVar[int] = 500
    max_bytes: ClassVar[int] = MAX_BATCH_BYTES

    def __init__(self, name: str, config: SegmentConfig) -> None:
        super().__init__(name, config)
        token = base64.b64encode(f"{config.write_key.reveal()}:".encode()).decode()
        self.headers = {"content-type": "application/json", "authorization": f"Basic {token}"}

    def precheck(self, event: dict[str, Any], now: float) -> Result | None:
        if len(encode_json(event)) > MAX_EVENT_BYTES:
            return fail("the event is larger than Segment's 32 KB limit")
        return None

    async def _send(self, batch: list[dict[str, Any]], now: float) -> list[Result]:
        url, headers, body = self.request(batch, now)
        if len(body) > self.batch_bytes and len(batch) > 1:
            # The worker sizes batches by the events as stored; the request is what counts
            # (a retry or a reclaimed batch must not be refused as too large either).
            half = len(batch) // 2
            return await self._send(batch[:half], now) + await self._send(batch[half:], now)
        return await self.post(url, headers, body, batch, now, self._send)

    def request(self, batch: list[dict[str, Any]], now: float) -> tuple[str, dict[str, str], bytes]:
        config: SegmentConfig = self.config  # type: ignore[assignment]
        sent_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + "Z"
        return config.endpoint, self.headers, encode_json({"batch": batch, "sentAt": sent_at})
