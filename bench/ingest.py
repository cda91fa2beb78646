"""Ingest benchmark: the gateway against a bare Starlette endpoint, same load, same run.

Both servers run under uvicorn (uvloop + httptools), one process each, each pinned to its
own core; wrk runs on the other core with 64 connections, sending unique signed ~4 KB
Stripe events. Rounds alternate between the two servers so that machine noise hits both.
The gateway runs as users run it (`webhook-gateway serve --no-workers`, real Redis at
$REDIS_URL, one JSON log line per delivery written to a file).

    python bench/ingest.py [--rounds 3] [--duration 10] [--profile] [--cluster]
                           [--baseline-tree DIR]

Prints each round, then throughput, p50/p99 latency and the gateway/bare ratios, and the
CPU time per accepted webhook of the gateway process plus its Redis process(es) (utime +
stime from /proc/<pid>/stat before and after each round; the Redis at $REDIS_URL by the
process_id of INFO server, when it runs on this machine) against the bare endpoint's CPU
per request, measured in the same run. A shared Redis also serves other clients: its CPU
while the other servers are under load is printed too, and taken out in the `net` column.
--profile also samples the gateway with py-spy for one round and prints where its time
goes (self time by function).
--cluster also starts a local Redis Cluster (tests/redis_nodes.py: 3 primaries + 3
replicas) and runs a gateway on it with `durability: memory` and one with `durability:
replicated`, in the same rounds; their Redis CPU is that of all 6 redis-server processes
(split by node: the stripe source's primary, its replica, the rest).
--baseline-tree DIR also runs a gateway from another source tree (for instance the last
commit: `mkdir /tmp/base && git archive HEAD | tar -x -C /tmp/base`) on the same Redis,
in the same rounds: an A/B of the code on a noisy machine.
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
from dataclasses import dataclass, field
from pathlib import Path

import redis

# Each gateway's console and /metrics on a free port: two may run at once.
OPERATOR = {"OPERATOR_LISTEN": "127.0.0.1:0"}
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


@dataclass
class Server:
    """One server under load: where it listens, its process, its core and wrk's, and the
    Redis it writes to (a key of `redis_groups`; "" for the bare endpoint)."""

    name: str
    port: int
    proc: subprocess.Popen
    cpu: int
    wrk_cpu: int
    redis: str = ""
    log: Path | None = None
    rounds: list[dict[str, float]] = field(default_factory=list)


def gateway_config(redis_url: str, prefix: str, durability: str | None = None) -> str:
    return (
        f"redis_url: {redis_url}\nkey_prefix: {prefix}\n"
        + (f"durability: {durability}\n" if durability else "")
        + f"sources:\n  stripe:\n    type: stripe\n    secrets: [{SECRET}]\n"
        "    tolerance: 1h\n    dedupe_ttl: 15m\n    raw_retention: 20000\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10, help="seconds per round")
    parser.add_argument("--warmup", type=float, default=3, help="seconds before measuring")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway for a round")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="also a local Redis Cluster (3 primaries + 3 replicas): durability memory "
        "and replicated, in the same rounds",
    )
    parser.add_argument(
        "--baseline-tree",
        metavar="DIR",
        help="also a gateway run from this source tree on the same Redis (an A/B of the "
        "code, e.g. a `git archive HEAD` unpacked there), in the same rounds",
    )
    args = parser.parse_args()

    redis_url, r, redis_pid, server_cpu, wrk_cpu = setup()

    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-{run_id}"
    prefixes = [prefix]
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    body_file = tmp / "event.json"
    body_file.write_text(stripe_event_template())
    uvicorn_flags = [
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    # The Redis processes whose CPU a gateway's webhooks cost, by the name servers use.
    redis_groups: dict[str, list[int]] = {"single": [redis_pid] if redis_pid else []}
    servers: list[Server] = []
    cluster = None
    cluster_roles: dict[str, list[int]] = {}  # the cluster's processes by their part

    def start_gateway(name: str, config_text: str, redis: str, cwd: Path = HERE.parent) -> None:
        config = tmp / f"{name}.yaml"
        config.write_text(config_text)
        port, log = free_port(), tmp / f"{name}.log"
        cmd = [
            "taskset", "-c", str(server_cpu["gateway"]), sys.executable, "-m", "gateway.cli",
            "serve", "--no-workers", "--config", str(config), "--port", str(port),
        ]  # fmt: skip
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
            env={**os.environ, **OPERATOR, "LOG_LEVEL": "info"},
        )
        servers.append(
            Server(name, port, proc, server_cpu["gateway"], wrk_cpu["gateway"], redis, log)
        )

    try:
        port = free_port()
        bare = subprocess.Popen(
            ["taskset", "-c", str(server_cpu["bare"]), sys.executable, "-m", "uvicorn",
             "bench.bare_app:app", "--port", str(port), *uvicorn_flags],
            cwd=HERE.parent,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        servers.append(Server("bare", port, bare, server_cpu["bare"], wrk_cpu["bare"]))
        start_gateway("gateway", gateway_config(redis_url, prefix), "single")
        if args.baseline_tree:
            prefixes.append(f"{prefix}-base")
            start_gateway(
                "baseline",
                gateway_config(redis_url, prefixes[-1]),
                "single",
                Path(args.baseline_tree).resolve(),
            )
        if args.cluster:
            sys.path.insert(0, str(HERE.parent))
            from tests.redis_nodes import Cluster

            cluster = Cluster().start()
            redis_groups["cluster"] = [s.proc.pid for s in cluster.servers.values()]
            # Which node does what for the stripe source's slot (all its keys share one).
            _, primary = cluster.primary_for_key(f"{prefix}:{{stripe}}:raw")
            replicas = [p for _, p in cluster.replicas_of(primary)]
            pid = {port: server.proc.pid for port, server in cluster.servers.items()}
            cluster_roles = {
                "primary": [pid[primary]],
                "replica": [pid[p] for p in replicas],
                "others": [pid[p] for p in pid if p != primary and p not in replicas],
            }
            for durability in ("memory", "replicated"):
                start_gateway(
                    f"cluster-{durability}",
                    gateway_config(cluster.url, prefix, durability),
                    "cluster",
                )
        for s in servers:
            wait_ready(s.port, s.proc, "/" if s.name == "bare" else "/healthz")
        body_kb = body_file.stat().st_size / 1024
        print(
            f"ingest benchmark: {args.rounds} rounds x {args.duration:g}s, "
            f"{args.connections} connections, unique signed Stripe events of {body_kb:.1f} KB"
        )
        print(
            f"servers pinned: bare cpu{server_cpu['bare']}, gateways cpu{server_cpu['gateway']};"
            f" wrk on the other core; Redis at {redis_url}"
            + (f" (pid {redis_pid})" if redis_pid else " (not on this machine: CPU not counted)")
            + (f"; cluster {cluster.url} (6 redis-server)" if cluster else "")
        )
        for s in servers:
            run_wrk(s.port, s.wrk_cpu, args.warmup, args.connections, f"warm{s.name}{run_id}",
                    body_file)  # fmt: skip
        # Redis CPU while nothing loads it (other clients of a shared Redis, a cluster's
        # gossip): per group, seconds per second, from the rounds of the other servers.
        idle: dict[str, list[float]] = {g: [] for g in redis_groups}
        for i in range(args.rounds):
            for s in servers if i % 2 == 0 else servers[::-1]:
                cpu_before = cpu_seconds(s.proc.pid)
                redis_before = {g: sum(map(cpu_seconds, p)) for g, p in redis_groups.items()}
                roles_before = {k: sum(map(cpu_seconds, p)) for k, p in cluster_roles.items()}
                began = time.monotonic()
                res = run_wrk(s.port, s.wrk_cpu, args.duration, args.connections,
                              f"r{i}{s.name}{run_id}", body_file)  # fmt: skip
                wall = time.monotonic() - began
                used = cpu_seconds(s.proc.pid) - cpu_before
                redis_used = {
                    g: sum(map(cpu_seconds, p)) - redis_before[g] for g, p in redis_groups.items()
                }
                roles_used = {
                    k: sum(map(cpu_seconds, p)) - roles_before[k] for k, p in cluster_roles.items()
                }
                for g, seconds in redis_used.items():
                    if g != s.redis:
                        idle[g].append(seconds / wall)
                ok = max(res["requests"] - res["non2xx"], 1)
                res["accepted"] = ok
                res["wall"] = wall
                res["cpu_pct"] = 100 * used / wall
                res["cpu_us"] = 1e6 * used / ok
                res["redis_s"] = redis_used.get(s.redis, 0.0)
                res["redis_us"] = 1e6 * res["redis_s"] / ok
                res["total_us"] = res["cpu_us"] + res["redis_us"]
                if s.redis == "cluster":
                    for k, seconds in roles_used.items():
                        res[f"{k}_us"] = 1e6 * seconds / ok
                s.rounds.append(res)
                print(
                    f"  round {i + 1} {s.name:18s} {res['rps']:9.0f} req/s  "
                    f"p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:6.2f} ms  "
                    f"cpu {res['cpu_pct']:3.0f}% ({res['cpu_us']:5.1f} us/req"
                    + (f", Redis {res['redis_us']:5.1f} us" if s.redis else "")
                    + (
                        " = " + " + ".join(f"{k} {res[f'{k}_us']:.1f}" for k in cluster_roles)
                        if s.redis == "cluster"
                        else ""
                    )
                    + f")  non-2xx {res['non2xx']}"
                    + (f"  socket errors {res['socket_errors']}" if res["socket_errors"] else "")
                )
        if args.profile:
            gw = servers[1]
            spy = py_spy(gw.proc.pid, tmp / "profile.txt", args.duration)
            run_wrk(gw.port, gw.wrk_cpu, args.duration, args.connections, f"prof{run_id}",
                    body_file)  # fmt: skip
            spy.wait(timeout=60)
    finally:
        for s in servers:
            s.proc.terminate()
        for s in servers:
            s.proc.wait(timeout=10)
        if cluster is not None:
            cluster.stop()

    idle_rate = {g: statistics.median(v) if v else 0.0 for g, v in idle.items()}

    def med(s: Server, key: str) -> float:
        return statistics.median(x[key] for x in s.rounds)

    def net_us(s: Server) -> float:
        """Gateway + Redis CPU per webhook, Redis's idle CPU (other clients, gossip) taken out."""
        return statistics.median(
            x["cpu_us"]
            + 1e6 * max(0.0, x["redis_s"] - idle_rate[s.redis] * x["wall"]) / x["accepted"]
            for x in s.rounds
        )

    print()
    print(
        f"{'':20s}{'req/s':>9s}{'p50 ms':>8s}{'p99 ms':>8s}{'cpu':>6s}{'us/req':>8s}"
        f"{'Redis us':>10s}{'+Redis':>8s}{'net':>7s}{'non-2xx':>9s}"
    )
    for s in servers:
        redis_cols = (
            f"{med(s, 'redis_us'):10.1f}{med(s, 'total_us'):8.1f}{net_us(s):7.1f}"
            if s.redis
            else f"{'-':>10s}{med(s, 'cpu_us'):8.1f}{med(s, 'cpu_us'):7.1f}"
        )
        print(
            f"{s.name:20s}{med(s, 'rps'):9.0f}{med(s, 'p50_ms'):8.2f}{med(s, 'p99_ms'):8.2f}"
            f"{med(s, 'cpu_pct'):5.0f}%{med(s, 'cpu_us'):8.1f}{redis_cols}"
            f"{sum(x['non2xx'] for x in s.rounds):9d}"
        )
    print(
        "(us/req: the server's own CPU per accepted webhook; Redis us: its Redis processes'"
        " CPU per accepted webhook;\n +Redis: both; net: both, less the Redis CPU measured"
        " while the others ran: "
        + ", ".join(f"{g} {100 * v:.1f}% of a core" for g, v in idle_rate.items())
        + ")"
    )
    if cluster_roles:
        print(
            "cluster Redis CPU per webhook by node: "
            + "; ".join(
                f"{s.name} " + ", ".join(f"{k} {med(s, f'{k}_us'):.1f} us" for k in cluster_roles)
                for s in servers
                if s.redis == "cluster"
            )
            + "\n(primary: the node serving the stripe source's slot; replica: its replica;"
            " others: the other 2 primaries and their replicas)"
        )
    bare_s = servers[0]
    print()
    for s in servers[1:]:
        ratio = med(s, "rps") / med(bare_s, "rps")
        p99_ratio = med(s, "p99_ms") / med(bare_s, "p99_ms")
        cpu_ratio = med(bare_s, "cpu_us") / med(s, "cpu_us")
        print(
            f"{s.name}: throughput {ratio:.2f}x bare, p99 {p99_ratio:.2f}x; CPU per webhook, "
            f"bare/gateway {cpu_ratio:.2f}x"
            + (
                f", bare/(gateway + Redis) {med(bare_s, 'cpu_us') / med(s, 'total_us'):.2f}x"
                f" (net of idle Redis {med(bare_s, 'cpu_us') / net_us(s):.2f}x)"
                if redis_groups[s.redis]
                else ""
            )
        )
    gw = servers[1]
    print(
        f"\nthroughput ratio gateway/bare: {med(gw, 'rps') / med(bare_s, 'rps'):.2f}x"
        " (target >= 0.8x)"
    )
    print(
        f"p99 ratio gateway/bare:        {med(gw, 'p99_ms') / med(bare_s, 'p99_ms'):.2f}x"
        " (target <= 1.5x)"
    )
    print(
        f"CPU per request, bare/gateway: {med(bare_s, 'cpu_us') / med(gw, 'cpu_us'):.2f}x (the"
        " throughput ratio if both servers were CPU-bound)"
    )
    for s in servers[1:]:
        accepted = sum(1 for line in s.log.open("rb") if b'"delivery.accepted"' in line)
        sent = sum(x["requests"] for x in s.rounds)
        print(
            f"{s.name} accepted {accepted} deliveries in all (measured rounds sent {sent}; "
            f"warm-up and profile rounds add the rest)"
        )
    if args.profile and (tmp / "profile.txt").exists():
        print_profile(tmp / "profile.txt", "py-spy")
    for p in prefixes:
        cleanup(r, p, tmp)
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
