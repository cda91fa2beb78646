"""Cases for the vendors that ask a handshake first (gateway/sources/vendors/handshakes.py).

Each signer is the vendor's documented algorithm written out with hmac/hashlib/base64,
the doc cited beside it; none uses the gateway's signing code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from tests.sources.catalog_cases import Case, Signed

ZOOM_SECRET = "zoom-secret-token"
TWITCH_SECRET = "twitch-eventsub-secret"
DROPBOX_SECRET = "dropbox-app-secret"
GRAPH_CLIENT_STATE = "secretClientValue"  # as in the sample (Graph docs' example value)
META_SECRET = "meta-app-secret"
META_VERIFY_TOKEN = "meta-verify-token"
ASANA_SECRET = "b537207f20cbfa02357cf448134da559e8bd39d61597dcd5631b8012eae53e81"
NOTION_TOKEN = "secret_tMrlL1qK5vuQAh1b6cZGhFChZTSYJlce98V0pYn7yBl"
OKTA_SECRET = "okta-authorization-value"
TRELLO_SECRET = "trello-oauth1-app-secret"
TRELLO_URL = "https://hooks.example.com/webhooks/trello?board=nC8QJJoZ"


def hex_hmac(key: str, content: bytes, algo=hashlib.sha256) -> str:
    return hmac.new(key.encode(), content, algo).hexdigest()


def zoom_sign(body: bytes, now: float, secret: str = ZOOM_SECRET) -> Signed:
    # https://developers.zoom.us/docs/api/webhooks/#verify-webhook-events:
    # x-zm-signature = "v0=" + hex HMAC-SHA256(secret token, "v0:{timestamp}:{body}"),
    # timestamp in x-zm-request-timestamp (as zoom/webhook-sample index.js builds it).
    ts = str(int(now))
    sig = hex_hmac(secret, f"v0:{ts}:".encode() + body)
    return Signed({"x-zm-signature": f"v0={sig}", "x-zm-request-timestamp": ts}, body)


def twitch_timestamp(now: float) -> str:
    """RFC 3339 with nanoseconds, as Twitch sends it (docs: "2019-11-16T10:11:12.634234626Z")."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(now))) + ".634234626Z"


def twitch_sign(
    body: bytes,
    now: float,
    kind: str = "notification",
    message_id: str | None = None,
    timestamp: str | None = None,
) -> Signed:
    # https://dev.twitch.tv/docs/eventsub/handling-webhook-events/#verifying-the-event-message:
    # hmac_message = message id + message timestamp + raw body; HMAC-SHA256 with the
    # subscription's secret; header value "sha256=" + hex.
    msg_id = message_id or "e76c6bd4-55c9-4987-8304-" + hashlib.sha256(body).hexdigest()[:12]
    ts = timestamp or twitch_timestamp(now)
    sig = hex_hmac(TWITCH_SECRET, msg_id.encode() + ts.encode() + body)
    headers = {
        "Twitch-Eventsub-Message-Id": msg_id,
        "Twitch-Eventsub-Message-Retry": "0",
        "Twitch-Eventsub-Message-Type": kind,
        "Twitch-Eventsub-Message-Signature": f"sha256={sig}",
        "Twitch-Eventsub-Message-Timestamp": ts,
        "Twitch-Eventsub-Subscription-Type": "channel.follow",
        "Twitch-Eventsub-Subscription-Version": "2",
    }
    return Signed(headers, body)


def _dropbox(body: bytes, now: float) -> Signed:
    # https://www.dropbox.com/developers/reference/webhooks: X-Dropbox-Signature is the
    # hex HMAC-SHA256 of the entire request body, keyed with the app secret.
    return Signed({"X-Dropbox-Signature": hex_hmac(DROPBOX_SECRET, body)}, body)


def _graph(body: bytes, now: float) -> Signed:
    # https://learn.microsoft.com/graph/change-notifications-delivery-webhooks: no
    # signature; each notification's clientState equals the value given when
    # subscribing (the sample carries it, so the body goes as is).
    assert json.loads(body)["value"][0]["clientState"] == GRAPH_CLIENT_STATE
    return Signed({}, body)


def graph_forged(signed: Signed) -> Signed:
    """A notification whose clientState is not the subscription's."""
    payload = json.loads(signed.body)
    payload["value"][-1]["clientState"] = "guessedClientState"
    return Signed(signed.headers, json.dumps(payload).encode(), signed.query)


def meta_sign(body: bytes, now: float) -> Signed:
    # https://developers.facebook.com/docs/graph-api/webhooks/getting-started#validate-payloads:
    # X-Hub-Signature-256 = "sha256=" + hex HMAC-SHA256(app secret, payload).
    return Signed({"X-Hub-Signature-256": "sha256=" + hex_hmac(META_SECRET, body)}, body)


def asana_sign(body: bytes, now: float, secret: str = ASANA_SECRET) -> Signed:
    # https://developers.asana.com/docs/webhooks-guide#security and Asana/devrel-examples
    # python/webhooks_v5/server.py: X-Hook-Signature = hex HMAC-SHA256(X-Hook-Secret, body).
    return Signed({"X-Hook-Signature": hex_hmac(secret, body)}, body)


def notion_sign(body: bytes, now: float, token: str = NOTION_TOKEN) -> Signed:
    # https://developers.notion.com/reference/webhooks#step-3-validating-event-payloads-recommended:
    # X-Notion-Signature = "sha256=" + hex HMAC-SHA256(verification_token, raw body).
    return Signed({"X-Notion-Signature": "sha256=" + hex_hmac(token, body)}, body)


def _okta(body: bytes, now: float) -> Signed:
    # https://developer.okta.com/docs/concepts/event-hooks/#http-headers: the secret
    # string registered with the hook is sent as the Authorization header, unchanged.
    return Signed({"Authorization": OKTA_SECRET}, body)


def _okta_forged(signed: Signed) -> Signed:
    return Signed({"Authorization": OKTA_SECRET + "x"}, signed.body, signed.query)


def trello_sign(body: bytes, now: float) -> Signed:
    # https://developer.atlassian.com/cloud/trello/guides/rest-api/webhooks/#webhook-signatures:
    # X-Trello-Webhook = base64 HMAC-SHA1(application secret, body + callbackURL exactly as
    # registered); the callback's own query string is part of it.
    digest = hmac.new(TRELLO_SECRET.encode(), body + TRELLO_URL.encode(), hashlib.sha1)
    query = TRELLO_URL.split("?", 1)[1]
    return Signed({"X-Trello-Webhook": base64.b64encode(digest.digest()).decode()}, body, query)


_META_CONFIG = {"secrets": [META_SECRET], "verify_token": META_VERIFY_TOKEN}
_META_WHY = "Meta docs: X-Hub-Signature-256 sha256= hex HMAC-SHA256(app secret, body)"

CASES = {
    "zoom": Case(
        config={"secrets": [ZOOM_SECRET]},
        sign=zoom_sign,
        why="Zoom docs: x-zm-signature v0= hex HMAC-SHA256 of v0:{timestamp}:{body}",
        event="Meeting Started",
    ),
    "twitch": Case(
        config={"secrets": [TWITCH_SECRET]},
        sign=twitch_sign,
        why="Twitch docs: sha256= hex HMAC-SHA256 of message id + timestamp + body",
        event="Channel Follow",
    ),
    "dropbox": Case(
        config={"secrets": [DROPBOX_SECRET]},
        sign=_dropbox,
        why="Dropbox docs: X-Dropbox-Signature hex HMAC-SHA256 of the body",
        event="Webhook Received",
    ),
    "microsoft-graph": Case(
        config={"secrets": [GRAPH_CLIENT_STATE]},
        sign=_graph,
        why="Graph docs: every notification's clientState equals the subscription's",
        event="Created",
        events=2,
        tamper=graph_forged,
    ),
    "facebook": Case(config=_META_CONFIG, sign=meta_sign, why=_META_WHY, event="Feed"),
    "instagram": Case(config=_META_CONFIG, sign=meta_sign, why=_META_WHY, event="Comments"),
    "whatsapp": Case(config=_META_CONFIG, sign=meta_sign, why=_META_WHY, event="Messages"),
    "asana": Case(
        config={"secrets": [ASANA_SECRET]},
        sign=asana_sign,
        why="Asana docs and devrel example: X-Hook-Signature hex HMAC-SHA256 of the body",
        event="Task Changed",
        events=2,
    ),
    "notion": Case(
        config={"secrets": [NOTION_TOKEN]},
        sign=notion_sign,
        why="Notion docs: X-Notion-Signature sha256= hex HMAC-SHA256 of the body",
        event="Page Created",
    ),
    "okta": Case(
        config={"secrets": [OKTA_SECRET]},
        sign=_okta,
        why="Okta docs: the registered secret string in the Authorization header",
        event="User Session Start",
        tamper=_okta_forged,
    ),
    "trello": Case(
        config={"secrets": [TRELLO_SECRET], "url": TRELLO_URL},
        sign=trello_sign,
        why="Trello docs: X-Trello-Webhook base64 HMAC-SHA1 of body + callbackURL",
        event="Update Card",
    ),
}
