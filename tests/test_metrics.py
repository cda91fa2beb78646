"""GET /metrics: the counters the issue names, and stream lag."""

from __future__ import annotations

import hashlib
import hmac
import uuid

import httpx
import pytest
import redis as sync_redis
from prometheus_client.parser import text_string_to_metric_families

from gateway.worker import NormalizeWorker
from tests.conftest import OPERATOR, drop_keys, free_port, gateway_client
from tests.destinations.conftest import wait_for
from tests.test_cli import Worker

CFG = """
sources:
  acme:
    type: hmac
    secrets: [s]
    signature_header: Sig
    delivery_id_header: Id
    mappings:
      - event: Thing Happened
"""


def signed(delivery: str) -> dict[str, str]:
    return {"sig": hmac.new(b"s", b"{}", hashlib.sha256).hexdigest(), "id": delivery}


def value(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric line starting with {line_start!r}")


async def test_metrics(redis_store):
    async with gateway_client(CFG, redis_store) as client:
        for delivery in ("a", "b", "a"):
            await client.post("/webhooks/acme", content=b"{}", headers=signed(delivery))
        await client.post("/webhooks/acme", content=b"{}", headers={"sig": "00", "id": "c"})
        for i in range(3):
            await client.post(f"/webhooks/random-{i}", content=b"{}")
        app = client._transport.app  # type: ignore[attr-defined]
        worker = NormalizeWorker(app.state.config, redis_store, "w", app.state.metrics)
        await worker.ensure_groups()
        text = (await client.get(OPERATOR + "/metrics")).text
        assert value(text, 'gateway_stream_lag{group="normalize",stream="raw:acme"}') == 2
        await worker.read_once()
        text = (await client.get(OPERATOR + "/metrics")).text
    assert value(text, 'gateway_deliveries_total{outcome="accepted",source="acme"}') == 2
    assert value(text, 'gateway_deliveries_total{outcome="duplicate",source="acme"}') == 1
    assert value(text, 'gateway_deliveries_total{outcome="rejected",source="acme"}') == 1
    assert value(text, 'gateway_deliveries_total{outcome="rejected",source="_unknown"}') == 3
    assert value(text, 'gateway_events_total{source="acme"}') == 2
    assert value(text, 'gateway_stream_lag{group="normalize",stream="raw:acme"}') == 0


def sample(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from Prometheus text (parsed by prometheus_client's parser)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


PLANNED = """
schema: enforce
events:
  Thing Happened:
    properties:
      size: {type: integer, required: true}
sources:
  acme:
    type: hmac
    secrets: [s]
    signature_header: Sig
    delivery_id_header: Id
    mappings:
      - event: Thing Happened
        properties: {size: size}
"""


@pytest.mark.parametrize(
    ("bodies", "events", "normalize", "schema"),
    [
        pytest.param([b'{"size": 3}'], 1, None, None, id="normalized: nothing quarantined"),
        pytest.param([b"not json"], None, 1, None, id="not JSON: normalize stage"),
        pytest.param([b'{"size": "big"}'], None, None, 1, id="off plan: schema stage"),
        pytest.param(
            [b'{"size": 3}', b"<xml/>", b"{", b'{"size": 1.5}', b'{"size": 4}'],
            2,
            2,
            1,
            id="a mix",
        ),
    ],
)
async def test_quarantined_total_counts_by_source_and_stage(
    redis_store, bodies, events, normalize, schema
):
    async with gateway_client(PLANNED, redis_store) as client:
        for i, body in enumerate(bodies):
            headers = {"sig": hmac.new(b"s", body, hashlib.sha256).hexdigest(), "id": f"d{i}"}
            r = await client.post("/webhooks/acme", content=body, headers=headers)
            assert r.json() == {"status": "accepted", "delivery_id": f"d{i}"}
        app = client._transport.app  # type: ignore[attr-defined]
        worker = NormalizeWorker(app.state.config, redis_store, "w", app.state.metrics)
        await worker.ensure_groups()
        assert await worker.read_once() == len(bodies)
        text = (await client.get(OPERATOR + "/metrics")).text
    assert sample(text, "gateway_events_total", source="acme") == events
    quarantined = "gateway_quarantined_total"
    assert sample(text, quarantined, source="acme", stage="normalize") == normalize
    assert sample(text, quarantined, source="acme", stage="schema") == schema


WORKER = """\
redis_url: {redis_url}
key_prefix: {prefix}
sources:
  acme:
    type: hmac
    secrets: [s]
    signature_header: Sig
    mappings:
      - event: Thing Happened
destinations:
  hook: {{type: http, url: "{hook}/in", batch: true, linger: 10ms}}
"""


def test_worker_metrics_port_serves_prometheus_text(tmp_path, redis_url, vendor):
    """`webhook-gateway worker --metrics-port P`, a real process, scraped over HTTP: the
    normalize worker's counters and the deliver worker's, for an HTTP destination."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    path = tmp_path / "config.yaml"
    path.write_text(WORKER.format(redis_url=redis_url, prefix=prefix, hook=vendor.url))
    client = sync_redis.Redis.from_url(redis_url)
    for delivery_id, body in (("a1", b"{}"), ("a2", b"{}"), ("a3", b"not json")):
        client.xadd(
            f"{prefix}:{{acme}}:raw",
            {
                "source": "acme",
                "delivery_id": delivery_id,
                "received_at": 1714564800000,
                "headers": "{}",
                "body": body,
            },
        )
    port = free_port()
    worker = Worker(path, "--metrics-port", str(port))
    scraped: list[httpx.Response] = []

    def counted() -> bool:
        try:
            scraped[:] = [httpx.get(f"http://127.0.0.1:{port}/metrics")]
        except httpx.TransportError:
            return False  # not listening yet
        text = scraped[0].text
        return (
            sample(text, "gateway_events_total", source="acme") == 2
            and sample(text, "gateway_quarantined_total", source="acme", stage="normalize") == 1
            and sample(text, "gateway_destination_events_total", destination="hook", outcome="sent")
            == 2
        )

    try:
        assert wait_for(counted), worker.stop()
    finally:
        log = worker.stop()
        client.close()
        drop_keys(redis_url, prefix)
    [r] = scraped
    assert r.status_code == 200, log
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE gateway_events_total counter" in r.text
    sent = sum(len(seen.json()) for seen in vendor.requests)
    assert sent == 2  # what the counter says is what the destination got
    batches = sample(r.text, "gateway_destination_batch_seconds_count", destination="hook")
    assert batches == len(vendor.requests)
    assert sample(
        r.text, "gateway_destination_batch_seconds_bucket", destination="hook", le="+Inf"
    ) == len(vendor.requests)
