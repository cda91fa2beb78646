"""Vendors that ask a handshake before they go live, and answer it exactly as they specify.

Two kinds: a *challenge* comes before the signature check because the vendor does not (or
cannot) sign it (Dropbox's GET, Microsoft Graph's validationToken, Meta's hub.challenge,
Asana's X-Hook-Secret, Notion's verification_token, Okta's GET, Trello's HEAD); a
*handshake* comes after it because the vendor signs it (Zoom's URL validation, Twitch's
challenge and revocation). Answering a signed handshake unsigned would be an oracle:
Zoom's answer is an HMAC of attacker-chosen text under the source's secret.

Nothing here is stored as a delivery or becomes an event. Asana and Notion hand over the
signing secret itself, unsigned: the front door keeps it in Redis for the operator
(`webhook-gateway handshakes SOURCE`), who puts it in `secrets:`. It is never used for
verification by itself, so a forged handshake cannot make forged events pass.

Strava is left out on purpose: its events carry no signature or token at all.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from normalizers.generic import Spec

from ...errors import PayloadError, SignatureError
from ..catalog import CatalogSource, Reply, Request, Scheme, Signed, Vendor, register_vendor
from ..schemes import Hmac, Token
from ..signing import matches_any

_NOSNIFF = {"X-Content-Type-Options": "nosniff"}
"""On every echo of request text, so a browser never renders it as HTML (Dropbox asks)."""


def _echo(value: str) -> Reply:
    return Reply.text(value, headers=_NOSNIFF)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


# --- Zoom ---------------------------------------------------------------------------------


def _zoom_handshake(source: CatalogSource, request: Request) -> Reply | None:
    """`endpoint.url_validation`: {plainToken, encryptedToken = hex HMAC-SHA256(secret,
    plainToken)}, within 3 s. Zoom signs it (its own sample verifies first:
    https://github.com/zoom/webhook-sample/blob/master/index.js), so this runs after
    verify, with the secret that verified it."""
    if b"endpoint.url_validation" not in request.body:
        return None  # cheap: events skip the JSON decode
    payload = _json_object(request.body)
    if payload is None or payload.get("event") != "endpoint.url_validation":
        return None
    inner = payload.get("payload")
    token = inner.get("plainToken") if isinstance(inner, dict) else None
    if not isinstance(token, str) or not token:
        raise PayloadError("endpoint.url_validation without a payload.plainToken")
    key = _signing_key(source, request)
    encrypted = hmac.new(key, token.encode(), "sha256").hexdigest()
    return Reply.json({"plainToken": token, "encryptedToken": encrypted})


def _signing_key(source: CatalogSource, request: Request) -> bytes:
    """Which of the source's secrets signed `request` (already verified, so no clock)."""
    scheme = source.scheme.with_tolerance(None)
    for key in source.keys:
        try:
            scheme.verify([key], request)
        except SignatureError:
            continue
        return key
    raise SignatureError("no secret of this source signed the request")  # verify ran first


register_vendor(
    Vendor(
        name="zoom",
        title="Zoom",
        category="video",
        scheme=Hmac(
            "x-zm-signature",
            prefix="v0=",
            signed="v0:{timestamp}:{body}",
            timestamp_header="x-zm-request-timestamp",
        ),
        docs="https://developers.zoom.us/docs/api/webhooks/#verify-webhook-events",
        tested_with="docs (HMAC written out, as zoom/webhook-sample and zoom/rivet-javascript)",
        delivery_id=("hash",),  # no documented id that survives a retry; the body does
        spec=Spec(event_type="event", time="event_ts", properties="payload"),
        retry_window="3 retries over about 85 minutes",
        tolerance="300s",
        handshake=_zoom_handshake,
        handshake_doc="`endpoint.url_validation` answered with `{plainToken, encryptedToken}` "
        "(signed: checked first)",
    )
)


# --- Twitch EventSub ----------------------------------------------------------------------

_TWITCH_TYPE = "twitch-eventsub-message-type"


@dataclass(frozen=True)
class EventSubHmac(Hmac):
    """Twitch's HMAC, signed by `send` with an RFC 3339 nanosecond timestamp as Twitch does
    (https://dev.twitch.tv/docs/eventsub/handling-webhook-events/#verifying-the-event-message)."""

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        when = datetime.fromtimestamp(int(request.now), UTC)
        ts = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(request.now % 1 * 1e9):09d}Z"
        content = delivery_id.encode() + ts.encode() + request.body
        digest = hmac.new(self.load(secret), content, "sha256").hexdigest()
        headers = {
            "Twitch-Eventsub-Message-Id": delivery_id,
            "Twitch-Eventsub-Message-Timestamp": ts,
            "Twitch-Eventsub-Message-Signature": "sha256=" + digest,
            "Twitch-Eventsub-Message-Type": "notification",
        }
        return Signed(headers, request.body, request.query)


def _twitch_handshake(source: CatalogSource, request: Request) -> Reply | None:
    """After verify (Twitch: "before handling any message, make sure Twitch sent it"):
    the challenge comes back as the whole text/plain body; a revocation is acknowledged
    with a 2xx and kept out of the analytics (it is a warning for the operator)."""
    kind = request.headers.get(_TWITCH_TYPE, "notification")
    if kind == "webhook_callback_verification":
        payload = _json_object(request.body) or {}
        challenge = payload.get("challenge")
        if not isinstance(challenge, str) or not challenge:
            raise PayloadError("webhook_callback_verification without a challenge")
        return _echo(challenge)
    if kind == "revocation":
        return Reply.json({"status": "revocation"}, outcome="revocation")
    return None


register_vendor(
    Vendor(
        name="twitch",
        title="Twitch EventSub",
        category="streaming",
        scheme=EventSubHmac(
            "Twitch-Eventsub-Message-Signature",
            prefix="sha256=",
            signed="{delivery_id}{timestamp}{body}",
            delivery_id_header="Twitch-Eventsub-Message-Id",
            timestamp_header="Twitch-Eventsub-Message-Timestamp",
        ),
        docs="https://dev.twitch.tv/docs/eventsub/handling-webhook-events/",
        tested_with="docs (HMAC written out, as twitchdev/twitch-cli signs)",
        # "If Twitch resends the message, the message ID will be the same."
        delivery_id=("header:Twitch-Eventsub-Message-Id",),
        spec=Spec(event_type="subscription.type", properties="event"),
        tolerance="600s",  # Twitch: reject messages older than 10 minutes
        handshake=_twitch_handshake,
        handshake_doc="`webhook_callback_verification` answered with the challenge as "
        "text/plain; `revocation` acknowledged, not stored",
    )
)


# --- Dropbox ------------------------------------------------------------------------------


def _dropbox_challenge(source: CatalogSource, method: str, request: Request) -> Reply | None:
    """GET ?challenge=X: echo X as text/plain with nosniff, within 10 s
    (https://www.dropbox.com/developers/reference/webhooks#documentation)."""
    if method != "GET":
        return None
    challenge = request.query_params().get("challenge")
    return _echo(challenge) if challenge else None


register_vendor(
    Vendor(
        name="dropbox",
        title="Dropbox",
        category="storage",
        scheme=Hmac("X-Dropbox-Signature"),
        docs="https://www.dropbox.com/developers/reference/webhooks",
        tested_with="docs (HMAC written out) and a published vector",
        delivery_id=("hash",),  # a notification names accounts, not itself
        # "Files changed for these accounts": no event type in the body.
        spec=Spec(event_type=None, properties="list_folder"),
        retry_window="about 10 minutes",
        challenge=_dropbox_challenge,
        handshake_doc="GET `?challenge=` echoed as text/plain (nosniff)",
    )
)


# --- Microsoft Graph ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClientState(Scheme):
    """Microsoft Graph: every notification in `value` carries the `clientState` set when
    subscribing; it must equal a secret. A shared value inside the body, compared in
    constant time: it proves knowledge of the value, not the body's integrity."""

    weak = True

    def describe(self) -> str:
        return "`clientState` of every notification equals a secret (a shared value in the body)"

    def verify(self, keys: Sequence[Any], request: Request) -> None:
        payload = _json_object(request.body)
        items = payload.get("value") if payload is not None else None
        if not isinstance(items, list) or not items:
            raise SignatureError("the body holds no `value` list of notifications")
        for i, item in enumerate(items):
            state = item.get("clientState") if isinstance(item, dict) else None
            if not isinstance(state, str) or not state:
                raise SignatureError(f"notification {i} has no clientState")
            if not matches_any(keys, [state.encode()]):
                raise SignatureError(
                    f"the clientState of notification {i} did not match any of this "
                    "source's secrets"
                )

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        payload = _json_object(request.body) or {}
        items = [
            {**item, "clientState": secret}
            for item in payload.get("value") or []
            if isinstance(item, dict)
        ]
        body = msgspec.json.encode({**payload, "value": items})
        return Signed({}, body, request.query)


def _graph_challenge(source: CatalogSource, method: str, request: Request) -> Reply | None:
    """POST ?validationToken=X: 200, text/plain, the URL-decoded X, within 10 s
    (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks)."""
    if method != "POST":
        return None
    token = request.query_params().get("validationToken")
    return _echo(token) if token else None


def _graph_handshake(source: CatalogSource, request: Request) -> Reply | None:
    """Lifecycle notifications (reauthorizationRequired, subscriptionRemoved, missed) are
    about the subscription, not the data: acknowledged with the 202 Graph asks for, kept
    out of the analytics and logged for the operator, who must act on them
    (https://learn.microsoft.com/graph/change-notifications-lifecycle-events)."""
    if b"lifecycleEvent" not in request.body:
        return None
    payload = _json_object(request.body) or {}
    items = payload.get("value") or []
    if items and all(isinstance(i, dict) and i.get("lifecycleEvent") for i in items):
        return Reply(b"", status=202, content_type="text/plain; charset=utf-8", outcome="lifecycle")
    return None


register_vendor(
    Vendor(
        name="microsoft-graph",
        title="Microsoft Graph change notifications",
        category="productivity",
        scheme=ClientState(),
        docs="https://learn.microsoft.com/graph/change-notifications-delivery-webhooks",
        tested_with="docs (clientState compared as documented)",
        delivery_id=("hash",),
        spec=Spec(
            each="value", event_type="changeType", properties="resourceData", omit=("clientState",)
        ),
        retry_window="up to 4 hours",
        challenge=_graph_challenge,
        handshake=_graph_handshake,
        handshake_doc="`?validationToken=` echoed as text/plain; lifecycle notifications "
        "acknowledged with 202, not stored",
        note="The clientState is in the body, so it is in the stored raw delivery too.",
    )
)


# --- Meta: Facebook, Instagram, WhatsApp ----------------------------------------------------


def _meta_challenge(source: CatalogSource, method: str, request: Request) -> Reply | None:
    """GET hub.mode=subscribe&hub.verify_token=T&hub.challenge=C: C as the body when T is
    the configured `verify_token`, else 403
    (https://developers.facebook.com/docs/graph-api/webhooks/getting-started)."""
    if method != "GET":
        return None
    params = request.query_params()
    if "hub.mode" not in params:
        return None
    configured = source.verify_token.reveal().encode() if source.verify_token else b""
    given = params.get("hub.verify_token", "").encode()
    if not configured:
        return _refuse("no `verify_token:` is configured for this source")
    if params["hub.mode"] != "subscribe":
        return _refuse("hub.mode is not `subscribe`")
    if not hmac.compare_digest(configured, given):
        return _refuse("hub.verify_token does not match this source's verify_token")
    challenge = params.get("hub.challenge")
    if not challenge:
        return _refuse("hub.challenge is missing", status=400)
    return _echo(challenge)


def _refuse(detail: str, status: int = 403) -> Reply:
    return Reply.json(
        {"status": "rejected", "reason": "verify_token", "detail": detail},
        status=status,
        outcome="rejected",
    )


# One event per `entry` (a Page, an Instagram account, a WhatsApp Business account), with
# its `changes` (or Messenger's `messaging`) as properties: an entry is what Meta batches.
_META_SPEC = Spec(each="entry", event_type="changes.0.field", time="time", properties=None)

for name, title, category, docs, retries, dedupe in (
    ("facebook", "Facebook (Pages, Messenger)", "social",
     "https://developers.facebook.com/docs/graph-api/webhooks/getting-started",
     "with decreasing frequency for up to 36 hours", "7d"),
    ("instagram", "Instagram", "social",
     "https://developers.facebook.com/docs/graph-api/webhooks/getting-started",
     "with decreasing frequency for up to 36 hours", "7d"),
    ("whatsapp", "WhatsApp Business", "messaging",
     "https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/create-webhook-endpoint",
     "for up to 7 days", "8d"),
):  # fmt: skip
    register_vendor(
        Vendor(
            name=name,
            title=title,
            category=category,
            scheme=Hmac("X-Hub-Signature-256", prefix="sha256="),
            docs=docs,
            tested_with="docs (HMAC written out)",
            delivery_id=("hash",),  # Meta sends no delivery id
            spec=_META_SPEC,
            retry_window=retries,
            dedupe_ttl=dedupe,
            options=("verify_token",),
            challenge=_meta_challenge,
            handshake_doc="GET `hub.challenge` echoed when `hub.verify_token` equals "
            "`verify_token:`, else 403",
        )
    )


# --- Asana --------------------------------------------------------------------------------


def _asana_challenge(source: CatalogSource, method: str, request: Request) -> Reply | None:
    """POST with X-Hook-Secret (and no signature): 200 with the same header
    (https://developers.asana.com/reference/createwebhook). The secret is kept for the
    operator; events are signed with it (X-Hook-Signature)."""
    if method != "POST":
        return None
    secret = request.headers.get("x-hook-secret", "")
    if not _plausible_secret(secret):
        return None
    return Reply(
        b"",
        content_type="text/plain; charset=utf-8",
        headers={"X-Hook-Secret": secret},
        secret=secret,
    )


def _plausible_secret(value: str) -> bool:
    # Asana's are 64 hex digits; anything printable and short is kept, nothing else.
    return 0 < len(value) <= 256 and value.isascii() and value.isprintable()


register_vendor(
    Vendor(
        name="asana",
        secret_from_handshake=True,
        title="Asana",
        category="project management",
        scheme=Hmac("X-Hook-Signature"),
        docs="https://developers.asana.com/docs/webhooks-guide",
        tested_with="docs (HMAC written out, as Asana/devrel-examples webhooks_v5)",
        delivery_id=("hash",),
        spec=Spec(
            each="events",
            event_type="resource.resource_type+action",
            time="created_at",
            properties=None,
        ),
        retry_window="up to 24 hours",
        challenge=_asana_challenge,
        handshake_doc="`X-Hook-Secret` echoed; the secret is kept for "
        "`webhook-gateway handshakes` (then put it in `secrets:`)",
    )
)


# --- Notion -------------------------------------------------------------------------------


def _notion_challenge(source: CatalogSource, method: str, request: Request) -> Reply | None:
    """The one unsigned POST {"verification_token": ...} when a subscription is created: the
    token is the signing secret, kept for the operator to paste into Notion's UI and
    `secrets:` (https://developers.notion.com/reference/webhooks)."""
    if method != "POST" or "x-notion-signature" in request.headers:
        return None
    if len(request.body) > 4096 or b"verification_token" not in request.body:
        return None
    token = (_json_object(request.body) or {}).get("verification_token")
    if not isinstance(token, str) or not _plausible_secret(token):
        return None
    return Reply.json({"status": "handshake"}, secret=token)


register_vendor(
    Vendor(
        name="notion",
        secret_from_handshake=True,
        title="Notion",
        category="productivity",
        scheme=Hmac("X-Notion-Signature", prefix="sha256="),
        docs="https://developers.notion.com/reference/webhooks",
        tested_with="docs (HMAC written out)",
        delivery_id=("body:id",),
        spec=Spec(event_type="type", time="timestamp", properties=None),
        retry_window="8 attempts",
        challenge=_notion_challenge,
        handshake_doc="`verification_token` kept for `webhook-gateway handshakes` (paste it "
        "into Notion and `secrets:`)",
    )
)


# --- Okta event hooks ---------------------------------------------------------------------


def _okta_challenge(source: CatalogSource, method: str, request: Request) -> Reply | None:
    """The one-time GET with X-Okta-Verification-Challenge: {"verification": value}
    (https://developer.okta.com/docs/concepts/event-hooks/)."""
    if method != "GET":
        return None
    value = request.headers.get("x-okta-verification-challenge")
    return Reply.json({"verification": value}) if value else None


register_vendor(
    Vendor(
        name="okta",
        title="Okta event hooks",
        category="identity",
        scheme=Token(header="Authorization"),
        docs="https://developer.okta.com/docs/concepts/event-hooks/",
        tested_with="docs (shared Authorization value)",
        delivery_id=("body:eventId", "hash"),
        spec=Spec(
            each="data.events",
            element_id="uuid",
            event_type="eventType",
            time="published",
            properties=None,
        ),
        retry_window="one retry (3 s timeout; 4xx answers are not retried)",
        challenge=_okta_challenge,
        handshake_doc='GET `X-Okta-Verification-Challenge` answered with `{"verification": ...}`',
    )
)


# --- Trello -------------------------------------------------------------------------------


def _trello_challenge(source: CatalogSource, method: str, request: Request) -> Reply | None:
    """Trello checks the callback URL with a HEAD when the webhook is created and wants 200
    (https://developer.atlassian.com/cloud/trello/guides/rest-api/webhooks/)."""
    return Reply(b"", content_type="text/plain; charset=utf-8") if method == "HEAD" else None


register_vendor(
    Vendor(
        name="trello",
        title="Trello",
        category="project management",
        scheme=Hmac("X-Trello-Webhook", algorithm="sha1", encoding="base64", signed="{body}{url}"),
        docs="https://developer.atlassian.com/cloud/trello/guides/rest-api/webhooks/",
        tested_with="docs (HMAC-SHA1 written out)",
        delivery_id=("body:action.id",),
        spec=Spec(event_type="action.type", time="action.date", properties="action.data"),
        options=("url",),
        challenge=_trello_challenge,
        handshake_doc="HEAD answered 200",
    )
)
