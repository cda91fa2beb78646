"""The overview (per source, per destination, stream sizes, Redis) and the audit log."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError, ResponseError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..activity import destination_errors, series
from ..errors import StoreUnavailable
from ..replay import partition_lag
from ..store import CLUSTER_ERRORS, is_entry_id
from .auth import User, page

if TYPE_CHECKING:
    from . import Console

SOURCE_OUTCOMES = ("accepted", "duplicate", "rejected")
DESTINATION_OUTCOMES = ("sent", "retried", "dead_lettered")
_DOWN = (StoreUnavailable, RedisError, *CLUSTER_ERRORS, OSError)


def routes(console: Console) -> list[Route]:
    async def overview(request: Request, user: User) -> Response:
        now = console.clock()
        try:
            context = await _overview(console, now)
        except _DOWN as e:
            context = {"down": f"Redis does not answer ({type(e).__name__}): nothing to show"}
        return console.render(request, user, "overview.html", nav="overview", **context)

    async def audit(request: Request, user: User) -> Response:
        before = request.query_params.get("before")
        if before and not is_entry_id(before):
            return console.render(
                request,
                user,
                "audit.html",
                status=400,
                nav="audit",
                rows=[],
                more=None,
                error="this page link is damaged: start again from the newest page",
            )
        reply = await console.store.client.xrevrange(
            console.store.keys.audit(), f"({before}" if before else "+", "-", count=PAGE
        )
        rows = [
            {"entry": eid.decode(), **{k.decode(): v.decode() for k, v in fields.items()}}
            for eid, fields in reply
        ]
        more = rows[-1]["entry"] if len(rows) == PAGE else None
        return console.render(request, user, "audit.html", nav="audit", rows=rows, more=more)

    return [
        Route("/", page(console.auth, overview)),
        Route("/audit", page(console.auth, audit)),
    ]


PAGE = 50


async def _overview(console: Console, now: float) -> dict[str, Any]:
    config, store = console.config, console.store
    started = time.perf_counter()
    alive = await store.ping()
    ping_ms = (time.perf_counter() - started) * 1000
    hour = await series(store, "m", 60, now)
    day = await series(store, "h", 24, now)
    sources = []
    for name in config.sources:
        sources.append(
            {
                "name": name,
                "type": config.sources[name].__struct_config__.tag,
                "hour": {o: hour.of("source", name, o) for o in SOURCE_OUTCOMES},
                "day": {o: day.of("source", name, o) for o in SOURCE_OUTCOMES},
                "events_hour": hour.total("events", name, "produced"),
                "quarantined_hour": sum(hour.outcomes("quarantine", name).values()),
            }
        )
    lag: dict[str, dict[str, int]] = {}
    for row in await partition_lag(config, store):
        entry = lag.setdefault(row.destination, {"lag": 0, "pending": 0})
        entry["lag"] += row.lag or 0
        entry["pending"] += row.pending
    errors = await destination_errors(store)
    retrying = await store.execute(
        [("ZCARD", store.keys.retries(name)[0]) for name in config.destinations]
    )
    destinations = []
    for (name, dest), waiting in zip(config.destinations.items(), retrying, strict=True):
        destinations.append(
            {
                "name": name,
                "type": dest.__struct_config__.tag,
                "hour": {o: hour.of("destination", name, o) for o in DESTINATION_OUTCOMES},
                "day": {o: day.total("destination", name, o) for o in DESTINATION_OUTCOMES},
                "retrying_now": int(waiting or 0),
                "lag": lag.get(name, {}).get("lag", 0),
                "pending": lag.get(name, {}).get("pending", 0),
                "error": errors.get(name),
            }
        )
    streams = [(f"raw: {n}", store.keys.raw(n)) for n in config.sources]
    streams += [
        (f"events: partition {i}", key)
        for i, key in enumerate(store.keys.event_streams(config.partition_count()))
    ]
    streams.append(("dead letters", store.keys.dead_letters()))
    streams.append(("quarantine", store.keys.quarantine()))
    lengths = await store.execute([("XLEN", key) for _, key in streams])
    info: dict[str, Any] = {}
    server: dict[str, Any] = {}
    if alive and not store.embedded:  # (the in-memory store has no INFO)
        with contextlib.suppress(ResponseError):  # (nor may a proxy, or a cluster client)
            info = await store.client.info("memory")
            server = await store.client.info("server")
    return {
        "sources": sources,
        "destinations": destinations,
        "streams": [(label, int(n or 0)) for (label, _), n in zip(streams, lengths, strict=True)],
        "redis": {
            "alive": alive,
            "ping_ms": round(ping_ms, 2),
            "used_memory": info.get("used_memory_human", "?"),
            "maxmemory": info.get("maxmemory_human", "?"),
            "version": server.get("redis_version", "?"),
            "durability": config.durability,
            "embedded": store.embedded,
        },
        "hour_start": hour.first * hour.unit * 1000,
        "day_start": day.first * day.unit * 1000,
    }
