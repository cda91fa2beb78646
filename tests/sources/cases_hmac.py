"""Cases for the HMAC-family vendors (gateway/sources/vendors/hmac_family.py).

Every signer below is written from the vendor's documentation or SDK source (cited beside
it) with hashlib/hmac/base64, or is the vendor's own SDK; none uses the gateway's signing
code. Where the vendor ships a verify-only SDK, the signer also asks that SDK whether it
accepts the signature, so the written-out algorithm is checked against the vendor's code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from tests.sources.catalog_cases import Case, Signed

SECRET = "whsec_test_4f1c2b"  # an opaque shared secret, as most vendors hand them out
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks spec's example
HOOK_URL = "https://hooks.example.com/webhooks/{name}"


def _mac(key: str | bytes, content: bytes, algo=hashlib.sha256) -> bytes:
    raw = key.encode() if isinstance(key, str) else key
    return hmac.new(raw, content, algo).digest()


def _hex(key: str | bytes, content: bytes, algo=hashlib.sha256) -> str:
    return _mac(key, content, algo).hex()


def _b64(key: str | bytes, content: bytes, algo=hashlib.sha256) -> str:
    return base64.b64encode(_mac(key, content, algo)).decode()


def _body_hmac(header: str, *, encoding: str = "hex", prefix: str = "", algo=hashlib.sha256,
               extra: dict[str, str] | None = None):  # fmt: skip
    """A signer for `header: <prefix><HMAC(secret, raw body)>` (the most common scheme)."""

    def sign(body: bytes, now: float) -> Signed:
        value = (_hex if encoding == "hex" else _b64)(SECRET, body, algo)
        return Signed({header: prefix + value, **(extra or {})}, body)

    return sign


def _t_dot_body(header: str, *, key: str = "v1", ms: bool = False, space: bool = False):
    """`header: t=<ts>,<key>=<hex HMAC-SHA256(secret, "<ts>.<body>")>` (Stripe's layout)."""

    def sign(body: bytes, now: float) -> Signed:
        ts = str(int(now * 1000) if ms else int(now))
        sig = _hex(SECRET, f"{ts}.".encode() + body)
        sep = ", " if space else ","
        return Signed({header: f"t={ts}{sep}{key}={sig}"}, body)

    return sign


def _config(**extra) -> dict:
    return {"secrets": [SECRET], **extra}


# --- payments -----------------------------------------------------------------------------


def _paddle(body: bytes, now: float) -> Signed:
    # https://developer.paddle.com/webhooks/signature-verification: h1 = HMAC-SHA256 hex
    # of `{ts}:{raw body}` with the endpoint's secret key.
    ts = str(int(now))
    sig = _hex("pdl_ntfset_secret", f"{ts}:".encode() + body)
    return Signed({"Paddle-Signature": f"ts={ts};h1={sig}"}, body)


def _square(body: bytes, now: float) -> Signed:
    # https://developer.squareup.com/docs/webhooks/step3validate: base64 HMAC-SHA256 of the
    # notification URL followed by the raw body, keyed with the signature key.
    url = HOOK_URL.format(name="square")
    sig = _b64(SECRET, url.encode() + body)
    from square.utils.webhooks_helper import verify_signature

    assert verify_signature(
        request_body=body.decode(), signature_header=sig, signature_key=SECRET,
        notification_url=url,
    )  # fmt: skip
    return Signed({"X-Square-Hmacsha256-Signature": sig}, body)


def _razorpay(body: bytes, now: float) -> Signed:
    # https://razorpay.com/docs/webhooks/validate-test/: hex HMAC-SHA256 of the raw body
    # with the webhook secret, in X-Razorpay-Signature; X-Razorpay-Event-Id names the event.
    sig = _hex(SECRET, body)
    import razorpay

    assert razorpay.Client(auth=("key", "secret")).utility.verify_webhook_signature(
        body.decode(), sig, SECRET
    )
    return Signed({"X-Razorpay-Signature": sig, "X-Razorpay-Event-Id": "Ev_RazorPay01"}, body)


def _gocardless(body: bytes, now: float) -> Signed:
    # https://developer.gocardless.com/getting-started/staying-up-to-date-with-webhooks: hex
    # HMAC-SHA256 of the raw body with the endpoint secret, in Webhook-Signature.
    sig = _hex(SECRET, body)
    from gocardless_pro import webhooks

    assert len(webhooks.parse(body, SECRET, sig)) == 2
    return Signed({"Webhook-Signature": sig}, body)


def _recurly(body: bytes, now: float) -> Signed:
    # https://docs.recurly.com/v1.3/docs/signature-verification and recurly-client-ruby
    # lib/recurly/webhooks.rb: `recurly-signature: <unix ms>,<hex sig>[,<hex sig>]`, the
    # signature a hex HMAC-SHA256 of `<ms>.<body>`. Two signatures while a key rotates.
    ts = str(int(now * 1000))
    old = _hex("previous-key", f"{ts}.".encode() + body)
    sig = _hex(SECRET, f"{ts}.".encode() + body)
    return Signed({"recurly-signature": f"{ts},{old},{sig}"}, body)


def _polar(body: bytes, now: float) -> Signed:
    # Standard Webhooks keyed with the secret's own UTF-8 bytes: polar-sdk
    # polar/webhooks.py `_signing_keys` tries `secret.encode()` first.
    msg_id = "msg_" + hashlib.sha256(body).hexdigest()[:24]
    content = f"{msg_id}.{int(now)}.".encode() + body
    sig = _b64("polar_whs_test_9a8b7c", content)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(now)),
               "webhook-signature": f"v1,{sig}"}  # fmt: skip
    return Signed(headers, body)


# --- Standard Webhooks senders ------------------------------------------------------------


def _standard(prefix: str = "webhook"):
    """The standardwebhooks SDK signs as every Standard Webhooks sender does; Svix-based
    senders (Clerk, Resend, Stytch) send the same headers named svix-*."""

    def sign(body: bytes, now: float) -> Signed:
        msg_id = "msg_" + hashlib.sha256(body).hexdigest()[:24]
        when = datetime.fromtimestamp(int(now), UTC)
        sig = Webhook(SW_SECRET).sign(msg_id, when, body.decode())
        headers = {f"{prefix}-id": msg_id, f"{prefix}-timestamp": str(int(now)),
                   f"{prefix}-signature": sig}  # fmt: skip
        return Signed(headers, body)

    return sign


# --- the rest -----------------------------------------------------------------------------


def _zendesk(body: bytes, now: float) -> Signed:
    # https://developer.zendesk.com/documentation/webhooks/verifying/: base64
    # HMAC-SHA256(TIMESTAMP + BODY), the timestamp ISO 8601 as in the anatomy page's example
    # header `x-zendesk-webhook-signature-timestamp: 2021-03-25T05:09:27Z`.
    ts = datetime.fromtimestamp(int(now), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sig = _b64(SECRET, ts.encode() + body)
    return Signed(
        {
            "X-Zendesk-Webhook-Signature": sig,
            "X-Zendesk-Webhook-Signature-Timestamp": ts,
            "X-Zendesk-Webhook-Invocation-Id": "8350205582",
        },
        body,
    )


def _customer_io(body: bytes, now: float) -> Signed:
    # https://docs.customer.io/api/webhooks/#section/Securely-Verifying-Requests: hex
    # HMAC-SHA256 of `v0:<X-CIO-Timestamp>:<body>` with the webhook signing key.
    ts = str(int(now))
    sig = _hex(SECRET, f"v0:{ts}:".encode() + body)
    return Signed({"X-CIO-Signature": sig, "X-CIO-Timestamp": ts}, body)


def _linear(body: bytes, now: float) -> Signed:
    # @linear/sdk LinearWebhookClient.verify: hex HMAC-SHA256 of the raw body; the body's
    # webhookTimestamp (ms) must be within a minute.
    assert abs(json.loads(body)["webhookTimestamp"] / 1000 - now) < 60
    return Signed({"Linear-Signature": _hex(SECRET, body), "Linear-Delivery": "dlv-1"}, body)


def _hubspot(body: bytes, now: float) -> Signed:
    # hubspot-api-client's Signature.get_signature (v3): base64 HMAC-SHA256 of
    # method + URI + body + timestamp(ms), in X-HubSpot-Signature-v3.
    from hubspot.utils.signature import Signature

    ts = str(int(now * 1000))
    url = HOOK_URL.format(name="hubspot")
    sig = Signature.get_signature(SECRET, body.decode(), "v3", url, "POST", ts)
    return Signed({"X-HubSpot-Signature-v3": sig, "X-HubSpot-Request-Timestamp": ts}, body)


def _webflow(body: bytes, now: float) -> Signed:
    # https://developers.webflow.com/data/docs/working-with-webhooks#validating-request-signatures:
    # hex HMAC-SHA256 of `<x-webflow-timestamp (ms)>:<body>`.
    ts = str(int(now * 1000))
    sig = _hex(SECRET, f"{ts}:".encode() + body)
    return Signed({"x-webflow-signature": sig, "x-webflow-timestamp": ts}, body)


def _persona(body: bytes, now: float) -> Signed:
    # https://docs.withpersona.com/docs/webhooks-best-practices#checking-signatures:
    # `t=<ts>,v1=<hex HMAC-SHA256("<ts>.<body>")>`; while a secret rotates, two such sets
    # separated by a space (ours first: a plain pairs parser would glue it to the next).
    ts = str(int(now))
    old = _hex("previous-secret", f"{ts}.".encode() + body)
    new = _hex(SECRET, f"{ts}.".encode() + body)
    return Signed({"Persona-Signature": f"t={ts},v1={new} t={ts},v1={old}"}, body)


def _docusign(body: bytes, now: float) -> Signed:
    # https://developers.docusign.com/platform/webhooks/connect/hmac/: each HMAC key signs
    # the body (base64 HMAC-SHA256) into its own X-DocuSign-Signature-<n>; ours is key 2.
    return Signed(
        {
            "X-DocuSign-Signature-1": _b64("another-account-key", body),
            "X-DocuSign-Signature-2": _b64(SECRET, body),
        },
        body,
    )


def _airtable_secret() -> str:
    return base64.b64encode(b"airtable-mac-secret-bytes").decode()


def _airtable(body: bytes, now: float) -> Signed:
    # https://airtable.com/developers/web/api/webhooks-overview#webhook-notification-delivery:
    # `X-Airtable-Content-MAC: hmac-sha256=<hex>`, keyed with base64-decoded macSecretBase64.
    sig = _hex(base64.b64decode(_airtable_secret()), body)
    return Signed({"X-Airtable-Content-MAC": f"hmac-sha256={sig}"}, body)


CASES = {
    "paddle": Case(
        config={"secrets": ["pdl_ntfset_secret"]},
        sign=_paddle,
        why="Paddle docs: HMAC-SHA256 of ts:body, Paddle-Signature ts=..;h1=..",
        event="Transaction Completed",
    ),
    "lemon-squeezy": Case(
        config=_config(),
        # https://docs.lemonsqueezy.com/help/webhooks/signing-requests: hex HMAC of the body.
        sign=_body_hmac("X-Signature", extra={"X-Event-Name": "order_created"}),
        why="Lemon Squeezy docs: X-Signature hex HMAC-SHA256 of the body",
        event="Order Created",
    ),
    "square": Case(
        config=_config(url=HOOK_URL.format(name="square")),
        sign=_square,
        why="Square docs (URL + body, base64), accepted by squareup's verify_signature",
        event="Payment Created",
    ),
    "razorpay": Case(
        config=_config(),
        sign=_razorpay,
        why="Razorpay docs (hex HMAC of the body), accepted by razorpay's Utility",
        event="Payment Captured",
    ),
    "gocardless": Case(
        config=_config(),
        sign=_gocardless,
        why="GoCardless docs (hex HMAC of the body), parsed by gocardless_pro.webhooks",
        event="Mandates Cancelled",
        events=2,
    ),
    "recurly": Case(
        config=_config(),
        sign=_recurly,
        why="Recurly docs / ruby client: `ms,sig,sig`, hex HMAC of `ms.body`",
        event="Account Created",
    ),
    "checkout-com": Case(
        config=_config(),
        # https://www.checkout.com/docs/developer-resources/webhooks/manage-webhooks/set-up-your-webhook-receiver
        sign=_body_hmac("Cko-Signature"),
        why="Checkout.com docs: Cko-Signature hex HMAC-SHA256 of the body",
        event="Payment Approved",
    ),
    "coinbase-commerce": Case(
        config=_config(),
        # https://docs.cloud.coinbase.com/commerce-onchain/docs/webhooks and the
        # coinbase-commerce SDK's WebhookSignature._compute_signature: hex HMAC of the body.
        sign=_body_hmac("X-CC-Webhook-Signature"),
        why="Coinbase Commerce docs: X-CC-Webhook-Signature hex HMAC-SHA256",
        event="Charge Confirmed",
    ),
    "polar": Case(
        config={"secrets": ["polar_whs_test_9a8b7c"]},
        sign=_polar,
        why="Standard Webhooks content keyed with the raw secret (polar-sdk _signing_keys)",
        event="Order Paid",
    ),
    "woocommerce": Case(
        config=_config(),
        # https://woocommerce.github.io/woocommerce-rest-api-docs/#webhooks and WC_Webhook::
        # generate_signature: base64 HMAC-SHA256 of the payload.
        sign=_body_hmac(
            "X-WC-Webhook-Signature",
            encoding="base64",
            extra={"X-WC-Webhook-Topic": "order.created", "X-WC-Webhook-Delivery-ID": "41"},
        ),
        why="WooCommerce docs: X-WC-Webhook-Signature base64 HMAC-SHA256",
        event="Order Created",
    ),
    "line": Case(
        config=_config(),
        # https://developers.line.biz/en/reference/messaging-api/#signature-validation and
        # line-bot-sdk linebot/v3/webhook.py SignatureValidator: base64 HMAC-SHA256 of the body.
        sign=_body_hmac("X-Line-Signature", encoding="base64"),
        why="LINE docs: x-line-signature base64 HMAC-SHA256 with the channel secret",
        event="Message",
        events=2,
    ),
    "zendesk": Case(
        config=_config(),
        sign=_zendesk,
        why="Zendesk docs: base64 HMAC-SHA256 of ISO timestamp + body",
        event="User Created",
    ),
    "customer-io": Case(
        config=_config(),
        sign=_customer_io,
        why="Customer.io docs: hex HMAC-SHA256 of v0:timestamp:body",
        event="Email Sent",
    ),
    "clerk": Case(
        config={"secrets": [SW_SECRET]},
        sign=_standard("svix"),
        why="standardwebhooks SDK, svix-* headers (Clerk sends through Svix)",
        event="User Created",
    ),
    "resend": Case(
        config={"secrets": [SW_SECRET]},
        sign=_standard("svix"),
        why="standardwebhooks SDK, svix-* headers (Resend sends through Svix)",
        event="Email Delivered",
    ),
    "svix": Case(
        config={"secrets": [SW_SECRET]},
        sign=_standard("svix"),
        why="standardwebhooks SDK, svix-* headers",
        event="Invoice Paid",
    ),
    "stytch": Case(
        config={"secrets": [SW_SECRET]},
        sign=_standard("svix"),
        why="standardwebhooks SDK, svix-* headers (Stytch sends through Svix)",
        event="Direct User Create",
    ),
    "openai": Case(
        config={"secrets": [SW_SECRET]},
        sign=_standard(),
        why="standardwebhooks SDK, webhook-* headers (OpenAI follows the spec)",
        event="Response Completed",
    ),
    "replicate": Case(
        config={"secrets": [SW_SECRET]},
        sign=_standard(),
        why="standardwebhooks SDK, webhook-* headers (Replicate follows the spec)",
        event="Succeeded",
    ),
    "elevenlabs": Case(
        config=_config(),
        # elevenlabs SDK webhooks_custom.py construct_event: `t=<ts>,v0=<hex HMAC-SHA256
        # ("<ts>.<body>")>` in ElevenLabs-Signature, 30 minutes of tolerance.
        sign=_t_dot_body("ElevenLabs-Signature", key="v0"),
        why="ElevenLabs SDK construct_event, written out",
        event="Post Call Transcription",
    ),
    "linear": Case(
        config=_config(),
        sign=_linear,
        why="@linear/sdk LinearWebhookClient.verify, written out",
        event="Issue Create",
    ),
    "bitbucket": Case(
        config=_config(),
        # https://support.atlassian.com/bitbucket-cloud/docs/manage-webhooks/#Secure-webhooks:
        # X-Hub-Signature: sha256=<hex HMAC-SHA256 of the body>.
        sign=_body_hmac(
            "X-Hub-Signature",
            prefix="sha256=",
            extra={"X-Event-Key": "repo:push", "X-Request-UUID": "afe4bc4b-7f0a-4cbb-8b4e"},
        ),
        why="Bitbucket docs: X-Hub-Signature sha256= hex HMAC of the body",
        event="Repo Push",
    ),
    "sentry": Case(
        config=_config(),
        # https://docs.sentry.io/organization/integrations/integration-platform/webhooks/:
        # Sentry-Hook-Signature is the hex HMAC-SHA256 of the JSON body with the client secret.
        sign=_body_hmac(
            "Sentry-Hook-Signature",
            extra={"Sentry-Hook-Resource": "issue", "Request-ID": "5f1f6a3e-1b2c"},
        ),
        why="Sentry docs: Sentry-Hook-Signature hex HMAC-SHA256 of the body",
        event="Issue",
    ),
    "vercel": Case(
        config=_config(),
        # https://vercel.com/docs/webhooks/webhooks-api#securing-webhooks: hex HMAC-SHA1.
        sign=_body_hmac("x-vercel-signature", algo=hashlib.sha1),
        why="Vercel docs: x-vercel-signature hex HMAC-SHA1 of the body",
        event="Deployment Succeeded",
    ),
    "circleci": Case(
        config=_config(),
        # https://circleci.com/docs/webhooks/#validate-webhooks: circleci-signature v1=<hex>.
        sign=_body_hmac(
            "circleci-signature", prefix="v1=", extra={"circleci-event-type": "workflow-completed"}
        ),
        why="CircleCI docs: circleci-signature v1= hex HMAC-SHA256 of the body",
        event="Workflow Completed",
    ),
    "pagerduty": Case(
        config=_config(),
        # https://developer.pagerduty.com/docs/webhooks-overview#webhook-signatures: one
        # `v1=<hex HMAC-SHA256>` per secret, comma-separated while secrets rotate.
        sign=lambda body, now: Signed(
            {"X-PagerDuty-Signature": f"v1={_hex('old', body)},v1={_hex(SECRET, body)}"}, body
        ),
        why="PagerDuty docs: X-PagerDuty-Signature v1=<hex>, several while rotating",
        event="Incident Triggered",
    ),
    "heroku": Case(
        config=_config(),
        # https://devcenter.heroku.com/articles/app-webhooks#securing-webhook-requests:
        # base64 HMAC-SHA256 of the body in Heroku-Webhook-Hmac-SHA256.
        sign=_body_hmac("Heroku-Webhook-Hmac-SHA256", encoding="base64"),
        why="Heroku docs: Heroku-Webhook-Hmac-SHA256 base64 HMAC of the body",
        event="Api Release Create",
    ),
    "clickup": Case(
        config=_config(),
        # https://developer.clickup.com/docs/webhooksignature: X-Signature hex HMAC-SHA256.
        sign=_body_hmac("X-Signature"),
        why="ClickUp docs: X-Signature hex HMAC-SHA256 of the body",
        event="Task Created",
    ),
    "airtable": Case(
        config={"secrets": [_airtable_secret()]},
        sign=_airtable,
        why="Airtable docs: hmac-sha256=<hex> keyed with the decoded macSecretBase64",
        event="Webhook Received",
    ),
    "webflow": Case(
        config=_config(),
        sign=_webflow,
        why="Webflow docs: hex HMAC-SHA256 of ms-timestamp:body",
        event="Form Submission",
    ),
    "mux": Case(
        config=_config(),
        # https://docs.mux.com/core/verify-webhook-signatures: `t=<ts>,v1=<hex>` over `ts.body`.
        sign=_t_dot_body("Mux-Signature"),
        why="Mux docs: Mux-Signature t=..,v1=.. of ts.body",
        event="Video Asset Ready",
    ),
    "hubspot": Case(
        config=_config(url=HOOK_URL.format(name="hubspot")),
        sign=_hubspot,
        why="hubspot-api-client Signature.get_signature v3",
        event="Contact Property Change",
        events=2,
    ),
    "typeform": Case(
        config=_config(),
        # https://www.typeform.com/developers/webhooks/secure-your-webhooks/: sha256=<base64>.
        sign=_body_hmac("Typeform-Signature", encoding="base64", prefix="sha256="),
        why="Typeform docs: Typeform-Signature sha256=<base64 HMAC>",
        event="Form Response",
    ),
    "tally": Case(
        config=_config(),
        # https://tally.so/help/webhooks#add-a-signing-secret: base64 HMAC-SHA256 of the
        # payload in Tally-Signature (the docs' Express example digests 'base64').
        sign=_body_hmac("Tally-Signature", encoding="base64"),
        why="Tally docs: Tally-Signature base64 HMAC-SHA256 of the payload",
        event="Form Response",
    ),
    "calendly": Case(
        config=_config(),
        # https://developer.calendly.com/api-docs/4c305798a61d3-webhook-signatures:
        # `t=<ts>,v1=<hex HMAC-SHA256("<ts>.<body>")>`.
        sign=_t_dot_body("Calendly-Webhook-Signature"),
        why="Calendly docs: t=..,v1=.. of ts.body",
        event="Invitee Created",
    ),
    "cal-com": Case(
        config=_config(),
        # https://cal.com/docs/core-features/webhooks#verifying-the-authenticity-of-the-received-payload:
        # X-Cal-Signature-256 = hex HMAC-SHA256 of the body with the webhook secret.
        sign=_body_hmac("X-Cal-Signature-256"),
        why="Cal.com docs: X-Cal-Signature-256 hex HMAC-SHA256 of the body",
        event="Booking Created",
    ),
    "docusign": Case(
        config=_config(),
        sign=_docusign,
        why="Docusign Connect docs: base64 HMAC-SHA256 per key in X-DocuSign-Signature-<n>",
        event="Envelope Completed",
    ),
    "xero": Case(
        config=_config(),
        # https://developer.xero.com/documentation/webhooks/configuring-your-server: base64
        # HMAC-SHA256 of the payload with the webhook key, in x-xero-signature.
        sign=_body_hmac("x-xero-signature", encoding="base64"),
        why="Xero docs: x-xero-signature base64 HMAC-SHA256 of the payload",
        event="Invoice Update",
    ),
    "workos": Case(
        config=_config(),
        # workos SDK webhooks/_verification.py verify_header: `t=<ms>, v1=<hex HMAC-SHA256
        # ("<ms>.<body>")>`, split on ", ".
        sign=_t_dot_body("WorkOS-Signature", ms=True, space=True),
        why="WorkOS SDK verify_header, written out",
        event="User Created",
    ),
    "persona": Case(
        config=_config(),
        sign=_persona,
        why="Persona docs: t=..,v1=.. of ts.body; two space-separated sets while rotating",
        event="Inquiry Completed",
    ),
    "onfido": Case(
        config=_config(),
        # https://documentation.onfido.com/api/manual-webhook-signature-verification and
        # onfido-python WebhookEventVerifier: X-SHA2-Signature hex HMAC-SHA256 of the body.
        sign=_body_hmac("X-SHA2-Signature"),
        why="Onfido docs: X-SHA2-Signature hex HMAC-SHA256 of the body",
        event="Check Completed",
    ),
}
