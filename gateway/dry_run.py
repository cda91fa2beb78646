"""A dry run: what one payload becomes at a source, by the worker's own engine, with no
signature check and nothing stored. `webhook-gateway map` and the console's playground
both show it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import Config


@dataclass
class MapResult:
    """What a payload becomes at a source: its events, or the normalizer's error."""

    delivery_id: str
    events: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What the reader should know (a made-up delivery id, headers the source drops)."""
    error: str | None = None


def map_payload(
    config: Config, source_name: str, body: bytes, headers: dict[str, str], now: float
) -> MapResult:
    """The dry run of `map` and the console's playground: the worker's engine on one
    payload (`headers` with lower-case names), with no signature check and nothing stored.
    `source_name` must be one of config.sources."""
    from normalizers import Delivery, Mapper, NormalizeError, normalize

    from .errors import PayloadError
    from .sources import build_sources
    from .sources.base import body_hash

    source = build_sources({source_name: config.sources[source_name]})[source_name]
    mapper = Mapper(source.config.mappings, source.config.user_id)
    notes: list[str] = []
    try:
        delivery_id, _ = source.identify(body, headers)
    except PayloadError as e:
        delivery_id = body_hash(body)
        notes.append(f"{e.detail}; using {delivery_id} as the delivery id")
    # The mapping sees what the worker would: only the headers the source stores.
    kept = source.headers_to_store(headers)
    if dropped := sorted(set(headers) - set(kept)):
        notes.append(
            f"this source does not store {', '.join(dropped)}, so (as in the worker) "
            "the mappings do not see it (header() in a mapping, or keep_headers, keeps one)"
        )
    delivery = Delivery(
        source=source_name,
        source_type=source.config.__struct_config__.tag,
        delivery_id=delivery_id,
        received_at_ms=int(now * 1000),
        headers=kept,
        body=body,
        config=source.config,
    )
    try:
        events = normalize(delivery, mapper)
    except NormalizeError as e:
        return MapResult(delivery_id, notes=notes, error=str(e))
    return MapResult(delivery_id, events=list(events), notes=notes)
