"""Vendors that sign with an HMAC of the body (and maybe a timestamp or the URL), and
the senders that follow Standard Webhooks.

Each entry states only what is particular to the vendor; the mechanics are `Hmac` and
`StandardWebhooks` (gateway/sources/schemes.py). The few vendors whose header or key
format those cannot express get a small scheme here (Recurly's bare `ts,sig,sig` header,
WorkOS's `t=.., v1=..` with a space, Persona's space-separated rotation sets, Zendesk's
ISO timestamp, HubSpot's decoded URI, Polar's raw secret).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from normalizers.generic import Spec

from ...errors import NO_MATCH, SignatureError
from ..catalog import Request, Signed, Vendor, register_vendor
from ..schemes import Hmac, StandardWebhooks, verify_standard
from ..signing import check_window, decode_secret, matches_any, parse_timestamp

# --- schemes the plain Hmac cannot express ------------------------------------------------


@dataclass(frozen=True)
class IsoTimestampHmac(Hmac):
    """An Hmac whose timestamp header is ISO 8601 (`2021-03-25T05:09:27Z`), not unix."""

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        when = datetime.fromtimestamp(int(request.now), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        content = self._hmac._content(request.body, when, {})  # type: ignore[attr-defined]
        digest = hmac.new(self.load(secret), content, hashlib.sha256).digest()
        value = base64.b64encode(digest).decode() if self.encoding == "base64" else digest.hex()
        assert self.timestamp_header
        return Signed({self.header: value, self.timestamp_header: when}, request.body)


# HubSpot signs the URI with these escapes decoded
# (https://developers.hubspot.com/docs/api/webhooks/validating-requests#validate-the-v3-request-signature).
_HUBSPOT_DECODE = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$", "%27": "'",
    "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip


def _hubspot_uri(url: str) -> str:
    for escaped, char in _HUBSPOT_DECODE.items():
        url = url.replace(escaped, char).replace(escaped.lower(), char)
    return url


@dataclass(frozen=True)
class HubSpotHmac(Hmac):
    """HubSpot v3: the URI in the signed content has some percent-escapes decoded."""

    def verify(self, keys: Sequence[Any], request: Request) -> None:
        super().verify(keys, dataclasses.replace(request, url=_hubspot_uri(request.url)))

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        decoded = dataclasses.replace(request, url=_hubspot_uri(request.url))
        return super().sign(secret, decoded, delivery_id)


@dataclass(frozen=True)
class SpacedPairsHmac(Hmac):
    """`t=<ts>, v1=<sig>` with a space after the comma (WorkOS's SDKs split on `, `)."""

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        signed = super().sign(secret, request, delivery_id)
        value = signed.headers[self.header].replace(",", ", ")
        return Signed({**signed.headers, self.header: value}, signed.body, signed.query)


@dataclass(frozen=True)
class RotatingPairsHmac(Hmac):
    """`t=..,v1=..` pairs; while a secret rotates, two such sets separated by a space."""

    def verify(self, keys: Sequence[Any], request: Request) -> None:
        raw = request.headers.get(self.header.lower(), "")
        sets = raw.split() or [raw]
        first: SignatureError | None = None
        for one in sets:
            headers = {**request.headers, self.header.lower(): one}
            try:
                super().verify(keys, dataclasses.replace(request, headers=headers))
                return
            except SignatureError as e:
                first = first or e
        assert first is not None
        raise first


@dataclass(frozen=True)
class RecurlyHmac(Hmac):
    """Recurly: `recurly-signature: <unix ms>,<hex>[,<hex>...]`, HMAC-SHA256 of
    `<ms>.<body>` (https://docs.recurly.com/v1.3/docs/signature-verification)."""

    def describe(self) -> str:
        return "HMAC-SHA-256 hex of `timestamp.body` in recurly-signature (`ms,sig,sig`)"

    @property
    def uses_timestamp(self) -> bool:  # the header's first field, so keep the window
        return True

    def verify(self, keys: Sequence[Any], request: Request) -> None:
        raw = request.headers.get(self.header.lower())
        if not raw:
            raise SignatureError(f"the {self.header} header is missing")
        ts, *sigs = [p.strip() for p in raw.split(",")]
        if not ts.isdigit() or not sigs:
            raise SignatureError(f"the {self.header} header is not `timestamp,signature,...`")
        if self.tolerance is not None:
            check_window(parse_timestamp(ts, "ms"), request.now, self.tolerance)
        content = ts.encode() + b"." + request.body
        expected = [hmac.new(k, content, hashlib.sha256).hexdigest().encode() for k in keys]
        if not matches_any(expected, [s.lower().encode("latin-1") for s in sigs]):
            raise SignatureError(NO_MATCH)

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        ts = str(int(request.now * 1000))
        sig = hmac.new(self.load(secret), ts.encode() + b"." + request.body, hashlib.sha256)
        return Signed({self.header: f"{ts},{sig.hexdigest()}"}, request.body, request.query)


@dataclass(frozen=True)
class PolarWebhooks(StandardWebhooks):
    """Standard Webhooks, but Polar's secret is used as is (its UTF-8 bytes are the key),
    not base64-decoded; the Polar SDK also accepts a base64 secret, so both are tried
    (polar-sdk `polar/webhooks.py`, `_signing_keys`)."""

    def describe(self) -> str:
        return (
            "Standard Webhooks (HMAC-SHA256 base64 of `id.timestamp.body`) keyed with the "
            "secret's own bytes"
        )

    def load(self, key: str) -> tuple[Any, ...]:  # type: ignore[override]
        from standardwebhooks.webhooks import Webhook

        if not key:
            raise ValueError("the secret is empty")
        hooks = [Webhook(base64.b64encode(key.encode()).decode())]
        try:
            decoded = decode_secret(key, "base64")
        except ValueError:
            return tuple(hooks)
        if decoded != key.encode():
            hooks.append(Webhook(base64.b64encode(decoded).decode()))
        return tuple(hooks)

    def verify(self, keys: Sequence[Any], request: Request) -> None:
        hooks = [hook for pair in keys for hook in pair]
        verify_standard(hooks, request.body, request.headers, request.now, self.tolerance)

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        hook = self.load(secret)[0]
        when = datetime.fromtimestamp(int(request.now), tz=UTC)
        headers = {
            "webhook-id": delivery_id,
            "webhook-timestamp": str(int(request.now)),
            "webhook-signature": hook.sign(delivery_id, when, request.body.decode()),
        }
        return Signed(headers, request.body, request.query)


# --- payments -----------------------------------------------------------------------------

register_vendor(
    Vendor(
        name="paddle",
        title="Paddle Billing",
        category="payments",
        scheme=Hmac(
            "Paddle-Signature",
            pairs=True,
            timestamp_key="ts",
            signature_key="h1",
            signed="{timestamp}:{body}",
        ),
        docs="https://developer.paddle.com/webhooks/signature-verification",
        tested_with="docs (HMAC written out), paddle-python-sdk Verifier and its published vector",
        delivery_id=("body:event_id",),
        spec=Spec(event_type="event_type", time="occurred_at"),
        retry_window="up to 3 days (live; sandbox 3 tries in 15 minutes)",
        tolerance="300s",
        note="Paddle's SDKs allow only 5 s of clock difference; raise `tolerance` if needed.",
    )
)
register_vendor(
    Vendor(
        name="lemon-squeezy",
        title="Lemon Squeezy",
        category="payments",
        scheme=Hmac("X-Signature"),
        docs="https://docs.lemonsqueezy.com/help/webhooks/signing-requests",
        tested_with="docs (HMAC written out)",
        delivery_id=("hash",),
        spec=Spec(
            event_type="meta.event_name",
            time="data.attributes.updated_at",
            # The customer's full name and email on orders, subscriptions, their invoices
            # and license keys (https://docs.lemonsqueezy.com/api/orders/retrieve-order);
            # on `affiliates` the same fields are the affiliate's.
            traits=(("email", "data.attributes.user_email"), ("name", "data.attributes.user_name")),
            traits_when=(
                "data.type",
                ("orders", "subscriptions", "subscription-invoices", "license-keys"),
            ),
        ),
        retry_window="3 retries after 5 s, 25 s and 125 s",
    )
)
register_vendor(
    Vendor(
        name="square",
        title="Square",
        category="payments",
        scheme=Hmac("X-Square-Hmacsha256-Signature", encoding="base64", signed="{url}{body}"),
        docs="https://developer.squareup.com/docs/webhooks/step3validate",
        tested_with="docs (HMAC written out), squareup SDK verify_signature",
        delivery_id=("body:event_id",),
        spec=Spec(event_type="type", time="created_at", properties="data.object"),
        retry_window="up to 72 hours",
        options=("url",),
    )
)
register_vendor(
    Vendor(
        name="razorpay",
        title="Razorpay",
        category="payments",
        scheme=Hmac("X-Razorpay-Signature"),
        docs="https://razorpay.com/docs/webhooks/validate-test/",
        tested_with="docs (HMAC written out), razorpay SDK Utility.verify_webhook_signature",
        delivery_id=("header:X-Razorpay-Event-Id", "hash"),
        spec=Spec(event_type="event", time="created_at", properties="payload"),
        retry_window="24 hours (exponential backoff)",
    )
)
register_vendor(
    Vendor(
        name="gocardless",
        title="GoCardless",
        category="payments",
        scheme=Hmac("Webhook-Signature"),
        docs="https://developer.gocardless.com/getting-started/staying-up-to-date-with-webhooks",
        tested_with="docs (HMAC written out), gocardless-pro SDK webhooks.parse",
        delivery_id=("body:meta.webhook_id", "hash"),
        spec=Spec(
            each="events",
            element_id="id",
            event_type="resource_type+action",
            time="created_at",
            properties=None,
        ),
        retry_window="with backoff (GoCardless resends failed webhooks)",
        note="One delivery holds several events; GoCardless wants 498 for a bad signature, "
        "the gateway answers 401 (it is still counted as a failure and retried).",
    )
)
register_vendor(
    Vendor(
        name="recurly",
        title="Recurly",
        category="payments",
        scheme=RecurlyHmac("recurly-signature"),
        docs="https://docs.recurly.com/v1.3/docs/signature-verification",
        tested_with="docs and recurly-client-ruby Webhooks.verify_signature (written out)",
        delivery_id=("body:id", "hash"),
        spec=Spec(event_type="object_type+event_type", time="event_time", properties=None),
        retry_window="10 retries with exponential backoff (about 3 days)",
        tolerance="300s",
        note="Only JSON webhooks are signed; choose the JSON format for the endpoint.",
    )
)
register_vendor(
    Vendor(
        name="checkout-com",
        title="Checkout.com",
        category="payments",
        scheme=Hmac("Cko-Signature"),
        docs="https://www.checkout.com/docs/developer-resources/webhooks/manage-webhooks/set-up-your-webhook-receiver",
        tested_with="docs (HMAC written out)",
        delivery_id=("body:id",),
        spec=Spec(event_type="type", time="created_on"),
        retry_window="8 retries over about 30 hours",
    )
)
register_vendor(
    Vendor(
        name="coinbase-commerce",
        title="Coinbase Commerce",
        category="payments",
        scheme=Hmac("X-CC-Webhook-Signature"),
        docs="https://docs.cloud.coinbase.com/commerce-onchain/docs/webhooks",
        tested_with="docs and coinbase-commerce SDK WebhookSignature (HMAC written out)",
        delivery_id=("body:event.id", "body:id"),
        spec=Spec(event_type="event.type", time="event.created_at", properties="event.data"),
        retry_window="up to 3 days (exponential backoff, at most 1 hour apart)",
    )
)
register_vendor(
    Vendor(
        name="polar",
        title="Polar",
        category="payments",
        scheme=PolarWebhooks(),
        docs="https://polar.sh/docs/integrate/webhooks/endpoints",
        tested_with="standardwebhooks SDK keyed as polar-sdk's validate_event keys it",
        delivery_id=("header:webhook-id",),
        spec=Spec(time="timestamp"),
        retry_window="with exponential backoff (Standard Webhooks)",
        tolerance="300s",
    )
)

# --- e-commerce ---------------------------------------------------------------------------

register_vendor(
    Vendor(
        name="woocommerce",
        title="WooCommerce",
        category="e-commerce",
        scheme=Hmac("X-WC-Webhook-Signature", encoding="base64"),
        docs="https://woocommerce.github.io/woocommerce-rest-api-docs/#webhooks",
        tested_with="docs (HMAC written out)",
        delivery_id=("header:X-WC-Webhook-Delivery-ID", "hash"),
        spec=Spec(
            event_type="header:X-WC-Webhook-Topic",
            time="date_modified_gmt",
            properties=None,
            # The buyer's billing details (orders, and customers, whose own name and email
            # stand in when billing has none); never `shipping`, the recipient's
            # (https://woocommerce.github.io/woocommerce-rest-api-docs/#order-properties).
            traits=(
                ("email", "billing.email|email"),
                ("phone", "billing.phone"),
                ("firstName", "billing.first_name|first_name"),
                ("lastName", "billing.last_name|last_name"),
                ("address.street", "billing.address_1"),
                ("address.city", "billing.city"),
                ("address.state", "billing.state"),
                ("address.postalCode", "billing.postcode"),
                ("address.country", "billing.country"),
            ),
        ),
        retry_window="no retries (the webhook is disabled after 5 failures)",
    )
)

# --- messaging, email, support ------------------------------------------------------------

register_vendor(
    Vendor(
        name="line",
        title="LINE Messaging API",
        category="messaging",
        scheme=Hmac("X-Line-Signature", encoding="base64"),
        docs="https://developers.line.biz/en/docs/messaging-api/verify-webhook-signature/",
        tested_with="docs (HMAC written out, as line-bot-sdk SignatureValidator does)",
        delivery_id=("items:events:webhookEventId", "hash"),
        spec=Spec(
            each="events",
            element_id="webhookEventId",
            event_type="type",
            time="timestamp",
            properties=None,
        ),
        retry_window="redelivery only when enabled (`deliveryContext.isRedelivery`)",
        handshake_doc="the console's Verify request (no events) is accepted",
    )
)
register_vendor(
    Vendor(
        name="zendesk",
        title="Zendesk",
        category="support",
        scheme=IsoTimestampHmac(
            "X-Zendesk-Webhook-Signature",
            encoding="base64",
            timestamp_header="X-Zendesk-Webhook-Signature-Timestamp",
            signed="{timestamp}{body}",
        ),
        docs="https://developer.zendesk.com/documentation/webhooks/verifying/",
        tested_with="docs (HMAC written out)",
        delivery_id=("header:X-Zendesk-Webhook-Invocation-Id", "hash"),
        spec=Spec(event_type="type", time="time", properties="detail", strip="zen:event-type:"),
        retry_window="a few retries (409, 429 and 503 answers)",
        tolerance="300s",
    )
)
register_vendor(
    Vendor(
        name="customer-io",
        title="Customer.io",
        category="email",
        scheme=Hmac(
            "X-CIO-Signature", timestamp_header="X-CIO-Timestamp", signed="v0:{timestamp}:{body}"
        ),
        docs="https://docs.customer.io/api/webhooks/",
        tested_with="docs (HMAC written out)",
        delivery_id=("body:event_id",),
        spec=Spec(event_type="object_type+metric", time="timestamp"),
        retry_window="7 days (exponential backoff)",
        # No documented window; as long as the dedupe window, so a replayed request is
        # either a duplicate or too old, and a retry that keeps its signature still lands.
        tolerance="7d",
    )
)
for name, title, category, docs, spec in (
    ("clerk", "Clerk", "identity", "https://clerk.com/docs/webhooks/verify-webhooks",
     Spec(time="timestamp")),
    ("resend", "Resend", "email", "https://resend.com/docs/dashboard/webhooks/verify-webhooks-requests",
     Spec(time="created_at")),
    ("svix", "Svix", "any", "https://docs.svix.com/receiving/verifying-payloads/how-manual",
     Spec()),
    ("stytch", "Stytch", "identity", "https://stytch.com/docs/b2b/guides/webhooks",
     Spec(event_type="source+object_type+action", time="timestamp", properties=None)),
):  # fmt: skip
    # These send through Svix: `svix-id/-timestamp/-signature`, the same scheme.
    register_vendor(
        Vendor(
            name=name,
            title=title,
            category=category,
            scheme=StandardWebhooks(),
            docs=docs,
            tested_with="standardwebhooks SDK (svix-* headers)",
            delivery_id=("header:svix-id", "header:webhook-id"),
            spec=spec,
            retry_window="about 27 hours (Svix schedule: 5 s to 10 h apart)",
            tolerance="300s",
        )
    )

# --- AI -----------------------------------------------------------------------------------

for name, title, docs, spec, retry in (
    ("openai", "OpenAI", "https://platform.openai.com/docs/guides/webhooks",
     Spec(time="created_at"), "up to 72 hours (exponential backoff)"),
    ("replicate", "Replicate", "https://replicate.com/docs/topics/webhooks/verify-webhook",
     Spec(event_type="status", time="completed_at", properties=None), "a few times on failure"),
):  # fmt: skip
    register_vendor(
        Vendor(
            name=name,
            title=title,
            category="AI",
            scheme=StandardWebhooks(),
            docs=docs,
            tested_with="standardwebhooks SDK",
            delivery_id=("header:webhook-id",),
            spec=spec,
            retry_window=retry,
            tolerance="300s",
        )
    )
register_vendor(
    Vendor(
        name="elevenlabs",
        title="ElevenLabs",
        category="AI",
        scheme=Hmac(
            "ElevenLabs-Signature", pairs=True, signature_key="v0", signed="{timestamp}.{body}"
        ),
        docs="https://elevenlabs.io/docs/product-guides/administration/webhooks",
        tested_with="docs and elevenlabs SDK WebhooksClient.construct_event (written out)",
        delivery_id=("hash",),
        spec=Spec(time="event_timestamp"),
        retry_window="with exponential backoff",
        tolerance="30m",
    )
)

# --- dev tools ----------------------------------------------------------------------------

register_vendor(
    Vendor(
        name="linear",
        title="Linear",
        category="dev tools",
        scheme=Hmac("Linear-Signature", timestamp_field="webhookTimestamp", timestamp_unit="ms"),
        docs="https://linear.app/developers/webhooks#securing-webhooks",
        tested_with="docs and @linear/sdk LinearWebhookClient.verify (HMAC written out)",
        delivery_id=("header:Linear-Delivery",),
        spec=Spec(event_type="type+action", time="createdAt"),
        retry_window="3 retries after 1 minute, 1 hour and 6 hours",
        tolerance="60s",
    )
)
register_vendor(
    Vendor(
        name="bitbucket",
        title="Bitbucket Cloud",
        category="dev tools",
        scheme=Hmac("X-Hub-Signature", prefix="sha256="),
        docs="https://support.atlassian.com/bitbucket-cloud/docs/manage-webhooks/",
        tested_with="docs (HMAC written out)",
        delivery_id=("header:X-Request-UUID",),
        spec=Spec(event_type="header:X-Event-Key", properties=None),
        retry_window="a few retries on 5xx and timeouts",
    )
)
register_vendor(
    Vendor(
        name="sentry",
        title="Sentry",
        category="dev tools",
        scheme=Hmac("Sentry-Hook-Signature"),
        docs="https://docs.sentry.io/organization/integrations/integration-platform/webhooks/",
        tested_with="docs (HMAC written out)",
        delivery_id=("header:Request-ID", "hash"),
        spec=Spec(event_type="header:Sentry-Hook-Resource"),
        retry_window="no retries documented",
        note="The event name is the resource (`issue`); the payload's `action` says what "
        "happened to it.",
    )
)
register_vendor(
    Vendor(
        name="vercel",
        title="Vercel",
        category="dev tools",
        scheme=Hmac("x-vercel-signature", algorithm="sha1"),
        docs="https://vercel.com/docs/webhooks/webhooks-api#securing-webhooks",
        tested_with="docs (HMAC-SHA1 written out)",
        delivery_id=("body:id",),
        spec=Spec(time="createdAt", properties="payload"),
        retry_window="with exponential backoff (about 24 hours)",
    )
)
register_vendor(
    Vendor(
        name="circleci",
        title="CircleCI",
        category="dev tools",
        scheme=Hmac("circleci-signature", prefix="v1="),
        docs="https://circleci.com/docs/webhooks/",
        tested_with="docs (HMAC written out)",
        delivery_id=("body:id",),
        spec=Spec(time="happened_at", properties=None),
        retry_window="retried (schedule not documented)",
    )
)
register_vendor(
    Vendor(
        name="pagerduty",
        title="PagerDuty",
        category="dev tools",
        scheme=Hmac("X-PagerDuty-Signature", prefix="v1="),
        docs="https://developer.pagerduty.com/docs/webhooks-overview#webhook-signatures",
        tested_with="docs (HMAC written out)",
        delivery_id=("body:event.id", "header:X-Webhook-Id"),
        spec=Spec(event_type="event.event_type", time="event.occurred_at", properties="event.data"),
        retry_window="with exponential backoff",
    )
)
register_vendor(
    Vendor(
        name="heroku",
        title="Heroku",
        category="dev tools",
        scheme=Hmac("Heroku-Webhook-Hmac-SHA256", encoding="base64"),
        docs="https://devcenter.heroku.com/articles/app-webhooks#securing-webhook-requests",
        tested_with="docs (HMAC written out)",
        delivery_id=("body:webhook_metadata.delivery.id", "body:id"),
        spec=Spec(event_type="webhook_metadata.event.include+action", time="created_at"),
        retry_window="`sync` subscriptions are retried until a limit; `notify` ones are not",
    )
)
register_vendor(
    Vendor(
        name="clickup",
        title="ClickUp",
        category="dev tools",
        scheme=Hmac("X-Signature"),
        docs="https://developer.clickup.com/docs/webhooksignature",
        tested_with="docs (HMAC written out)",
        delivery_id=("hash",),
        spec=Spec(event_type="event", properties=None),
        retry_window="retried on failure",
    )
)
register_vendor(
    Vendor(
        name="airtable",
        title="Airtable",
        category="dev tools",
        scheme=Hmac("X-Airtable-Content-MAC", prefix="hmac-sha256=", secret_encoding="base64"),
        docs="https://airtable.com/developers/web/api/webhooks-overview",
        tested_with="docs (HMAC written out)",
        delivery_id=("hash",),
        spec=Spec(event_type=None, time="timestamp", properties=None),
        retry_window="notifications are pings; list payloads to catch up",
        note="The secret is the `macSecretBase64` from creating the webhook. A notification "
        "only says that the base changed; fetch the payloads with the API.",
    )
)
register_vendor(
    Vendor(
        name="webflow",
        title="Webflow",
        category="content",
        scheme=Hmac(
            "x-webflow-signature",
            timestamp_header="x-webflow-timestamp",
            signed="{timestamp}:{body}",
            timestamp_unit="ms",
        ),
        docs="https://developers.webflow.com/data/docs/working-with-webhooks",
        tested_with="docs (HMAC written out)",
        delivery_id=("hash",),
        spec=Spec(event_type="triggerType", properties="payload"),
        retry_window="3 retries, 10 minutes apart",
        tolerance="300s",
        note="Only webhooks created through the API or an app are signed.",
    )
)
register_vendor(
    Vendor(
        name="mux",
        title="Mux",
        category="content",
        scheme=Hmac("Mux-Signature", pairs=True, signed="{timestamp}.{body}"),
        docs="https://docs.mux.com/core/verify-webhook-signatures",
        tested_with="docs (HMAC written out)",
        delivery_id=("body:id",),
        spec=Spec(time="created_at"),
        retry_window="with backoff on failure",
        tolerance="300s",
    )
)

# --- CRM, forms, scheduling, documents ----------------------------------------------------

register_vendor(
    Vendor(
        name="hubspot",
        title="HubSpot",
        category="CRM",
        scheme=HubSpotHmac(
            "X-HubSpot-Signature-v3",
            encoding="base64",
            timestamp_header="X-HubSpot-Request-Timestamp",
            signed="{method}{url}{body}{timestamp}",
            timestamp_unit="ms",
        ),
        docs="https://developers.hubspot.com/docs/api/webhooks/validating-requests",
        tested_with="hubspot-api-client SDK Signature (v3)",
        delivery_id=("items:@:eventId", "hash"),
        spec=Spec(
            each="@",
            element_id="eventId",
            event_type="subscriptionType",
            time="occurredAt",
            properties=None,
        ),
        retry_window="10 tries over 24 hours",
        tolerance="300s",
        options=("url",),
    )
)
register_vendor(
    Vendor(
        name="typeform",
        title="Typeform",
        category="forms",
        scheme=Hmac("Typeform-Signature", prefix="sha256=", encoding="base64"),
        docs="https://www.typeform.com/developers/webhooks/secure-your-webhooks/",
        tested_with="docs (HMAC written out)",
        delivery_id=("body:event_id",),
        spec=Spec(
            event_type="event_type", time="form_response.submitted_at", properties="form_response"
        ),
        retry_window="about 10 hours",
    )
)
register_vendor(
    Vendor(
        name="tally",
        title="Tally",
        category="forms",
        scheme=Hmac("Tally-Signature", encoding="base64"),
        docs="https://tally.so/help/webhooks",
        tested_with="docs (HMAC written out)",
        delivery_id=("body:eventId",),
        spec=Spec(event_type="eventType", time="createdAt"),
        retry_window="retried on failure",
    )
)
register_vendor(
    Vendor(
        name="calendly",
        title="Calendly",
        category="scheduling",
        scheme=Hmac("Calendly-Webhook-Signature", pairs=True, signed="{timestamp}.{body}"),
        docs="https://developer.calendly.com/api-docs/4c305798a61d3-webhook-signatures",
        tested_with="docs (HMAC written out)",
        delivery_id=("hash",),
        spec=Spec(event_type="event", time="created_at", properties="payload"),
        retry_window="retries for up to 24 hours",
        tolerance="180s",
    )
)
register_vendor(
    Vendor(
        name="cal-com",
        title="Cal.com",
        category="scheduling",
        scheme=Hmac("X-Cal-Signature-256"),
        docs="https://cal.com/docs/core-features/webhooks",
        tested_with="docs (HMAC written out)",
        delivery_id=("hash",),
        spec=Spec(event_type="triggerEvent", time="createdAt", properties="payload"),
        retry_window="not documented",
    )
)
register_vendor(
    Vendor(
        name="docusign",
        title="Docusign Connect",
        category="documents",
        scheme=Hmac(
            "X-DocuSign-Signature-1",
            encoding="base64",
            also=tuple(f"X-DocuSign-Signature-{n}" for n in range(2, 6)),
        ),
        docs="https://developers.docusign.com/platform/webhooks/connect/hmac/",
        tested_with="docs (HMAC written out)",
        delivery_id=("hash",),
        spec=Spec(event_type="event", time="generatedDateTime"),
        retry_window="Connect's retry queue (failures are retried)",
        note="With several HMAC keys each signs into its own X-DocuSign-Signature-<n> header; "
        "any match is enough. Choose JSON (not XML) messages.",
    )
)
register_vendor(
    Vendor(
        name="xero",
        title="Xero",
        category="accounting",
        scheme=Hmac("x-xero-signature", encoding="base64"),
        docs="https://developer.xero.com/documentation/webhooks/configuring-your-server",
        tested_with="docs (HMAC written out)",
        delivery_id=("hash",),
        spec=Spec(
            each="events",
            event_type="eventCategory+eventType",
            time="eventDateUtc",
            properties=None,
        ),
        retry_window="up to 24 hours, then the webhook is disabled",
        handshake_doc="Intent to receive: signed probes with no events get 200 (stored, no "
        "events); badly signed ones 401",
    )
)

# --- identity -----------------------------------------------------------------------------

register_vendor(
    Vendor(
        name="workos",
        title="WorkOS",
        category="identity",
        scheme=SpacedPairsHmac(
            "WorkOS-Signature", pairs=True, signed="{timestamp}.{body}", timestamp_unit="ms"
        ),
        docs="https://workos.com/docs/events/data-syncing/webhooks",
        tested_with="docs and workos SDK verify_header (written out)",
        delivery_id=("body:id",),
        spec=Spec(event_type="event", time="created_at"),
        retry_window="with exponential backoff",
        tolerance="180s",
    )
)
register_vendor(
    Vendor(
        name="persona",
        title="Persona",
        category="identity",
        scheme=RotatingPairsHmac("Persona-Signature", pairs=True, signed="{timestamp}.{body}"),
        docs="https://docs.withpersona.com/docs/webhooks-best-practices",
        tested_with="docs (HMAC written out)",
        delivery_id=("body:data.id",),
        spec=Spec(
            event_type="data.attributes.name",
            time="data.attributes.created-at",
            properties="data.attributes.payload.data.attributes",
        ),
        retry_window="retried on failure",
        tolerance="7d",  # no documented window: the dedupe window (see customer-io)
    )
)
register_vendor(
    Vendor(
        name="onfido",
        title="Onfido",
        category="identity",
        scheme=Hmac("X-SHA2-Signature"),
        docs="https://documentation.onfido.com/api/manual-webhook-signature-verification",
        tested_with="docs and onfido-python WebhookEventVerifier (written out)",
        delivery_id=("hash",),
        spec=Spec(
            event_type="payload.action",
            time="payload.object.completed_at_iso8601",
            properties="payload.object",
        ),
        retry_window="retried on failure",
    )
)
