"""Schemes many catalog vendors share: body HMAC, Standard Webhooks, shared tokens.

Vendor-specific schemes (Twilio's URL + form, Mailgun's body fields, public keys, JWTs)
live beside their vendors in gateway/sources/vendors/.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from ..errors import NO_MATCH, SignatureError
from .base import BodyFields
from .catalog import Request, Scheme, Signed
from .signing import (
    ALGORITHMS,
    HmacScheme,
    check_window,
    compile_template,
    decode_secret,
    matches_any,
    parse_timestamp,
)


@dataclass(frozen=True)
class Hmac(Scheme):
    """HMAC over a template of the body, timestamp, URL or delivery id, in one header
    (or several, e.g. Box's primary and secondary key)."""

    header: str
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""
    signed: str = "{body}"
    pairs: bool = False
    signature_key: str = "v1"
    timestamp_key: str = "t"
    timestamp_header: str | None = None
    timestamp_field: str | None = None
    """A body field holding the timestamp (not signed, only checked)."""
    delivery_id_header: str | None = None
    """Fills {delivery_id} in the signed template."""
    secret_encoding: str = "utf8"
    also: tuple[str, ...] = ()
    """More headers that may each carry a signature (any match is enough)."""
    tolerance: float | None = None
    """Set per source from its `tolerance:` (the vendor's default); None: no check."""
    timestamp_unit: str = "auto"

    def __post_init__(self) -> None:
        scheme = self._build()
        object.__setattr__(self, "_hmac", scheme)
        # One scheme per signature header, built once (not per request).
        variants = [
            (n.lower(), dataclasses.replace(scheme, header=n.lower(), display_header=n))
            for n in (self.header, *self.also)
        ]
        object.__setattr__(self, "_variants", variants)
        if self.timestamp_field:
            object.__setattr__(self, "_fields", BodyFields(self.timestamp_field))

    def _build(self) -> HmacScheme:
        return HmacScheme(
            header=self.header.lower(),
            algorithm=self.algorithm,
            encoding=self.encoding,
            prefix=self.prefix,
            template=compile_template(self.signed),
            pairs=self.pairs,
            signature_key=self.signature_key,
            timestamp_key=self.timestamp_key,
            timestamp_header=(self.timestamp_header or "").lower() or None,
            tolerance=self.tolerance,
            display_header=self.header,
            timestamp_field=self.timestamp_field,
            secret_encoding=self.secret_encoding,
        )

    @property
    def needs_url(self) -> bool:  # type: ignore[override]
        return "{url}" in self.signed

    @property
    def uses_timestamp(self) -> bool:
        return self.pairs or bool(self.timestamp_header or self.timestamp_field)

    def with_tolerance(self, tolerance: float | None) -> Hmac:
        return dataclasses.replace(self, tolerance=tolerance if self.uses_timestamp else None)

    def headers(self) -> tuple[str, ...]:
        names = [self.header, self.timestamp_header, self.delivery_id_header, *self.also]
        return tuple(n.lower() for n in names if n)

    def describe(self) -> str:
        text = self._hmac.describe()  # type: ignore[attr-defined]
        return text + (f" (or {', '.join(self.also)})" if self.also else "")

    def load(self, key: str) -> bytes:
        return decode_secret(key, self.secret_encoding)

    def verify(self, keys: Sequence[Any], request: Request) -> None:
        timestamp = self._field_timestamp(request.body)
        values = {"method": "POST", "url": request.url}
        if self.delivery_id_header:
            values["delivery_id"] = request.headers.get(self.delivery_id_header.lower(), "")
        scheme: HmacScheme = self._hmac  # type: ignore[attr-defined]
        if not self.also:
            scheme.verify(
                keys, request.body, request.headers, request.now, timestamp=timestamp, values=values
            )
            return
        first: SignatureError | None = None
        for name, one in self._variants:  # type: ignore[attr-defined]
            if not request.headers.get(name):
                continue
            try:
                one.verify(
                    keys,
                    request.body,
                    request.headers,
                    request.now,
                    timestamp=timestamp,
                    values=values,
                )
                return
            except SignatureError as e:
                first = first or e
        raise first or SignatureError(f"the {self.header} header is missing")

    def _field_timestamp(self, body: bytes) -> str | None:
        if not self.timestamp_field:
            return None
        from ..errors import PayloadError

        try:
            value = self._fields.read(body)[self.timestamp_field]  # type: ignore[attr-defined]
        except PayloadError:
            raise SignatureError("the body is not JSON, so it has no signed timestamp") from None
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise SignatureError(f"the body's `{self.timestamp_field}` timestamp is missing")
        return str(value)

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        key = self.load(secret)
        ts = str(int(request.now * 1000)) if self.timestamp_unit == "ms" else str(int(request.now))
        content = self._hmac._content(  # type: ignore[attr-defined]
            request.body, ts, {"method": "POST", "url": request.url, "delivery_id": delivery_id}
        )
        digest = hmac.new(key, content, ALGORITHMS[self.algorithm]).digest()
        text = digest.hex() if self.encoding == "hex" else base64.b64encode(digest).decode()
        value = self.prefix + text
        if self.pairs:
            sep = ";" if self.timestamp_key == "ts" else ","
            value = f"{self.timestamp_key}={ts}{sep}{self.signature_key}={value}"
        headers = {self.header: value}
        if self.timestamp_header:
            headers[self.timestamp_header] = ts
        if self.delivery_id_header:
            headers[self.delivery_id_header] = delivery_id
        return Signed(headers, request.body, request.query)


@dataclass(frozen=True)
class StandardWebhooks(Scheme):
    """https://www.standardwebhooks.com: `webhook-id/-timestamp/-signature` (or `svix-*`),
    HMAC-SHA256 base64 of `{id}.{timestamp}.{body}` with a `whsec_` base64 secret."""

    tolerance: float = 300.0

    def with_tolerance(self, tolerance: float | None) -> StandardWebhooks:
        return dataclasses.replace(self, tolerance=tolerance or self.tolerance)

    def headers(self) -> tuple[str, ...]:
        return tuple(f"{p}-{n}" for p in ("webhook", "svix") for n in _SW_NAMES)

    def describe(self) -> str:
        return "Standard Webhooks: HMAC-SHA256 base64 of `id.timestamp.body` in webhook-signature"

    def load(self, key: str) -> Webhook:
        try:
            base64.b64decode(key.removeprefix("whsec_"), validate=True)
            return Webhook(key)
        except Exception:
            raise ValueError(
                "not a Standard Webhooks secret (expected whsec_ followed by base64)"
            ) from None

    def verify(self, keys: Sequence[Any], request: Request) -> None:
        verify_standard(keys, request.body, request.headers, request.now, self.tolerance)

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        hook = self.load(secret)
        when = datetime.fromtimestamp(int(request.now), tz=UTC)
        signature = hook.sign(delivery_id, when, request.body.decode())
        headers = {
            "webhook-id": delivery_id,
            "webhook-timestamp": str(int(request.now)),
            "webhook-signature": signature,
        }
        return Signed(headers, request.body, request.query)


_SW_NAMES = ("id", "timestamp", "signature")


def _sw_header(headers: Any, name: str) -> str | None:
    return headers.get(f"webhook-{name}") or headers.get(f"svix-{name}")


def verify_standard(
    hooks: Sequence[Webhook], body: bytes, headers: Any, now: float, tolerance: float
) -> None:
    """Standard Webhooks verification, our parsing and clock, the library's signing."""
    msg_id, ts_text, sig_header = (_sw_header(headers, n) for n in _SW_NAMES)
    if not (msg_id and ts_text and sig_header):
        missing = [
            f"webhook-{n}"
            for n, v in zip(_SW_NAMES, (msg_id, ts_text, sig_header), strict=True)
            if not v
        ]
        raise SignatureError(f"missing header(s): {', '.join(missing)}")
    timestamp = parse_timestamp(ts_text, "s")
    check_window(timestamp, now, tolerance)
    given = []
    for entry in sig_header.split():
        version, _, sig = entry.partition(",")
        if version != "v1":
            continue  # v1a (ed25519) and future schemes are not ours to check
        try:
            given.append(base64.b64decode(sig, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not given:
        raise SignatureError("the webhook-signature header holds no v1 signature")
    try:
        payload = body.decode("utf-8")
        when = datetime.fromtimestamp(timestamp, tz=UTC)
        expected = [base64.b64decode(h.sign(msg_id, when, payload)[3:]) for h in hooks]
    except (UnicodeDecodeError, ValueError, OverflowError, OSError):
        raise SignatureError(NO_MATCH) from None
    if not matches_any(expected, given):
        raise SignatureError(NO_MATCH)


@dataclass(frozen=True)
class Token(Scheme):
    """A shared token or password sent with each request, compared in constant time.

    Weaker than a signature: it proves the sender knows the token, not that the body is
    the one it sent, and a leaked request leaks the token. Where: `header` (GitLab's
    X-Gitlab-Token), `basic` (HTTP Basic auth, the secret is `user:password`), `bearer`
    (`Authorization: Bearer <token>`) or `query` (a URL parameter).
    """

    header: str | None = None
    basic: bool = False
    bearer: bool = False
    query: str | None = None

    weak = True

    def headers(self) -> tuple[str, ...]:
        return ()  # the header's value IS the secret: never stored with a delivery

    def describe(self) -> str:
        if self.basic:
            return "HTTP Basic auth (shared user:password; weaker than a signature)"
        if self.bearer:
            return "`Authorization: Bearer` shared token (weaker than a signature)"
        if self.query:
            return f"shared token in the `{self.query}` URL parameter (weaker than a signature)"
        return f"shared token in {self.header} (weaker than a signature)"

    def load(self, key: str) -> bytes:
        if self.basic and ":" not in key:
            raise ValueError("expected `user:password` (the Basic auth credentials you set)")
        return key.encode()

    def given(self, request: Request) -> bytes:
        if self.basic or self.bearer:
            auth = request.headers.get("authorization", "")
            scheme, _, value = auth.partition(" ")
            want = "basic" if self.basic else "bearer"
            if not auth:
                raise SignatureError("the Authorization header is missing")
            if scheme.lower() != want:
                raise SignatureError(f"the Authorization header is not `{want.title()} ...`")
            if self.bearer:
                return value.strip().encode("latin-1")
            try:
                return base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise SignatureError("the Basic credentials are not base64") from None
        if self.query:
            value = request.query_params().get(self.query)
            if not value:
                raise SignatureError(f"the `{self.query}` URL parameter is missing")
            return value.encode()
        assert self.header
        value = request.headers.get(self.header.lower())
        if not value:
            raise SignatureError(f"the {self.header} header is missing")
        return value.encode("latin-1")

    def verify(self, keys: Sequence[Any], request: Request) -> None:
        if not matches_any(keys, [self.given(request)]):
            what = "credentials" if self.basic else "token"
            raise SignatureError(f"the {what} did not match any of this source's secrets")

    def sign(self, secret: str, request: Request, delivery_id: str) -> Signed:
        if self.basic:
            value = "Basic " + base64.b64encode(secret.encode()).decode()
            return Signed({"Authorization": value}, request.body, request.query)
        if self.bearer:
            return Signed({"Authorization": f"Bearer {secret}"}, request.body, request.query)
        if self.query:
            from urllib.parse import urlencode

            query = "&".join(q for q in (request.query, urlencode({self.query: secret})) if q)
            return Signed({}, request.body, query)
        assert self.header
        return Signed({self.header: secret}, request.body, request.query)
