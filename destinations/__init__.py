"""Destination types, registered by their `type:` name (see destinations/base.py).

Adding one: write `destinations/<type>.py` with a config struct (a DestinationConfig
subclass tagged with the type name) and a `@register`ed Destination (HttpDestination
for HTTP APIs: say what to send and how to read the reply), import it below, and test
it against a local server that behaves like the vendor, failures included.
"""

from . import (  # noqa: F401  (registers them)
    amplitude,
    file,
    ga4,
    google_ads,
    http,
    meta_capi,
    mixpanel,
    nats,
    postgres,
    posthog,
    redis_stream,
    segment,
    tiktok,
)
from .base import DESTINATION_TYPES, Destination, DestinationConfig, Result, Route, Shaper

__all__ = ["DESTINATION_TYPES", "Destination", "DestinationConfig", "Result", "Route", "Shaper"]
