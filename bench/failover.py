"""Failover benchmark: what a primary killed with SIGKILL under load costs, per durability.

    python bench/failover.py [--sentinel] [--kills 3] [--concurrency 32] [--before 2]
                             [--after 2] [--redis-timeout 2] [--modes memory,replicated]
                             [--stall-replica MS]

For `durability: memory` and `durability: replicated` in turn, on a fresh local Redis
Cluster of 3 primaries + 3 replicas (with --sentinel: a primary, its replica and 3
sentinels; tests/redis_nodes.py starts either, no Docker), it runs
`webhook-gateway serve --no-workers` with a stripe source and drives it the way Stripe
does: ~32 signed ~4 KB webhooks in flight at all times (asyncio, a keep-alive connection
per sender; signed with the stripe library), each a new
event id, a delivery counting as delivered only when answered 200. `--before` seconds
into the load it SIGKILLs the primary that serves the source's keys (`gw:{stripe}:raw`),
waits until the replica has taken over, restarts the killed node (it rejoins, empty, as
the new primary's replica, as a supervisor would restart it) and keeps the load on until
the gateway answers 200 again and `--after` more seconds have passed. Then it posts every
delivery that was answered 200 once more: a re-post answered `"status": "duplicate"` was
kept; one answered `accepted` had been LOST (the vendor was told 200, the gateway had
forgotten it). The deliveries answered 503 are re-posted too, to count those that had been
stored anyway (harmless: the vendor's retry is a duplicate).

Per kill it prints: deliveries answered 200 before the kill (and in all), lost, 503s, any
other answer (there should be none), seconds from the kill until the failover was done
(the new primary serves the slots / the sentinels name it), until the killed node was back,
and until the first 200 to a request sent after the kill, and the longest answer time.
`--kills N` repeats the kill N times per mode (the cluster healed in between) for a range.

A SIGKILLed redis-server loses only what it had not yet written to a socket: the reply to
the gateway and the replication stream to its replica leave in the same event-loop turn,
and the kernel still delivers what was written. `--stall-replica MS` models a replica that
lags (slow disk or network, a busy replica): it is stopped (SIGSTOP) for MS ms before the
kill and continued right after it, so that what the primary accepted meanwhile is still in
the primary's own output buffer when it dies.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import stripe

# Each gateway's console and /metrics on a free port: two may run at once.
OPERATOR = {"OPERATOR_LISTEN": "127.0.0.1:0"}
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.ingest import SECRET, free_port, stripe_event_template, wait_ready  # noqa: E402
from tests.redis_nodes import Cluster, SentinelSet  # noqa: E402

PREFIX = "gw"

try:
    from uvloop import run
except ImportError:  # pragma: no cover
    run = asyncio.run


@dataclass
class Answer:
    n: int
    started: float  # monotonic
    ended: float
    status: int  # 0: no HTTP answer (connection error, timeout)
    outcome: str  # the JSON "status": accepted, duplicate, unavailable, ...
    retry_after: str


class Connection:
    """One keep-alive HTTP/1.1 connection, as a vendor's sender holds it. (A few lines of
    asyncio streams rather than httpx: on this 2-core machine httpx's pool spent ~2.7 ms
    of CPU per request at 32 in flight, which capped the load at ~200 webhooks/s.)"""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict, bytes]:
        """(status, headers with lower-case names, body); raises OSError and the like."""
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            assert self.reader is not None
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Length: {len(body)}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                + "\r\n"
            )
            self.writer.write(head.encode("latin-1") + body)
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            fields = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    fields[name.strip().lower()] = value.strip()
            content = await self.reader.readexactly(int(fields.get("content-length", "0")))
            if fields.get("connection", "").lower() == "close":
                self.close()
            return status, fields, content
        except BaseException:
            self.close()  # an answer may be half read: never reuse the connection
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Load:
    """Vendors sending webhooks evt_<run>_0, _1, ...: `concurrency` in flight at all times,
    each sender on its own keep-alive connection."""

    host: str
    port: int
    run: str
    template: str
    concurrency: int
    timeout: float = 15.0
    answers: list[Answer] = field(default_factory=list)
    next: int = 0
    stop: bool = False
    limit: int | None = None
    """Send this many webhooks (evt ids 0 .. limit - 1) and stop."""
    id_format: str = "evt_{run}_{n}"

    def body(self, n: int) -> str:
        return self.template.replace("__ID__", self.id_format.format(run=self.run, n=n), 1)

    async def post(self, n: int, conn: Connection) -> Answer:
        body = self.body(n)
        # Signed as Stripe signs (its own library), at send time
        header = stripe.WebhookSignature.generate_signature_header(body, SECRET)
        headers = {"Stripe-Signature": header, "Content-Type": "application/json"}
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                status, fields, content = await conn.post(
                    "/webhooks/stripe", body.encode(), headers
                )
        except (OSError, EOFError, ValueError, TimeoutError, asyncio.IncompleteReadError) as e:
            return Answer(n, started, time.monotonic(), 0, type(e).__name__, "")
        ended = time.monotonic()
        try:
            outcome = json.loads(content).get("status", "")
        except ValueError:
            outcome = content[:60].decode(errors="replace")
        return Answer(n, started, ended, status, outcome, fields.get("retry-after", ""))

    async def vendor(self) -> None:
        conn = Connection(self.host, self.port)
        try:
            while not self.stop and (self.limit is None or self.next < self.limit):
                n, self.next = self.next, self.next + 1
                self.answers.append(await self.post(n, conn))
        finally:
            conn.close()

    def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self.vendor()) for _ in range(self.concurrency)]


async def until(check, timeout: float, what: str, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        await asyncio.sleep(step)


async def repost(load: Load, ids: list[int]) -> dict[int, str]:
    """Post these deliveries again, `concurrency` at a time; each one's outcome."""
    out: dict[int, str] = {}
    queue = list(ids)

    async def worker() -> None:
        conn = Connection(load.host, load.port)
        try:
            while queue:
                answer = await load.post(queue.pop(), conn)
                out[answer.n] = answer.outcome if answer.status == 200 else f"HTTP {answer.status}"
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(load.concurrency)))
    return out


async def one_kill(
    topology: Cluster | SentinelSet, gateway_port: int, run: str, args: argparse.Namespace
) -> dict[str, Any]:
    load = Load("127.0.0.1", gateway_port, run, stripe_event_template(), args.concurrency)
    tasks = load.start()
    try:
        began = time.monotonic()
        await until(
            lambda: (
                time.monotonic() - began >= args.before
                and any(a.status == 200 for a in load.answers)
            ),
            args.before + 30,
            "the first 200s",
        )
        if isinstance(topology, Cluster):
            _, port = topology.primary_for_key(f"{PREFIX}:{{stripe}}:raw")
        else:
            _, port = topology.primary()
        stalled = []
        if args.stall_replica:
            # The primary's replicas stop reading for a while (a slow or far replica, a
            # busy network): what the primary writes meanwhile waits in its output buffer.
            if isinstance(topology, Cluster):
                stalled = [p for _, p in topology.replicas_of(port)]
            else:
                stalled = [p for p in topology.data_ports if p != port and topology.alive(p)]
            for p in stalled:
                os.kill(topology.servers[p].proc.pid, signal.SIGSTOP)
            # (The stall itself is the experiment: a fixed time, not a wait for something.)
            await asyncio.sleep(args.stall_replica / 1000)
        try:
            topology.kill(port)  # SIGKILL, as a crash would (returns once it is reaped)
        finally:
            for p in stalled:
                os.kill(topology.servers[p].proc.pid, signal.SIGCONT)
        # From here on the primary is dead for sure. (kill() asks the node for its slots
        # first, a few ms: an answer in those ms counts as before the kill.)
        killed_at = time.monotonic()
        await asyncio.to_thread(topology.wait_failover, port, 30)
        failed_over = time.monotonic()
        # The killed node rejoins, empty, as a replica of its successor, as a supervisor
        # would restart it. (In a thread: the vendors keep sending meanwhile.)
        await asyncio.to_thread(topology.restart, port, True, 30)
        restarted = time.monotonic()
        await until(
            lambda: (
                time.monotonic() - restarted >= args.after
                and any(a.status == 200 and a.started >= killed_at for a in load.answers)
            ),
            60,
            "a 200 after the kill",
        )
    finally:
        load.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    answers = load.answers
    ok = [a.n for a in answers if a.status == 200]
    unavailable = [a.n for a in answers if a.status == 503]
    others = collections.Counter(
        f"{a.status} {a.outcome}" for a in answers if a.status not in (200, 503)
    )
    again = await repost(load, ok)
    kept = collections.Counter(again.values())
    stored_503 = collections.Counter((await repost(load, unavailable)).values())
    # When the lost ones had been answered 200: ms before the kill (negative: after it)
    answered = {a.n: a.ended for a in answers if a.status == 200}
    lost_ms = sorted(1000 * (killed_at - answered[n]) for n, o in again.items() if o == "accepted")
    ok_before = sum(1 for a in answers if a.status == 200 and a.ended < killed_at)
    return {
        "sent": len(answers),
        "ok": len(ok),
        "ok_before": ok_before,
        "rate_before": ok_before / (killed_at - began),
        "lost": kept.get("accepted", 0),
        "lost_ms": lost_ms,
        "kept": kept.get("duplicate", 0),
        "repost_other": sum(v for k, v in kept.items() if k not in ("accepted", "duplicate")),
        "503": len(unavailable),
        "503_stored": stored_503.get("duplicate", 0),
        "503_retry_after": sum(1 for a in answers if a.status == 503 and a.retry_after),
        "others": sum(others.values()),
        "others_detail": dict(others),
        "failover_s": failed_over - killed_at,
        "restart_s": restarted - killed_at,
        "first_ok_s": min(a.ended for a in answers if a.status == 200 and a.started >= killed_at)
        - killed_at,
        "longest_s": max(a.ended - a.started for a in answers),
        "longest_200_s": max(a.ended - a.started for a in answers if a.status == 200),
    }


def start_gateway(
    tmp: Path, url: str, durability: str, timeout: float
) -> tuple[subprocess.Popen, int, Path]:
    config = tmp / f"{durability}.yaml"
    config.write_text(
        f"redis_url: {url}\nkey_prefix: {PREFIX}\ndurability: {durability}\n"
        f"redis_timeout: {timeout:g}s\nsources:\n  stripe:\n    type: stripe\n"
        f"    secrets: [{SECRET}]\n    tolerance: 1h\n"
    )
    port = free_port()
    log = tmp / f"{durability}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--no-workers", "--config", str(config),
         "--port", str(port)],
        cwd=HERE.parent,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env={**os.environ, **OPERATOR, "LOG_LEVEL": "warning"},
    )  # fmt: skip
    wait_ready(port, proc)
    return proc, port, log


def fmt_range(values: list[float], spec: str = ".0f") -> str:
    lo, hi = min(values), max(values)
    return format(lo, spec) if format(lo, spec) == format(hi, spec) else f"{lo:{spec}}-{hi:{spec}}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentinel", action="store_true", help="a Sentinel set, not a cluster")
    parser.add_argument("--kills", type=int, default=3, help="primary kills per mode")
    parser.add_argument("--concurrency", type=int, default=32, help="webhooks in flight")
    parser.add_argument("--before", type=float, default=2, help="seconds of load before a kill")
    parser.add_argument(
        "--after", type=float, default=2, help="seconds of load after the node is back"
    )
    parser.add_argument("--redis-timeout", type=float, default=2.0, help="the gateway's")
    parser.add_argument("--modes", default="memory,replicated")
    parser.add_argument(
        "--stall-replica",
        type=float,
        default=0,
        metavar="MS",
        help="SIGSTOP the primary's replica this long before the kill (SIGCONT right after "
        "it): a lagging replica, whose missing writes die with the primary",
    )
    args = parser.parse_args()
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is needed")

    kind = (
        "Sentinel set (primary + replica + 3 sentinels)"
        if args.sentinel
        else ("Redis Cluster (3 primaries + 3 replicas)")
    )
    print(
        f"failover benchmark: {kind}; {args.concurrency} signed 4 KB Stripe webhooks in flight;"
        f" SIGKILL of the source's primary after {args.before:g} s; redis_timeout"
        f" {args.redis_timeout:g} s; {args.kills} kill(s) per mode"
        + (
            f"; the replica stalled (SIGSTOP) {args.stall_replica:g} ms before each kill"
            if args.stall_replica
            else ""
        )
    )
    results: dict[str, list[dict]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    try:
        for mode in args.modes.split(","):
            results[mode] = []
            started = time.monotonic()
            topology = (SentinelSet() if args.sentinel else Cluster()).start()
            proc, log = None, None
            try:
                proc, gateway_port, log = start_gateway(tmp, topology.url, mode, args.redis_timeout)
                print(f"\n{mode}: topology up in {time.monotonic() - started:.1f} s")
                for k in range(args.kills):
                    if k:
                        topology.wait_healthy(30)
                    r = run(one_kill(topology, gateway_port, f"{mode}{k}", args))
                    results[mode].append(r)
                    print(
                        f"  kill {k + 1}: {r['ok_before']} answered 200 before the kill "
                        f"({r['rate_before']:.0f}/s), {r['ok']} in all; LOST {r['lost']} "
                        f"(re-posts: {r['kept']} duplicate, {r['lost']} accepted"
                        + (f", {r['repost_other']} other" if r["repost_other"] else "")
                        + f"); 503s {r['503']} (with Retry-After {r['503_retry_after']},"
                        f" stored anyway {r['503_stored']}); other answers {r['others']}"
                        + (f" {r['others_detail']}" if r["others"] else "")
                        + (
                            f" (the lost were answered 200 {r['lost_ms'][0]:.0f} to"
                            f" {r['lost_ms'][-1]:.0f} ms before the kill)"
                            if r["lost"]
                            else ""
                        )
                        + f"\n          failover done {r['failover_s']:.2f} s after the kill,"
                        f" killed node back as a replica {r['restart_s']:.2f} s, first 200"
                        f" {r['first_ok_s']:.2f} s;"
                        f" longest answer {r['longest_s']:.2f} s"
                    )
            finally:
                if proc is not None:
                    proc.terminate()
                    proc.wait(timeout=10)
                topology.stop()
            errors = [
                line for line in (log.read_text(errors="replace") if log else "").splitlines()
                if '"level": "error"' in line or '"level":"error"' in line
            ]  # fmt: skip
            if errors:
                print(f"  gateway logged {len(errors)} errors, the first: {errors[0][:300]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    cols = [
        ("200 before kill", "ok_before", ".0f"),
        ("200 in all", "ok", ".0f"),
        ("lost", "lost", ".0f"),
        ("503s", "503", ".0f"),
        ("other", "others", ".0f"),
        ("failover s", "failover_s", ".1f"),
        ("first 200 s", "first_ok_s", ".1f"),
        ("longest s", "longest_s", ".2f"),
    ]
    width = [max(len(title) + 2, 12) for title, _, _ in cols]
    print(
        f"\n{'durability':12s}{'kills':>6s}"
        + "".join(f"{c[0]:>{w}s}" for c, w in zip(cols, width, strict=True))
    )
    for mode, rs in results.items():
        if rs:
            print(
                f"{mode:12s}{len(rs):6d}"
                + "".join(
                    f"{fmt_range([r[key] for r in rs], spec):>{w}s}"
                    for (_, key, spec), w in zip(cols, width, strict=True)
                )
            )
    print(
        "(ranges over the kills; lost: answered 200, then accepted again when re-posted;"
        " first 200: to a request sent after the kill)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
