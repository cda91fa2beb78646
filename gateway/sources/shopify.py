"""Shopify: `X-Shopify-Hmac-Sha256: <base64>` over the raw body, with the app's client secret.

`X-Shopify-Webhook-Id` names the delivery and stays the same across Shopify's retries.
https://shopify.dev/docs/apps/build/webhooks/subscribe/https#step-2-validate-the-origin-of-your-webhook
"""

from __future__ import annotations

from ..config import SourceConfig
from .base import Headers, delivery_id_from, register
from .signing import HmacScheme, HmacSource


class ShopifyConfig(SourceConfig, tag="shopify"):
    pass


_SCHEME = HmacScheme(
    header="x-shopify-hmac-sha256", encoding="base64", display_header="X-Shopify-Hmac-Sha256"
)


@register
class ShopifySource(HmacSource):
    config_type = ShopifyConfig
    scheme = _SCHEME
    vendor_headers = (
        "x-shopify-topic",
        "x-shopify-webhook-id",
        "x-shopify-event-id",
        "x-shopify-triggered-at",
        "x-shopify-shop-domain",
        "x-shopify-api-version",
        "x-shopify-hmac-sha256",
    )

    def identify(self, body: bytes, headers: Headers) -> tuple[str, str]:
        webhook_id = delivery_id_from(
            headers.get("x-shopify-webhook-id"), "the X-Shopify-Webhook-Id header"
        )
        return webhook_id, webhook_id
