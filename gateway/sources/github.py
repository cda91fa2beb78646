"""GitHub: `X-Hub-Signature-256: sha256=<hex>` over the raw body.

A delivery is (`X-GitHub-Hook-ID`, `X-GitHub-Delivery`): a manual redelivery reuses the
GUID, so it is a duplicate of the same hook's delivery. `ping` (sent when a hook is
created) is accepted like any event.
https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
"""

from __future__ import annotations

from ..config import SourceConfig
from .base import Headers, delivery_id_from, register
from .signing import HmacScheme, HmacSource


class GitHubConfig(SourceConfig, tag="github"):
    pass


_SCHEME = HmacScheme(
    header="x-hub-signature-256", prefix="sha256=", display_header="X-Hub-Signature-256"
)


@register
class GitHubSource(HmacSource):
    config_type = GitHubConfig
    scheme = _SCHEME
    vendor_headers = (
        "x-github-event",
        "x-github-delivery",
        "x-github-hook-id",
        "x-github-hook-installation-target-type",
        "x-github-hook-installation-target-id",
        "x-hub-signature-256",
    )

    def identify(self, body: bytes, headers: Headers) -> tuple[str, str]:
        delivery = delivery_id_from(
            headers.get("x-github-delivery"), "the X-GitHub-Delivery header"
        )
        hook = headers.get("x-github-hook-id", "").strip()
        return delivery, f"{hook}:{delivery}" if hook else delivery
