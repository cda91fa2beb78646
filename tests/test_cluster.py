"""The gateway on a real Redis Cluster (3 primaries + 3 replicas) and a real Sentinel-
managed primary/replica pair, started by tests/redis_nodes.py: the whole pipeline, and a
primary killed with SIGKILL while a vendor keeps sending.

What a vendor may see during a failover: only 200 or 503 with Retry-After, each within
redis_timeout (and a little); afterwards the gateway works again by itself. With
`durability: replicated` every delivery that was answered 200 is still there (its re-post
is a duplicate) and its event reaches the destination.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field

import httpx

from tests.conftest import expected_message_id
from tests.destinations.conftest import VendorServer, wait_for
from tests.redis_nodes import clean_cluster, clean_sentinel  # noqa: F401 (fixtures)
from tests.test_cli import Server, cli
from tests.test_end_to_end import SECRET, send

TIMEOUT = 1.0  # redis_timeout


def gateway_config(url: str, sink: VendorServer, durability: str = "memory") -> str:
    return f"""
redis_url: {url}
key_prefix: gw
redis_timeout: {TIMEOUT:g}s
durability: {durability}
worker: {{claim_idle: 1s}}
sources:
  stripe: {{type: stripe, secrets: [{SECRET}], tolerance: 1h}}
destinations:
  sink: {{type: http, url: "{sink.url}/in", batch: true, batch_size: 50, linger: 20ms}}
"""


def delivered(sink: VendorServer) -> list[str]:
    return [e["messageId"] for r in list(sink.requests) for e in r.json()]


def message_id(n: int) -> str:
    return expected_message_id("stripe", f"evt_{n}", 0, "Charge Succeeded")


@dataclass
class Vendor:
    """Sends charge.succeeded webhooks evt_0, evt_1, ... like Stripe: keeps what was
    answered 200, will send the rest again; records every answer."""

    url: str
    accepted: set[int] = field(default_factory=set)
    answers: list[tuple[int, str, float]] = field(default_factory=list)
    """(status, Retry-After, seconds taken)"""
    next: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, n: int) -> httpx.Response | None:
        started = time.monotonic()
        try:
            r = send(self.url, "charge.succeeded", f"evt_{n}")
        except httpx.TransportError:
            self.answers.append((0, "", time.monotonic() - started))
            return None
        self.answers.append(
            (r.status_code, r.headers.get("retry-after", ""), r.elapsed.total_seconds())
        )
        if r.status_code == 200:
            self.accepted.add(n)
        return r

    def run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                n, self.next = self.next, self.next + 1
            self.post(n)

    def start(self, threads: int = 3) -> list[threading.Thread]:
        out = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in out:
            t.start()
        return out

    def finish(self, threads: list[threading.Thread]) -> None:
        self.stop.set()
        for t in threads:
            t.join(30)


def test_the_whole_pipeline_runs_on_a_cluster(clean_cluster, tmp_path):  # noqa: F811
    sink = VendorServer()
    sink.start()
    server = Server(
        tmp_path, {"LOG_LEVEL": "warning"}, config=gateway_config(clean_cluster.url, sink)
    )
    try:
        vendor = Vendor(server.url)
        for n in range(60):
            r = vendor.post(n)
            assert r is not None and r.status_code == 200, r and r.text
            assert r.json()["status"] == "accepted"
        assert send(server.url, "charge.succeeded", "evt_7").json()["status"] == "duplicate"
        expected = {message_id(n) for n in range(60)}
        assert wait_for(lambda: set(delivered(sink)) == expected, 30), len(
            expected - set(delivered(sink))
        )
        assert len(delivered(sink)) == 60  # each once
    finally:
        server.stop()
        sink.stop()


def test_collected_events_and_their_rate_limits_on_a_cluster(clean_cluster, tmp_path):  # noqa: F811
    """The collect API's accept checks its rate limits in the same script: its keys must
    share the source's slot. Identify + track of several people reach the sink, merged
    by the identity graph (its own slot)."""
    sink = VendorServer()
    sink.start()
    text = gateway_config(clean_cluster.url, sink).replace(
        "sources:\n",
        "sources:\n  web: {type: collect, write_keys: [wk_cluster], limit_per_ip: 1000/1m}\n",
    )
    server = Server(tmp_path, {"LOG_LEVEL": "warning"}, config=text)
    try:
        batch = [
            {"type": "track", "event": "Viewed", "userId": f"user-{n}", "messageId": f"m-{n}"}
            for n in range(30)
        ]
        r = httpx.post(
            server.url + "/v1/batch",
            json={"batch": batch, "writeKey": "wk_cluster"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        expected = {f"m-{n}" for n in range(30)}
        assert wait_for(lambda: set(delivered(sink)) >= expected, 30), len(
            expected - set(delivered(sink))
        )
    finally:
        server.stop()
        sink.stop()


def test_retries_dead_letters_and_the_delivery_log_on_a_cluster(clean_cluster, tmp_path):  # noqa: F811
    """A destination's retry set, the dead letters and the delivery log live on other
    slots than the events: a 503 is retried, a 400 dead-lettered, `dlq list`, `dlq replay`
    and `deliveries show` work against the cluster, and the replay arrives."""
    sink = VendorServer()
    sink.start()
    sink.reply((503, {}, b"busy"), (400, {}, b"no such product"))
    text = gateway_config(clean_cluster.url, sink).replace(
        "batch: true, batch_size: 50, linger: 20ms",
        "batch: false, backoff: 50ms, backoff_max: 100ms, max_attempts: 5",
    )
    server = Server(tmp_path, {"LOG_LEVEL": "warning"}, config=text)
    config = str(tmp_path / "config.yaml")
    try:
        assert send(server.url, "charge.succeeded", "evt_1").status_code == 200
        # 503 (retried), then 400 (dead-lettered): two attempts, no arrival
        assert wait_for(lambda: len(sink.requests) == 2, 30)
        listed = cli("dlq", "list", "--json", "--config", config)
        assert listed.returncode == 0, listed.stderr
        [letter] = [json.loads(line) for line in listed.stdout.splitlines()]
        assert letter["message_id"] == message_id(1)
        assert "400" in letter["reason"] and "no such product" in letter["reason"]
        shown = cli("deliveries", "show", "evt_1", "--source", "stripe", "--config", config)
        assert shown.returncode == 0, shown.stderr
        assert "attempt 1  retry  HTTP 503" in shown.stdout
        assert "attempt 2  fail  HTTP 400" in shown.stdout
        replayed = cli("dlq", "replay", "--config", config)
        assert replayed.returncode == 0, replayed.stderr
        # one event per request (batch: false): the 503, the 400, then the replay
        assert wait_for(lambda: len(sink.requests) == 3, 30)
        assert [r.json()["messageId"] for r in sink.requests] == [message_id(1)] * 3
        assert cli("dlq", "list", "--json", "--config", config).stdout == ""
    finally:
        server.stop()
        sink.stop()


def _failover_under_load(tmp_path, url: str, kill, wait_failover, restart) -> None:
    """Vendors send while `kill()` ends the primary that holds the source's keys; then the
    promises a `durability: replicated` gateway made must hold.

    The promoted replica has no replica of its own until the killed node is back (as a
    supervisor would restart it): until then `replicated` cannot confirm a write and
    answers 503, as documented; once it is back, the gateway takes webhooks again."""
    sink = VendorServer()
    sink.start()
    server = Server(
        tmp_path, {"LOG_LEVEL": "warning"}, config=gateway_config(url, sink, "replicated")
    )
    vendor = Vendor(server.url)
    threads = vendor.start()
    try:
        assert wait_for(lambda: len(vendor.accepted) >= 40, 30)
        old = kill()
        killed_at = len(vendor.answers)
        wait_failover(old)
        restart(old)  # rejoins as the new primary's replica
        # The gateway comes back by itself: new deliveries are accepted again
        recovered = len(vendor.accepted)
        assert wait_for(lambda: len(vendor.accepted) >= recovered + 40, 30), vendor.answers[-5:]
        vendor.finish(threads)

        statuses = {status for status, _, _ in vendor.answers}
        assert statuses <= {200, 503}, statuses
        assert all(ra for status, ra, _ in vendor.answers if status == 503)
        slowest = max(seconds for _, _, seconds in vendor.answers)
        assert slowest < TIMEOUT + 1.5, slowest  # no hang beyond redis_timeout
        assert len(vendor.answers) > killed_at

        # Every delivery answered 200 is still stored: its re-post is a duplicate
        for n in sorted(vendor.accepted):
            r = send(server.url, "charge.succeeded", f"evt_{n}")
            assert (r.status_code, r.json()["status"]) == (200, "duplicate"), (n, r.text)
        # and the vendor's retries of the rest are taken
        for n in range(vendor.next):
            if n not in vendor.accepted:
                assert send(server.url, "charge.succeeded", f"evt_{n}").status_code == 200
        expected = {message_id(n) for n in range(vendor.next)}
        assert wait_for(lambda: set(delivered(sink)) >= expected, 60), len(
            expected - set(delivered(sink))
        )
    finally:
        vendor.finish(threads)
        server.stop()
        sink.stop()


def test_a_primary_killed_under_load_on_a_cluster_loses_nothing_replicated(
    clean_cluster,  # noqa: F811
    tmp_path,
):
    def kill() -> int:
        _, port = clean_cluster.primary_for_key("gw:{stripe}:raw")
        clean_cluster.kill(port)
        return port

    _failover_under_load(
        tmp_path, clean_cluster.url, kill, clean_cluster.wait_failover, clean_cluster.restart
    )


def test_a_sentinel_failover_under_load_loses_nothing_replicated(clean_sentinel, tmp_path):  # noqa: F811
    _failover_under_load(
        tmp_path,
        clean_sentinel.url,
        clean_sentinel.kill_primary,
        clean_sentinel.wait_failover,
        clean_sentinel.restart,
    )


def _hmac_config(url: str, names: list[str], durability: str = "memory") -> str:
    sources = "".join(
        f"  {n}: {{type: hmac, secrets: [s], signature_header: X-Sig, delivery_id_header: X-Id}}\n"
        for n in names
    )
    return f"redis_url: {url}\nredis_timeout: 1s\ndurability: {durability}\nsources:\n{sources}"


async def test_a_shard_without_replica_fails_only_its_own_sources(clean_cluster):  # noqa: F811
    """durability: replicated, and the replica of the primary holding source x's keys is
    gone: x's webhooks get 503, while y's, on another shard, are taken in the same batches."""
    from gateway.store import Store
    from tests.conftest import Clock, gateway_client
    from tests.test_outage import signed

    names = ["acme", "beta", "gamma", "delta", "omega", "kappa", "sigma", "theta"]
    x = names[0]
    x_primary = clean_cluster.primary_for_key(f"gw:{{{x}}}:raw")
    y = next(n for n in names[1:] if clean_cluster.primary_for_key(f"gw:{{{n}}}:raw") != x_primary)
    [replica] = clean_cluster.replicas_of(x_primary[1])
    clean_cluster.kill(replica[1])  # healed after the test by the fixture
    store = Store.connect(clean_cluster.url, "gw", timeout=1.0, durability="replicated")
    try:
        async with gateway_client(
            _hmac_config(clean_cluster.url, [x, y], "replicated"), store, Clock()
        ) as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        f"/webhooks/{source}", content=b"{}", headers=signed(f"{source}-{n}")
                    )
                    for n in range(5)
                    for source in (x, y)
                )
            )
        by_source = {x: set(), y: set()}
        for n, r in enumerate(answers):
            by_source[(x, y)[n % 2]].add(r.status_code)
        assert by_source == {x: {503}, y: {200}}, by_source
        assert all(r.headers["retry-after"] for r in answers if r.status_code == 503)
    finally:
        await store.close()


async def test_an_unreachable_cluster_is_a_503_not_a_500(tmp_path):
    """No node answers at all: the redis package's cluster error (not a RedisError) must
    still become 503 + Retry-After, and /readyz says unavailable."""
    from gateway.store import Store
    from tests.conftest import Clock, gateway_client
    from tests.redis_nodes import free_port
    from tests.test_outage import signed

    url = f"redis+cluster://127.0.0.1:{free_port()}"
    store = Store.connect(url, "gw", timeout=0.5)
    try:
        async with gateway_client(_hmac_config(url, ["acme"]), store, Clock()) as client:
            r = await client.post("/webhooks/acme", content=b"{}", headers=signed("d1"))
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"]
            assert (await client.get("/readyz")).status_code == 503
    finally:
        await store.close()
