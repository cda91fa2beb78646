"""`webhook-gateway test`: run the `tests:` written beside each source's mappings.

Each test is a payload (inline or a file) with headers, and the events it must become;
an expected event matches when every key it gives is in the actual event with the same
value (keys it does not give are not checked), like `vector test`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from .base import Delivery, NormalizeError
from .mapping import Mapper, MappingTest

RECEIVED_AT_MS = 1_700_000_000_000  # a fixed clock, so tests can pin receivedAt


@dataclass
class TestResult:
    source: str
    name: str
    ok: bool
    diff: str = ""


def subset(expected: Any, actual: Any) -> bool:
    """Every key of `expected` is in `actual` with a matching value (recursively).

    An expected null also matches a missing key: mappings leave null properties out.
    """
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            subset(v, actual[k]) if k in actual else v is None for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(subset(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        # bool is an int subclass: true must not match 1, nor false 0 (and false is false).
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, float | int) and isinstance(actual, float | int):
        return float(expected) == float(actual)  # YAML's 24 is the event's 24.0
    return expected == actual


def _only(expected: Any, actual: Any) -> Any:
    """`actual` cut down to the keys `expected` talks about (for a readable diff)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return {
            k: _only(expected[k], actual[k]) if k in expected else actual[k]
            for k in actual
            if k in expected
        }
    if isinstance(expected, list) and isinstance(actual, list):
        return [_only(e, a) for e, a in zip(expected, actual, strict=False)] + actual[
            len(expected) :
        ]
    return actual


def run_source_tests(name: str, config: Any, base_dir: Path) -> Iterator[TestResult]:
    from gateway.sources import SOURCE_TYPES

    from . import normalize

    mapper = Mapper(config.mappings, config.user_id)
    source_type = config.__struct_config__.tag
    # A test's headers pass through the source as a live request's do: the mappings see
    # only the ones it stores, as in the worker.
    source = SOURCE_TYPES[source_type](name, config)
    test: MappingTest
    for test in config.tests:
        try:
            if test.payload_file is not None:
                body = (base_dir / test.payload_file).read_bytes()
            elif isinstance(test.payload, str):
                body = test.payload.encode()
            else:
                body = msgspec.json.encode(test.payload)
        except OSError as e:
            yield TestResult(
                name, test.name, False, f"cannot read {test.payload_file}: {e.strerror}"
            )
            continue
        given = {k.lower(): v for k, v in test.headers.items()}
        headers = source.headers_to_store(given)
        dropped = sorted(set(given) - set(headers))
        note = (
            f"\nnote: the source does not store {', '.join(dropped)}, so the mappings did "
            "not see it (as in the worker)"
            if dropped
            else ""
        )
        delivery = Delivery(
            name, source_type, f"test:{test.name}", RECEIVED_AT_MS, headers, body, config
        )
        try:
            events = [
                msgspec.json.decode(msgspec.json.encode(e)) for e in normalize(delivery, mapper)
            ]
        except NormalizeError as e:
            yield TestResult(name, test.name, False, f"the payload cannot be mapped: {e}{note}")
            continue
        if subset(test.expect, events):
            yield TestResult(name, test.name, True)
            continue
        want = json.dumps(test.expect, indent=2, sort_keys=True).splitlines()
        got = json.dumps(_only(test.expect, events), indent=2, sort_keys=True).splitlines()
        diff = "\n".join(difflib.unified_diff(want, got, "expected", "actual", lineterm=""))
        if len(events) != len(test.expect):
            diff = f"expected {len(test.expect)} event(s), got {len(events)}\n{diff}"
        yield TestResult(name, test.name, False, diff + note)
