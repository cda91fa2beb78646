"""The tracking plan: which event names are allowed and what their properties must be.

config.yaml's top-level `events:` declares them; `schema:` (global, and per source)
says what happens to an event that breaks the plan: `enforce` sends it to the
quarantine with the reason, `warn` logs the reason and lets it through, `off` (the
default) checks nothing. identify/group/... events are checked only for their traits'
declared types when the plan names them (`identify:` as an event name).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

SchemaMode = Literal["enforce", "warn", "off"]
PropertyType = Literal["string", "number", "integer", "boolean", "object", "array", "any"]

_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    # As JSON Schema has it: 1.0 is an integer, 1.5 is not.
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "any": lambda v: True,
}


class PlannedProperty(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: PropertyType = "any"
    required: bool = False


class PlannedEvent(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    properties: dict[str, PlannedProperty] = {}
    """Declared properties (traits, for identify); others are allowed unless `strict`."""
    strict: bool = False
    """Refuse properties the plan does not declare."""


def violations(event: Any, plan: dict[str, PlannedEvent]) -> list[str]:
    """What is wrong with an event (an Event struct) under the plan; empty when fine."""
    if event.type == "track":
        name = event.event or ""
        values = event.properties
    else:
        name = event.type
        values = event.traits
    spec = plan.get(name)
    if spec is None:
        if event.type != "track":
            return []  # identify & co. are only checked when the plan names them
        return [f"event {name!r} is not in the tracking plan"]
    problems = []
    for key, prop in spec.properties.items():
        if key not in values or values[key] is None:
            if prop.required:
                problems.append(f"{name}: property {key!r} is required")
            continue
        if not _CHECKS[prop.type](values[key]):
            problems.append(
                f"{name}: property {key!r} should be {prop.type}, got {_kind(values[key])}"
            )
    if spec.strict:
        extra = sorted(set(values) - set(spec.properties))
        if extra:
            problems.append(f"{name}: properties not in the plan: {', '.join(extra)}")
    return problems


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", dict: "object", list: "array"}.get(type(value), type(value).__name__)
