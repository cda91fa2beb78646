"""Notifications: what an alert says, and the channels that carry it (Slack, a Standard
Webhooks-signed webhook, e-mail)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Literal

import aiosmtplib
import httpx
import msgspec
from standardwebhooks.webhooks import Webhook

from ..config import EmailNotifier, Notifier, SlackNotifier, WebhookNotifier

# webhook-id = uuid5(this, "<incident>|<firing|resolved>"): the same for every retry and
# every process, so a receiver dedupes on it.
ALERT_ID_NAMESPACE = uuid.UUID("9b7c3c4e-2f55-5d7e-a0a1-6a1c5e0f3d21")


class Notification(msgspec.Struct, kw_only=True):
    """One transition of one incident, for one channel (an outbox job)."""

    kind: Literal["firing", "resolved"]
    rule: str
    subject: str
    condition: str
    value: float | None
    threshold: float
    window: float | None  # seconds the value is taken over (None: a reading now)
    started_at: float  # s: when the condition began (its first breached reading)
    resolved_at: float | None = None  # s: when it became clear for good
    incident: str
    channel: str
    created: float  # s: when it was queued (retries give up a day after)
    attempts: int = 0
    reason: str | None = None  # why it resolved, when not because the condition cleared

    @property
    def webhook_id(self) -> str:
        return "alert_" + str(uuid.uuid5(ALERT_ID_NAMESPACE, f"{self.incident}|{self.kind}"))


class Memo(msgspec.Struct, kw_only=True):
    """An incident's firing notification and channels, kept with its state: what its
    resolve says if the rule or the subject leaves the config."""

    notification: Notification
    channels: list[str]


class NotifyError(Exception):
    """A channel refused or failed; `retryable` says whether trying again can help."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def describe(n: Notification) -> str:
    """The value against the threshold, in the rule's own words."""
    if n.reason:
        return n.reason
    v, t = n.value, n.threshold
    over = f" over {_span(n.window)}" if n.window else ""
    if n.condition == "destination_failure_rate":
        shown = "n/a" if v is None else f"{v:.0%}"
        return f"failure rate {shown} (threshold {t:.0%}){over}"
    if n.condition == "dead_letters":
        return f"{v or 0:g} dead letters (threshold {t:g}){over}"
    if n.condition == "lag":
        return f"{v or 0:g} events behind (threshold {t:g})"
    if n.condition == "quarantine":
        return f"{v or 0:g} quarantined (threshold {t:g}){over}"
    if n.condition == "source_silent":
        return f"no delivery for {_span(round(v or 0))} (threshold {_span(t)})"
    return "Redis does not answer" if n.kind == "firing" else "Redis answers again"


def title(n: Notification) -> str:
    return f"{n.kind.upper()}: {n.rule} {n.subject}"


def text(n: Notification, console_url: str | None) -> str:
    """The plain message: e-mail body, Slack's fallback text."""
    lines = [
        title(n),
        f"rule: {n.rule} ({n.condition})",
        f"subject: {n.subject}",
        f"value: {describe(n)}",
        f"since: {_when(n.started_at)}",
    ]
    if n.resolved_at is not None:
        lines.append(f"resolved: {_when(n.resolved_at)}")
    if console_url:
        lines.append(f"console: {console_url}")
    return "\n".join(lines)


def slack_body(n: Notification, console_url: str | None) -> dict:
    icon = ":rotating_light:" if n.kind == "firing" else ":white_check_mark:"
    fields = [
        f"*Rule:* {n.rule}",
        f"*Subject:* {n.subject}",
        f"*Value:* {describe(n)}",
        f"*Since:* {_when(n.started_at)}",
    ]
    if n.resolved_at is not None:
        fields.append(f"*Resolved:* {_when(n.resolved_at)}")
    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} *{title(n)}*"}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    if console_url:
        link = {"type": "mrkdwn", "text": f"<{console_url}|Open the console>"}
        blocks.append({"type": "context", "elements": [link]})
    return {"text": f"[webhook-gateway] {title(n)}: {describe(n)}", "blocks": blocks}


def webhook_body(n: Notification) -> dict:
    return {
        "type": f"alert.{n.kind}",
        "rule": n.rule,
        "condition": n.condition,
        "subject": n.subject,
        "value": n.value,
        "threshold": n.threshold,
        "started_at": _iso(n.started_at),
        "resolved_at": _iso(n.resolved_at) if n.resolved_at is not None else None,
        "incident": n.incident,
        "reason": n.reason,
    }


def _iso(ts: float) -> str:
    return (
        datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


async def send(
    notifier: Notifier, n: Notification, client: httpx.AsyncClient, console_url: str | None
) -> None:
    """Send `n` through one channel, within the channel's `timeout` overall; raises
    NotifyError."""
    # httpx's and aiosmtplib's timeouts bound each step (connect, each read, each SMTP
    # command), not the whole: a channel answering slowly but steadily would keep a send
    # going past the outbox lease (timeout + 30 s), and another process would send it again.
    try:
        await asyncio.wait_for(_send(notifier, n, client, console_url), float(notifier.timeout))
    except TimeoutError:
        raise NotifyError(f"no answer within {float(notifier.timeout):g}s") from None


async def _send(
    notifier: Notifier, n: Notification, client: httpx.AsyncClient, console_url: str | None
) -> None:
    if isinstance(notifier, EmailNotifier):
        await _email(notifier, n, console_url)
        return
    if isinstance(notifier, SlackNotifier):
        body = msgspec.json.encode(slack_body(n, console_url))
        headers = {"content-type": "application/json"}
    else:
        assert isinstance(notifier, WebhookNotifier)
        body = msgspec.json.encode(webhook_body(n))
        now = datetime.now(tz=UTC).replace(microsecond=0)
        headers = {
            "content-type": "application/json",
            "webhook-id": n.webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(notifier.secret.reveal()).sign(
                n.webhook_id, now, body.decode()
            ),
        }
    try:
        response = await client.post(
            notifier.url.reveal(), content=body, headers=headers, timeout=float(notifier.timeout)
        )
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as e:
        # (InvalidURL is no HTTPError.) Retrying a URL httpx refuses cannot help.
        raise NotifyError(f"{type(e).__name__}: fix the channel's url", retryable=False) from None
    except httpx.HTTPError as e:  # the URL is a secret: only the kind of failure is said
        raise NotifyError(type(e).__name__) from None
    if response.status_code >= 300:
        # 408 and 429 are "later"; other 4xx say the URL or the request is wrong.
        retryable = response.status_code >= 500 or response.status_code in (408, 429)
        raise NotifyError(f"HTTP {response.status_code}", retryable)


async def _email(config: EmailNotifier, n: Notification, console_url: str | None) -> None:
    message = EmailMessage()
    message["From"] = config.from_
    message["To"] = ", ".join(config.to)
    message["Subject"] = f"[webhook-gateway] {title(n)}"
    message["Message-ID"] = f"<{n.webhook_id}@webhook-gateway>"
    message.set_content(text(n, console_url) + "\n")
    try:
        await aiosmtplib.send(
            message,
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password.reveal() if config.password else None,
            start_tls=config.starttls,
            use_tls=config.tls,
            timeout=float(config.timeout),
        )
    except aiosmtplib.SMTPResponseException as e:
        # 5xx: the server will not take it (a wrong address, a refused login).
        raise NotifyError(f"SMTP {e.code}", retryable=e.code < 500) from None
    except (aiosmtplib.SMTPException, OSError) as e:
        raise NotifyError(type(e).__name__) from None
