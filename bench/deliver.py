"""Delivery benchmark: events/s per core from the events stream to a local sink (http,
batched; google-ads, whose token and upload endpoints the sink also answers; postgres),
beside a hand-written forwarder measured in the same run, and the
end-to-end latency of a signed webhook until the sink has its event, at a steady rate.

    python bench/deliver.py [--events 20000] [--rate 200] [--seconds 10]

Needs Redis at $REDIS_URL and, for the postgres figure, PostgreSQL at $POSTGRES_DSN
(default postgresql://postgres@127.0.0.1:5432/test). The sink runs in its own process;
"per core" is per second of this process's CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import msgspec

# Each gateway's console and /metrics on a free port: two may run at once.
OPERATOR = {"OPERATOR_LISTEN": "127.0.0.1:0"}
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gateway.config import parse_config  # noqa: E402
from gateway.deliver import DeliverWorker  # noqa: E402
from gateway.store import Store  # noqa: E402
from normalizers import Delivery, normalize  # noqa: E402

SINK = """
import sys, time
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
import uvicorn
log = open(sys.argv[2], "a", buffering=1)
async def sink(request):
    body = await request.body()
    if request.url.path == "/timed":
        log.write(f"{time.time()} {body[:600].decode(errors='replace')}\\n")
    if request.url.path == "/token":  # google-ads asks for an OAuth access token first
        return Response(b'{"access_token": "ya29.bench", "expires_in": 3599}',
                        media_type="application/json")
    return Response(b"{}", media_type="application/json")
app = Starlette(routes=[Route("/{p:path}", sink, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            loop="uvloop", http="httptools", access_log=False)
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_events(n: int) -> list[bytes]:
    body = (HERE.parent / "tests" / "fixtures" / "stripe" / "charge.succeeded.json").read_bytes()
    [event] = normalize(Delivery("stripe", "stripe", "evt", 1_700_000_000_000, {}, body))
    encoded = msgspec.json.encode(event)
    template = msgspec.json.decode(encoded)
    out = []
    for i in range(n):
        template["messageId"] = str(uuid.UUID(int=i))
        out.append(msgspec.json.encode(template))
    return out


def conversions(events: list[bytes]) -> list[bytes]:
    """The sample events as purchases Google Ads takes: a click id each, paid just now."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    out = []
    for i, data in enumerate(events):
        event = msgspec.json.decode(data)
        event["event"], event["timestamp"] = "Order Completed", now
        event["context"]["clickIds"] = {"gclid": f"Cj0KCQiA-bench-{i}"}
        out.append(msgspec.json.encode(event))
    return out


async def fill(store: Store, events: list[bytes], partitions: int = 1) -> None:
    streams = store.keys.event_streams(partitions)
    async with store.client.pipeline(transaction=False) as pipe:
        for i, data in enumerate(events):
            pipe.xadd(
                streams[i % partitions],
                {
                    "message_id": str(i),
                    "source": "stripe",
                    "delivery_id": "evt",
                    "type": "track",
                    "event": msgspec.json.decode(data)["event"],  # what routing reads
                    "data": data,
                },
            )
        await pipe.execute()


async def gateway_rate(
    redis_url: str, destination: str, events: list[bytes], log: bool = True, partitions: int = 1
) -> float:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    config = parse_config(
        f"redis_url: {redis_url}\nkey_prefix: {prefix}\nevents_partitions: {partitions}\n"
        f"delivery_log_retention: {'7d' if log else 0}\ndestinations:\n  d:\n{destination}"
        "    start: earliest\n",
        "bench.yaml",
        {},
    )
    store = Store.connect(redis_url, prefix, 5.0)
    try:
        await fill(store, events, partitions)
        worker = DeliverWorker(config, store, "bench")
        runner = worker.runners[0]
        stop = asyncio.Event()
        cpu, wall = time.process_time(), time.perf_counter()
        task = asyncio.create_task(worker.run(stop))
        stats = runner.stats
        while stats.sent + stats.dead_lettered + stats.skipped < len(events):
            await asyncio.sleep(0.01)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        stop.set()
        await task
        if runner.stats.sent != len(events):
            letters = await store.client.xrange(store.keys.dead_letters(), count=3)
            reasons = {f[b"reason"].decode() for _, f in letters}
            raise SystemExit(f"not all sent: {vars(runner.stats)}; dead letters: {reasons}")
        return len(events) / cpu
    finally:
        keys = [k async for k in store.client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await store.client.delete(*keys)
        await store.close()


async def baseline_rate(redis_url: str, sink: str, events: list[bytes], batch: int) -> float:
    """A hand-written forwarder: XREADGROUP, POST the batch as a JSON array, XACK."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    store = Store.connect(redis_url, prefix, 5.0)
    key = store.keys.events()
    try:
        await fill(store, events)
        await store.client.xgroup_create(key, "g", id="0")
        async with httpx.AsyncClient() as client:
            cpu = time.process_time()
            done = 0
            while done < len(events):
                reply = await store.client.xreadgroup("g", "c", {key: ">"}, count=batch)
                entries = reply[0][1]
                body = b"[" + b",".join(f[b"data"] for _, f in entries) + b"]"
                response = await client.post(
                    sink, content=body, headers={"content-type": "application/json"}
                )
                response.raise_for_status()
                await store.client.xack(key, "g", *[eid for eid, _ in entries])
                done += len(entries)
            cpu = time.process_time() - cpu
        return len(events) / cpu
    finally:
        await store.client.delete(key)
        await store.close()


def latency(redis_url: str, sink_port: int, log: Path, rate: float, seconds: float) -> None:
    """Signed webhooks at a steady rate through `serve`; time until the sink has each event."""
    import stripe

    port = free_port()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    config = Path(tempfile.mkdtemp()) / "config.yaml"
    config.write_text(
        f"redis_url: {redis_url}\nkey_prefix: {prefix}\n"
        "sources:\n  stripe: {type: stripe, secrets: [whsec_b], tolerance: 1h}\n"
        f"destinations:\n  sink: {{type: http, url: 'http://127.0.0.1:{sink_port}/timed'}}\n"
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
        ],
        cwd=HERE.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **OPERATOR, "LOG_LEVEL": "warning"},
    )
    template = json.loads((HERE.parent / "tests/fixtures/stripe/charge.succeeded.json").read_text())
    sent: dict[str, float] = {}
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(url + "/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        time.sleep(1.0)  # let the workers start
        with httpx.Client() as client:
            start = time.perf_counter()
            total = int(rate * seconds)
            for i in range(total):
                target = start + i / rate
                pause = target - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                template["id"] = f"evt_lat_{i}"
                body = json.dumps(template)
                header = stripe.WebhookSignature.generate_signature_header(body, "whsec_b")
                sent[f"evt_lat_{i}"] = time.time()
                client.post(
                    url + "/webhooks/stripe", content=body, headers={"Stripe-Signature": header}
                )
        deadline = time.time() + 30
        arrived: dict[str, float] = {}
        while time.time() < deadline and len(arrived) < len(sent):
            for line in log.read_text().splitlines():
                at, _, head = line.partition(" ")
                marker = head.find('"deliveryId":"')
                if marker >= 0:
                    delivery = head[marker + 14 :].split('"', 1)[0]
                    arrived.setdefault(delivery, float(at))
            time.sleep(0.2)
        delays = sorted((arrived[k] - sent[k]) * 1000 for k in sent if k in arrived)
        p50 = statistics.median(delays)
        p99 = delays[int(len(delays) * 0.99) - 1]
        print(
            f"\nend to end at {rate:g} webhooks/s for {seconds:g} s (signed webhook in -> "
            f"event at an http sink, one event per request):"
        )
        print(f"  {len(delays)}/{len(sent)} arrived; latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    finally:
        server.terminate()
        server.wait(timeout=15)
        import redis

        r = redis.Redis.from_url(redis_url)
        keys = list(r.scan_iter(f"{prefix}:*"))
        if keys:
            r.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    dsn = os.environ.get("POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    from gateway import logs

    logs.configure("warning", json=True)
    port = free_port()
    log = Path(tempfile.mkdtemp()) / "sink.log"
    log.touch()
    sink = subprocess.Popen(
        [sys.executable, "-c", SINK, str(port), str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                httpx.post(f"http://127.0.0.1:{port}/x", content=b"{}")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        events = sample_events(args.events)
        size = len(events[0])
        print(f"delivery of {args.events} events of {size} bytes, per core of this process:")
        base = asyncio.run(baseline_rate(redis_url, f"http://127.0.0.1:{port}/x", events, 500))
        print(f"  baseline: hand-written forwarder, batches of 500   {base:10,.0f} events/s")
        http_config = (
            f"    type: http\n    url: http://127.0.0.1:{port}/x\n    batch: true\n"
            "    batch_size: 500\n"
        )
        http = asyncio.run(gateway_rate(redis_url, http_config, events))
        print(
            f"  http destination, batches of 500                   {http:10,.0f} events/s "
            f"({http / base:.2f}x the baseline; target >= 20,000)"
        )
        bare = asyncio.run(gateway_rate(redis_url, http_config, events, log=False))
        print(
            f"  the same without the delivery log                  {bare:10,.0f} events/s "
            f"({bare / base:.2f}x)"
        )
        parted = asyncio.run(gateway_rate(redis_url, http_config, events, partitions=4))
        print(
            f"  http, the events in 4 partitions                   {parted:10,.0f} events/s "
            f"({parted / base:.2f}x)"
        )
        google_config = (
            f"    type: google-ads\n    customer_id: '1234567890'\n"
            f"    developer_token: dev\n    client_id: id\n    client_secret: secret\n"
            f"    refresh_token: refresh\n    endpoint: http://127.0.0.1:{port}\n"
            f"    token_url: http://127.0.0.1:{port}/token\n"
            "    conversion_actions:\n"
            "      Order Completed: customers/1234567890/conversionActions/1\n"
        )
        google = asyncio.run(gateway_rate(redis_url, google_config, conversions(events)))
        print(
            f"  google-ads destination, batches of 2000            {google:10,.0f} events/s "
            f"({google / base:.2f}x the baseline)"
        )
        table = f"bench_{uuid.uuid4().hex[:8]}"
        try:
            pg = asyncio.run(
                gateway_rate(
                    redis_url, f"    type: postgres\n    dsn: '{dsn}'\n    table: {table}\n", events
                )
            )
            print(f"  postgres destination, batches of 1000              {pg:10,.0f} events/s")
        finally:
            import asyncpg

            async def drop() -> None:
                conn = await asyncpg.connect(dsn)
                await conn.execute(f"DROP TABLE IF EXISTS {table}")
                await conn.close()

            asyncio.run(drop())
        latency(redis_url, port, log, args.rate, args.seconds)
    finally:
        sink.terminate()
        sink.wait(timeout=10)


if __name__ == "__main__":
    main()
