"""The vendor catalog's machinery: a vendor is data (`Vendor`), its signature a `Scheme`.

`type: zoom` in config.yaml needs only the secret: how Zoom signs, where its delivery id
and event type are, the handshake it asks for and how long it retries are the catalog's
knowledge. Each entry in `gateway/sources/vendors/` is a `Vendor`; `register_vendor` turns
it into a source type (a config struct tagged with its name and a `CatalogSource`
subclass), so the HTTP layer treats catalog vendors exactly like the hand-written types.

A `Scheme` verifies one way of signing (body HMAC, URL + form HMAC, a field inside the
body, a public-key signature, a JWT, a shared token) and can sign a request the same way
for `webhook-gateway send`. A handshake is a function that may answer a request instead
of storing it (Zoom's URL validation, Twitch's challenge, Dropbox's GET, ...).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import msgspec

from normalizers.generic import Spec

from ..config import Duration, Secret, SourceConfig, duration
from ..errors import ConfigError, PayloadError, SignatureError
from .base import BodyFields, Headers, Source, body_hash, delivery_id_from, register

SAMPLES = Path(__file__).parent / "samples"

QUERY = ":query"
"""Pseudo-header the front door adds: the request's raw query string (never stored)."""


@dataclass(frozen=True)
class Request:
    """What a scheme verifies: the raw request, and the public URL the vendor called."""

    body: bytes
    headers: Headers
    now: float
    url: str = ""
    """config `url:` plus the request's query string, for schemes that sign the URL."""

    @property
    def query(self) -> str:
        return self.headers.get(QUERY, "")

    def query_params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))

    def json(self) -> Any:
        """The body as JSON; PayloadError if it is not."""
        try:
            return msgspec.json.decode(self.body)
        except (msgspec.DecodeError, RecursionError):
            raise PayloadError("the body is not valid JSON") from None


@dataclass(frozen=True)
class Signed:
    """A request signed by `Scheme.sign`, for `webhook-gateway send`."""

    headers: dict[str, str]
    body: bytes
    query: str = ""


@dataclass(frozen=True)
class Reply:
    """An answer to a request that is not a delivery (a handshake), sent instead of storing."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    outcome: str = "handshake"
    """The log line's outcome: `handshake`, or e.g. `revocation` (logged as a warning)."""
    secret: str | None = None
    """A signing secret the vendor handed over (Asana's X-Hook-Secret, Notion's token),
    kept for the operator to put in `secrets:`; never logged."""

    @classmethod
    def json(cls, value: Any, **kwargs: Any) -> Reply:
        return cls(msgspec.json.encode(value), **kwargs)

    @classmethod
    def text(cls, value: str, **kwargs: Any) -> Reply:
        return cls(value.encode(), content_type="text/plain; charset=utf-8", **kwargs)


class Scheme:
    """One vendor's way of proving a request is theirs. Subclasses are frozen dataclasses."""

    key_kind: ClassVar[str] = "secret"
    """`secret` (shared, in `secrets:`) or `public_key` (in `public_keys:`)."""
    needs_url: ClassVar[bool] = False
    """The signed content includes the URL the vendor called (`url:` is required)."""
    weak: ClassVar[bool] = False
    """A shared token or password sent as is: proves knowledge, not the body's integrity."""

    def headers(self) -> tuple[str, ...]:
        """Lower-case names of the headers this scheme reads (kept with each delivery)."""
        return ()

    def with_tolerance(self, tolerance: float | None) -> Scheme:
        """This scheme with a source's timestamp window (schemes without one: itself)."""
        return self

    def describe(self) -> str:
        """What is verified, for `webhook-gateway vendors`, docs and error messages."""
        raise NotImplementedError

    def load(self, key: str) -> Any:
        """One configured secret or public key in the form `verify` uses; ValueError if bad."""
        return key.encode()

    def verify(self, keys: Sequence[Any], request: Request) -> None:
        """Raise SignatureError (saying which part failed) unless one of `keys` signed it."""
        raise NotImplementedError

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        """Sign `request` as the vendor would (for `send`); NotImplementedError if it takes a
        private key the gateway never has."""
        raise NotImplementedError(
            "this vendor signs with its private key; the gateway only has the public key"
        )


@dataclass(frozen=True)
class Vendor:
    """Everything the gateway knows about one webhook sender."""

    name: str
    """The `type:` users write: the vendor's name in lower case with hyphens."""
    title: str
    category: str
    scheme: Scheme
    docs: str
    """The vendor's page on verifying its webhooks."""
    tested_with: str
    """How the tests prove the scheme: the vendor's SDK, a published vector, or its docs."""
    delivery_id: tuple[str, ...] = ("hash",)
    """Where the delivery id is, first found wins: `header:Name`, `body:path`, `form:name`,
    `items:<list path>:<id field>` (a batch, named by its events' ids: a retry that changes
    a counter in the body is still a duplicate), `hash`."""
    spec: Spec = field(default_factory=Spec)
    """How the built-in normalizer reads a payload (event type, time, batches)."""
    retry_window: str = ""
    """How long the vendor retries a failed delivery (docs)."""
    dedupe_ttl: str = "7d"
    tolerance: str | None = None
    """Default signature-timestamp window, when the scheme checks one."""
    options: tuple[str, ...] = ()
    """Extra config keys: `url`, `verify_token`."""
    challenge: Callable[[CatalogSource, str, Request], Reply | None] | None = None
    """Answers unsigned set-up requests (any method) before the signature is checked."""
    handshake: Callable[[CatalogSource, Request], Reply | None] | None = None
    """Answers signed set-up requests (after the signature is checked)."""
    handshake_doc: str = ""
    ack: Reply | None = None
    """The acknowledgement a vendor insists on (Adyen's `[accepted]`), else our JSON."""
    secret_from_handshake: bool = False
    """The vendor hands the signing secret over in its set-up request (Asana, Notion): the
    source may start with no `secrets:` (only the handshake is answered until one is set)."""
    builtin: bool = False
    """A hand-written source type (gateway/sources/<name>.py); the entry is for docs and send."""
    note: str = ""
    content_type: str = "application/json"
    """What the vendor sends (samples are posted with it)."""

    @property
    def id_text(self) -> str:
        return ", else ".join(_describe_id(s) for s in self.delivery_id)

    def samples(self) -> dict[str, Path]:
        """{event type: sample file} from gateway/sources/samples/<name>/ (`.json`, or
        `.form` for form-encoded bodies; the folder's ORIGIN file says where they come
        from). A `__` in a file name stands for a `/` in the event type."""
        folder = SAMPLES / self.name
        if not folder.is_dir():
            return {}
        return {
            p.stem.replace("__", "/"): p
            for p in sorted(folder.iterdir())
            if p.suffix in (".json", ".form")
        }


def _describe_id(spec: str) -> str:
    kind, _, name = spec.partition(":")
    if kind == "items":
        path, _, key = name.rpartition(":")
        where = "the batch" if path == "@" else f"`{path}`"
        return f"the `{key}`s of {where}"
    return {"header": f"`{name}` header", "body": f"body `{name}`", "form": f"form `{name}`"}.get(
        kind, "a hash of the body"
    )


VENDORS: dict[str, Vendor] = {}


# --- config -------------------------------------------------------------------------------


class CatalogConfig(SourceConfig, kw_only=True):
    """Settings of a catalog vendor; each vendor's struct adds only the options it uses."""

    secrets: list[Secret] = []
    """Signing secrets (or tokens); several while rotating, any may match."""

    vendor: ClassVar[Vendor]
    normalize_spec: ClassVar[Spec]

    def check(self) -> None:
        vendor = self.vendor
        if vendor.scheme.key_kind == "secret" and not self.secrets and vendor.secret_from_handshake:
            self.check_common()
        elif vendor.scheme.key_kind == "secret":
            super().check()
        else:
            if self.secrets:
                raise ConfigError(
                    f"{vendor.title} signs with a private key: give its public key in "
                    "`public_keys:`, not `secrets:`",
                    path="secrets",
                )
            if not getattr(self, "public_keys", None):
                raise ConfigError(
                    f"at least one public key is required ({vendor.title} hands it out)",
                    path="public_keys",
                )
            self.check_common()
        keys = (
            [s.reveal() for s in self.secrets]
            if vendor.scheme.key_kind == "secret"
            else list(getattr(self, "public_keys", []))
        )
        where = "secrets" if vendor.scheme.key_kind == "secret" else "public_keys"
        for i, key in enumerate(keys):
            try:
                vendor.scheme.load(key)
            except ValueError as e:
                raise ConfigError(str(e), path=f"{where}.{i}") from None
        if vendor.scheme.needs_url and not getattr(self, "url", None):
            raise ConfigError(
                f"{vendor.title} signs the URL it calls: set `url:` to the public URL of this "
                "source (e.g. https://hooks.example.com/webhooks/<name>)",
                path="url",
            )
        url = getattr(self, "url", None)
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError("expected an absolute http(s) URL", path="url")


_OPTION_FIELDS: dict[str, tuple[Any, Any, str]] = {
    "public_keys": (
        list[str],
        [],
        "The vendor's public verification keys, as it hands them out (PEM, or base64/hex).",
    ),
    "url": (
        str | None,
        None,
        "The public URL the vendor calls (it signs it); behind a proxy, the outside one.",
    ),
    "verify_token": (
        Secret | None,
        None,
        "The token you chose when subscribing, echoed back in the vendor's set-up request.",
    ),
}


def _config_struct(vendor: Vendor) -> type[CatalogConfig]:
    fields: list[tuple[str, Any, Any]] = [
        ("dedupe_ttl", Duration, duration(vendor.dedupe_ttl)),
    ]
    docs = {
        "dedupe_ttl": f"How long a delivery id is remembered ({vendor.title} retries "
        f"{vendor.retry_window or 'for a while'})."
    }
    options = list(vendor.options)
    if vendor.scheme.key_kind == "public_key":
        options.insert(0, "public_keys")
    if vendor.scheme.needs_url and "url" not in options:
        options.append("url")
    for name in options:
        tp, default, doc = _OPTION_FIELDS[name]
        fields.append((name, tp, msgspec.field(default_factory=lambda d=default: d)))
        docs[name] = doc
    if vendor.tolerance is not None:
        fields.append(("tolerance", Duration, duration(vendor.tolerance)))
        docs["tolerance"] = "Accepted clock difference, both ways, for the signed timestamp."
    camel = "".join(p.title() for p in re.split(r"[-_.]", vendor.name))
    cls = msgspec.defstruct(
        f"{camel}Config",
        fields,
        bases=(CatalogConfig,),
        tag=vendor.name,
        kw_only=True,
        forbid_unknown_fields=True,
        module=__name__,
    )
    cls.vendor = vendor
    cls.normalize_spec = vendor.spec
    cls.field_docs = docs
    return cls


# --- the source ---------------------------------------------------------------------------


class CatalogSource(Source):
    """A catalog vendor's source; one subclass per vendor, made by `register_vendor`."""

    vendor: ClassVar[Vendor]

    def __init__(self, name: str, config: CatalogConfig) -> None:
        vendor = self.vendor
        tolerance = getattr(config, "tolerance", None)
        self.scheme = vendor.scheme.with_tolerance(
            float(tolerance) if tolerance is not None else None
        )
        super().__init__(name, config)
        if vendor.scheme.key_kind == "secret":
            raw = [s.reveal() for s in config.secrets]
        else:
            raw = list(getattr(config, "public_keys", []))
        self.keys = [vendor.scheme.load(k) for k in raw]
        self.url = getattr(config, "url", None) or ""
        self.verify_token = getattr(config, "verify_token", None)
        body_ids = [s[5:] for s in vendor.delivery_id if s.startswith("body:")]
        self._id_fields = BodyFields(*body_ids) if body_ids else None

    def extra_headers(self) -> tuple[str, ...]:
        names = list(self.scheme.headers())
        event_type = (self.vendor.spec.event_type or "").split("|")
        for spec in (*self.vendor.delivery_id, *event_type):
            if spec.startswith("header:"):
                names.append(spec[7:].lower())
        return tuple(names)

    def request(self, body: bytes, headers: Headers, now: float) -> Request:
        url = self.url
        query = headers.get(QUERY, "")
        if url and query:
            url = url.split("?", 1)[0] + "?" + query
        return Request(body, headers, now, url)

    def verify(self, body: bytes, headers: Headers, now: float) -> None:
        if not self.keys:  # a handshake-only set-up (Notion before its token is known)
            raise SignatureError(
                "no secret is configured for this source yet: read the one "
                f"{self.vendor.title} sent with `webhook-gateway handshakes {self.name} "
                "--reveal` and put it in `secrets:`"
            )
        self.scheme.verify(self.keys, self.request(body, headers, now))

    def challenge(self, method: str, body: bytes, headers: Headers, now: float) -> Reply | None:
        if self.vendor.challenge is None:
            return None
        return self.vendor.challenge(self, method, self.request(body, headers, now))

    def handshake(self, body: bytes, headers: Headers) -> Reply | None:  # type: ignore[override]
        if self.vendor.handshake is None:
            return None
        return self.vendor.handshake(self, Request(body, headers, 0.0, self.url))

    def ack_body(self, headers: Headers) -> bytes | None:
        return self.vendor.ack.body if self.vendor.ack is not None else None

    def ack_content_type(self) -> str | None:
        return self.vendor.ack.content_type if self.vendor.ack is not None else None

    def ack_status(self) -> int:
        return self.vendor.ack.status if self.vendor.ack is not None else 200

    def identify(self, body: bytes, headers: Headers) -> tuple[str, str]:
        for spec in self.vendor.delivery_id:
            value = read_value(spec, body, headers, self._id_fields)
            if value is not None and value != "":
                delivery = delivery_id_from(value, _describe_id(spec))
                return delivery, delivery
        if "hash" in self.vendor.delivery_id:
            delivery = body_hash(body)
            return delivery, delivery
        where = " or ".join(_describe_id(s) for s in self.vendor.delivery_id)
        raise PayloadError(f"no delivery id: {where} is missing")


def read_value(spec: str, body: bytes, headers: Headers, fields: BodyFields | None) -> Any:
    """The value `header:Name`, `body:a.b` or `form:name` points at, or None."""
    kind, _, name = spec.partition(":")
    if kind == "header":
        return headers.get(name.lower())
    if kind == "form":
        return dict(parse_qsl(body.decode("utf-8", "replace"))).get(name)
    if kind == "items":  # `items:<list path>:<id field>`: a batch named by its events' ids
        path, _, key = name.rpartition(":")
        try:
            items = msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError):
            return None
        for part in () if path == "@" else path.split("."):
            items = items.get(part) if isinstance(items, dict) else None
        if not isinstance(items, list) or not items:
            return None
        ids = [item.get(key) if isinstance(item, dict) else None for item in items]
        if any(i is None or isinstance(i, bool | dict | list) for i in ids):
            return None
        text = ",".join(str(i) for i in ids)
        return text if len(text) <= 200 else "ids:" + hashlib.sha256(text.encode()).hexdigest()
    if kind == "body":
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return dict(parse_qsl(body.decode("utf-8", "replace"))).get(name)
        reader = fields or BodyFields(name)
        try:
            return reader.read(body)[name]
        except PayloadError:
            return None
    return None


def register_vendor(vendor: Vendor) -> Vendor:
    """Add a vendor to the catalog and, unless it is a hand-written type, make its type."""
    if vendor.name in VENDORS:
        raise ValueError(f"vendor {vendor.name!r} is listed twice")
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", vendor.name):
        raise ValueError(f"vendor name {vendor.name!r}: lower case and hyphens only")
    uses_timestamp = getattr(vendor.scheme, "uses_timestamp", False)
    if uses_timestamp and vendor.tolerance is None and not vendor.builtin:
        # Hmac.with_tolerance(None) turns the window off: a signed timestamp nobody checks
        # lets a captured request be replayed once its delivery id is forgotten.
        raise ValueError(f"vendor {vendor.name!r} signs a timestamp: give it a tolerance")
    VENDORS[vendor.name] = vendor
    if not vendor.builtin:
        cls = type(
            f"{_camel(vendor.name)}Source",
            (CatalogSource,),
            {
                "config_type": _config_struct(vendor),
                "vendor": vendor,
                "has_challenge": vendor.challenge is not None,
                "__module__": __name__,
            },
        )
        register(cls)
    return vendor


def _camel(name: str) -> str:
    return "".join(p.title() for p in name.split("-"))


# --- samples, for `send` ------------------------------------------------------------------


def render_sample(path: Path, now: float, seed: str) -> bytes:
    """A sample payload with fresh ids and times: `{{uuid}}`, `{{id}}`, `{{now}}` (unix s),
    `{{now_ms}}`, `{{now_iso}}` are replaced; every `{{uuid}}` and `{{id}}` of one
    rendering is the same value, derived from `seed`."""
    import datetime as dt
    import uuid

    text = path.read_text(encoding="utf-8")
    digest = hashlib.sha256(seed.encode()).hexdigest()
    when = dt.datetime.fromtimestamp(now, dt.UTC)
    values = {
        "uuid": str(uuid.UUID(digest[:32])),
        "id": digest[:24],
        "now": str(int(now)),
        "now_ms": str(int(now * 1000)),
        "now_iso": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
    }
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if path.suffix == ".json":
        json.loads(text)  # a broken sample is a bug here, not at the vendor's end
    return text.encode()
