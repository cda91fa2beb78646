"""Destination types, registered by their `type:` name (see destinations/base.py).

Adding one: write `destinations/<type>.py` with a config struct (a DestinationConfig
subclass tagged with the type name) and a `@register`ed Destination (HttpDestination
for HTTP APIs: say what to send and how to read the reply), import it below, and test
it against a local server that behaves like the vendor, failures included.
"""

from . import file, http, postgres, posthog, redis_stream, segment  # noqa: F401
from .base import DESTINATION_TYPES, Destination, DestinationConfig, Result, Route, Shaper

__all__ = ["DESTINATION_TYPES", "Destination", "DestinationConfig", "Result", "Route", "Shaper"]
