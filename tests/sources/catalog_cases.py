"""What each catalog vendor's conformance test needs: a config and an independent signer.

Every vendor in gateway/sources/vendors/ has a `Case` in one of the `cases_*.py` modules
beside this file. `sign` must NOT use the gateway's own signing code: it is the vendor's
SDK, a published test vector, or the vendor's documented algorithm written out with
hashlib/hmac/cryptography, with the source cited next to it. tests/sources/test_catalog.py
runs every case through the real front door and the normalizer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.sources.catalog import Signed  # a request as sent: headers, body, query

__all__ = ["Case", "Signed", "all_cases", "flip_body"]


@dataclass(frozen=True)
class Case:
    config: dict[str, Any]
    """The source's settings besides `type:` (secrets, public_keys, url, ...)."""
    sign: Callable[[bytes, float], Signed]
    """Sign `body` (the rendered sample) at unix time `now`, as the vendor does."""
    why: str
    """Where the signing code comes from (SDK name and function, vector URL, docs URL)."""
    event: str
    """The first event's name after the built-in normalizer."""
    events: int = 1
    """How many events the sample becomes."""
    sample: str | None = None
    """Which sample (file stem); default: the first."""
    tamper: Callable[[Signed], Signed] | None = None
    """How to break the request (default: change one byte of the body)."""
    extra: dict[str, Any] = field(default_factory=dict)


def flip_body(signed: Signed) -> Signed:
    """The default tamper: one byte of the body changed (a space added before the end)."""
    body = signed.body
    return Signed(signed.headers, body[:-1] + b" " + body[-1:], signed.query)


def all_cases() -> dict[str, Case]:
    import importlib
    import pkgutil

    from tests import sources

    cases: dict[str, Case] = {}
    for info in pkgutil.iter_modules(sources.__path__):
        if info.name.startswith("cases_"):
            module = importlib.import_module(f"tests.sources.{info.name}")
            for name, case in module.CASES.items():
                assert name not in cases, f"{name} has two cases"
                cases[name] = case
    return cases
