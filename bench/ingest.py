"""Ingest benchmark: the gateway against a bare Starlette endpoint, same load, same run.

Both servers run under uvicorn (uvloop + httptools), one process each, each pinned to its
own core; wrk runs on the other core with 64 connections, sending unique signed ~4 KB
Stripe events. Rounds alternate between the two servers so that machine noise hits both.
The gateway runs as users run it (`webhook-gateway serve --no-workers`, real Redis at
$REDIS_URL, one JSON log line per delivery written to a file).

    python bench/ingest.py [--rounds 3] [--duration 10] [--profile]

Prints each round, then throughput, p50/p99 latency and the gateway/bare ratios.
--profile also samples the gateway with py-spy for one round and prints where its time
goes (self time by function).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
SECRET = "whsec_bench_secret"


def stripe_event_template() -> str:
    """A charge.succeeded event shaped like Stripe's, about 4 KB, with __ID__ as its id."""
    charge = {
        "id": "ch_3OaBcDeFgHiJkLmN0pQrStUv",
        "object": "charge",
        "amount": 4999,
        "amount_captured": 4999,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "balance_transaction": "txn_3OaBcDeFgHiJkLmN0aBcDeFg",
        "billing_details": {
            "address": {
                "city": "Berlin",
                "country": "DE",
                "line1": "Torstrasse 1",
                "line2": None,
                "postal_code": "10119",
                "state": None,
            },
            "email": "jenny.rosen@example.com",
            "name": "Jenny Rosen",
            "phone": "+4930123456",
        },
        "calculated_statement_descriptor": "ACME SHOP",
        "captured": True,
        "created": 1700000000,
        "currency": "eur",
        "customer": "cus_PqRsTuVwXyZ012",
        "description": "Order #100234",
        "disputed": False,
        "livemode": False,
        "metadata": {"order_id": "100234", "user_id": "u_8812", "cart": "c_55" * 20},
        "outcome": {
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "risk_score": 32,
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "payment_intent": "pi_3OaBcDeFgHiJkLmN0xYzAbCd",
        "payment_method": "pm_1OaBcDeFgHiJkLmNoPqRsTuV",
        "payment_method_details": {
            "card": {
                "amount_authorized": 4999,
                "brand": "visa",
                "checks": {
                    "address_line1_check": "pass",
                    "address_postal_code_check": "pass",
                    "cvc_check": "pass",
                },
                "country": "DE",
                "exp_month": 12,
                "exp_year": 2030,
                "fingerprint": "Xt5EWLLDS7FJjR1c",
                "funding": "credit",
                "last4": "4242",
                "network": "visa",
                "three_d_secure": None,
                "wallet": None,
            },
            "type": "card",
        },
        "receipt_email": "jenny.rosen@example.com",
        "receipt_url": "https://pay.stripe.com/receipts/payment/" + "CAcaFwoVYWNjdF8x" * 6,
        "refunded": False,
        "shipping": {
            "address": {
                "city": "Berlin",
                "country": "DE",
                "line1": "Torstrasse 1",
                "postal_code": "10119",
            },
            "name": "Jenny Rosen",
        },
        "status": "succeeded",
    }
    event = {
        "id": "__ID__",
        "object": "event",
        "api_version": "2024-06-20",
        "created": 1700000000,
        "data": {"object": charge, "previous_attributes": None},
        "livemode": False,
        "pending_webhooks": 2,
        "request": {"id": "req_AbCdEfGhIjKlMn", "idempotency_key": str(uuid.uuid4())},
        "type": "charge.succeeded",
    }
    text = json.dumps(event, indent=2)
    pad = 4096 - len(text)
    if pad > 0:
        charge["metadata"]["notes"] = "x" * pad
        text = json.dumps(event, indent=2)
    return text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen, path: str = "/healthz") -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not start")


_LAT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(out: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    lat = {p: float(v) * _UNIT[u] for p, v, u in _LAT.findall(out)}
    return {
        "rps": rps,
        "requests": total,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
        "p50_ms": lat.get("50", float("nan")),
        "p99_ms": lat.get("99", float("nan")),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(
    port: int, cpu: int, duration: float, connections: int, prefix: str, body_file: Path
) -> dict[str, float]:
    env = {
        **os.environ,
        "BENCH_SECRET": SECRET,
        "BENCH_BODY": str(body_file),
        "BENCH_PREFIX": prefix,
    }
    cmd = [
        "taskset",
        "-c",
        str(cpu),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{int(duration)}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(HERE / "stripe_events.lua"),
        f"http://127.0.0.1:{port}/webhooks/stripe",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def _frame_name(frame: str) -> str:
    """`func (path/to/module.py:12)` -> `func (module.py)`: group samples by function."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    return f"{name} ({path.rsplit('/', 1)[-1]})"


# Inclusive time is shown for functions of these files and libraries (the gateway's own).
OURS = (
    "ingest.py",
    "store.py",
    "sources/",
    "stripe.py",
    "signing.py",
    "base.py",
    "_webhook.py",
    "structlog",
    "_log",
    "redis",
)


def setup() -> tuple[str, redis.Redis, int, dict[str, int], dict[str, int]]:
    """What every load benchmark checks first: wrk, Redis (its pid, if on this machine)
    and two cores: (redis_url, client, redis pid or 0, server core, wrk core), each by
    server ("bare", "gateway")."""
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    r = redis.Redis.from_url(redis_url)
    r.ping()
    redis_pid = int(r.info("server")["process_id"])
    if not Path(f"/proc/{redis_pid}").exists():
        redis_pid = 0  # Redis on another machine (or in a container): its CPU is not ours
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("needs two cores (one for the server, one for wrk)")
    server_cpu = {"bare": cpus[0], "gateway": cpus[1]}
    wrk_cpu = {"bare": cpus[1], "gateway": cpus[0]}
    return redis_url, r, redis_pid, server_cpu, wrk_cpu


def profile_summary(raw: Path, top: int = 15, markers: tuple[str, ...] = OURS) -> tuple[list, list]:
    """Self and inclusive time per function from py-spy's collapsed stacks, in % of samples
    (inclusive only for functions whose file or library name holds one of `markers`)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = [_frame_name(f) for f in stack.split(";")]
        own[frames[-1]] += int(n)
        for name in set(frames):
            inclusive[name] += int(n)
        total += int(n)
    pct = lambda c: [(100.0 * k / total, name) for name, k in c.most_common(top)]  # noqa: E731
    ours = collections.Counter({k: v for k, v in inclusive.items() if any(m in k for m in markers)})
    return pct(own), pct(ours)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10, help="seconds per round")
    parser.add_argument("--warmup", type=float, default=3, help="seconds before measuring")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway for a round")
    args = parser.parse_args()

    redis_url, r, redis_pid, server_cpu, wrk_cpu = setup()

    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-{run_id}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    body_file = tmp / "event.json"
    body_file.write_text(stripe_event_template())
    config = tmp / "config.yaml"
    config.write_text(
        f"redis_url: {redis_url}\nkey_prefix: {prefix}\nsources:\n  stripe:\n"
        f"    type: stripe\n    secrets: [{SECRET}]\n    tolerance: 1h\n"
        f"    dedupe_ttl: 15m\n    raw_retention: 20000\n"
    )
    ports = {"bare": free_port(), "gateway": free_port()}
    uvicorn_flags = [
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    gateway_log = tmp / "gateway.log"
    procs = {
        "bare": subprocess.Popen(
            [
                "taskset",
                "-c",
                str(server_cpu["bare"]),
                sys.executable,
                "-m",
                "uvicorn",
                "bench.bare_app:app",
                "--port",
                str(ports["bare"]),
                *uvicorn_flags,
            ],
            cwd=HERE.parent,
            stdout=subprocess.DEVNULL,
        ),
        "gateway": subprocess.Popen(
            [
                "taskset",
                "-c",
                str(server_cpu["gateway"]),
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--no-workers",
                "--config",
                str(config),
                "--port",
                str(ports["gateway"]),
            ],
            cwd=HERE.parent,
            stdout=subprocess.DEVNULL,
            stderr=gateway_log.open("wb"),
            env={**os.environ, "LOG_LEVEL": "info"},
        ),
    }
    results: dict[str, list[dict[str, float]]] = {"bare": [], "gateway": []}
    try:
        for name in ("bare", "gateway"):
            wait_ready(ports[name], procs[name], "/healthz" if name == "gateway" else "/")
        body_kb = body_file.stat().st_size / 1024
        print(
            f"ingest benchmark: {args.rounds} rounds x {args.duration:g}s, "
            f"{args.connections} connections, unique signed Stripe events of {body_kb:.1f} KB"
        )
        print(
            f"servers pinned: bare cpu{server_cpu['bare']}, gateway cpu{server_cpu['gateway']};"
            f" wrk on the other core; Redis at {redis_url}"
        )
        for name in ("bare", "gateway"):
            run_wrk(
                ports[name],
                wrk_cpu[name],
                args.warmup,
                args.connections,
                f"warm{name}{run_id}",
                body_file,
            )
        for i in range(args.rounds):
            for name in ("bare", "gateway") if i % 2 == 0 else ("gateway", "bare"):
                cpu_before = cpu_seconds(procs[name].pid)
                redis_before = cpu_seconds(redis_pid) if redis_pid else 0.0
                res = run_wrk(
                    ports[name],
                    wrk_cpu[name],
                    args.duration,
                    args.connections,
                    f"r{i}{name}{run_id}",
                    body_file,
                )
                used = cpu_seconds(procs[name].pid) - cpu_before
                res["cpu_pct"] = 100 * used / args.duration
                res["cpu_us"] = 1e6 * used / max(res["requests"], 1)
                redis_used = cpu_seconds(redis_pid) - redis_before if redis_pid else 0.0
                res["redis_us"] = 1e6 * redis_used / max(res["requests"], 1)
                results[name].append(res)
                print(
                    f"  round {i + 1} {name:8s} {res['rps']:9.0f} req/s  "
                    f"p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:6.2f} ms  "
                    f"cpu {res['cpu_pct']:3.0f}% ({res['cpu_us']:4.1f} us/req)  "
                    f"non-2xx {res['non2xx']}"
                    + (f"  socket errors {res['socket_errors']}" if res["socket_errors"] else "")
                )
        if args.profile:
            spy = py_spy(procs["gateway"].pid, tmp / "profile.txt", args.duration)
            run_wrk(
                ports["gateway"],
                wrk_cpu["gateway"],
                args.duration,
                args.connections,
                f"prof{run_id}",
                body_file,
            )
            spy.wait(timeout=60)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=10)

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in results[name])

    print()
    print(
        f"{'':10s}{'req/s':>10s}{'p50 ms':>10s}{'p99 ms':>10s}{'cpu':>8s}{'cpu us/req':>12s}"
        f"{'non-2xx':>10s}"
    )
    for name in ("bare", "gateway"):
        print(
            f"{name:10s}{med(name, 'rps'):10.0f}{med(name, 'p50_ms'):10.2f}"
            f"{med(name, 'p99_ms'):10.2f}{med(name, 'cpu_pct'):7.0f}%{med(name, 'cpu_us'):12.1f}"
            f"{sum(x['non2xx'] for x in results[name]):10d}"
        )
    ratio = med("gateway", "rps") / med("bare", "rps")
    p99_ratio = med("gateway", "p99_ms") / med("bare", "p99_ms")
    cpu_ratio = med("bare", "cpu_us") / med("gateway", "cpu_us")
    with_redis = med("gateway", "cpu_us") + med("gateway", "redis_us")
    print(f"\nthroughput ratio gateway/bare: {ratio:.2f}x (target >= 0.8x)")
    print(f"p99 ratio gateway/bare:        {p99_ratio:.2f}x (target <= 1.5x)")
    if redis_pid:
        print(
            f"Redis CPU per gateway request: {med('gateway', 'redis_us'):.1f} us; gateway + "
            f"Redis {with_redis:.1f} us, bare/(gateway + Redis) "
            f"{med('bare', 'cpu_us') / with_redis:.2f}x (Redis shares this machine's cores)"
        )
    print(
        f"CPU per request, bare/gateway: {cpu_ratio:.2f}x (the throughput ratio if both "
        "servers were CPU-bound)"
    )

    accepted = sum(1 for line in gateway_log.open("rb") if b'"delivery.accepted"' in line)
    sent = sum(x["requests"] for x in results["gateway"])
    print(
        f"gateway accepted {accepted} deliveries in all (measured rounds sent {sent}; "
        f"warm-up and profile rounds add the rest)"
    )
    if args.profile and (tmp / "profile.txt").exists():
        print_profile(tmp / "profile.txt", "py-spy")
    cleanup(r, prefix, tmp)
    return 0


def py_spy(pid: int, raw: Path, seconds: float) -> subprocess.Popen:
    """py-spy sampling `pid` for `seconds` into `raw` (collapsed stacks), in the background."""
    return subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--output", str(raw),
         "--rate", "200", "--duration", str(int(seconds)), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def print_profile(raw: Path, label: str, markers: tuple[str, ...] = OURS) -> None:
    """Where the gateway's time went, from py-spy's collapsed stacks."""
    own, inclusive = profile_summary(raw, markers=markers)
    print(f"\nwhere the gateway's time goes ({label}, % of samples)\n  self time by function:")
    for pct, name in own:
        print(f"  {pct:5.1f}%  {name}")
    print("  inclusive time of the gateway's own parts and its libraries:")
    for pct, name in inclusive:
        print(f"  {pct:5.1f}%  {name}")


def cleanup(r: redis.Redis, prefix: str, tmp: Path) -> None:
    """Delete the run's Redis keys and its temporary files."""
    keys = list(r.scan_iter(match=f"{prefix}:*", count=10000))
    for i in range(0, len(keys), 10000):
        r.unlink(*keys[i : i + 10000])
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
