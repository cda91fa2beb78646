"""Helpers for normalizer tests: fixtures from tests/fixtures/, events as plain dicts, and
whole expected events built from literals."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import msgspec

from normalizers import Delivery, normalize
from tests.conftest import expected_message_id

FIXTURES = Path(__file__).parents[1] / "fixtures"
RECEIVED_MS = 1_700_000_500_123
RECEIVED_AT = "2023-11-14T22:21:40.123Z"  # RECEIVED_MS in ISO 8601 UTC, written out
# context.library: the package's own name and its declared version (pyproject.toml).
LIBRARY = {"name": "webhook-gateway", "version": version("webhook-gateway")}


def fixture(vendor: str, name: str) -> bytes:
    return (FIXTURES / vendor / f"{name}.json").read_bytes()


def run(
    source_type: str,
    body: bytes | dict,
    headers: dict[str, str] | None = None,
    *,
    source: str | None = None,
    delivery_id: str = "d-1",
    config: Any = None,
) -> list[dict[str, Any]]:
    """The events a body becomes, decoded back into plain dicts (as on the wire)."""
    if isinstance(body, dict):
        body = msgspec.json.encode(body)
    delivery = Delivery(
        source or source_type, source_type, delivery_id, RECEIVED_MS, headers or {}, body, config
    )
    return [msgspec.json.decode(msgspec.json.encode(e)) for e in normalize(delivery)]


def expected_event(
    source: str,
    event_type: str,
    who: tuple[str, str],
    timestamp: str,
    *,
    event: str | None = None,
    properties: dict[str, Any] | None = None,
    traits: dict[str, Any] | None = None,
    external_ids: list[dict[str, str]] | None = None,
    context_traits: dict[str, Any] | None = None,
    source_type: str | None = None,
    index: int = 0,
) -> dict[str, Any]:
    """The whole event `run()` must return, from literals: a `track` named `event`, or an
    `identify` when `event` is None; `who` is ("userId" or "anonymousId", the id);
    `context_traits` the person's match keys (context.traits)."""
    key, value = who
    context: dict[str, Any] = {
        "source": {
            "name": source,
            "type": source_type or source,
            "deliveryId": "d-1",
            "eventType": event_type,
        },
        "library": LIBRARY,
    }
    if external_ids:
        context["externalIds"] = external_ids
    if context_traits:
        context["traits"] = context_traits
    out: dict[str, Any] = {
        "type": "track" if event is not None else "identify",
        "messageId": expected_message_id(
            source, "d-1", index, event, "track" if event is not None else "identify"
        ),
        "timestamp": timestamp,
        "receivedAt": RECEIVED_AT,
        "context": context,
        key: value,
    }
    if event is not None:
        out["event"] = event
    if properties:
        out["properties"] = properties
    if traits:
        out["traits"] = traits
    return out


def _json_kinds(value: Any) -> Any:
    """`value` with each bool tagged, so that `==` tells true from 1 and false from 0."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, dict):
        return {k: _json_kinds(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_kinds(v) for v in value]
    return value


def assert_same(actual: Any, expected: Any) -> None:
    """`actual == expected`, every key of it, and a JSON true is not 1 (nor false 0), which
    Python's `==` alone would let pass. 1 and 1.0 stay equal, as in JSON."""
    assert actual == expected
    assert _json_kinds(actual) == _json_kinds(expected)
