"""Collect benchmark: the collect API against the webhook front door and a bare endpoint.

One run measures, rounds alternating between the loads so that machine noise hits all:

  webhook   signed ~4 KB Stripe events to /webhooks/stripe, on the gateway and on the bare
            Starlette endpoint (bench/bare_app.py), as bench/ingest.py sends them;
  batch     /v1/batch of 100 analytics-node-shaped track messages (unique messageIds,
            the write key as the Basic username), on the gateway;
  single    /v1/t single analytics.js track messages (text/plain JSON with `writeKey` in
            the body, from a page's Origin), on the gateway and on the bare endpoint.

It prints (a) collect batch events/s per core of the gateway process (per second of its
CPU time, from /proc) against the webhook front door's deliveries/s per core, and (b) the
gateway/bare throughput ratio of /v1/t against that of webhooks. The servers run as in
bench/ingest.py: uvicorn (uvloop + httptools), one process each, each pinned to its own
core, the gateway as users run it (`webhook-gateway serve --no-workers`, real Redis at
$REDIS_URL, a JSON log line per request); wrk runs on the other core. The collect source's
rate limits are set to 1000000000/1s per IP and per write key: the limiter runs for every
request (its Redis script is part of the cost) but never refuses one.

    python bench/collect.py [--rounds 8] [--duration 5] [--no-limits] [--limits-ab]
                            [--profile batch|single|webhook]

--limits-ab adds a second gateway with the limits off, pinned like the first, and runs
/v1/t on it in the same rounds: what the limits cost, measured at the same moment.

It needs `wrk` (apt-get install wrk) and two cores.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

# Each gateway's console and /metrics on a free port: two may run at once.
OPERATOR = {"OPERATOR_LISTEN": "127.0.0.1:0"}
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.ingest import (  # noqa: E402
    SECRET,
    cleanup,
    cpu_seconds,
    free_port,
    parse_wrk,
    print_profile,
    py_spy,
    run_wrk,
    setup,
    stripe_event_template,
    wait_ready,
)

WRITE_KEY = "wk_bench_0123456789abcdef"
SITE = "https://www.example.com"
HUGE_LIMIT = "1000000000/1s"  # the most a limit may count: never reached here

# wrk script: the body file with every __ID__ replaced by an id unique in the run.
# Environment: BENCH_BODY, BENCH_PREFIX, BENCH_PATH, BENCH_HEADERS (JSON-free "k\tv\n").
WRK_SCRIPT = r"""
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local template = f:read("*a")
f:close()
local pieces, start = {}, 1
while true do
  local s, e = template:find("__ID__", start, true)
  if not s then break end
  pieces[#pieces + 1] = template:sub(start, s - 1)
  start = e + 1
end
local last = template:sub(start)
local prefix = os.getenv("BENCH_PREFIX")
local path = os.getenv("BENCH_PATH")
local headers = {}
for k, v in os.getenv("BENCH_HEADERS"):gmatch("([^\t\n]+)\t([^\n]*)\n") do headers[k] = v end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local counter = 0
function request()
  counter = counter + 1
  local base = prefix .. "-" .. tid .. "-" .. counter .. "-"
  local parts = {}
  for i = 1, #pieces do
    parts[2 * i - 1] = pieces[i]
    parts[2 * i] = base .. i
  end
  parts[#parts + 1] = last
  return wrk.format("POST", path, headers, table.concat(parts))
end
"""

_EVENTS: list[tuple[str, dict[str, Any]]] = [
    (
        "Product Viewed",
        {
            "product_id": "507f1f77bcf86cd799439011",
            "sku": "G-32",
            "category": "Games",
            "name": "Monopoly: 3rd Edition",
            "brand": "Hasbro",
            "variant": "200 pieces",
            "price": 18.99,
            "currency": "EUR",
            "url": "https://www.example.com/products/monopoly-3rd-edition",
            "image_url": "https://cdn.example.com/products/monopoly-3rd-edition.jpg",
        },
    ),
    (
        "Product Added",
        {
            "cart_id": "skdjsidjsdkdj29j",
            "product_id": "507f1f77bcf86cd799439011",
            "sku": "G-32",
            "category": "Games",
            "name": "Monopoly: 3rd Edition",
            "price": 18.99,
            "quantity": 1,
            "currency": "EUR",
        },
    ),
    (
        "Checkout Started",
        {
            "order_id": "50314b8e9bcf000000000000",
            "value": 30.0,
            "revenue": 25.0,
            "shipping": 3.0,
            "tax": 2.0,
            "currency": "EUR",
            "products": [
                {"product_id": "507f1f77bcf86cd799439011", "sku": "G-32", "price": 18.99},
                {"product_id": "505bd76785ebb509fc183733", "sku": "F-15", "price": 6.01},
            ],
        },
    ),
    (
        "Order Completed",
        {
            "checkout_id": "fksdjfsdjfisjf9sdfjsd9f",
            "order_id": "50314b8e9bcf000000000000",
            "affiliation": "Example Shop",
            "total": 27.5,
            "subtotal": 22.5,
            "revenue": 25.0,
            "shipping": 3.0,
            "tax": 2.0,
            "discount": 2.5,
            "coupon": "hasbros",
            "currency": "EUR",
            "products": [
                {"product_id": "507f1f77bcf86cd799439011", "sku": "G-32", "quantity": 1},
                {"product_id": "505bd76785ebb509fc183733", "sku": "F-15", "quantity": 2},
            ],
        },
    ),
]


def batch_body(size: int = 100) -> str:
    """A /v1/batch body as analytics-node sends one (compact JSON, its message shape),
    `size` track messages of a shop's backend, each messageId ending in __ID__."""
    messages = []
    for i in range(size):
        event, properties = _EVENTS[i % len(_EVENTS)]
        messages.append(
            {
                "timestamp": f"2026-12-02T10:06:{i % 60:02d}.{i:03d}Z",
                "integrations": {},
                "event": event,
                "type": "track",
                "properties": properties,
                "context": {
                    "library": {"name": "@segment/analytics-node", "version": "2.3.0"},
                    "ip": f"203.0.113.{i % 250}",
                },
                "userId": f"user_{88120 + i}",
                "anonymousId": str(uuid.UUID(int=0x3B9C8E4A5F7D4E219A0B6C2D1E8F0000 + i)),
                "messageId": "node-next-1796206015882-__ID__",
                "_metadata": {"nodeVersion": "v20.20.2", "jsRuntime": "node"},
            }
        )
    return json.dumps(
        {"batch": messages, "sentAt": "2026-12-02T10:07:00.000Z"}, separators=(",", ":")
    )


def single_body() -> str:
    """A track message as analytics.js (Analytics Next) posts it to /v1/t: text/plain JSON
    with the write key in the body, the page and browser in `context`."""
    event, properties = _EVENTS[0]
    message = {
        "timestamp": "2026-12-02T10:06:55.881Z",
        "integrations": {},
        "type": "track",
        "properties": properties,
        "event": event,
        "messageId": "ajs-next-__ID__",
        "anonymousId": "3b9c8e4a-5f7d-4e21-9a0b-6c2d1e8f7a35",
        "context": {
            "page": {
                "path": "/products/monopoly-3rd-edition",
                "referrer": "https://www.google.com/",
                "search": "?utm_source=google&utm_medium=cpc",
                "title": "Monopoly: 3rd Edition | Example Shop",
                "url": f"{SITE}/products/monopoly-3rd-edition?utm_source=google&utm_medium=cpc",
            },
            "userAgent": (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
                "Gecko) Chrome/131.0.0.0 Safari/537.36"
            ),
            "userAgentData": {
                "brands": [
                    {"brand": "Google Chrome", "version": "131"},
                    {"brand": "Chromium", "version": "131"},
                    {"brand": "Not_A Brand", "version": "24"},
                ],
                "mobile": False,
                "platform": "Windows",
            },
            "locale": "de-DE",
            "library": {"name": "analytics.js", "version": "npm:next-1.76.0"},
            "timezone": "Europe/Berlin",
            "campaign": {"source": "google", "medium": "cpc"},
        },
        "userId": None,
        "writeKey": WRITE_KEY,
        "sentAt": "2026-12-02T10:06:55.902Z",
        "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
    }
    return json.dumps(message, separators=(",", ":"))


def _headers(lines: dict[str, str]) -> str:
    return "".join(f"{k}\t{v}\n" for k, v in lines.items())


LOADS: dict[str, dict[str, Any]] = {
    "batch": {
        "path": "/v1/batch",
        "items": 100,
        "headers": {
            "Content-Type": "application/json",
            "User-Agent": "analytics-node-next/latest",
            "Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode(),
        },
    },
    "single": {
        "path": "/v1/t",
        "items": 1,
        "headers": {
            "Content-Type": "text/plain",
            "Origin": SITE,
            "User-Agent": (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
                "Gecko) Chrome/131.0.0.0 Safari/537.36"
            ),
        },
    },
}

# (load, server) in the order of an even round; odd rounds run it backwards.
RUNS = [
    ("webhook", "bare"),
    ("webhook", "gateway"),
    ("batch", "gateway"),
    ("single", "bare"),
    ("single", "gateway"),
]


def run_collect_wrk(
    load: str, port: int, cpu: int, duration: float, connections: int, prefix: str, body: Path
) -> dict[str, float]:
    spec = LOADS[load]
    env = {
        **os.environ,
        "BENCH_BODY": str(body),
        "BENCH_PREFIX": prefix,
        "BENCH_PATH": spec["path"],
        "BENCH_HEADERS": _headers(spec["headers"]),
    }
    cmd = [
        "taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s",
        "--latency", "--timeout", "5s", "-s", str(body.parent / "collect.lua"),
        f"http://127.0.0.1:{port}{spec['path']}",
    ]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5, help="seconds per load a round")
    parser.add_argument("--warmup", type=float, default=3, help="seconds per load before")
    parser.add_argument("--connections", type=int, default=64, help="for webhooks and /v1/t")
    parser.add_argument("--batch-connections", type=int, default=16, help="for /v1/batch")
    parser.add_argument("--batch-size", type=int, default=100, help="messages per batch")
    parser.add_argument(
        "--no-limits",
        action="store_true",
        help="turn the collect source's rate limits off (null) instead of setting them high",
    )
    parser.add_argument(
        "--profile", choices=["batch", "single", "webhook"], help="py-spy the gateway for a round"
    )
    parser.add_argument(
        "--limits-ab",
        action="store_true",
        help="also run /v1/t on a second gateway with the limits off, in the same rounds",
    )
    args = parser.parse_args()
    runs = RUNS + ([("single", "unlimited")] if args.limits_ab else [])

    redis_url, r, redis_pid, server_cpu, wrk_cpu = setup()
    LOADS["batch"]["items"] = args.batch_size

    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-{run_id}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-collect-"))
    (tmp / "collect.lua").write_text(WRK_SCRIPT)
    bodies = {"webhook": tmp / "event.json", "batch": tmp / "batch.json", "single": tmp / "t.json"}
    bodies["webhook"].write_text(stripe_event_template())
    bodies["batch"].write_text(batch_body(args.batch_size))
    bodies["single"].write_text(single_body())

    def gateway_config(name: str, limits: str) -> Path:
        config = tmp / f"{name}.yaml"
        config.write_text(
            f"redis_url: {redis_url}\nkey_prefix: {prefix}\nsources:\n"
            f"  stripe:\n    type: stripe\n    secrets: [{SECRET}]\n    tolerance: 1h\n"
            f"    dedupe_ttl: 15m\n    raw_retention: 20000\n"
            f"  web:\n    type: collect\n    write_keys: [{WRITE_KEY}]\n    origins: [{SITE}]\n"
            f"    dedupe_ttl: 15m\n    raw_retention: 20000\n"
            f"    limit_per_ip: {limits}\n    limit_per_write_key: {limits}\n"
        )
        return config

    config = gateway_config("config", "null" if args.no_limits else HUGE_LIMIT)
    ports = {"bare": free_port(), "gateway": free_port()}
    if args.limits_ab:
        ports["unlimited"] = free_port()
        server_cpu["unlimited"], wrk_cpu["unlimited"] = server_cpu["gateway"], wrk_cpu["gateway"]
    uvicorn_flags = [
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    gateway_log = tmp / "gateway.log"
    procs = {
        "bare": subprocess.Popen(
            ["taskset", "-c", str(server_cpu["bare"]), sys.executable, "-m", "uvicorn",
             "bench.bare_app:app", "--port", str(ports["bare"]), *uvicorn_flags],
            cwd=HERE.parent,
            stdout=subprocess.DEVNULL,
        ),
        "gateway": subprocess.Popen(
            ["taskset", "-c", str(server_cpu["gateway"]), sys.executable, "-m", "gateway.cli",
             "serve", "--no-workers", "--config", str(config), "--port", str(ports["gateway"])],
            cwd=HERE.parent,
            stdout=subprocess.DEVNULL,
            stderr=gateway_log.open("wb"),
            env={**os.environ, **OPERATOR, "LOG_LEVEL": "info"},
        ),
    }  # fmt: skip
    if args.limits_ab:
        # Pinned like the gateway: the two only ever run one at a time.
        procs["unlimited"] = subprocess.Popen(
            ["taskset", "-c", str(server_cpu["gateway"]), sys.executable, "-m", "gateway.cli",
             "serve", "--no-workers", "--config", str(gateway_config("unlimited", "null")),
             "--port", str(ports["unlimited"])],
            cwd=HERE.parent,
            stdout=subprocess.DEVNULL,
            stderr=(tmp / "unlimited.log").open("wb"),  # its log lines, as the gateway's
            env={**os.environ, **OPERATOR, "LOG_LEVEL": "info"},
        )  # fmt: skip

    def connections(load: str) -> int:
        return args.batch_connections if load == "batch" else args.connections

    def load_once(load: str, server: str, duration: float, tag: str) -> dict[str, float]:
        port, cpu = ports[server], wrk_cpu[server]
        if load == "webhook":
            return run_wrk(port, cpu, duration, connections(load), tag, bodies["webhook"])
        return run_collect_wrk(load, port, cpu, duration, connections(load), tag, bodies[load])

    results: dict[tuple[str, str], list[dict[str, float]]] = {run: [] for run in runs}
    try:
        for name in procs:
            wait_ready(ports[name], procs[name], "/" if name == "bare" else "/healthz")
        kb = {load: path.stat().st_size / 1024 for load, path in bodies.items()}
        print(f"collect benchmark: {args.rounds} rounds x {len(runs)} loads x {args.duration:g}s")
        print(
            f"  batch   POST /v1/batch, {args.batch_size} analytics-node track messages "
            f"({kb['batch']:.1f} KB, Basic auth), {args.batch_connections} connections\n"
            f"  single  POST /v1/t, an analytics.js track ({kb['single']:.1f} KB text/plain, "
            f"writeKey in the body, Origin), {args.connections} connections\n"
            f"  webhook POST /webhooks/stripe, signed Stripe events ({kb['webhook']:.1f} KB), "
            f"{args.connections} connections\n"
            + (
                "  collect rate limits off (null)"
                if args.no_limits
                else f"  collect rate limits {HUGE_LIMIT} per IP and per write key (counted, "
                "never hit)"
            )
        )
        print(
            f"servers pinned: bare cpu{server_cpu['bare']}, gateway cpu{server_cpu['gateway']};"
            f" wrk on the other core; Redis at {redis_url}"
        )
        for load, server in runs:
            load_once(load, server, args.warmup, f"warm{load}{server}{run_id}")
        for i in range(args.rounds):
            for load, server in runs if i % 2 == 0 else runs[::-1]:
                pid = procs[server].pid
                cpu_before = cpu_seconds(pid)
                redis_before = cpu_seconds(redis_pid) if redis_pid else 0.0
                res = load_once(load, server, args.duration, f"r{i}{load}{server}{run_id}")
                used = cpu_seconds(pid) - cpu_before
                per_request = LOADS[load]["items"] if load in LOADS else 1
                items = res["requests"] * per_request
                res["items"] = items
                res["items_s"] = res["rps"] * per_request
                res["cpu_pct"] = 100 * used / args.duration
                res["per_core"] = items / used if used else float("nan")
                res["cpu_us"] = 1e6 * used / max(res["requests"], 1)
                redis_used = cpu_seconds(redis_pid) - redis_before if redis_pid else 0.0
                res["redis_us_item"] = 1e6 * redis_used / max(items, 1)
                results[(load, server)].append(res)
                print(
                    f"  round {i + 1} {load:7s} {server:7s} {res['rps']:8.0f} req/s "
                    f"{res['items_s']:8.0f} items/s  p50 {res['p50_ms']:6.2f} ms  "
                    f"p99 {res['p99_ms']:6.2f} ms  cpu {res['cpu_pct']:3.0f}%  "
                    f"{res['per_core']:8.0f} items/s per core  non-2xx {res['non2xx']}"
                    + (f"  socket errors {res['socket_errors']}" if res["socket_errors"] else "")
                )
        if args.profile:
            spy = py_spy(procs["gateway"].pid, tmp / "profile.txt", args.duration)
            load_once(args.profile, "gateway", args.duration, f"prof{run_id}")
            spy.wait(timeout=60)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=10)

    def med(run: tuple[str, str], key: str) -> float:
        return statistics.median(x[key] for x in results[run])

    print()
    print(
        f"{'':16s}{'req/s':>9s}{'items/s':>10s}{'p50 ms':>9s}{'p99 ms':>9s}{'cpu':>6s}"
        f"{'us/req':>9s}{'items/s/core':>14s}{'non-2xx':>9s}"
    )
    for run in runs:
        print(
            f"{run[0] + ' ' + run[1]:16s}{med(run, 'rps'):9.0f}"
            f"{med(run, 'items_s'):10.0f}{med(run, 'p50_ms'):9.2f}"
            f"{med(run, 'p99_ms'):9.2f}{med(run, 'cpu_pct'):5.0f}%{med(run, 'cpu_us'):9.1f}"
            f"{med(run, 'per_core'):14.0f}{sum(x['non2xx'] for x in results[run]):9d}"
        )
    batch_core = med(("batch", "gateway"), "per_core")
    hook_core = med(("webhook", "gateway"), "per_core")
    single_ratio = med(("single", "gateway"), "rps") / med(("single", "bare"), "rps")
    hook_ratio = med(("webhook", "gateway"), "rps") / med(("webhook", "bare"), "rps")
    single_cpu = med(("single", "bare"), "cpu_us") / med(("single", "gateway"), "cpu_us")
    hook_cpu = med(("webhook", "bare"), "cpu_us") / med(("webhook", "gateway"), "cpu_us")
    print(
        f"\n(a) collect batch {batch_core:.0f} events/s per core vs webhooks {hook_core:.0f} "
        f"deliveries/s per core: {batch_core / hook_core:.2f}x (target >= 5x)"
    )
    print(
        f"(b) throughput gateway/bare, /v1/t {single_ratio:.2f}x vs webhooks {hook_ratio:.2f}x "
        f"(target: /v1/t >= webhooks): {'met' if single_ratio >= hook_ratio else 'not met'}"
    )
    print(
        f"    CPU per request bare/gateway, /v1/t {single_cpu:.2f}x vs webhooks {hook_cpu:.2f}x"
        " (the throughput ratios if both servers were CPU-bound)"
    )
    if args.limits_ab:
        limited, unlimited = (med(("single", s), "cpu_us") for s in ("gateway", "unlimited"))
        print(
            f"    /v1/t gateway CPU per request with the limits on {limited:.1f} us, off "
            f"{unlimited:.1f} us (a second gateway, same rounds): the limits cost "
            f"{limited - unlimited:+.1f} us"
        )
    if redis_pid:
        print(
            "Redis CPU per item (shares this machine's cores): "
            + ", ".join(
                f"{load} {med((load, 'gateway'), 'redis_us_item'):.1f} us"
                for load in ("webhook", "batch", "single")
            )
        )

    # What the gateway logged: every message stored once, none refused or limited.
    accepted = duplicate = refused = hooks = 0
    other: dict[str, int] = {}
    for line in gateway_log.open("rb"):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        name = entry.get("event", "")
        if name == "collect.batch":
            accepted += entry["accepted"]
            duplicate += entry["duplicate"]
            refused += entry["refused"]
        elif name == "delivery.accepted":
            hooks += 1
        elif name.startswith(("collect.", "delivery.")):
            other[name] = other.get(name, 0) + 1
    sent = sum(
        x["items"] for (load, server), xs in results.items() if server == "gateway" for x in xs
        if load != "webhook"
    )  # fmt: skip
    print(
        f"gateway stored {accepted} collect messages ({duplicate} duplicates, {refused} "
        f"refused) and {hooks} webhooks; the measured rounds' 200s were for {sent} messages "
        "(warm-up and profile rounds add the rest)"
        + (f"; other outcomes: {other}" if other else "")
    )
    if args.profile and (tmp / "profile.txt").exists():
        print_profile(
            tmp / "profile.txt",
            f"{args.profile}, py-spy",
            markers=("collect.py", "ratelimit.py", "ingest.py", "store.py", "structlog",
                     "_log", "redis", "msgspec", "validate_message"),
        )  # fmt: skip
    cleanup(r, prefix, tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
