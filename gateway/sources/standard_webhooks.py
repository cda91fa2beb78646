"""Standard Webhooks (Svix, Clerk, Resend, ...): `webhook-id/-timestamp/-signature` headers.

Svix sends the same headers named `svix-*`; both spellings are one delivery. The secret is
`whsec_` + base64; the standardwebhooks library decodes it and computes the signature.
We parse the headers ourselves because the library raises non-verification errors
(binascii.Error, ValueError) on a malformed signature and checks time with its own clock.
https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
"""

from __future__ import annotations

import base64

from standardwebhooks.webhooks import Webhook

from ..config import Duration, SourceConfig, duration
from ..errors import ConfigError
from .base import Headers, Source, delivery_id_from, register
from .schemes import verify_standard

_NAMES = ("id", "timestamp", "signature")


class StandardWebhooksConfig(SourceConfig, tag="standard-webhooks"):
    event_type_field: str = "type"
    """The payload field (dotted path) naming what happened; it becomes the event name."""
    tolerance: Duration = duration("300s")
    """Accepted clock difference, both ways, for `webhook-timestamp`."""

    def check(self) -> None:
        super().check()
        for i, secret in enumerate(self.secrets):
            if not valid_secret(secret.reveal()):
                raise ConfigError(
                    "not a Standard Webhooks secret (expected whsec_ followed by base64)",
                    path=f"secrets.{i}",
                )


def valid_secret(text: str) -> bool:
    """`whsec_` (optional) + strict base64: a pasted secret with stray characters is a
    config error, not a signature that never matches."""
    try:
        base64.b64decode(text.removeprefix("whsec_"), validate=True)
        Webhook(text)
    except Exception:
        return False
    return True


def _header(headers: Headers, name: str) -> str | None:
    return headers.get(f"webhook-{name}") or headers.get(f"svix-{name}")


@register
class StandardWebhooksSource(Source):
    config_type = StandardWebhooksConfig
    vendor_headers = tuple(f"{p}-{n}" for p in ("webhook", "svix") for n in _NAMES)

    def __init__(self, name: str, config: StandardWebhooksConfig) -> None:
        super().__init__(name, config)
        self.hooks = [Webhook(s.reveal()) for s in config.secrets]
        self.tolerance = float(config.tolerance)

    def verify(self, body: bytes, headers: Headers, now: float) -> None:
        verify_standard(self.hooks, body, headers, now, self.tolerance)

    def identify(self, body: bytes, headers: Headers) -> tuple[str, str]:
        msg_id = delivery_id_from(_header(headers, "id"), "the webhook-id header")
        return msg_id, msg_id
