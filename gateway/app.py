"""create_app(config) -> Starlette. Everything is built from the config; nothing at import."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable

import structlog
from redis.exceptions import ResponseError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .collect import CollectEndpoint
from .config import Config
from .deliver import DeliverWorker
from .ingest import WebhookEndpoint
from .metrics import Metrics
from .operator import create_operator_app, healthz, is_operator_path
from .sources import build_sources
from .sources.collect import CollectSource
from .store import CLUSTER_ERRORS, Store
from .worker import NormalizeWorker

GC_YOUNG = 50_000  # allocations between collections of the youngest generation (see lifespan)


def create_app(
    config: Config,
    *,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
    workers: bool = False,
) -> Starlette:
    """The gateway's ASGI app; with `workers`, the normalize worker runs in-process too.

    `store` and `clock` are for tests; by default both come from the config.
    """
    log = structlog.get_logger("gateway")
    sources = build_sources(config.sources)
    if store is None:
        store = Store.connect(
            config.redis_url, config.key_prefix, float(config.redis_timeout), config.durability
        )
    metrics = Metrics()
    webhooks = WebhookEndpoint(sources, store, clock, metrics)
    collected = {n: s for n, s in sources.items() if isinstance(s, CollectSource)}
    collect = (
        CollectEndpoint(collected, store, clock, metrics, config.identity) if collected else None
    )

    async def readyz(request: Request) -> JSONResponse:
        if await store.ping():
            # No store address here: this endpoint faces the internet with the webhooks.
            return JSONResponse({"status": "ready"})
        return JSONResponse(
            {"status": "unavailable", "reason": "redis did not answer"},
            status_code=503,
            headers={"retry-after": "5"},
        )

    event_streams = store.keys.event_streams(config.partition_count())

    async def read_lag() -> None:
        streams = {store.keys.raw(name): f"raw:{name}" for name in config.sources}
        await metrics.update_lag(store, streams)
        await _events_lag(store, metrics, event_streams)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if store.embedded:
            log.warning(
                "store.embedded",
                message="no redis_url: using an in-memory store. NOTHING SURVIVES A RESTART. "
                "Set redis_url (or REDIS_URL) for anything but a trial.",
            )
        elif not await store.ping():
            log.error(
                "store.unreachable",
                message="Redis does not answer; webhooks get 503 (vendors retry) until it does",
            )
        elif (
            store.replicas
            and (found := await store.fewest_replicas()) is not None
            and (found < store.replicas)
        ):
            log.error(
                "store.no_replica",
                message="durability: replicated, but a Redis primary has no replica "
                "connected: its webhooks get 503 (vendors retry) until one is",
            )
        # Everything imported and built by now lives as long as the process: take it out
        # of the collector's sight. Otherwise each full collection walks every object of
        # the stripe SDK, uvicorn and the rest (tens of ms, seen as the p99 of webhooks).
        gc.collect()
        gc.freeze()
        # And collect the young generation every 50,000 container allocations, not 700: a
        # request's objects die by reference counting, but a batch of 100 messages in
        # flight holds hundreds of containers, so the default ran a collection every few
        # requests over them: 1.2-1.9 us per collected message, ~10% of its cost, against
        # none at this threshold (measured in-process, 640 /v1/batch requests of 100).
        # Cycles are rare here; the memory they may hold meanwhile is bounded by it.
        gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
        stop = asyncio.Event()
        # The counts of this process (of its workers too), into Redis for the console and
        # the alerts.
        tasks = [asyncio.create_task(metrics.activity.run(store, stop), name="activity")]
        if config.alerts.rules:  # every process runs them; Redis makes them agree (alerts/)
            from .alerts import Alerts

            tasks.append(asyncio.create_task(Alerts(config, store).run(stop), name="alerts"))
        if workers:
            worker = NormalizeWorker(config, store, metrics=metrics)
            tasks.append(asyncio.create_task(worker.run(stop), name="normalize-worker"))
            deliver = DeliverWorker(config, store, worker.consumer, metrics)
            tasks.append(asyncio.create_task(deliver.run(stop), name="deliver-worker"))
        log.info(
            "gateway.ready",
            sources=sorted(sources),
            store=_describe(store),
            workers="normalize, deliver" if workers else "off",
        )
        try:
            yield
        finally:
            stop.set()
            if tasks:  # (the activity's last flush is among them: before the store closes)
                _, late = await asyncio.wait(tasks, timeout=10)
                for task in late:  # its entries stay pending and are reclaimed later
                    task.cancel()
            await store.close()

    app = GatewayApp(
        webhooks,
        collect,
        create_operator_app(config, store, metrics, read_lag, clock),
        config.operator.address(),
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.metrics = metrics
    app.state.config = config
    app.state.sources = sources
    return app


class GatewayApp(Starlette):
    """Starlette, with POST /webhooks/{source} dispatched before the middleware and router.

    That path is taken by every webhook; going straight to the endpoint skips a regex
    route match and six coroutine layers that each request would otherwise pass through
    twice (it suspends once, for Redis). Every other path is plain Starlette.
    """

    def __init__(
        self,
        webhooks: WebhookEndpoint,
        collect: CollectEndpoint | None,
        operator: ASGIApp,
        operator_address: tuple[str, int] | None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.webhooks = webhooks
        self.collect = collect
        self.operator = operator
        self.operator_port = operator_address[1] if operator_address else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            server = scope.get("server")
            if self.operator_port is not None:
                # The operator listener serves only the operator surfaces; the webhook
                # port never does (the connection's own port, not a Host header, says).
                if server is not None and server[1] == self.operator_port:
                    await self.operator(scope, receive, send)
                    return
            elif is_operator_path(path):  # operator.listen: public
                await self.operator(scope, receive, send)
                return
            if path.startswith(_WEBHOOKS):
                # Every path under /webhooks/ is the front door's: a name that is no
                # source (empty, or with a slash) gets its JSON 404, not a router's text.
                await self.webhooks(scope, receive, send, path[len(_WEBHOOKS) :].rstrip("/"))
                return
            if self.collect is not None and path.startswith(_COLLECT):
                await self.collect(scope, receive, send, path[len(_COLLECT) :])
                return
        await super().__call__(scope, receive, send)


_WEBHOOKS = "/webhooks/"
_COLLECT = "/v1/"


async def _events_lag(store: Store, metrics: Metrics, keys: list[str]) -> None:
    """gateway_stream_lag{stream="events"}: each group's lag summed over the partitions
    of the events stream (left as it was when Redis cannot tell for one of them)."""
    totals: dict[str, int | None] = {}
    for key in keys:
        try:
            groups = await store.client.xinfo_groups(key)
        except ResponseError:
            continue  # a partition nothing was written to yet
        except (*CLUSTER_ERRORS, OSError):
            return  # a shard is away: a partial sum would look like progress
        for group in groups:
            name = group.get("name", b"")
            name = name.decode() if isinstance(name, bytes) else str(name)
            lag = group.get("lag")
            so_far = totals.get(name, 0)
            totals[name] = so_far + lag if isinstance(lag, int) and so_far is not None else None
    for name, total in totals.items():
        if total is not None:
            metrics.lag.labels("events", name).set(total)


def _describe(store: Store) -> str:
    if store.embedded:
        return "embedded (in-memory)"
    if store.target is not None:
        return store.target.label()
    kwargs = store.client.connection_pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
    return f"redis {where}/{kwargs.get('db', 0)}"
