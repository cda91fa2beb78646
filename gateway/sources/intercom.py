"""Intercom: `X-Hub-Signature: sha1=<hex>`, HMAC-SHA1 of the raw body with the client secret.

The notification's `id` (`notif_...`) names the delivery.
https://developers.intercom.com/docs/webhooks/setting-up-webhooks
"""

from __future__ import annotations

from ..config import SourceConfig
from .base import BodyFields, Headers, delivery_id_from, register
from .signing import HmacScheme, HmacSource


class IntercomConfig(SourceConfig, tag="intercom"):
    pass


_SCHEME = HmacScheme(
    header="x-hub-signature", algorithm="sha1", prefix="sha1=", display_header="X-Hub-Signature"
)
_FIELDS = BodyFields("id")


@register
class IntercomSource(HmacSource):
    config_type = IntercomConfig
    scheme = _SCHEME
    vendor_headers = ("x-hub-signature",)

    def identify(self, body: bytes, headers: Headers) -> tuple[str, str]:
        notif = delivery_id_from(_FIELDS.read(body)["id"], "the notification's `id`")
        return notif, notif
