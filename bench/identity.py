"""Identity graph benchmark: Redis memory per visitor and per person, and the latency of
a link and of a batch's enrichment round trip, on real Redis.

    python bench/identity.py [--people 2000]

Memory is Redis's own count (MEMORY USAGE of every key the graph wrote, summed), for:
an anonymous visitor (the /v1/id record: consent, first and last touch), an identified
customer (userId, email, web anonymousId and a Stripe customer id in one profile, with
their match keys, last IP and user agent, consent and touches recorded), and each
identifier more. Latency: one link call, and one enrichment round trip for a batch of
200 events (the links it states plus the observe script), p50 and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

from gateway.config import IdentityConfig
from gateway.graph import Graph, email_id
from gateway.identity import Visitors, touch
from gateway.store import Store

NOW = 1_767_225_600_000
LANDING = "https://shop.example.com/?utm_source=google&utm_medium=cpc&gclid=EAIaIQobChMI12345"


async def memory(store: Store, pattern: str) -> int:
    total = 0
    async for key in store.client.scan_iter(match=pattern, count=1000):
        total += await store.client.memory_usage(key, samples=0) or 0
    return total


def attributes(i: int, at: int) -> list[tuple[str, str, int]]:
    return [
        ("a:email", f"customer.{i}@example.com", at),
        ("a:firstName", "Jane", at),
        ("a:lastName", "Doe", at),
        ("a:ip", f"203.0.{i % 250}.{i % 200}", at),
        (
            "a:ua",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.5 Safari/605.1.15",
            at,
        ),
        ("a:anon", str(uuid.uuid4()), at),
    ]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(people: int, url: str) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    store = Store.connect(url, prefix, 5.0)
    identity = IdentityConfig()
    graph = Graph.of(store, identity)
    visitors = Visitors(store, identity)
    try:
        print(f"identity graph on real Redis ({url}), {people} of each:")
        # Anonymous visitors: the /v1/id record only (no profile until they are linked).
        granted = {"ad_storage": "granted", "analytics_storage": "granted"}
        for i in range(people):
            aid = str(uuid.uuid4())
            await visitors.record(aid, touch(LANDING, None, "_fbp=fb.1.1.2", NOW), granted, NOW)
            if i % 500 == 499:
                print(f"  visitors: {i + 1}/{people}", flush=True)
        per_visitor = await memory(store, f"{prefix}:{{idg}}:v:*") / people
        print(f"  anonymous visitor (its /v1/id record):       {per_visitor:7.0f} B")

        # Identified customers: four identifiers, attributes recorded.
        links, batches = [], []
        before = await memory(store, f"{prefix}:{{idg}}:[ipf]:*")
        for start in range(0, people, 200):
            calls, enrich = [], []
            for i in range(start, min(people, start + 200)):
                aid = str(uuid.uuid4())
                await visitors.record(aid, touch(LANDING, None, None, NOW), granted, NOW)
                ids = [
                    f"user:user-{i}",
                    email_id(f"customer.{i}@example.com"),
                    f"anon:{aid}",
                    f"ext:stripe_customer_id:cus_{i:014d}",
                ]
                t = time.perf_counter()
                await graph.link(ids, NOW)
                links.append(time.perf_counter() - t)
                calls.append((ids, NOW, None))
                enrich.append((ids, attributes(i, NOW), ("", "")))
            t = time.perf_counter()
            await graph.observe(calls, enrich, NOW)  # what the worker sends for a batch
            batches.append(time.perf_counter() - t)
            print(f"  customers: {min(people, start + 200)}/{people}", flush=True)
        per_person = (await memory(store, f"{prefix}:{{idg}}:[ipf]:*") - before) / people
        print(f"  identified customer (4 ids + attributes):    {per_person:7.0f} B")

        # One identifier more on each of those profiles (a second browser).
        before = await memory(store, f"{prefix}:{{idg}}:[ipf]:*")
        for i in range(people):
            await graph.link([f"user:user-{i}", f"anon:{uuid.uuid4()}"], NOW)
        extra = (await memory(store, f"{prefix}:{{idg}}:[ipf]:*") - before) / people
        print(f"  each identifier more:                        {extra:7.0f} B")
        print(
            f"  link, one call: p50 {1000 * statistics.median(links):.2f} ms, "
            f"p99 {1000 * pct(links, 0.99):.2f} ms"
        )
        print(
            f"  enrichment round trip, batch of 200 (200 links + observe): p50 "
            f"{1000 * statistics.median(batches):.1f} ms, p99 {1000 * pct(batches, 0.99):.1f} ms"
        )
        per_million = (per_person * 1_000_000 + per_visitor * 5_000_000) / 2**30
        print(
            f"  so 1 M customers with 5 M anonymous visitors: about {per_million:.1f} GiB "
            "on the graph's shard"
        )
    finally:
        keys = [k async for k in store.client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await store.client.delete(*keys[i : i + 1000])
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(run(args.people, os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")))


if __name__ == "__main__":
    main()
