"""What a destination is: a config struct, a route, and `send(batch) -> one result per event`.

A destination type is one module that subclasses `Destination` (or `HttpDestination`,
which does the HTTP mechanics once for every vendor API: pooled client, timeouts, retry
classes, Retry-After, splitting a rejected batch), declares its config struct and
registers itself with `@register`. Batching, retries with backoff, dead letters and
acknowledgements live in gateway/deliver.py, the same for every type.
"""

from __future__ import annotations

import email.utils
import fnmatch
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import httpx
import msgspec

from gateway.config import ByteSize, Duration, duration
from gateway.identity import consent_of

from .pii import CLICK_IDS

# --- results -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    """What happened to one event: sent, worth retrying (maybe after), or never."""

    outcome: str  # "ok" | "retry" | "fail"
    reason: str = ""
    retry_after: float | None = None
    status: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


OK = Result("ok")


def retry(reason: str, after: float | None = None, status: int | None = None) -> Result:
    return Result("retry", reason, after, status)


def fail(reason: str, status: int | None = None) -> Result:
    return Result("fail", reason, None, status)


# --- config --------------------------------------------------------------------------------


class DestinationConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag_field="type"):
    """Settings every destination has. Each type subclasses this with `tag="<type>"`."""

    events: list[str] = msgspec.field(default_factory=lambda: ["*"])
    """Event names (globs) this destination gets: `Order *`. identify & co. match their type."""
    types: list[str] = []
    """Only these event types (track, identify, ...); empty: all."""
    sources: list[str] = []
    """Only events from these sources; empty: all."""
    rename_properties: dict[str, str] = {}
    """Property renames, old name -> new name (also for traits)."""
    allow_properties: list[str] | None = None
    """Only these properties (after renaming) are sent; null: all."""
    batch_size: int | None = None
    """Events per request (default: the vendor's own limit)."""
    batch_bytes: ByteSize | None = None
    """Bytes per request (default: the vendor's own limit)."""
    linger: Duration = duration("200ms")
    """How long a batch may wait to fill up."""
    max_attempts: int | None = None
    """After this many failed attempts an event goes to the dead letters (null: no limit,
    only max_age)."""
    max_age: Duration = duration("24h")
    """An event still failing this long after its first attempt goes to the dead letters."""
    backoff: Duration = duration("1s")
    """First retry delay; doubled each time, with full jitter."""
    backoff_max: Duration = duration("10m")
    concurrency: int = 4
    """Batches in flight at once."""
    timeout: Duration = duration("10s")
    start: str = "latest"
    """Where a new destination starts reading: latest (new events) or earliest (all kept)."""
    consent: Literal["skip", "anonymize", "ignore"] | None = None
    """An event whose person denied this destination's purpose (ads or analytics): skip
    (not sent, logged as skipped), anonymize (sent without personal data) or ignore (sent
    as it is). Null: skip. Only ad and analytics destinations have it; the operator's own
    systems (http, postgres, file, nats, redis-stream) are not gated."""

    no_anonymize: ClassVar[str | None] = None
    """Why this vendor cannot take `consent: anonymize` (an event without any match key
    is refused), or None."""

    def check(self) -> None:
        """Cross-field checks; raise ConfigError(message, path=field) on a problem."""
        from gateway.errors import ConfigError

        if self.consent == "anonymize" and self.no_anonymize:
            raise ConfigError(
                f"{self.__struct_config__.tag} cannot take anonymized events: "
                f"{self.no_anonymize}; use skip (the default) or ignore",
                path="consent",
            )

        for name in ("max_attempts", "concurrency"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError("must be at least 1", path=name)
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError("must be at least 1", path="batch_size")
        if self.start not in ("latest", "earliest"):
            raise ConfigError("must be latest or earliest", path="start")
        bad = [
            t
            for t in self.types
            if t not in ("track", "identify", "group", "page", "screen", "alias")
        ]
        if bad:
            raise ConfigError(f"unknown event type {bad[0]!r}", path="types")
        tag = self.__struct_config__.tag
        kind = DESTINATION_TYPES.get(tag) if isinstance(tag, str) else None
        if self.consent is not None and kind is not None and kind.consent_purpose is None:
            raise ConfigError(
                f"a {tag} destination is one of your own systems, not an ad or analytics "
                "vendor: it gets every event and has no consent setting (remove it)",
                path="consent",
            )


# --- registry --------------------------------------------------------------------------------

DESTINATION_TYPES: dict[str, type[Destination]] = {}


def register(cls: type[Destination]) -> type[Destination]:
    tag = cls.config_type.__struct_config__.tag
    if not isinstance(tag, str):
        raise TypeError(f"{cls.__name__}.config_type needs a string tag")
    DESTINATION_TYPES[tag] = cls
    return cls


# --- routing and shaping ---------------------------------------------------------------------


class Route:
    """Which events a destination gets, decided from the stream entry's plain fields."""

    def __init__(self, config: DestinationConfig) -> None:
        self.types = frozenset(config.types)
        self.sources = frozenset(config.sources)
        patterns = config.events or ["*"]
        self.match_all = "*" in patterns
        self.names = re.compile("|".join(fnmatch.translate(p) for p in patterns))

    def wants(self, source: str, kind: str, name: str) -> bool:
        if self.sources and source not in self.sources:
            return False
        if self.types and kind not in self.types:
            return False
        if self.match_all:
            return True
        return bool(self.names.match(name if kind == "track" else kind))


class Shaper:
    """Renames and allow-lists properties (and traits) of an event dict."""

    def __init__(self, config: DestinationConfig) -> None:
        self.rename = dict(config.rename_properties)
        self.allow = set(config.allow_properties) if config.allow_properties is not None else None

    @property
    def noop(self) -> bool:
        return not self.rename and self.allow is None

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        if self.noop:
            return event
        out = dict(event)
        for key in ("properties", "traits"):
            values = event.get(key)
            if not values:
                continue
            renamed = {self.rename.get(k, k): v for k, v in values.items()}
            if self.allow is not None:
                renamed = {k: v for k, v in renamed.items() if k in self.allow}
            out[key] = renamed
        return out


# --- consent ----------------------------------------------------------------------------------

CONSENT_FIELDS: dict[str, tuple[str, ...]] = {
    "ads": ("ad_user_data", "ad_storage"),
    "analytics": ("analytics_storage",),
}
"""Google consent mode's types that, denied, withhold an event from a purpose's destinations:
ad_storage ("storage related to advertising") and ad_user_data ("sending user data related
to advertising"); analytics_storage ("storage related to analytics").
https://support.google.com/analytics/answer/13802165"""


def consent_denied(event: dict[str, Any], purpose: str | None) -> list[str]:
    """The consent types of `purpose` that the event's person denied ([]: none, or no
    answer at all). Read with the identity layer's `consent_of`, so that Segment's
    `categoryPreferences` count too."""
    if purpose is None:
        return []
    context = event.get("context")
    consent = consent_of(context.get("consent") if isinstance(context, dict) else None)
    return [name for name in CONSENT_FIELDS[purpose] if consent.get(name) == "denied"]


PERSONAL_PROPERTIES = frozenset(
    {
        # what destinations/pii.py `person` reads as a match key
        *("email", "phone", "name", "firstName", "first_name", "lastName", "last_name"),
        *("address", "city", "zip", "postal_code", "postalCode", "country"),
        *("username", "birthday", "ip", "$ip"),
        # click ids a sender put in the properties (pii.click_ids reads them)
        *CLICK_IDS,
        *("fbclid", "msclkid", "li_fat_id"),
    }
)
"""Properties that say who the person is, dropped by `anonymize`."""
PERSONAL_CONTEXT = frozenset(
    # profile: the first and last landing (their URLs and click ids); externalIds: the
    # person's ids at vendors (stripe:cus_...)
    {"traits", "ip", "userAgent", "userAgentData", "clickIds", "location", "profile", "externalIds"}
)
"""context fields that say who the person is (or let a platform find out), dropped too."""


def anonymize(event: dict[str, Any], keep_ids: bool) -> dict[str, Any]:
    """The event without personal data, for a person who denied the destination's purpose
    under `consent: anonymize`: no traits, IP, user agent, click ids or device ids, no
    email, phone, name or address in the properties; userId and anonymousId only when
    `keep_ids` (an analytics tool needs one to count anything). For an ad platform this
    leaves no match key: it gets the conversion, not the person. A new dict (the stored
    event is left as it is, for retries)."""
    out = {k: v for k, v in event.items() if k not in ("traits", "userId", "anonymousId")}
    if keep_ids:
        for key in ("userId", "anonymousId"):
            if key in event:
                out[key] = event[key]
    if isinstance(event.get("traits"), dict):
        out["traits"] = {}  # identify keeps its shape, with nothing about the person
    context = event.get("context")
    if isinstance(context, dict):
        out["context"] = {k: v for k, v in context.items() if k not in PERSONAL_CONTEXT}
        device = context.get("device")
        if isinstance(device, dict):
            out["context"]["device"] = {
                k: v for k, v in device.items() if k not in ("id", "advertisingId", "token")
            }
    props = event.get("properties")
    if isinstance(props, dict):
        out["properties"] = {k: v for k, v in props.items() if k not in PERSONAL_PROPERTIES}
    return out


# --- destinations -----------------------------------------------------------------------------


class Destination:
    """One configured destination (`destinations.<name>` in config.yaml)."""

    config_type: ClassVar[type[DestinationConfig]]
    max_batch: ClassVar[int] = 100
    """The vendor's limit of events per request."""
    max_bytes: ClassVar[int] = 1024 * 1024
    """The vendor's limit of bytes per request."""
    consent_purpose: ClassVar[str | None] = None
    """What the person must not have denied for an event to come here: "ads", "analytics",
    or None (the operator's own system: consent does not apply)."""

    def __init__(self, name: str, config: DestinationConfig) -> None:
        self.name = name
        self.config = config
        self.consent = "ignore" if self.consent_purpose is None else config.consent or "skip"
        self.batch_size = min(config.batch_size or self.max_batch, self.max_batch)
        self.batch_bytes = min(int(config.batch_bytes or self.max_bytes), self.max_bytes)

    async def start(self) -> None:
        """Open connections (called once before the first send)."""

    async def close(self) -> None:
        """Release connections."""

    async def send(self, batch: list[dict[str, Any]], now: float) -> list[Result]:
        """Send events (Segment-shaped dicts); one Result per event, in order."""
        raise NotImplementedError


class HttpDestination(Destination):
    """A destination behind an HTTP API: subclasses say what to send and what came back."""

    split_statuses: ClassVar[frozenset[int]] = frozenset({400, 413, 422})
    """Refusals of a whole batch that may be about one event in it: the batch is bisected
    to find it (401, 403, 404 are about the destination, not the events: never split)."""

    def __init__(self, name: str, config: DestinationConfig) -> None:
        super().__init__(name, config)
        self.client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if self.client is None:
            limit = max(1, self.config.concurrency)
            self.client = httpx.AsyncClient(
                timeout=float(self.config.timeout),
                limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
                headers={"user-agent": "webhook-gateway"},
            )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def request(self, batch: list[dict[str, Any]], now: float) -> tuple[str, dict[str, str], bytes]:
        """(url, headers, body) for a batch. Pure: no I/O."""
        raise NotImplementedError

    def results(self, response: httpx.Response, batch: list[dict[str, Any]]) -> list[Result]:
        """Per-event results of a 2xx or 4xx reply (vendors with partial failures override)."""
        if response.is_success:
            return [OK] * len(batch)
        return [fail(_why(response), response.status_code)] * len(batch)

    def splittable(self, response: httpx.Response, results: list[Result]) -> bool:
        """Whether a batch refused whole should be bisected to find the bad events."""
        return response.status_code in self.split_statuses and all(
            r.outcome == "fail" for r in results
        )

    max_event_age: ClassVar[float | None] = None
    """Events older than this (seconds) are never sent: the vendor would refuse them
    forever. `age_limit` says which limit, for the dead letter's reason."""
    age_limit: ClassVar[str] = ""

    def precheck(self, event: dict[str, Any], now: float) -> Result | None:
        """A reason never to send this event (by default: older than `max_event_age`)."""
        if self.max_event_age is not None and (
            now - unix_seconds(event.get("timestamp"), now) > self.max_event_age
        ):
            return fail(f"older than {self.age_limit}")
        return None

    async def send(self, batch: list[dict[str, Any]], now: float) -> list[Result]:
        results: list[Result | None] = [self.precheck(e, now) for e in batch]
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            for index, result in zip(
                todo, await self._send([batch[i] for i in todo], now), strict=True
            ):
                results[index] = result
        return [r or OK for r in results]

    async def _send(self, batch: list[dict[str, Any]], now: float) -> list[Result]:
        url, headers, body = self.request(batch, now)
        return await self.post(url, headers, body, batch, now, self._send)

    @staticmethod
    async def split_send(
        batch: list[dict[str, Any]],
        now: float,
        kinds: Sequence[str],
        special: Callable[[list[dict[str, Any]], float], Awaitable[list[Result]]],
        rest: Callable[[list[dict[str, Any]], float], Awaitable[list[Result]]],
    ) -> list[Result]:
        """Events of `kinds` (types) through `special`, the others through `rest` (two
        endpoints of one vendor); the results keep the batch's order."""
        chosen = [i for i, e in enumerate(batch) if e["type"] in kinds]
        others = [i for i, e in enumerate(batch) if e["type"] not in kinds]
        results: list[Result] = [OK] * len(batch)
        for indexes, send in ((others, rest), (chosen, special)):
            if indexes:
                part = await send([batch[i] for i in indexes], now)
                for i, result in zip(indexes, part, strict=True):
                    results[i] = result
        return results

    async def post(
        self,
        url: str,
        headers: dict[str, str],
        body: bytes,
        batch: list[dict[str, Any]],
        now: float,
        resend: Callable[[list[dict[str, Any]], float], Awaitable[list[Result]]],
    ) -> list[Result]:
        """POST one request for `batch` and classify the reply, event by event.

        `resend` sends a part of the batch again: a batch refused whole is bisected with it.
        """
        assert self.client is not None, "start() first"
        try:
            response = await self.client.post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            return [retry(f"timed out after {float(self.config.timeout):g} s")] * len(batch)
        except httpx.TransportError as e:
            return [retry(f"connection failed: {type(e).__name__}")] * len(batch)
        status = response.status_code
        if status in RETRY_STATUSES:
            after = retry_after(response.headers.get("retry-after"), now)
            return [retry(_why(response), after, status)] * len(batch)
        results = self.results(response, batch)
        if self.splittable(response, results) and len(batch) > 1:
            # One bad event fails the whole request at some vendors: bisect to find it,
            # so that the good ones still go through.
            half = len(batch) // 2
            return await resend(batch[:half], now) + await resend(batch[half:], now)
        # Every event's result carries the reply's HTTP status, for the delivery log.
        sent = Result("ok", status=status)
        return [
            sent if r is OK else r if r.status is not None else replace(r, status=status)
            for r in results
        ]


RETRY_STATUSES = frozenset({408, 425, 429} | set(range(500, 600)) - {501, 505})
"""Replies worth sending again: timeouts, too early, rate limits, and every 5xx (a proxy's
too: Cloudflare's 520-524 say the vendor's origin was down or slow) except 501 Not
Implemented and 505 HTTP Version Not Supported, which the same request gets forever."""


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


def _why(response: httpx.Response) -> str:
    """`HTTP 400: <first 200 characters of the reply>`."""
    text = response.text.strip().replace("\n", " ")
    why = f"HTTP {response.status_code}: {text[:200]}" if text else f"HTTP {response.status_code}"
    if response.status_code in (401, 403):
        why += " (check this destination's credentials: every event will fail the same way)"
    return why


def encode_json(value: Any) -> bytes:
    return msgspec.json.encode(value)


def unix_seconds(iso: str | None, default: float) -> float:
    """Unix seconds from the event's ISO timestamp."""
    if not iso:
        return default
    try:
        from datetime import datetime

        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default
