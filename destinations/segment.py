"""`segment`: the Segment HTTP Tracking API's /v1/batch (and compatible collectors).

Events are already Segment Spec, so they go as they are; `messageId` lets Segment drop
copies. Set `endpoint` for RudderStack (https://<dataplane>/v1/batch), Jitsu or any other
Segment-compatible collector. Limits: 500 KB per batch, 32 KB per event.
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


class SegmentConfig(DestinationConfig, tag="segment", kw_only=True):
    write_key: Secret
    endpoint: str = "https://api.segment.io/v1/batch"
    """https://events.eu1.segmentapis.com/v1/batch in the EU; a RudderStack data plane..."""


@register
class SegmentDestination(HttpDestination):
    config_type = SegmentConfig
    max_batch: ClassVar[int] = 500
    max_bytes: ClassVar[int] = 500 * 1024

    def __init__(self, name: str, config: SegmentConfig) -> None:
        super().__init__(name, config)
        token = base64.b64encode(f"{config.write_key.reveal()}:".encode()).decode()
        self.headers = {"content-type": "application/json", "authorization": f"Basic {token}"}

    def precheck(self, event: dict[str, Any], now: float) -> Result | None:
        if len(encode_json(event)) > MAX_EVENT_BYTES:
            return fail("the event is larger than Segment's 32 KB limit")
        return None

    def request(self, batch: list[dict[str, Any]], now: float) -> tuple[str, dict[str, str], bytes]:
        config: SegmentConfig = self.config  # type: ignore[assignment]
        sent_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + "Z"
        return config.endpoint, self.headers, encode_json({"batch": batch, "sentAt": sent_at})
