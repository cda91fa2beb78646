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

One registry per app (no global state); `serve` exposes it at GET /metrics on the
operator listener (operator.listen; not the webhook port: gateway/operator.py), `worker`
with --metrics-port. Each count also goes to the process's Activity (activity.py): the
same figures per minute in Redis, summed over every process, for the console and alerts.

More than one process (`serve --workers N`, `worker --processes N`, N > 1) uses
prometheus_client's multiprocess mode: the parent sets PROMETHEUS_MULTIPROC_DIR to a
directory of its own before it starts the children (so prometheus_client keeps each
child's values in files there), each child calls share_between_processes(), and every
scrape reports the sum over the run's processes (MultiProcessCollector), also of those
that died and were replaced: a counter does not go back when a process does.
gateway_stream_lag is no sum: the process that answers a scrape reads it from Redis, and
the value last read wins (`livemostrecent`; a dead process's are dropped when the parent
marks it dead). One process (the default; also every test that builds a Metrics) keeps
its values in memory, as it always did.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from redis.exceptions import ResponseError

from .activity import Activity
from .store import CLUSTER_ERRORS, Store

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

# Set in a child of a multi-process run (share_between_processes), else None.
_shared_dir: str | None = None
_this_process: Metrics | None = None


def share_between_processes() -> str:
    """In a child of a multi-process run: every Metrics built from now on counts into
    the directory its parent set in PROMETHEUS_MULTIPROC_DIR, and renders the sum over
    the run's processes. Returns the directory."""
    global _shared_dir
    from prometheus_client import values

    directory = os.environ.get(MULTIPROC_DIR)
    if not directory or not os.path.isdir(directory):
        raise RuntimeError(f"{MULTIPROC_DIR} is not set to a directory: {directory!r}")
    if values.ValueClass is values.MutexValue:
        # prometheus_client reads the variable once, when it is imported.
        raise RuntimeError(f"prometheus_client was imported before {MULTIPROC_DIR} was set")
    _shared_dir = directory
    return directory


class Metrics:
    def __init__(self) -> None:
        global _this_process
        if _shared_dir is not None and _this_process is not None:
            # One set of values per process in the shared directory: a second instance
            # would write over the first's, so it takes the first's metrics.
            self.__dict__.update(_this_process.__dict__)
            return
        shared = _shared_dir is not None
        # Shared: the values are in the directory's files and a scrape reads those, so
        # the metrics themselves are in no registry.
        own = None if shared else CollectorRegistry(auto_describe=True)
        self.deliveries = Counter(
            "gateway_deliveries_total",
            "Webhooks received, by outcome",
            ["source", "outcome"],
            registry=own,
        )
        self.events = Counter(
            "gateway_events_total",
            "Events produced by normalization",
            ["source"],
            registry=own,
        )
        self.quarantined = Counter(
            "gateway_quarantined_total",
            "Deliveries or events sent to the quarantine",
            ["source", "stage"],
            registry=own,
        )
        self.destination_events = Counter(
            "gateway_destination_events_total",
            "Events handled by destinations, by outcome",
            ["destination", "outcome"],
            registry=own,
        )
        self.batch_seconds = Histogram(
            "gateway_destination_batch_seconds",
            "Time to send one batch to a destination",
            ["destination"],
            registry=own,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.lag = Gauge(
            "gateway_stream_lag",
            "Stream entries a consumer group has not read",
            ["stream", "group"],
            registry=own,
            multiprocess_mode="livemostrecent" if shared else "all",
        )
        self.identity = Counter(
            "gateway_identity_total",
            "Identity graph: profiles created and merged, conflicts, blocked identifiers, "
            "histories joined",
            ["what"],
            registry=own,
        )
        self._delivery_children: dict[tuple[str, str], Any] = {}
        # The same counts, minute by minute in Redis for the console and alerts.
        self.activity = Activity()
        if own is not None:
            self.registry = own
        else:
            from prometheus_client.multiprocess import MultiProcessCollector

            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry, path=_shared_dir)
            _this_process = self

    def delivery(self, source: str, outcome: str, count: int = 1) -> None:
        """Count a webhook (or a batch's collected messages); the ingest hot path: label
        children are cached."""
        cached = self._delivery_children.get((source, outcome))
        if cached is None:
            cached = self._delivery_children[(source, outcome)] = (
                self.deliveries.labels(source, outcome),
                ("source", source, outcome),
            )
        cached[0].inc(count)
        self.activity.counts[cached[1]] += count

    def produced(self, source: str, count: int) -> None:
        """Events a source's deliveries became."""
        self.events.labels(source).inc(count)
        self.activity.count("events", source, "produced", count)

    def quarantine(self, source: str, stage: str) -> None:
        self.quarantined.labels(source, stage).inc()
        self.activity.count("quarantine", source, stage)

    def destination(self, destination: str, outcome: str, count: int) -> None:
        """Events a destination handled: sent, retried, dead_lettered, skipped, lost."""
        self.destination_events.labels(destination, outcome).inc(count)
        self.activity.count("destination", destination, outcome, count)

    async def update_lag(self, store: Store, streams: dict[str, str]) -> None:
        """Read the consumer groups' lag from Redis (XINFO GROUPS): {stream key: label}."""
        for key, label in streams.items():
            try:
                groups = await store.client.xinfo_groups(key)
            except (ResponseError, *CLUSTER_ERRORS, OSError):
                continue
            for group in groups:
                lag = group.get("lag")
                if isinstance(lag, int):
                    name = group.get("name", b"")
                    name = name.decode() if isinstance(name, bytes) else str(name)
                    self.lag.labels(label, name).set(lag)

    def render(self) -> bytes:
        return generate_latest(self.registry)
