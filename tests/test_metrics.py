"""GET /metrics: the counters the issue names, and stream lag."""

from __future__ import annotations

import hashlib
import hmac

from gateway.worker import NormalizeWorker
from tests.conftest import gateway_client

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
        text = (await client.get("/metrics")).text
        assert value(text, 'gateway_stream_lag{group="normalize",stream="raw:acme"}') == 2
        await worker.read_once()
        text = (await client.get("/metrics")).text
    assert value(text, 'gateway_deliveries_total{outcome="accepted",source="acme"}') == 2
    assert value(text, 'gateway_deliveries_total{outcome="duplicate",source="acme"}') == 1
    assert value(text, 'gateway_deliveries_total{outcome="rejected",source="acme"}') == 1
    assert value(text, 'gateway_deliveries_total{outcome="rejected",source="_unknown"}') == 3
    assert value(text, 'gateway_events_total{source="acme"}') == 2
    assert value(text, 'gateway_stream_lag{group="normalize",stream="raw:acme"}') == 0
