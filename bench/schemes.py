"""Signature schemes' cost: verify + identify per request, every catalog vendor, one process.

Each vendor's sample is signed by its test case's independent signer
(tests/sources/cases_*.py) and checked by the gateway's source, as the front door does,
many times; the baseline is the plain body HMAC (`hmac` type, HMAC-SHA256 hex of the
body) on the same sample, measured in the same round, so the ratios hold on a noisy
machine even when the microseconds do not.

    python bench/schemes.py [--rounds 5] [--only sendgrid,discord,...]

Prints per vendor: microseconds per request (best round) and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.config import parse_config  # noqa: E402
from gateway.sources import build_sources  # noqa: E402
from gateway.sources.catalog import QUERY, VENDORS, render_sample  # noqa: E402
from tests.sources.catalog_cases import all_cases  # noqa: E402


def per_request(source, body: bytes, headers: dict[str, str], now: float, n: int) -> float:
    verify, identify = source.verify, source.identify
    start = time.perf_counter()
    for _ in range(n):
        verify(body, headers, now)
        identify(body, headers)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", help="comma-separated vendor names")
    args = parser.parse_args()
    cases = all_cases()
    names = sorted(cases) if not args.only else args.only.split(",")
    now = time.time()
    rows = []
    for i, name in enumerate(names, 1):
        case = cases[name]
        vendor = VENDORS[name]
        sample = vendor.samples()[case.sample or next(iter(vendor.samples()))]
        body = render_sample(sample, now, seed="bench")
        signed = case.sign(body, now)
        cfg = parse_config(
            json.dumps(
                {
                    "sources": {
                        name: {"type": name, **case.config},
                        "baseline": {
                            "type": "hmac",
                            "secrets": ["s"],
                            "signature_header": "X-Sig",
                        },
                    }
                }
            )
        )
        sources = build_sources(cfg.sources)
        headers = {k.lower(): v for k, v in signed.headers.items()}
        headers.setdefault("content-type", vendor.content_type)
        if signed.query:
            headers[QUERY] = signed.query
        base_headers = {"x-sig": hmac.new(b"s", signed.body, hashlib.sha256).hexdigest()}
        n = 2000
        best, best_base = float("inf"), float("inf")
        for _ in range(args.rounds):  # interleaved: noise hits both
            best = min(best, per_request(sources[name], signed.body, headers, now, n))
            best_base = min(
                best_base, per_request(sources["baseline"], signed.body, base_headers, now, n)
            )
        rows.append((name, vendor.scheme.describe(), len(signed.body), best, best_base))
        print(f"\r{i}/{len(names)} {name:<24}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"{'vendor':<20} {'bytes':>6} {'us/req':>8} {'body HMAC':>9} {'ratio':>6}  scheme")
    for name, scheme, size, us, base in sorted(rows, key=lambda r: r[3] / r[4]):
        print(f"{name:<20} {size:>6} {us:>8.1f} {base:>9.1f} {us / base:>5.1f}x  {scheme[:60]}")


if __name__ == "__main__":
    main()
