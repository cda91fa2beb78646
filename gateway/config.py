"""config.yaml as typed msgspec structs, decoded and checked once at start-up.

Each source's settings are decoded by the struct its `type:` registers (see
gateway/sources/), so a typo such as `secretz` is an error naming the key, and every error
names the file, line and key path.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from typing import Any, Literal, get_args, get_origin

import msgspec

from normalizers.mapping import Mapper, MappingError, MappingRule, MappingTest

from .errors import ConfigError
from .ratelimit import Limit
from .tracking import PlannedEvent, SchemaMode
from .yamlconf import Document, Path, load_document

DEFAULT_CONFIG = "config.yaml"

# --- value types written as text in YAML -------------------------------------------------

DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG][iI]?[bB]?|[bB])?\s*$")
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2, "mi": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3,
}  # fmt: skip


_MAX_SECONDS = 10 * 365 * 86400


class Duration(float):
    """Seconds, written as `300`, `30s`, `5m`, `12h`, `7d` or `500ms`."""

    @classmethod
    def parse(cls, value: Any) -> Duration:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if 0 <= value <= _MAX_SECONDS:
                return cls(value)
        elif m := DURATION_RE.match(value) if isinstance(value, str) else None:
            seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            if seconds <= _MAX_SECONDS:
                return cls(seconds)
        # The value is not repeated: it may have come from an environment variable.
        raise ValueError("expected a duration such as 30s, 5m, 12h or 7d (at most 10 years)")

    def __repr__(self) -> str:
        return f"{float(self):g}s"


class ByteSize(int):
    """Bytes, written as `1048576`, `512KiB`, `1MiB` or `1MB` (KB/MB are powers of 1000)."""

    @classmethod
    def parse(cls, value: Any) -> ByteSize:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return cls(value)
        m = SIZE_RE.match(value) if isinstance(value, str) else None
        if not m:
            raise ValueError("expected a size such as 1048576, 512KiB or 1MiB")
        return cls(int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()]))


class Secret:
    """A secret string that never shows itself in a repr, a log line or an error."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    @classmethod
    def parse(cls, value: Any) -> Secret:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError('expected a secret string (write it as "${ENV_VAR}")')
        value = str(value)
        if not value.strip():
            raise ValueError("a secret must not be empty")
        return cls(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


_CUSTOM = {
    Duration: Duration.parse,
    ByteSize: ByteSize.parse,
    Secret: Secret.parse,
    Limit: Limit.parse,
}


def _dec_hook(tp: type, value: Any) -> Any:
    parse = _CUSTOM.get(tp)
    if parse is None:
        raise NotImplementedError
    return parse(value)


def duration(text: str) -> Any:
    """A struct field defaulting to the duration `text` (shown as such in the JSON Schema)."""
    factory = lambda: Duration.parse(text)  # noqa: E731
    factory.shown = text  # type: ignore[attr-defined]
    return msgspec.field(default_factory=factory)


def size(text: str) -> Any:
    """A struct field defaulting to the size `text`."""
    factory = lambda: ByteSize.parse(text)  # noqa: E731
    factory.shown = text  # type: ignore[attr-defined]
    return msgspec.field(default_factory=factory)


# --- the config shape ---------------------------------------------------------------------


class SourceConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag_field="type"):
    """Settings every source type has. Each type subclasses this with `tag="<type>"`."""

    secrets: list[Secret]
    """Signing secrets; list several while rotating (any of them may match)."""
    dedupe_ttl: Duration = duration("7d")
    """How long a delivery id is remembered; must cover the vendor's retry window."""
    max_body: ByteSize = size("1MiB")
    """Larger bodies are refused with 413 while being read."""
    raw_retention: int = 100_000
    """Raw deliveries kept in the source's stream (approximate, oldest trimmed first)."""
    keep_headers: list[str] = []
    """Extra request headers stored with each raw delivery (besides the vendor's own and
    those a mapping reads with header(), which are kept without it)."""
    user_id: str | None = None
    """JMESPath to the customer's own id in the payload (becomes userId); see docs/events.md."""
    mappings: list[MappingRule] = []
    """Rules that map payloads to events (JMESPath); the first that matches wins."""
    tests: list[MappingTest] = []
    """Examples for `webhook-gateway test`: a payload and the events it must become."""
    schema: SchemaMode | None = None
    """The tracking plan's mode for this source (default: the top-level `schema:`)."""

    def check(self) -> None:
        """Cross-field checks; raise ConfigError(message, path=field) on a problem."""
        if not self.secrets:
            raise ConfigError("at least one secret is required", path="secrets")
        self.check_common()

    def check_common(self) -> None:
        """The checks of every source type, whatever it authenticates with."""
        if self.raw_retention < 1:
            raise ConfigError("must be at least 1", path="raw_retention")
        try:
            Mapper(self.mappings, self.user_id)
        except MappingError as e:
            raise ConfigError(str(e), path=e.path) from None
        for i, test in enumerate(self.tests):
            if (test.payload is None) == (test.payload_file is None):
                raise ConfigError(
                    "give `payload:` or `payload_file:` (one of them)", path=f"tests[{i}]"
                )


class WorkerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    batch: int = 200
    """Raw deliveries read per round trip."""
    claim_idle: Duration = duration("60s")
    """A delivery read by a worker that has not finished it for this long is taken over
    by another (after a crash)."""


class IdentityConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The first-party visitor id (POST /v1/id) and what is kept about a visitor."""

    cookie_name: str = "gw_aid"
    """The cookie holding the visitor's anonymousId (set by the gateway, HttpOnly)."""
    cookie_domain: str | None = None
    """e.g. `example.com` to share it with every subdomain; default: the gateway's host."""
    cookie_max_age: Duration = duration("400d")
    """How long the cookie lives (browsers cap it at 400 days)."""
    cookie_secure: bool = True
    """Send the cookie over HTTPS only (turn off only for local development on http)."""
    consent: Literal["required", "implied"] = "required"
    """required: nothing about advertising (click ids) is kept until the visitor grants
    ad_storage; implied: kept unless the visitor denies it."""
    anonymous_ttl: Duration = duration("400d")
    """How long what is known about a visitor who never logged in is kept after their
    last visit (their visitor record, and a profile without a userId)."""
    graph: bool = True
    """Resolve every event against the identity graph (gateway/graph.py) and enrich it
    with what the person's profile knows; false: events go out as normalized."""
    match_keys: bool = True
    """Keep the person's email, phone, name and address (plain) in the profile, to put
    on their later events for ad platforms' matching; false keeps only the hashes the
    graph links on."""
    limits: dict[str, int] = {}
    """Most identifiers of one type in a profile (user, email, phone, ext, anon);
    default user: 1 (two userIds never merge), email: 20, phone: 20, ext: 50, anon: 100."""
    blocked: list[str] = []
    """More values never linked (besides -1, null, undefined, anonymous, zeroes):
    shared addresses such as a support desk's or a test account's email."""
    phone_region: str | None = None
    """ISO country (US, DE) for phone numbers written without a country code."""

    def check(self) -> None:
        if float(self.cookie_max_age) > 400 * 86400:
            raise ConfigError("browsers cap cookies at 400 days", path="cookie_max_age")
        if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", self.cookie_name):
            raise ConfigError("letters, digits, '_' and '-' only", path="cookie_name")
        kinds = ("user", "email", "phone", "ext", "anon")
        for kind, cap in self.limits.items():
            if kind not in kinds:
                raise ConfigError(
                    f"not an identifier type (one of {', '.join(kinds)})", path=f"limits.{kind}"
                )
            if cap < 0:
                raise ConfigError("a limit is 0 or more", path=f"limits.{kind}")
        if self.phone_region is not None and not re.fullmatch(r"[A-Z]{2}", self.phone_region):
            raise ConfigError("an ISO 3166 alpha-2 country code (US, DE)", path="phone_region")


class OperatorConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Where the operator surfaces (the console, /metrics) answer."""

    listen: str = "127.0.0.1:9180"
    """host:port of a listener of their own (the default answers this machine only; a
    Prometheus elsewhere needs e.g. 0.0.0.0:9180 behind a firewall), or `public`: on the
    webhook port, the console behind its login and /metrics behind metrics_token."""
    metrics_token: Secret | None = None
    """A token GET /metrics requires as `Authorization: Bearer <token>`: always with
    listen: public; on an own listener, only when set."""

    def address(self) -> tuple[str, int] | None:
        """(host, port) of the operator listener; None for `public`."""
        if self.listen == "public":
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    def check(self) -> None:
        if self.listen != "public":
            host, _, port = self.listen.rpartition(":")
            if not host or not port.isdigit() or not 0 <= int(port) < 65536:
                raise ConfigError(
                    "host:port (such as 127.0.0.1:9180 or 0.0.0.0:9180; port 0: any free one), "
                    "or public",
                    path="listen",
                )
        elif self.metrics_token is None:
            raise ConfigError(
                "with listen: public, /metrics answers on the webhook port, to the internet: "
                'set metrics_token: "${GATEWAY_METRICS_TOKEN}" (a Prometheus sends it as a '
                "bearer token), or give the operator surfaces a listener of their own",
                path="metrics_token",
            )


class ConsoleUser(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    password: Secret
    """From the environment: "${CONSOLE_ALICE_PASSWORD}"."""
    role: Literal["read-only", "operator"] = "read-only"
    """read-only: looks at everything; operator: may also replay, purge and rerun."""


class ConsoleConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The operator console (docs/console.md), served on the operator listener."""

    enabled: bool = False
    """Serve the console at /console/ (off by default)."""
    users: dict[str, ConsoleUser] = {}
    """Who may log in: name -> password (from the environment) and role."""
    session_secret: Secret | None = None
    """Signs the session cookies; default: derived from the users' passwords (so every
    process agrees, and changing a password ends the sessions it opened)."""
    session_ttl: Duration = duration("12h")
    """A login lasts this long."""
    show_bodies: bool = False
    """Show stored webhook bodies and events in full; off: only their shape, every value
    masked (bodies hold personal data)."""
    show_personal_data: bool = False
    """Show the identity graph's personal data (emails, phones, names) unmasked."""
    cookie_secure: bool | None = None
    """Mark the session cookie Secure (HTTPS only); default: when the login came over
    HTTPS. Set true behind a proxy that ends TLS and forwards plain HTTP."""

    def check(self) -> None:
        if self.enabled and not self.users:
            raise ConfigError(
                "the console is enabled but nobody may log in: add users: {alice: {password: "
                '"${CONSOLE_ALICE_PASSWORD}", role: operator}}',
                path="users",
            )


class SlackNotifier(
    msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag_field="type", tag="slack"
):
    """A Slack incoming webhook (https://api.slack.com/messaging/webhooks)."""

    url: Secret
    """The incoming webhook's URL (it is the credential): "${SLACK_WEBHOOK_URL}"."""
    timeout: Duration = duration("10s")

    def check(self) -> None:
        _check_url(self.url.reveal(), "url")


class WebhookNotifier(
    msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag_field="type", tag="webhook"
):
    """A JSON POST signed per Standard Webhooks (webhook-id, webhook-timestamp,
    webhook-signature), verifiable with any Standard Webhooks library."""

    url: Secret
    """Where to POST (a Secret: such URLs often carry a token)."""
    secret: Secret
    """The Standard Webhooks signing secret (whsec_ + base64): "${ALERT_WEBHOOK_SECRET}"."""
    timeout: Duration = duration("10s")

    def check(self) -> None:
        from .sources.standard_webhooks import valid_secret

        _check_url(self.url.reveal(), "url")
        if not valid_secret(self.secret.reveal()):
            raise ConfigError("not a Standard Webhooks secret (whsec_ + base64)", path="secret")


class EmailNotifier(
    msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag_field="type", tag="email"
):
    """E-mail through an SMTP server."""

    host: str
    """The SMTP server, e.g. smtp.example.com."""
    port: int = 587
    starttls: bool = True
    """Upgrade the connection with STARTTLS (port 587); false: plain, or `tls`."""
    tls: bool = False
    """Implicit TLS from the first byte (port 465)."""
    username: str | None = None
    password: Secret | None = None
    """From the environment: "${SMTP_PASSWORD}"."""
    from_: str = msgspec.field(name="from")
    """The sender address."""
    to: list[str]
    """Recipients."""
    timeout: Duration = duration("30s")

    def check(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError("a TCP port (1 to 65535)", path="port")
        if self.tls and self.starttls:
            raise ConfigError(
                "tls: true (port 465) and starttls: true (port 587) exclude each other",
                path="starttls",
            )
        if (self.username is None) != (self.password is None):
            raise ConfigError("give both username and password, or neither", path="password")
        if not self.to:
            raise ConfigError("at least one recipient", path="to")
        for i, address in enumerate([self.from_, *self.to]):
            if "@" not in address:
                raise ConfigError(
                    "not an e-mail address", path="from" if i == 0 else f"to[{i - 1}]"
                )


Notifier = SlackNotifier | WebhookNotifier | EmailNotifier

AlertCondition = Literal[
    "destination_failure_rate",
    "dead_letters",
    "lag",
    "quarantine",
    "source_silent",
    "redis_unavailable",
]
_ALERT_SUBJECT: dict[str, str | None] = {
    "destination_failure_rate": "destination",
    "dead_letters": "destination",
    "lag": "destination",
    "quarantine": "source",
    "source_silent": "source",
    "redis_unavailable": None,
}
ALERT_STATE_KEPT = 8 * 86400
"""Seconds an alert state unchanged is kept in Redis (gateway/alerts/state.py)."""
ALERT_WINDOW_UNITS = ((600, 5), (26 * 3600, 60), (8 * 86400, 3600))
"""(longest window, bucket seconds): windows read the activity buckets of 5 s, 1 min or
1 h (gateway/activity.py), so a window is a multiple of the unit its length needs."""


def _check_url(url: str, path: str) -> None:
    # Parsed the way the sender will (httpx), so a URL it would refuse (a bad port, no
    # host) fails here, at start-up, not at the first alert. The URL is not repeated in
    # the message: it is often a secret.
    import httpx

    try:
        parsed = httpx.URL(url)  # (checks the port, too)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise ConfigError(
            "not a valid URL (check the host and the port, e.g. https://host:8443/path)",
            path=path,
        ) from None
    if parsed.scheme not in ("http", "https"):
        raise ConfigError("must be an http:// or https:// URL", path=path)
    if not parsed.host:
        raise ConfigError("the URL has no host (https://host/path)", path=path)


class AlertRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One condition on what the gateway counts, and who hears of it (docs/alerts.md)."""

    name: str
    """Shown in every notification; unique among the rules."""
    when: AlertCondition
    """destination_failure_rate, dead_letters, lag, quarantine, source_silent or
    redis_unavailable."""
    destination: str | None = None
    """The destination it watches, or "*": each destination on its own."""
    source: str | None = None
    """The source it watches, or "*": each source on its own."""
    above: float | None = None
    """Fires when the value is above this (failure rate: 0 to 1; dead letters and
    quarantine: a count over the window, default 0; lag: events behind)."""
    min_events: int = 10
    """destination_failure_rate: fewer attempts than this in the window never fire."""
    window: Duration = duration("5m")
    """What the counts are taken over (a multiple of 5 s up to 10m, of 1m up to 26h, of
    1h up to 8d)."""
    longer_than: str | None = None
    """source_silent: a duration (2h), or `usual` (derived from the source's own gaps)."""
    for_: Duration = msgspec.field(name="for", default_factory=lambda: Duration(0))
    """The condition must hold this long before it fires."""
    resolve_after: Duration = duration("5m")
    """The condition must be clear this long before it resolves (a flap back within it
    continues the same incident, silently)."""
    notify: list[str]
    """Names from alerts.notify."""

    def silent_after(self) -> float | None:
        """longer_than in seconds; None for `usual`."""
        if self.longer_than is None or self.longer_than == "usual":
            return None
        return float(Duration.parse(self.longer_than))

    def check(self, sources: set[str], destinations: set[str], notifiers: set[str]) -> None:
        subject = _ALERT_SUBJECT[self.when]
        names = {"source": sources, "destination": destinations}
        for kind in ("source", "destination"):
            value = getattr(self, kind)
            if value is None:
                if kind == subject:
                    raise ConfigError(
                        f'{self.when} watches a {kind}: give its name, or "*" for each',
                        path=kind,
                    )
            elif kind != subject:
                raise ConfigError(f"{self.when} does not watch a {kind}", path=kind)
            elif value != "*" and value not in names[kind]:
                valid = ", ".join(sorted(names[kind])) or f"none: no {kind}s are configured"
                raise ConfigError(f'no {kind} {value!r} (valid: "*", {valid})', path=kind)
        if self.when in ("destination_failure_rate", "lag") and self.above is None:
            raise ConfigError(f"{self.when} needs `above:` (the threshold)", path="above")
        if self.when == "destination_failure_rate" and not 0 <= (self.above or 0) < 1:
            raise ConfigError(
                "a failure rate from 0 to 1 (0.5: half of the attempts)", path="above"
            )
        if self.when in ("source_silent", "redis_unavailable") and self.above is not None:
            raise ConfigError(f"{self.when} has no threshold", path="above")
        if self.min_events < 1:
            raise ConfigError("must be at least 1", path="min_events")
        if self.when == "source_silent":
            if self.longer_than is None:
                raise ConfigError("give longer_than: a duration (2h) or usual", path="longer_than")
            if self.longer_than != "usual":
                try:
                    seconds = Duration.parse(self.longer_than)
                except ValueError as e:
                    raise ConfigError(f"{e}, or usual", path="longer_than") from None
                _check_window(seconds, "longer_than")
        elif self.longer_than is not None:
            raise ConfigError("only source_silent has longer_than", path="longer_than")
        else:
            _check_window(float(self.window), "window")
        # A state untouched for 8 days is dropped (gateway/alerts/state.py): a pending or
        # resolving state waiting that long would start over instead of moving on.
        for key, value in (("for", self.for_), ("resolve_after", self.resolve_after)):
            if float(value) >= ALERT_STATE_KEPT:
                raise ConfigError(
                    "must be under 8d (an alert state unchanged for 8 days is dropped)",
                    path=key,
                )
        if not self.notify:
            raise ConfigError("name at least one notifier (from alerts.notify)", path="notify")
        for i, name in enumerate(self.notify):
            if name not in notifiers:
                valid = ", ".join(sorted(notifiers)) or "none: alerts.notify is empty"
                raise ConfigError(f"no notifier {name!r} in alerts.notify (valid: {valid})",
                                  path=f"notify[{i}]")  # fmt: skip


def _check_window(seconds: float, path: str) -> None:
    for longest, unit in ALERT_WINDOW_UNITS:
        if seconds <= longest:
            if seconds < unit or seconds % unit:
                what = {5: "5 s", 60: "1 minute", 3600: "1 hour"}[unit]
                raise ConfigError(
                    f"must be a multiple of {what} for this length (the activity counts "
                    f"are kept in buckets of {what})",
                    path=path,
                )
            return
    raise ConfigError("at most 8d (how long the hourly activity counts are kept)", path=path)


class AlertsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Alert rules and where they notify (docs/alerts.md)."""

    evaluate_every: Duration = duration("15s")
    """How often the rules are evaluated (by one process of all that share the Redis)."""
    notify: dict[str, Notifier] = {}
    """Where notifications go: name -> {type: slack | webhook | email, ...}."""
    rules: list[AlertRule] = []
    """The conditions; each names who it notifies."""
    console_url: str | None = None
    """The console's address as operators reach it (https://gw.example.com:9180/console/),
    linked from every notification; default: no link."""

    def check(self, sources: Collection[str] = (), destinations: Collection[str] = ()) -> None:
        if float(self.evaluate_every) < 1:
            raise ConfigError("at least 1s", path="evaluate_every")
        if self.console_url is not None:
            _check_url(self.console_url, "console_url")
        for name, notifier in self.notify.items():
            try:
                notifier.check()
            except ConfigError as e:
                raise ConfigError(e.message, path=f"notify.{name}.{e.path}") from None
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if not rule.name.strip():
                raise ConfigError("a rule needs a name", path=f"rules[{i}].name")
            if rule.name in seen:
                raise ConfigError(f"two rules named {rule.name!r}", path=f"rules[{i}].name")
            seen.add(rule.name)
            try:
                rule.check(set(sources), set(destinations), set(self.notify))
            except ConfigError as e:
                raise ConfigError(e.message, path=f"rules[{i}].{e.path}") from None
            # Counts are only looked at once per evaluate_every: a shorter window would
            # miss what happened between two evaluations.
            windowed = rule.when in ("destination_failure_rate", "dead_letters", "quarantine")
            if windowed and float(rule.window) < float(self.evaluate_every):
                raise ConfigError(
                    f"shorter than alerts.evaluate_every ({float(self.evaluate_every):g}s): "
                    "counts between two evaluations would never be seen; make the window "
                    "at least evaluate_every",
                    path=f"rules[{i}].window",
                )


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    redis_url: str = ""
    """Redis (or Valkey) URL: redis://host:6379/0 (one Redis), redis+cluster://host:port,...
    (a Redis Cluster), redis+sentinel://host:port,.../<master name> (Sentinel); empty runs
    an in-memory store for development only."""
    durability: Literal["memory", "replicated"] = "memory"
    """When a webhook is answered 200: memory (the primary has it) or replicated (a replica
    confirmed it too, within redis_timeout; else 503 and the vendor retries)."""
    key_prefix: str = "gw"
    """Prefix of every Redis key the gateway writes."""
    redis_timeout: Duration = duration("2s")
    """How long a request waits for Redis before answering 503 (the vendor retries)."""
    sources: dict[str, SourceConfig] = {}
    """Inbound webhook sources, served at POST /webhooks/{name}."""
    destinations: dict[str, Any] = {}
    """Where normalized events go (destinations/: posthog, segment, postgres, http, ...)."""
    events: dict[str, PlannedEvent] = {}
    """The tracking plan: allowed event names and their properties."""
    schema: SchemaMode = "off"
    """enforce: events breaking the plan go to the quarantine; warn: logged; off: no checks."""
    events_retention: int = 500_000
    """Events kept in the events stream (approximate); destinations read from it."""
    events_partitions: int | None = None
    """How many streams (partitions, 1 to 1024) the events stream is split into, each on
    its own Redis Cluster hash tag; every event of one person (its userId, else its
    anonymousId) goes to the same one, in order. Default: 1 on one Redis or Sentinel, 16
    on a Redis Cluster. events_retention is shared out evenly between them. Changing it
    later: drain first (docs/operations.md, "Partitions of the events stream")."""
    dead_letter_retention: int = 1_000_000
    """Dead letters kept (all destinations together, approximate): size it so that a
    destination failing everything cannot push out the others' before you look."""
    delivery_log_retention: Duration = duration("7d")
    """How long the delivery log keeps what a delivery became and each send attempt;
    0 turns it off."""
    worker: WorkerConfig = msgspec.field(default_factory=lambda: WorkerConfig())
    """How the normalize worker reads the raw streams."""
    identity: IdentityConfig = msgspec.field(default_factory=lambda: IdentityConfig())
    """The first-party visitor id cookie, consent mode and how long visitors are kept."""
    operator: OperatorConfig = msgspec.field(default_factory=lambda: OperatorConfig())
    """Where the console and /metrics answer (not the webhook port, by default)."""
    console: ConsoleConfig = msgspec.field(default_factory=lambda: ConsoleConfig())
    """The operator console: off by default."""
    alerts: AlertsConfig = msgspec.field(default_factory=lambda: AlertsConfig())
    """Alert rules on what the gateway counts, and where they notify."""

    def partition_count(self) -> int:
        """The number of events stream partitions in effect (events_partitions, or its
        default for the kind of Redis redis_url names)."""
        if self.events_partitions is not None:
            return self.events_partitions
        scheme = self.redis_url.partition("://")[0].lower()
        return 16 if scheme in ("redis+cluster", "rediss+cluster") else 1


_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def source_types() -> dict[str, type[SourceConfig]]:
    from .sources import SOURCE_TYPES

    return {name: cls.config_type for name, cls in SOURCE_TYPES.items()}


def load_config(path: str = DEFAULT_CONFIG, env: Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate a config file; raises ConfigError naming file:line: key."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(
            "config file not found (pass --config PATH, or create config.yaml)", path
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file: {e.strerror}", path) from None
    return parse_config(text, path, env)


def parse_config(text: str, file: str = "", env: Mapping[str, str] | None = None) -> Config:
    doc = load_document(text, file, env)
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error("the config must be a mapping of keys (redis_url:, sources:, ...)", ())
    sources = data.get("sources") or {}
    if not isinstance(sources, dict):
        raise doc.error("must be a mapping of source name to settings", ("sources",))
    destinations = data.get("destinations") or {}
    if not isinstance(destinations, dict):
        raise doc.error("must be a mapping of destination name to settings", ("destinations",))
    plan = data.get("events") or {}
    if not isinstance(plan, dict):
        raise doc.error("must be a mapping of event name to its properties", ("events",))
    top = _convert(doc, {**data, "sources": {}, "destinations": {}, "events": {}}, Config, ())
    _check_store(doc, top)
    for section, part in (
        ("identity", top.identity),
        ("operator", top.operator),
        ("console", top.console),
    ):
        try:
            part.check()
        except ConfigError as e:
            raise doc.error(e.message, (section, *_parse_path(e.path))) from None
    try:  # alerts name sources and destinations: checked against the configured ones
        top.alerts.check(
            [n for n in sources if isinstance(n, str)],
            [n for n in destinations if isinstance(n, str)],
        )
    except ConfigError as e:
        raise doc.error(e.message, ("alerts", *_parse_path(e.path))) from None
    for path, value in (
        (("events_retention",), top.events_retention),
        (("dead_letter_retention",), top.dead_letter_retention),
        (("worker", "batch"), top.worker.batch),
    ):
        if value < 1:
            raise doc.error("must be at least 1", path)
    if top.events_partitions is not None and not 1 <= top.events_partitions <= 1024:
        raise doc.error(
            "must be from 1 to 1024 (streams the events are split into; leave it out for "
            "the default: 1 on one Redis, 16 on a Redis Cluster)",
            ("events_partitions",),
        )
    return msgspec.structs.replace(
        top,
        sources={
            name: _component(doc, "sources", name, raw, source_types())
            for name, raw in sources.items()
        },
        destinations={
            name: _component(doc, "destinations", name, raw, destination_types())
            for name, raw in destinations.items()
        },
        # One by one, so that an error names the event it is about.
        events={
            name: _convert(doc, spec if spec is not None else {}, PlannedEvent, ("events", name))
            for name, spec in plan.items()
        },
    )


def _check_store(doc: Document, config: Config) -> None:
    from .store import parse_redis_url

    if config.redis_url:
        try:
            parse_redis_url(config.redis_url)
        except ValueError as e:
            raise doc.error(f"{e} (or empty for the in-memory store)", ("redis_url",)) from None
    elif config.durability == "replicated":
        raise doc.error(
            "the in-memory store has no replica: set redis_url, or durability: memory",
            ("durability",),
        )
    if not config.key_prefix or any(c in config.key_prefix for c in "{} "):
        raise doc.error(
            "must be non-empty, without spaces or braces (braces are Redis Cluster hash tags)",
            ("key_prefix",),
        )


def _component(doc: Document, section: str, name: Any, raw: Any, types: Mapping[str, type]) -> Any:
    """A source or destination: its settings decoded by the struct its `type:` registers."""
    what = section.removesuffix("s")
    path: Path = (section, name)
    if not isinstance(name, str) or not _SOURCE_NAME.match(name):
        used = "in the URL /webhooks/{name}" if section == "sources" else "in Redis and metrics"
        raise doc.error(f"a {what} name is used {used}: use letters, digits, '_', '-', '.'", path)
    if not isinstance(raw, dict):
        raise doc.error("must be a mapping of settings, with at least `type:`", path)
    kind = raw.get("type")
    if kind is None:
        raise doc.error(f"`type:` is required (one of: {', '.join(sorted(types))})", path)
    if kind not in types:
        hint = difflib.get_close_matches(str(kind), types, n=1)
        also = f"; did you mean {hint[0]!r}?" if hint else ""
        raise doc.error(
            f"unknown {what} type {kind!r}{also} (valid: {', '.join(sorted(types))})",
            (*path, "type"),
        )
    config = _convert(doc, raw, types[kind], path)
    try:
        config.check()
    except ConfigError as e:
        raise doc.error(e.message, (*path, *_parse_path(e.path))) from None
    return config


def _parse_path(text: str) -> list[str | int]:
    """`mappings[0].properties.x` (or `secrets.0`) -> ["mappings", 0, "properties", "x"]."""
    parts: list[str | int] = []
    for m in re.finditer(r"([^.\[\]]+)|\[(\d+)\]", text):
        name, index = m.group(1), m.group(2)
        parts.append(int(index) if index is not None else int(name) if name.isdigit() else name)
    return parts


def destination_types() -> dict[str, type]:
    from destinations import DESTINATION_TYPES

    return {name: cls.config_type for name, cls in DESTINATION_TYPES.items()}


_MSGSPEC_PATH = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def _convert(doc: Document, raw: Any, tp: type, base: Path) -> Any:
    try:
        return msgspec.convert(raw, tp, dec_hook=_dec_hook)
    except msgspec.ValidationError as e:
        message, _, where = str(e).partition(" - at `$")
        rel: list[str | int] = []
        for m in _MSGSPEC_PATH.finditer(where.rstrip("`")):
            if m.group(2) == "...":
                # A value inside a mapping, whose key msgspec does not name: find the
                # entry that fails and report it with its own path.
                _locate_in_mapping(doc, _value_at(raw, rel), _type_at(tp, rel), (*base, *rel))
                break
            rel.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        unknown = re.match(r"Object contains unknown field `(.+)`", message)
        if unknown:
            key = unknown.group(1)
            rel.append(key)
            valid = _fields_at(tp, rel[:-1])
            hint = difflib.get_close_matches(key, valid, n=1)
            message = f"unknown key `{key}`" + (f"; did you mean `{hint[0]}`?" if hint else "")
            if valid:
                message += f" (valid: {', '.join(valid)})"
        elif message.startswith(("Invalid enum value", "Invalid value")):
            # msgspec quotes the value, which may have come from a secret variable.
            valid = _choices(_type_at(tp, rel))
            message = "invalid value" + (f" (valid: {', '.join(valid)})" if valid else "")
        else:
            message = message[:1].lower() + message[1:]
        raise doc.error(message, (*base, *rel)) from None


def _value_at(raw: Any, path: list[str | int]) -> Any:
    for part in path:
        if isinstance(raw, dict):
            raw = raw.get(part)
        elif isinstance(raw, list) and isinstance(part, int) and part < len(raw):
            raw = raw[part]
        else:
            return None
    return raw


def _locate_in_mapping(doc: Document, raw: Any, tp: Any, base: Path) -> None:
    """Raise the error of the first entry of mapping `raw` that is not a valid `tp` value."""
    args = getattr(tp, "__args__", ())
    if not isinstance(raw, dict) or len(args) != 2:
        return
    for key, value in raw.items():
        _convert(doc, value, args[1], (*base, key))


def _type_at(tp: Any, path: list[str | int]) -> Any:
    """The declared type at `path` inside type `tp` (best effort, for hints)."""
    for part in path:
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            by_name = {f.encode_name: f.type for f in msgspec.structs.fields(tp)}
            tp = by_name.get(part) if isinstance(part, str) else None
        else:
            args = getattr(tp, "__args__", ())
            tp = args[-1] if args else None
    return tp


def _choices(tp: Any) -> list[str]:
    """The allowed values of a Literal (possibly inside Optional)."""
    if get_origin(tp) is Literal:
        return [str(a) for a in get_args(tp)]
    return [c for arg in get_args(tp) for c in _choices(arg)]


def _fields_at(tp: Any, path: list[str | int]) -> list[str]:
    """Names of the struct fields at `path` inside type `tp` (best effort, for hints)."""
    tp = _type_at(tp, path)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        tag_field = tp.__struct_config__.tag_field
        return [f.encode_name for f in msgspec.structs.fields(tp) if f.encode_name != tag_field]
    return []
