"""The gateway on a real Redis Cluster (3 primaries + 3 replicas) and a real Sentinel-
managed primary/replica pair, started by tests/redis_nodes.py: the whole pipeline, and a
primary killed with SIGKILL while a vendor keeps sending.

What a vendor may see during a failover: only 200 or 503 with Retry-After, each within
redis_timeout (and a little); afterwards the gateway works again by itself. With
`durability: replicated` every delivery that was answered 200 is still there (its re-post
is a duplicate) and its event reaches the destination.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx

from tests.conftest import expected_message_id
from tests.destinations.conftest import VendorServer, wait_for
from tests.redis_nodes import clean_cluster, clean_sentinel  # noqa: F401 (fixtures)
from tests.test_cli import Server
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
