"""Catalog entries of the hand-written source types (gateway/sources/<name>.py).

Their verification lives in their own modules; the schemes here only describe them and
sign for `webhook-gateway send` (tests check a request so signed is accepted).
"""

from normalizers.generic import Spec

from ..catalog import Vendor, register_vendor
from ..schemes import Hmac, StandardWebhooks

register_vendor(
    Vendor(
        name="stripe",
        title="Stripe",
        category="payments",
        scheme=Hmac("Stripe-Signature", pairs=True, signed="{timestamp}.{body}"),
        docs="https://docs.stripe.com/webhooks#verify-manually",
        tested_with="stripe SDK (WebhookSignature), published vector",
        delivery_id=("body:id",),
        retry_window="up to 3 days",
        tolerance="300s",
        builtin=True,
    )
)
register_vendor(
    Vendor(
        name="github",
        title="GitHub",
        category="dev tools",
        scheme=Hmac("X-Hub-Signature-256", prefix="sha256="),
        docs="https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries",
        tested_with="published vector (GitHub docs)",
        delivery_id=("header:X-GitHub-Delivery",),
        spec=Spec(event_type="header:X-GitHub-Event"),
        retry_window="no automatic retries (manual redelivery)",
        handshake_doc="`ping` is accepted as an event",
        builtin=True,
    )
)
register_vendor(
    Vendor(
        name="shopify",
        title="Shopify",
        category="e-commerce",
        scheme=Hmac("X-Shopify-Hmac-Sha256", encoding="base64"),
        docs="https://shopify.dev/docs/apps/build/webhooks/subscribe/https",
        tested_with="published vector (Shopify docs)",
        delivery_id=("header:X-Shopify-Webhook-Id",),
        spec=Spec(event_type="header:X-Shopify-Topic"),
        retry_window="8 tries over 4 hours",
        builtin=True,
    )
)
register_vendor(
    Vendor(
        name="intercom",
        title="Intercom",
        category="messaging",
        scheme=Hmac("X-Hub-Signature", algorithm="sha1", prefix="sha1="),
        docs="https://developers.intercom.com/docs/references/webhooks/webhook-models",
        tested_with="docs (HMAC-SHA1 written out)",
        delivery_id=("body:id",),
        spec=Spec(event_type="topic"),
        retry_window="one retry after 1 minute",
        builtin=True,
    )
)
register_vendor(
    Vendor(
        name="slack",
        title="Slack",
        category="messaging",
        scheme=Hmac(
            "X-Slack-Signature",
            prefix="v0=",
            signed="v0:{timestamp}:{body}",
            timestamp_header="X-Slack-Request-Timestamp",
        ),
        docs="https://api.slack.com/authentication/verifying-requests-from-slack",
        tested_with="slack_sdk SignatureVerifier, published vector",
        delivery_id=("body:event_id", "hash"),
        retry_window="3 retries over about an hour",
        tolerance="5m",
        handshake_doc="`url_verification` challenge answered",
        builtin=True,
    )
)
register_vendor(
    Vendor(
        name="standard-webhooks",
        title="Standard Webhooks (any sender)",
        category="any",
        scheme=StandardWebhooks(),
        docs="https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md",
        tested_with="standardwebhooks SDK, published vector",
        delivery_id=("header:webhook-id",),
        retry_window="per sender (Svix: about 1 day)",
        tolerance="300s",
        builtin=True,
    )
)
