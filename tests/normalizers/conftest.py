"""Helpers for normalizer tests: fixtures from tests/fixtures/, events as plain dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from normalizers import Delivery, normalize

FIXTURES = Path(__file__).parents[1] / "fixtures"
RECEIVED_MS = 1_700_000_500_123


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


def subset(expected: Any, actual: Any) -> bool:
    """Every key of `expected` is in `actual` with a matching value (recursively)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and subset(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(subset(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return expected == actual
