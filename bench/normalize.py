"""Normalize benchmark: events/s per core for the Stripe normalizer, a 10-field YAML
mapping, and the worker from a raw stream to the events stream on real Redis.

    python bench/normalize.py [--events 20000] [--rounds 3]

Each figure is printed beside a baseline measured in the same process at the same
moment: decoding the payload and encoding an event of the same size with msgspec, the
least any normalizer must do. "Per core" is per second of this process's CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from pathlib import Path

import msgspec

from gateway.config import parse_config
from gateway.store import Store
from gateway.worker import NormalizeWorker
from normalizers import Delivery, Mapper, normalize

HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parent / "tests" / "fixtures" / "stripe" / "charge.succeeded.json"

MAPPING = """
sources:
  shop:
    type: hmac
    secrets: [x]
    signature_header: Sig
    mappings:
      - when: "type == 'charge.succeeded'"
        event: Payment Received
        timestamp: created
        user_id: data.object.metadata.user_id
        properties:
          charge_id: data.object.id
          order_id: data.object.payment_intent
          amount: stripe_money(data.object.amount, data.object.currency)
          currency: currency(data.object.currency)
          status: data.object.status
          card_brand: data.object.payment_method_details.card.brand
          card_country: data.object.payment_method_details.card.country
          risk_level: data.object.outcome.risk_level
          receipt: coalesce(data.object.receipt_email, data.object.billing_details.email)
          livemode: livemode
"""


def cpu_rate(label: str, n: int, fn) -> float:
    """Run fn() n times; print and return calls per CPU second."""
    start = time.process_time()
    for _ in range(n):
        fn()
    used = time.process_time() - start
    rate = n / used
    print(f"  {label:44s} {rate:10,.0f}/s per core  ({1e6 / rate:6.1f} us each)")
    return rate


def pure(n: int) -> tuple[float, float, float]:
    body = FIXTURE.read_bytes()
    encode = msgspec.json.Encoder().encode
    sample = normalize(Delivery("stripe", "stripe", "evt", 1, {}, body))[0]

    def baseline() -> None:
        msgspec.json.decode(body)
        encode(sample)

    def stripe() -> None:
        for event in normalize(Delivery("stripe", "stripe", "evt_1", 1_700_000_000_000, {}, body)):
            encode(event)

    config = parse_config(MAPPING, "bench.yaml", {}).sources["shop"]
    mapper = Mapper(config.mappings, config.user_id)
    assert len(config.mappings[0].properties) == 10

    def mapped() -> None:
        delivery = Delivery("shop", "hmac", "evt_1", 1_700_000_000_000, {}, body, config)
        for event in normalize(delivery, mapper):
            encode(event)

    print(f"pure normalization of a {len(body) / 1024:.1f} KB Stripe event, {n} times:")
    base = cpu_rate("baseline: msgspec decode + encode", n, baseline)
    a = cpu_rate("(a) Stripe normalizer (+ encode)", n, stripe)
    b = cpu_rate("(b) 10-field YAML mapping (+ encode)", n, mapped)
    print(
        f"  ratios to the baseline: (a) {a / base:.2f}x, (b) {b / base:.2f}x; "
        f"targets (a) and (b) >= 50,000/s"
    )
    return base, a, b


async def through_worker(n: int, redis_url: str, graph: bool = False, quiet: bool = False) -> float:
    """The worker from a raw stream to the events stream; with `graph`, every event is
    linked and enriched against the identity graph (one round trip per batch). The
    charges are of n/4 customers (4 each), each known by id, email and userId."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    config = parse_config(
        f"redis_url: {redis_url}\nkey_prefix: {prefix}\nworker: {{batch: 500}}\n"
        f"identity: {{graph: {'true' if graph else 'false'}}}\n"
        "sources:\n  stripe: {type: stripe, secrets: [whsec_x]}\n",
        "bench.yaml",
        {},
    )
    store = Store.connect(redis_url, prefix, 5.0)
    template = json.loads(FIXTURE.read_text())
    charge = template["data"]["object"]
    raw = store.keys.raw("stripe")
    worker = NormalizeWorker(config, store, "bench")
    try:
        await worker.ensure_groups()
        async with store.client.pipeline(transaction=False) as pipe:
            for i in range(n):
                template["id"] = f"evt_{i}"
                person = i % max(1, n // 4)
                charge["customer"] = f"cus_{person}"
                charge["billing_details"]["email"] = f"c{person}@example.com"
                charge["metadata"]["user_id"] = f"u_{person}"
                pipe.xadd(
                    raw,
                    {
                        "source": "stripe",
                        "delivery_id": f"evt_{i}",
                        "received_at": 1_700_000_000_000,
                        "headers": b"{}",
                        "body": json.dumps(template).encode(),
                    },
                )
            await pipe.execute()
        redis_pid = int((await store.client.info("server"))["process_id"])
        redis_before = _cpu_seconds(redis_pid)
        wall, cpu = time.perf_counter(), time.process_time()
        while worker.stats.deliveries < n:
            await worker.read_once()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        redis_cpu = _cpu_seconds(redis_pid) - redis_before
        events = await store.client.xlen(store.keys.events())
        assert events == n, (events, n)
        rate = n / cpu
        if not quiet:
            label = "with identity enrichment" if graph else "identity graph off"
            print(
                f"  worker, {label:26s} {rate:10,.0f} events/s per core ({n / wall:,.0f}/s "
                f"wall); Redis {1e6 * redis_cpu / n:.1f} us CPU per event"
            )
        return rate
    finally:
        keys = [k async for k in store.client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await store.client.delete(*keys)
        await store.close()


async def worker_rounds(n: int, redis_url: str, rounds: int) -> None:
    """(c) the worker on real Redis, with and without enrichment, rounds alternating."""
    print(f"\n(c) worker, raw stream -> events stream on real Redis, {n} deliveries a round:")
    plain, enriched = [], []
    for r in range(rounds):
        print(f"  round {r + 1}/{rounds}")
        plain.append(await through_worker(n, redis_url, graph=False))
        enriched.append(await through_worker(n, redis_url, graph=True))
    best_plain, best_enriched = max(plain), max(enriched)
    paired = sorted(e / p for p, e in zip(plain, enriched, strict=True))
    print(
        f"  best of {rounds}: {best_plain:,.0f}/s without, {best_enriched:,.0f}/s with "
        f"enrichment ({best_enriched / best_plain:.2f}x); each round's with/without: "
        f"{', '.join(f'{r:.2f}x' for r in paired)}, median {statistics.median(paired):.2f}x "
        "(target >= 0.6x; worker target >= 20,000/s)"
    )


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    from gateway import logs

    logs.configure("info", json=True)  # as in production: the worker's log lines count
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pure(args.events)
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    asyncio.run(worker_rounds(args.events, url, args.rounds))


if __name__ == "__main__":
    main()
