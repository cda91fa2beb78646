"""The generic `hmac` source: any vendor that signs with an HMAC, described in config.

Covers the common shapes: a plain digest header (`Linear-Signature: <hex>`), one behind a
prefix (`Typeform-Signature: sha256=<base64>`), key=value pairs with the timestamp inside
(`Paddle-Signature: ts=...;h1=...`, `Calendly-Webhook-Signature: t=...,v1=...`), and a
timestamp in its own header (Zendesk) or in the body (Linear's `webhookTimestamp`).
docs/sources.md shows it configured for Paddle, Linear, Typeform, Zendesk and Calendly.
"""

from __future__ import annotations

from typing import Literal

from ..config import Duration, SourceConfig, duration
from ..errors import ConfigError, PayloadError, SignatureError
from .base import BodyFields, Headers, body_hash, delivery_id_from, register
from .signing import HmacScheme, HmacSource, compile_template, decode_secret


class HmacConfig(SourceConfig, tag="hmac", kw_only=True):
    event_type_field: str = "type"
    """The payload field (dotted path) naming what happened; it becomes the event name."""
    signature_header: str
    """The header carrying the signature, e.g. Paddle-Signature."""
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    """How the digest is written in the header."""
    prefix: str = ""
    """Text in front of each signature, e.g. `sha256=`."""
    signature_format: Literal["plain", "pairs"] = "plain"
    """plain: the header is the signature; pairs: `t=..,v1=..` or `ts=..;h1=..`."""
    signature_key: str = "v1"
    """With pairs: the key of the signature (v1, h1, ...)."""
    timestamp_key: str = "t"
    """With pairs: the key of the signed timestamp (t, ts, ...)."""
    signed_content: str = "{body}"
    """What is signed: {body}, {timestamp}, {delivery_id}, {method}, {url} and literal text."""
    timestamp_header: str | None = None
    """A header carrying the signed timestamp (unix s, ms, or ISO 8601)."""
    timestamp_field: str | None = None
    """A body field carrying the timestamp (dotted path), e.g. webhookTimestamp."""
    tolerance: Duration | None = duration("300s")
    """Accepted clock difference, both ways, when there is a timestamp; null: no check."""
    delivery_id_header: str | None = None
    """The header naming the delivery, e.g. Linear-Delivery."""
    delivery_id_field: str | None = None
    """The body field naming the delivery (dotted path), e.g. event_id or data.id."""
    secret_encoding: Literal["utf8", "base64", "hex"] = "utf8"
    """How to turn each secret into the HMAC key (base64 strips a leading whsec_)."""
    url: str | None = None
    """The public URL the vendor posts to, when {url} is signed (behind proxies)."""

    def check(self) -> None:
        super().check()
        try:
            template = compile_template(self.signed_content)
        except ValueError as e:
            raise ConfigError(str(e), path="signed_content") from None
        if "body" not in template:
            raise ConfigError("must include {body}", path="signed_content")
        has_ts = self.signature_format == "pairs" or self.timestamp_header or self.timestamp_field
        if "timestamp" in template and not has_ts:
            raise ConfigError(
                "uses {timestamp}: set timestamp_header, timestamp_field, or "
                "signature_format: pairs",
                path="signed_content",
            )
        if "url" in template and not self.url:
            raise ConfigError("uses {url}: set url to the public URL", path="signed_content")
        if self.timestamp_header and self.timestamp_field:
            raise ConfigError(
                "set timestamp_header or timestamp_field, not both", path="timestamp_field"
            )
        if self.delivery_id_header and self.delivery_id_field:
            raise ConfigError(
                "set delivery_id_header or delivery_id_field, not both", path="delivery_id_field"
            )
        for i, secret in enumerate(self.secrets):
            try:
                decode_secret(secret.reveal(), self.secret_encoding)
            except ValueError as e:
                raise ConfigError(
                    f"{e} (secret_encoding: {self.secret_encoding})", path=f"secrets.{i}"
                ) from None


@register
class HmacGenericSource(HmacSource):
    config_type = HmacConfig

    def __init__(self, name: str, config: HmacConfig) -> None:
        self.secret_encoding = config.secret_encoding
        super().__init__(name, config)
        self.id_header = (config.delivery_id_header or "").lower() or None
        self.id_field = config.delivery_id_field
        self.ts_field = config.timestamp_field
        paths = [p for p in (self.id_field, self.ts_field) if p]
        self.fields = BodyFields(*paths) if paths else None
        self.url = config.url or ""

    def extra_headers(self) -> tuple[str, ...]:
        c: HmacConfig = self.config  # type: ignore[assignment]
        names = (c.signature_header, c.timestamp_header, c.delivery_id_header)
        return tuple(n.lower() for n in names if n)

    def build_scheme(self, config: HmacConfig) -> HmacScheme:
        has_ts = config.signature_format == "pairs" or bool(
            config.timestamp_header or config.timestamp_field
        )
        return HmacScheme(
            header=config.signature_header.lower(),
            algorithm=config.algorithm,
            encoding=config.encoding,
            prefix=config.prefix,
            template=compile_template(config.signed_content),
            pairs=config.signature_format == "pairs",
            signature_key=config.signature_key,
            timestamp_key=config.timestamp_key,
            timestamp_header=(config.timestamp_header or "").lower() or None,
            tolerance=float(config.tolerance) if has_ts and config.tolerance is not None else None,
            display_header=config.signature_header,
            timestamp_field=config.timestamp_field,
            secret_encoding=config.secret_encoding,
            # The user wrote this scheme: a refusal says which one was tried, so a mistake
            # in it (encoding, prefix, signed content) is not taken for a wrong secret.
            explain=True,
        )

    def verify(self, body: bytes, headers: Headers, now: float) -> None:
        timestamp = None
        if self.ts_field:
            assert self.fields is not None
            try:
                value = self.fields.read(body)[self.ts_field]
            except PayloadError:
                raise SignatureError(
                    "the body is not JSON, so it has no signed timestamp"
                ) from None
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise SignatureError(
                    f"the signature timestamp (the body's `{self.ts_field}`) is missing"
                )
            timestamp = str(value)
        values = {"method": "POST", "url": self.url}
        if "delivery_id" in self.scheme.template:
            values["delivery_id"] = self._delivery_id(body, headers)
        self.scheme.verify(self.keys, body, headers, now, timestamp=timestamp, values=values)

    def identify(self, body: bytes, headers: Headers) -> tuple[str, str]:
        delivery = self._delivery_id(body, headers)
        return delivery, delivery

    def _delivery_id(self, body: bytes, headers: Headers) -> str:
        if self.id_header:
            return delivery_id_from(headers.get(self.id_header), f"the {self.id_header} header")
        if self.id_field:
            assert self.fields is not None
            return delivery_id_from(
                self.fields.read(body)[self.id_field], f"the body's `{self.id_field}`"
            )
        return body_hash(body)
