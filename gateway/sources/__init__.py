"""Inbound source types, registered by their `type:` name.

Adding a vendor: write `gateway/sources/<vendor>.py` with a config struct (a SourceConfig
subclass tagged with the type name) and a `@register`ed Source subclass, import it below,
and add its official test vector to tests/sources/.
"""

from . import (  # noqa: F401
    collect,
    github,
    hmac,
    intercom,
    shopify,
    slack,
    standard_webhooks,
    stripe,
    vendors,
)
from .base import SOURCE_TYPES, Source, build_sources

__all__ = ["SOURCE_TYPES", "Source", "build_sources"]
