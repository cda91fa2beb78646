"""Memory benchmark: Redis bytes per accepted delivery and per event, and a sizing formula.

    python bench/memory.py [--deliveries 50000] [--body 4k|fixture] [--seen-keys 200000]
                           [--per-day 10000000] [--days 7]

Starts a private redis-server (no persistence) and `webhook-gateway serve` with its
workers on it: a stripe source and an `http` destination (batches of 500) to a local sink,
every setting that sizes Redis at its default (dedupe_ttl 7d, raw_retention 100000,
events_retention 500000, delivery_log_retention 7d). It sends N unique signed
charge.succeeded webhooks (Stripe-style 28-character event ids; the ~4 KB body of
bench/ingest.py, or `--body fixture`: the 1.6 KB test fixture), waits until each is
normalized and delivered, and reads INFO memory `used_memory` before and after: the total
per delivery. MEMORY USAGE (SAMPLES 0: every entry) on the raw and events streams and on
sampled seen keys and delivery-log keys splits it up; the rest (the keyspace's hash tables
and the expiry entries of the three keys with a TTL per delivery) is printed as such.

Then, on an emptied Redis, the seen keys alone, written with plain commands in the
gateway's layout (`SET <prefix>:{stripe}:seen:<event id> <stream id> PX <7 days>`) and in
compact alternatives (a 16-byte hash as the key name; one hash per day; one hash per day
and shard, small enough for Redis's listpack encoding), `--seen-keys` of each, each
measured by used_memory before and after. Last, what `--per-day` webhooks a day cost with
these figures (seen keys for dedupe_ttl, the delivery log for delivery_log_retention; the
raw and events streams capped by their retention counts), and which part dominates.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import redis

# Each gateway's console and /metrics on a free port: two may run at once.
OPERATOR = {"OPERATOR_LISTEN": "127.0.0.1:0"}
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.failover import Load, run  # noqa: E402
from bench.ingest import SECRET, free_port, stripe_event_template, wait_ready  # noqa: E402

FIXTURE = HERE.parent / "tests" / "fixtures" / "stripe" / "charge.succeeded.json"
PREFIX = "gw"
DAY_MS = 86_400_000


class Sink(BaseHTTPRequestHandler):
    """The destination: takes every batch, answers 200."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def start_redis(tmp: Path) -> tuple[subprocess.Popen, redis.Redis]:
    port = free_port()
    argv = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp),
        "--save", "", "--appendonly", "no", "--logfile", str(tmp / "redis.log"),
    ]  # fmt: skip
    if shutil.which("setpriv"):  # dies with this process, whatever happens
        argv = ["setpriv", "--pdeathsig", "KILL", *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = redis.Redis(port=port, socket_timeout=30)
    deadline = time.monotonic() + 10
    while True:
        try:
            r.ping()
            return proc, r
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (tmp / "redis.log").read_text()
                raise SystemExit(f"redis-server did not start: {log}") from None
            time.sleep(0.05)


def used(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def settled(r: redis.Redis, streams: list[str]) -> tuple[bool, str]:
    """Every consumer group of these streams has read everything and acknowledged it."""
    for stream in streams:
        if not r.exists(stream):
            return False, f"{stream} does not exist yet"
        groups = r.xinfo_groups(stream)
        if not groups:
            return False, f"{stream} has no consumer group yet"
        for g in groups:
            if g.get("lag") not in (0, None) or g["pending"]:
                return (
                    False,
                    f"{stream} group {g['name']}: lag {g.get('lag')}, pending {g['pending']}",
                )
    return True, ""


def sample_usage(r: redis.Redis, pattern: str, k: int = 500) -> tuple[float, int]:
    """Mean MEMORY USAGE of up to k keys matching `pattern`, and how many keys match."""
    keys = list(r.scan_iter(match=pattern, count=10_000))
    picked = random.sample(keys, min(k, len(keys)))
    sizes = [r.memory_usage(key, samples=0) for key in picked]
    return (sum(sizes) / len(sizes) if sizes else 0.0), len(keys)


def pipeline_run(r: redis.Redis, commands, chunk: int = 5000) -> None:
    pipe = r.pipeline(transaction=False)
    for i, c in enumerate(commands, 1):
        pipe.execute_command(*c)
        if i % chunk == 0:
            pipe.execute()
    pipe.execute()


def seen_layouts(r: redis.Redis, n: int, ttl_ms: int) -> list[tuple[str, float, str]]:
    """used_memory per seen delivery for the gateway's layout and compact alternatives."""
    now = int(time.time() * 1000)
    ids = [f"evt_{random.getrandbits(128):032x}"[:28] for _ in range(n)]
    entry = [f"{now + i}-0" for i in range(n)]  # a stream entry id, as the script stores
    digest = [hashlib.blake2b(x.encode(), digest_size=16).digest() for x in ids]
    tag = f"{PREFIX}:{{stripe}}"
    shards = max(1, n // 100)  # ~100 fields per hash: under hash-max-listpack-entries (128)
    layouts = [
        (
            "the gateway's: SET <prefix>:{stripe}:seen:<event id> <entry id> PX <ttl>",
            lambda: (
                ("SET", f"{tag}:seen:{x}", e, "PX", ttl_ms) for x, e in zip(ids, entry, strict=True)
            ),
            "",
        ),
        (
            "16-byte hash as key name: SET <prefix>:{stripe}:s:<16 bytes> <entry id> PX <ttl>",
            lambda: (
                ("SET", f"{tag}:s:".encode() + d, e, "PX", ttl_ms)
                for d, e in zip(digest, entry, strict=True)
            ),
            "",
        ),
        (
            "the same without the entry id: SET <prefix>:{stripe}:s:<16 bytes> 1 PX <ttl>",
            lambda: (("SET", f"{tag}:s:".encode() + d, "1", "PX", ttl_ms) for d in digest),
            "no first-copy entry id for a duplicate's answer and log line",
        ),
        (
            "a hash per day: HSET <prefix>:{stripe}:seen:<day> <16 bytes> <entry id>",
            lambda: (
                ("HSET", f"{tag}:seen:20000", d, e) for d, e in zip(digest, entry, strict=True)
            ),
            "expiry per day (key TTL); a check reads dedupe_ttl/1d + 1 hashes",
        ),
        (
            f"a hash per day and shard ({shards} shards, ~{n // shards} fields each: listpack)",
            lambda: (
                ("HSET", f"{tag}:seen:20000:{int.from_bytes(d[:4], 'big') % shards}", d[4:], e)
                for d, e in zip(digest, entry, strict=True)
            ),
            "shards must grow with the daily volume to stay under 128 fields each",
        ),
    ]
    out = []
    for name, commands, note in layouts:
        r.flushall()
        before = used(r)
        pipeline_run(r, commands())
        if "hash per day" in name:  # one EXPIRE per hash, as a day's bucket would get
            pipeline_run(r, (("PEXPIRE", k, ttl_ms + DAY_MS) for k in r.scan_iter(count=10_000)))
        out.append((name, (used(r) - before) / n, note))
    r.flushall()
    return out


def body_template(kind: str) -> str:
    if kind == "fixture":
        event = json.loads(FIXTURE.read_text())
        event["id"] = "__ID__"
        return json.dumps(event, indent=2)
    return stripe_event_template()


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=50_000)
    parser.add_argument("--body", choices=("4k", "fixture"), default="4k")
    parser.add_argument("--seen-keys", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--per-day", type=float, default=10_000_000, help="for the sizing")
    parser.add_argument("--days", type=float, default=7, help="dedupe_ttl for the sizing")
    args = parser.parse_args()
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is needed")

    from gateway.config import Config, parse_config

    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    redis_proc, r = start_redis(tmp)
    gateway = None
    try:
        redis_url = f"redis://127.0.0.1:{r.connection_pool.connection_kwargs['port']}/0"
        config_text = (
            f"redis_url: {redis_url}\nkey_prefix: {PREFIX}\nsources:\n"
            f"  stripe: {{type: stripe, secrets: [{SECRET}], tolerance: 1h}}\n"
            "destinations:\n"
            f"  sink: {{type: http, url: 'http://127.0.0.1:{sink.server_port}/in', batch: true,"
            " batch_size: 500}\n"
        )
        (tmp / "config.yaml").write_text(config_text)
        config: Config = parse_config(config_text)
        src = config.sources["stripe"]
        ttl_ms = int(float(src.dedupe_ttl) * 1000)
        log_s = float(config.delivery_log_retention)
        print(
            f"memory benchmark: {args.deliveries} signed Stripe webhooks ({args.body} body) on a"
            f" private Redis {r.info('server')['redis_version']}; defaults: dedupe_ttl"
            f" {ttl_ms / DAY_MS:g}d, raw_retention {src.raw_retention}, events_retention"
            f" {config.events_retention}, delivery_log_retention {log_s / 86400:g}d"
        )
        port = free_port()
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(tmp / "config.yaml"),
             "--port", str(port)],
            cwd=HERE.parent,
            stdout=subprocess.DEVNULL,
            stderr=(tmp / "gateway.log").open("wb"),
            env={**os.environ, **OPERATOR, "LOG_LEVEL": "warning"},
        )  # fmt: skip
        wait_ready(port, gateway)
        # Let the workers create their consumer groups before the "before" figure.
        raw, events = f"{PREFIX}:{{stripe}}:raw", f"{PREFIX}:{{events}}:stream"
        deadline = time.monotonic() + 30
        while not all(r.exists(k) for k in (raw, events)):
            if time.monotonic() > deadline:
                raise SystemExit("the workers did not create their streams")
            time.sleep(0.05)
        before = used(r)
        keys_before = r.dbsize()
        template = body_template(args.body)
        body_bytes = len(template.replace("__ID__", "evt_" + "0" * 24).encode())
        load = Load(
            "127.0.0.1",
            port,
            f"{random.getrandbits(32):08x}",
            template,
            args.concurrency,
            limit=args.deliveries,
            id_format="evt_{run}{n:016d}",  # 28 characters, as Stripe's event ids
        )
        began = time.monotonic()

        async def send() -> None:
            await asyncio.gather(*load.start())

        run(send())
        sent_s = time.monotonic() - began
        statuses = {a.status for a in load.answers}
        accepted = sum(1 for a in load.answers if a.status == 200 and a.outcome == "accepted")
        if statuses != {200}:
            print(f"  answers other than 200: {sorted(statuses)}")
        deadline = time.monotonic() + 300
        while True:
            ok, why = settled(r, [raw, events])
            if ok and r.xlen(events) >= accepted:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"not delivered in 300 s: {why}")
            time.sleep(0.2)
        done_s = time.monotonic() - began
        gateway.terminate()
        gateway.wait(timeout=15)
        gateway = None
        after = used(r)
        n_events = r.xlen(events)
        print(
            f"sent in {sent_s:.1f} s, normalized and delivered after {done_s:.1f} s:"
            f" {accepted} accepted, {n_events} events, {r.dbsize() - keys_before} keys added"
        )

        total = (after - before) / accepted
        per_event = n_events / accepted
        seen_b, n_seen = sample_usage(r, f"{PREFIX}:{{stripe}}:seen:*")
        dlog_b, n_dlog = sample_usage(r, f"{PREFIX}:log:delivery:*")
        elog_b, n_elog = sample_usage(r, f"{PREFIX}:log:event:*")
        ttl_keys = (n_seen + n_dlog + n_elog) / accepted
        stats = r.memory_stats()
        tables = sum(
            v for k, v in stats.get("db.0", {}).items() if k.startswith("overhead.hashtable")
        )
        # A stream is one key: what deleting it frees is what it takes (MEMORY USAGE counts
        # its listpacks' bytes, not what the allocator rounded them up to).
        usage = {k: r.memory_usage(k, samples=0) for k in (raw, events)}
        freed = {}
        for k in (raw, events):
            m = used(r)
            r.delete(k)
            freed[k] = m - used(r)
        raw_b = freed[raw] / accepted
        events_b = freed[events] / max(n_events, 1)
        parts = [
            (f"raw stream entry (body {body_bytes} B)", raw_b),
            ("seen key", seen_b * n_seen / accepted),
            ("events stream entry", events_b * per_event),
            ("delivery log: log:delivery:<source>:<id> (hash)", dlog_b * n_dlog / accepted),
            ("delivery log: log:event:<message id> (list)", elog_b * n_elog / accepted),
        ]
        rest = total - sum(b for _, b in parts)
        print(f"\nused_memory grew by {human(after - before)}: {total:,.0f} bytes per delivery")
        print(
            "  of which (streams: freed when deleted; keys: MEMORY USAGE of 500 sampled of each):"
        )
        for name, b in parts:
            print(f"  {b:8,.0f} B  {name}")
        print(
            f"  {rest:8,.0f} B  the rest: the expiry entries of the {ttl_keys:.0f} keys with a TTL"
            f" per delivery and the keyspace's hash tables (MEMORY STATS: {tables / accepted:.0f}"
            " B per delivery, both tables)"
        )
        print(
            f"  per key, MEMORY USAGE: seen {seen_b:.0f} B, log:delivery {dlog_b:.0f} B, log:event"
            f" {elog_b:.0f} B; per stream entry (MEMORY USAGE / freed): raw"
            f" {usage[raw] / accepted:.0f} / {raw_b:.0f} B, events"
            f" {usage[events] / max(n_events, 1):.0f} / {events_b:.0f} B"
        )

        print(f"\nseen keys alone, {args.seen_keys} of each layout (used_memory before/after):")
        layouts = seen_layouts(r, args.seen_keys, ttl_ms)
        gateway_seen = layouts[0][1]
        for name, b, note in layouts:
            print(
                f"  {b:6.0f} B  ({b / gateway_seen:4.2f}x)  {name}" + (f"; {note}" if note else "")
            )

        # Sizing: what a day's volume costs at these figures.
        per_day, days = args.per_day, args.days
        log_days = log_s / 86400
        keyspace = rest / max(ttl_keys, 1)  # per key with a TTL
        seen_total = per_day * days * gateway_seen
        log_total = per_day * log_days * ((dlog_b + keyspace) + per_event * (elog_b + keyspace))
        raw_total = min(src.raw_retention, per_day * days) * raw_b
        events_total = min(config.events_retention, per_day * days * per_event) * events_b
        parts = [
            (f"seen keys: {per_day:,.0f}/day x {days:g} days x {gateway_seen:.0f} B", seen_total),
            (
                f"delivery log: {per_day:,.0f}/day x {log_days:g} days x"
                f" {dlog_b + keyspace + per_event * (elog_b + keyspace):.0f} B",
                log_total,
            ),
            (f"raw stream: {src.raw_retention:,} entries x {raw_b:.0f} B (per source)", raw_total),
            (
                f"events stream: {config.events_retention:,} entries x {events_b:.0f} B",
                events_total,
            ),
        ]
        grand = sum(b for _, b in parts)
        print(
            f"\nsizing, {per_day:,.0f} webhooks a day, dedupe_ttl {days:g}d, the other settings"
            " at their defaults (one source, one event and one destination per delivery):"
        )
        for name, b in parts:
            print(f"  {human(b):>10s}  {100 * b / grand:4.1f}%  {name}")
        print(f"  {human(grand):>10s}  in all")
        top = max(parts, key=lambda x: x[1])
        print(f"  the largest part: {top[0].split(':')[0]} ({100 * top[1] / grand:.0f}%)")
        compact = min(b for _, b, _ in layouts)
        print(
            f"  (seen keys in the most compact layout measured: {human(per_day * days * compact)}"
            f" instead of {human(seen_total)})"
        )
        log_b = dlog_b + keyspace + per_event * (elog_b + keyspace)
        print(
            "formula (bytes; each key with a TTL counted with its share of the keyspace's"
            f" tables and expiry entries, {keyspace:.0f} B):\n"
            f"  webhooks_per_day x (dedupe_ttl_days x {gateway_seen:.0f}"
            f" + delivery_log_days x {log_b:.0f})\n"
            f"  + sources x raw_retention x (body bytes + {raw_b - body_bytes:.0f})"
            f" + events_retention x {events_b:.0f}\n"
            f"  (delivery log per delivery: log:delivery {dlog_b + keyspace:.0f} B + per event"
            f" log:event {elog_b + keyspace:.0f} B, one record of each destination's attempt"
            " in it)"
        )
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait(timeout=15)
        redis_proc.kill()
        redis_proc.wait()
        sink.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
