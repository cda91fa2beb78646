"""Helpers for normalizer tests: fixtures from tests/fixtures/, events as plain dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from normalizers import Delivery, normalize
from normalizers.testing import subset  # noqa: F401 (re-exported for the tests)

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
