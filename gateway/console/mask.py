"""Masking what the console may not show: the shape of a body or event stays (keys,
lists, booleans), every value is replaced, so a mapping can still be debugged."""

from __future__ import annotations

from typing import Any

HIDDEN = "•••"


def masked(value: Any) -> Any:
    """The same shape, every string and number hidden (keys and booleans kept)."""
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    if value is None or isinstance(value, bool):
        return value
    return HIDDEN
