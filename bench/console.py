"""Console benchmark: the deliveries pages at 1,000 and at 1,000,000 stored deliveries.

    python bench/console.py [--small 1000] [--large 1000000] [--repeat 50]

Starts two private redis-servers on free ports (no persistence, removed at the end) and
fills one with `--small`, the other with `--large` stored deliveries of one stripe
source, in the gateway's own shapes: the raw entries through Store.accept_many (the
accept script: raw stream + seen marks), the delivery log and the outcome indexes
through Pipeline.run + Pipeline.commands (the normalize worker's commands; the events
stream entries are left out, capped by events_retention anyway), the dead letters' index
through the deliver worker's Runner.index_dead_letter, and attempt records as the deliver
worker writes them for one delivery in ten and every dead-lettered one. 1 in 20
deliveries is quarantined (not a Stripe event), 1 in 20 dead-lettered (so a page of either
is full at 1,000 too); bodies are ~420-byte charge.succeeded events. A progress line
shows the fill (1M: about 2-5 minutes, ~1.2 GB of Redis memory).

Then it times the console (in-process, httpx's ASGI transport, logged in) on both: the
newest page (one source, and every source merged), the next page (cursor), a one-hour
time range ending at the middle delivery, the quarantined and dead_lettered outcomes,
the search by id and the delivery page of the middle delivery (a 400 attempt, a dead
letter). The two sizes take turns request by request, so the machine's other load weighs
on both alike; it prints the median ms of `--repeat` requests, the ratio large/small (the
issue allows 2x; the exit status is 1 above it), Redis's own time per request (from
INFO commandstats) and its used_memory at both sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gateway.app import create_app  # noqa: E402
from gateway.config import Config, parse_config  # noqa: E402
from gateway.deliver import DeliverWorker  # noqa: E402
from gateway.store import RawDelivery, Store  # noqa: E402
from gateway.worker import Pipeline  # noqa: E402

SOURCE = "stripe"
BATCH = 2_000
DAY_MS = 86_400_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int, directory: str) -> subprocess.Popen[bytes]:
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is needed (or pass --redis-url)")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("the private redis-server did not start") from None
            time.sleep(0.05)


def gateway_config(redis_url: str, prefix: str, port: int, large: int) -> Config:
    return parse_config(
        f"""
redis_url: {redis_url}
key_prefix: {prefix}
operator: {{listen: "127.0.0.1:{port}"}}
console: {{enabled: true, users: {{bench: {{password: bench-pw}}}}}}
sources:
  {SOURCE}: {{type: stripe, secrets: [whsec_bench], raw_retention: {large * 2}}}
destinations:
  hook: {{type: http, url: "http://127.0.0.1:9/in"}}
""",
        "bench.yaml",
        {},
    )


def delivery_id(i: int) -> str:
    return f"evt_{i:024d}"  # Stripe-style: 28 characters


def body(i: int) -> bytes:
    if i % 20 == 7:  # signed, but no Stripe event: quarantined
        return json.dumps({"id": delivery_id(i), "object": "not-an-event"}).encode()
    event = {
        "id": delivery_id(i), "object": "event", "type": "charge.succeeded",
        "created": 1_700_000_000 + i,
        "data": {"object": {
            "id": f"ch_{i:024d}", "object": "charge", "amount": 1234, "amount_captured": 1234,
            "amount_refunded": 0, "currency": "usd", "status": "succeeded", "paid": True,
            "customer": f"cus_{i:014d}", "metadata": {"user_id": f"u_{i}"},
            "billing_details": {"email": f"p{i}@example.com"},
        }},
    }  # fmt: skip
    return json.dumps(event).encode()


async def fill(config: Config, store: Store, start: int, stop: int, began: float) -> None:
    """Deliveries start..stop-1, stored as the gateway stores them."""
    pipeline = Pipeline(config, store)
    runner = DeliverWorker(config, store).runners[0]
    event_keys = set(store.keys.event_streams(config.partition_count()))
    headers = b'{"stripe-signature":"t=1700000000,v1=0000"}'
    encode = msgspec.json.Encoder().encode
    for first in range(start, stop, BATCH):
        ids = range(first, min(stop, first + BATCH))
        now_ms = int(time.time() * 1000)
        deliveries = [
            RawDelivery(SOURCE, delivery_id(i), delivery_id(i), now_ms, headers, body(i),
                        7 * DAY_MS, config.sources[SOURCE].raw_retention)
            for i in ids
        ]  # fmt: skip
        results = await store.accept_many(deliveries)
        commands: list[tuple[Any, ...]] = []
        dead: list[tuple[Any, ...]] = []
        for i, d, result in zip(ids, deliveries, results, strict=True):
            fields = {b"delivery_id": d.delivery_id.encode(), b"received_at": str(now_ms).encode(),
                      b"headers": headers, b"body": d.body}  # fmt: skip
            outcome = pipeline.run(SOURCE, result.entry_id, fields)
            commands += [c for c in pipeline.commands(outcome) if c[1] not in event_keys]
            for event in outcome.events:
                as_dict = msgspec.to_builtins(event)
                if i % 20 == 3:  # the destination gave up on it
                    commands += runner.index_dead_letter(as_dict, now_ms / 1000)
                    dead.append(runner.dead_letter(as_dict, 1, "HTTP 400: refused", now_ms / 1000))
                if i % 10 == 1 or i % 20 == 3:
                    fail = i % 20 == 3
                    record = {
                        "destination": "hook", "at": now_ms / 1000, "attempt": 1,
                        "outcome": "fail" if fail else "ok", "status": 400 if fail else 200,
                        "latency_ms": 12.5, "reason": "HTTP 400: refused" if fail else "",
                    }  # fmt: skip
                    key = store.keys.attempts(event.message_id)
                    commands += [("RPUSH", key, encode(record)), ("EXPIRE", key, 7 * 86400)]
        await store.execute(commands)
        if dead:  # the dead letters, and their indexes, as the deliver worker writes them
            await runner.index_dead_letters(dead, await store.execute(dead))
        done = ids.stop
        rate = (done - start) / max(1e-9, time.perf_counter() - began)
        print(f"\r  stored {done:>9,} deliveries ({rate:,.0f}/s)", end="", file=sys.stderr)
    print(file=sys.stderr)


async def pages(config: Config, store: Store, port: int, n: int) -> tuple[Any, dict[str, str]]:
    """A logged-in console client over `store`, and the pages to time with `n` stored."""
    # The middle delivery, one a destination refused (400): events, attempts, a dead letter.
    middle = delivery_id(n // 2 - (n // 2) % 20 + 3)
    # The range ends at the middle delivery's raw entry (the stream's ids are Redis's clock).
    raw_id = await store.client.hget(store.keys.delivery_log(SOURCE, middle), "_raw")
    mid_ms = int(raw_id.decode().partition("-")[0])
    log = await store.client.hgetall(store.keys.delivery_log(SOURCE, middle))
    message_id = next(k.decode() for k in log if not k.startswith(b"_"))
    app = create_app(config, store=store)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=f"http://127.0.0.1:{port}"
    )
    login = await client.post("/console/login", data={"name": "bench", "password": "bench-pw"})
    assert login.status_code == 303, login.text
    newest = await client.get(f"/console/deliveries?source={SOURCE}")
    older = newest.text.split('id="older" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    return client, {
        "newest page": f"/console/deliveries?source={SOURCE}",
        "all sources": "/console/deliveries",
        "next page (cursor)": older,
        "time range (middle)": f"/console/deliveries?source={SOURCE}"
        f"&from={(mid_ms - 3_600_000) / 1000:.3f}&to={mid_ms / 1000:.3f}",
        "outcome quarantined": f"/console/deliveries?source={SOURCE}&outcome=quarantined",
        "outcome dead_lettered": "/console/deliveries?outcome=dead_lettered",
        "by id": f"/console/deliveries?id={middle}",
        "delivery page": f"/console/deliveries/{SOURCE}/{middle}",
        "dead letters, newest": "/console/dead-letters",
        "dead letters of a destination": "/console/dead-letters?destination=hook",
        "dead letter by messageId": f"/console/dead-letters?message={message_id}",
    }


def rows_of(label: str, text: str) -> int:
    if label == "delivery page":
        assert "HTTP 400: refused" in text and "Charge Succeeded" in text
        return 1
    if label.startswith("dead letter"):
        return text.count("data-message-id=")
    return text.count("data-delivery=") or text.count("<tr data-source")


async def measure(sides: list[tuple[Any, dict[str, str], redis.Redis]], repeat: int) -> list[dict]:
    """Each page at each size, the sizes taking turns request by request (so the load of
    the machine weighs on both alike): median ms per request, rows shown, and the time
    Redis spent per request (its commandstats, in µs)."""
    out: list[dict[str, Any]] = [{} for _ in sides]
    for label in sides[0][1]:
        times: list[list[float]] = [[] for _ in sides]
        for _, _, server in sides:
            server.config_resetstat()
        for i in range(repeat + 3):
            for k, (client, paths, _) in enumerate(sides):
                started = time.perf_counter()
                response = await client.get(paths[label])
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, (label, response.status_code)
                assert 'class="error"' not in response.text, (label, response.text[:2000])
                if i >= 3:  # the first ones warm the caches
                    times[k].append(elapsed)
                out[k][f"{label} rows"] = rows_of(label, response.text)
                assert out[k][f"{label} rows"], (label, "no rows")
        for k, (_, _, server) in enumerate(sides):
            stats = server.info("commandstats")
            usec = sum(v["usec"] for name, v in stats.items() if name != "cmdstat_config")
            out[k][label] = statistics.median(times[k])
            out[k][f"{label} redis"] = usec / (repeat + 3)
    return out


def used_memory(client: redis.Redis) -> str:
    info = client.info("memory")
    return f"{info['used_memory'] / 2**20:,.0f} MiB"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-console-")
    procs, stores, syncs = [], [], []
    try:
        sides = []
        for n in (args.small, args.large):
            redis_port = free_port()
            procs.append(start_redis(redis_port, tmp))
            url = f"redis://127.0.0.1:{redis_port}/0"
            prefix = f"bench-console-{uuid.uuid4().hex[:8]}"
            port = free_port()
            config = gateway_config(url, prefix, port, args.large)
            store = Store.connect(url, prefix, timeout=30.0)
            stores.append(store)
            syncs.append(redis.Redis.from_url(url))
            print(f"filling {n:,} deliveries (redis-server on port {redis_port})", file=sys.stderr)
            await fill(config, store, 0, n, time.perf_counter())
            client, paths = await pages(config, store, port, n)
            sides.append((client, paths, syncs[-1]))
        print(f"timing {len(sides[0][1])} pages, {args.repeat} requests each", file=sys.stderr)
        small, large = await measure(sides, args.repeat)
        for client, _, _ in sides:
            await client.aclose()
        stored = [await s.client.xlen(s.keys.raw(SOURCE)) for s in stores]
        memory = [used_memory(s) for s in syncs]
        print(f"\nraw stream: {stored[0]:,} / {stored[1]:,} entries; Redis used_memory "
              f"{memory[0]} / {memory[1]}")  # fmt: skip
        print(f"{'page':<24}{'rows':>5}{args.small:>10,} ms{args.large:>12,} ms{'ratio':>8}"
              f"{'Redis µs/page':>18}")  # fmt: skip
        worst = 0.0
        for label in (k for k in small if not k.endswith((" rows", " redis"))):
            ratio = large[label] / small[label]
            worst = max(worst, ratio)
            print(
                f"{label:<24}{large[label + ' rows']:>5}{small[label]:>13.2f}"
                f"{large[label]:>15.2f}{ratio:>7.2f}x"
                f"{small[label + ' redis']:>9.0f} / {large[label + ' redis']:.0f}"
            )
        print(f"worst ratio {worst:.2f}x (the issue allows 2x)")
        return 0 if worst <= 2 else 1
    finally:
        for store in stores:
            await store.close()
        for sync in syncs:
            sync.close()
        for proc in procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
