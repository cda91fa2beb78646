"""Prometheus metrics, named like the log events they count.

    gateway_deliveries_total{source,outcome}       webhooks: accepted, duplicate, rejected,
                                                   unavailable, handshake
    gateway_events_total{source}                   events produced by the normalize worker
    gateway_quarantined_total{source,stage}        deliveries/events sent to the quarantine
    gateway_destination_events_total{destination,outcome}   sent, retried, dead_lettered,
                                                   skipped (consent denied), lost
    gateway_destination_batch_seconds{destination} time to send one batch
    gateway_stream_lag{stream,group}               entries not yet read by a consumer group
    gateway_identity_total{what}                   identity graph: profile_created,
                                                   profiles_merged, conflict, blocked,
                                                   history_joined (alias events emitted)

One registry per app (no global state); `serve` exposes it at GET /metrics, `worker`
with --metrics-port.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from redis.exceptions import RedisError, ResponseError

from .store import Store


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.deliveries = Counter(
            "gateway_deliveries_total",
            "Webhooks received, by outcome",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.events = Counter(
            "gateway_events_total",
            "Events produced by normalization",
            ["source"],
            registry=self.registry,
        )
        self.quarantined = Counter(
            "gateway_quarantined_total",
            "Deliveries or events sent to the quarantine",
            ["source", "stage"],
            registry=self.registry,
        )
        self.destination_events = Counter(
            "gateway_destination_events_total",
            "Events handled by destinations, by outcome",
            ["destination", "outcome"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "gateway_destination_batch_seconds",
            "Time to send one batch to a destination",
            ["destination"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.lag = Gauge(
            "gateway_stream_lag",
            "Stream entries a consumer group has not read",
            ["stream", "group"],
            registry=self.registry,
        )
        self.identity = Counter(
            "gateway_identity_total",
            "Identity graph: profiles created and merged, conflicts, blocked identifiers, "
            "histories joined",
            ["what"],
            registry=self.registry,
        )
        self._delivery_children: dict[tuple[str, str], Any] = {}

    def delivery(self, source: str, outcome: str, count: int = 1) -> None:
        """Count a webhook (or a batch's collected messages); the ingest hot path: label
        children are cached."""
        child = self._delivery_children.get((source, outcome))
        if child is None:
            child = self._delivery_children[(source, outcome)] = self.deliveries.labels(
                source, outcome
            )
        child.inc(count)

    async def update_lag(self, store: Store, streams: dict[str, str]) -> None:
        """Read the consumer groups' lag from Redis (XINFO GROUPS): {stream key: label}."""
        for key, label in streams.items():
            try:
                groups = await store.client.xinfo_groups(key)
            except (ResponseError, RedisError, OSError):
                continue
            for group in groups:
                lag = group.get("lag")
                if isinstance(lag, int):
                    name = group.get("name", b"")
                    name = name.decode() if isinstance(name, bytes) else str(name)
                    self.lag.labels(label, name).set(lag)

    def render(self) -> bytes:
        return generate_latest(self.registry)
