"""Stripe: `Stripe-Signature: t=...,v1=...`, delivery id = the event's `id`.

Verified with the stripe library's `WebhookSignature.verify_header` (not `construct_event`,
which also decodes the whole body). The library checks only that a timestamp is not too
old; we check both ways ourselves, against the clock the gateway is given.
https://docs.stripe.com/webhooks#verify-manually
"""

from __future__ import annotations

from stripe import SignatureVerificationError, WebhookSignature

from ..config import Duration, SourceConfig, duration
from ..errors import NO_MATCH, SignatureError
from .base import BodyFields, Headers, Source, delivery_id_from, register
from .signing import HmacScheme, check_window, parse_timestamp


class StripeConfig(SourceConfig, tag="stripe"):
    tolerance: Duration = duration("300s")
    """Accepted clock difference, both ways, for the signed timestamp."""


# Only used to read the timestamp out of the header; the signature is the library's job.
_HEADER = HmacScheme(header="stripe-signature", pairs=True, display_header="Stripe-Signature")
_FIELDS = BodyFields("id")


@register
class StripeSource(Source):
    config_type = StripeConfig
    vendor_headers = ("stripe-signature",)

    def __init__(self, name: str, config: StripeConfig) -> None:
        super().__init__(name, config)
        self.secrets = [s.reveal() for s in config.secrets]
        self.tolerance = float(config.tolerance)

    def verify(self, body: bytes, headers: Headers, now: float) -> None:
        _, timestamp = _HEADER.signatures(headers)
        if timestamp is None:
            raise SignatureError("the Stripe-Signature header has no `t=` timestamp")
        check_window(parse_timestamp(timestamp, "s"), now, self.tolerance)
        header = headers["stripe-signature"]
        if not header.isascii():
            # The library compares str digests, which raises TypeError on non-ASCII text.
            raise SignatureError("no signature matched (the header is not ASCII)")
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureError("no signature matched (the body is not UTF-8)") from None
        for secret in self.secrets:
            try:
                # tolerance=None: the window was checked above, both ways.
                WebhookSignature.verify_header(payload, header, secret, tolerance=None)
                return
            except SignatureVerificationError:
                continue
        raise SignatureError(NO_MATCH)

    def identify(self, body: bytes, headers: Headers) -> tuple[str, str]:
        event_id = delivery_id_from(_FIELDS.read(body)["id"], "the event's `id`")
        return event_id, event_id
