"""The console's read side: deliveries (search, one delivery), events and the live tail.

- /deliveries: search by id, source, time range and outcome, paged (search.py: every
  page is a bounded read per source, never a scan);
- /deliveries/{source}/{id}: the kept headers, the body (masked unless
  console.show_bodies), the status, the events it became and every attempt per
  destination;
- /events: the newest events, or one by messageId with its attempts;
- /live: deliveries as they arrive, as server-sent events from /live/stream (XREAD BLOCK
  on every source's raw and turned-away streams).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import msgspec
from redis.crc import key_slot
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..dlq import event_attempts
from ..replay import parse_time, tail_events
from .auth import User, page
from .mask import masked
from .search import (
    OUTCOMES,
    PAGE,
    BadQuery,
    as_int,
    as_text,
    check_time,
    find_by_id,
    raw_by_id,
    search,
)

if TYPE_CHECKING:
    from . import Console

EVENTS_SHOWN = 50
NEAR_DELIVERY = 200  # events read per partition after a delivery, looking for one of its own
LIVE_BATCH = 100  # entries per stream per XREAD of the live tail
KEEP_ALIVE = 15.0  # seconds between comments on a quiet live tail (proxies close idle ones)


def routes(console: Console) -> list[Route]:
    auth = console.auth

    async def deliveries(request: Request, user: User) -> Response:
        context = await _deliveries(console, request)
        status = 400 if context.get("error") else 200
        return console.render(
            request, user, "deliveries.html", status=status, nav="deliveries", **context
        )

    async def delivery(request: Request, user: User) -> Response:
        source = request.path_params["source"]
        delivery_id = request.path_params["delivery_id"]
        if source not in console.config.sources:
            return console.render(
                request,
                user,
                "delivery.html",
                status=404,
                nav="deliveries",
                error=f"no source {source!r} in the config",
                source=source,
                delivery_id=delivery_id,
            )
        context = await _delivery(console, source, delivery_id)
        status = 200 if context.get("found") else 404
        return console.render(
            request, user, "delivery.html", status=status, nav="deliveries", **context
        )

    async def events(request: Request, user: User) -> Response:
        message_id = request.query_params.get("message_id", "").strip()
        if message_id:
            context = await _event(
                console,
                message_id,
                request.query_params.get("source", ""),
                request.query_params.get("delivery_id", ""),
            )
            return console.render(request, user, "event.html", nav="events", **context)
        return console.render(
            request, user, "events.html", nav="events", rows=await _newest_events(console)
        )

    async def live(request: Request, user: User) -> Response:
        return console.render(request, user, "live.html", nav="live")

    async def live_stream(request: Request, user: User) -> Response:
        return StreamingResponse(
            _live(console, request),
            media_type="text/event-stream",
            # Never buffered by a proxy (nginx) nor kept by a cache.
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    return [
        Route("/deliveries", page(auth, deliveries)),
        Route("/deliveries/{source}/{delivery_id:path}", page(auth, delivery)),
        Route("/events", page(auth, events)),
        Route("/live", page(auth, live)),
        Route("/live/stream", page(auth, live_stream)),
    ]


# --- the search ---------------------------------------------------------------------------


async def _deliveries(console: Console, request: Request) -> dict[str, Any]:
    params = request.query_params
    sources = list(console.config.sources)
    form = {
        "id": params.get("id", "").strip(),
        "source": params.get("source", ""),
        "outcome": params.get("outcome", "all") or "all",
        "from": params.get("from", "").strip(),
        "to": params.get("to", "").strip(),
    }
    context: dict[str, Any] = {
        "form": form,
        "sources": sources,
        "outcomes": OUTCOMES,
        "log_off": int(console.config.delivery_log_retention) <= 0,
        "page_size": PAGE,
    }
    if form["source"] and form["source"] not in console.config.sources:
        context["error"] = f"no source {form['source']!r} in the config"
        return context
    chosen = [form["source"]] if form["source"] else sources
    if form["id"]:
        context["found"] = await find_by_id(console.store, chosen, form["id"])
        context["by_id"] = True
        return context
    try:
        now = console.clock()
        since = check_time("from", parse_time(form["from"], now)) if form["from"] else None
        until = check_time("to", parse_time(form["to"], now)) if form["to"] else None
        result = await search(
            console.store, chosen, form["outcome"], since, until, params.get("after") or None
        )
    except (BadQuery, ValueError, OverflowError) as e:
        context["error"] = str(e)
        return context
    context["rows"] = result.rows
    if result.cursor:
        kept = {k: v for k, v in form.items() if v and k != "id"}
        context["older"] = "/console/deliveries?" + urlencode({**kept, "after": result.cursor})
    context["paged"] = bool(params.get("after"))
    return context


# --- one delivery -------------------------------------------------------------------------


async def _delivery(console: Console, source: str, delivery_id: str) -> dict[str, Any]:
    store = console.store
    keys = store.keys
    log = await store.client.hgetall(keys.delivery_log(source, delivery_id))
    fields = {as_text(k): as_text(v) for k, v in log.items()}
    status = fields.pop("_status", "")
    raw_id = fields.pop("_raw", "")
    at = as_int(fields.pop("_at", ""))
    entry = await raw_by_id(store, source, delivery_id, raw_id)
    message_ids = list(fields)
    replies = await store.execute(
        [("LRANGE", keys.attempts(m), 0, -1) for m in message_ids]
        + [("ZSCORE", keys.delivery_index(source, "dead_lettered"), delivery_id)]
    )
    events = []
    dead_for: set[str] = set()
    for message_id, reply in zip(message_ids, replies, strict=False):
        attempts = [msgspec.json.decode(x) for x in reply or []]
        per: dict[str, list[dict[str, Any]]] = {}
        for a in attempts:
            per.setdefault(str(a.get("destination", "?")), []).append(a)
        for name, tried in per.items():
            if tried and tried[-1].get("outcome") == "fail":
                dead_for.add(name)
        events.append({"message_id": message_id, "name": fields[message_id], "attempts": per})
    context: dict[str, Any] = {
        "source": source,
        "delivery_id": delivery_id,
        "found": bool(log) or entry is not None,
        "in_log": bool(log),
        "log_off": int(console.config.delivery_log_retention) <= 0,
        "log_status": status,
        "events": events,
        "quarantined": status.startswith("quarantined"),
        "dead_lettered": replies[-1] is not None or bool(dead_for),
        "dead_for": sorted(dead_for),
        "at": at,
    }
    if entry is not None:
        entry_id, raw = entry
        context["entry_id"] = entry_id
        context["at"] = at or as_int(raw.get(b"received_at"))
        try:
            headers = msgspec.json.decode(raw.get(b"headers", b"{}"))
        except msgspec.DecodeError:
            headers = {}
        context["headers"] = _headers(console, headers if isinstance(headers, dict) else {})
        context["body"] = _body(console, raw.get(b"body", b""))
    return context


# Kept headers shown even without show_bodies: the vendor's own protocol (what the body
# is, who sent it, its delivery id, event type, signature and time), never about a person.
# Any other header (X-Customer-Email that a mapping reads) may be personal: masked.
PLAIN_HEADERS = re.compile(
    r"content-type|content-length|user-agent"
    r"|.*-(signature(-256)?|event|event-type|delivery|id|timestamp|topic)",
    re.IGNORECASE,
)


def _headers(console: Console, headers: dict[str, Any]) -> dict[str, Any]:
    """The kept headers as the console may show them: every value masked unless
    show_bodies, except the PLAIN_HEADERS."""
    if console.config.console.show_bodies:
        return headers
    return {k: v if PLAIN_HEADERS.fullmatch(str(k)) else masked(v) for k, v in headers.items()}


def _body(console: Console, raw: bytes) -> dict[str, Any]:
    """A body as the console may show it: JSON pretty-printed (masked unless
    show_bodies); anything else by its size, and its text only if show_bodies."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        shown = console.config.console.show_bodies
        return {
            "json": None,
            "size": len(raw),
            "text": raw.decode("utf-8", "replace") if shown else None,
        }
    return {"json": _pretty(console.body(value)), "size": len(raw), "text": None}


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


# --- events -------------------------------------------------------------------------------


async def _newest_events(console: Console) -> list[dict[str, Any]]:
    raw = await tail_events(console.store, EVENTS_SHOWN, console.config.partition_count())
    rows = []
    for data in reversed(raw):  # newest first
        try:
            event = msgspec.json.decode(data)
        except msgspec.DecodeError:
            continue
        rows.append(_event_row(console, event))
    return rows


def _event_row(console: Console, event: dict[str, Any]) -> dict[str, Any]:
    source = (event.get("context") or {}).get("source") or {}
    return {
        "message_id": str(event.get("messageId", "")),
        "type": str(event.get("type", "")),
        "name": str(event.get("event") or ""),
        "source": str(source.get("name", "")),
        "delivery_id": str(source.get("deliveryId", "")),
        "timestamp": str(event.get("timestamp", "")),
        "received": str(event.get("receivedAt", "")),
        "json": _pretty(console.body(event)),
    }


async def _event(
    console: Console, message_id: str, source: str, delivery_id: str
) -> dict[str, Any]:
    attempts = await event_attempts(console.store, message_id)
    per: dict[str, list[dict[str, Any]]] = {}
    for a in attempts:
        per.setdefault(str(a.get("destination", "?")), []).append(a)
    event = await _find_event(console, message_id, source, delivery_id)
    return {
        "message_id": message_id,
        "attempts": per,
        "event": _event_row(console, event) if event is not None else None,
        "hinted": bool(source and delivery_id),
        "log_off": int(console.config.delivery_log_retention) <= 0,
    }


async def _find_event(
    console: Console, message_id: str, source: str, delivery_id: str
) -> dict[str, Any] | None:
    """The event's JSON where it is cheap to find: a destination's retry data (one HGET
    per destination), else, given its delivery, the events written just after that
    delivery was received (NEAR_DELIVERY per partition). Never a scan."""
    store, config = console.store, console.config
    names = list(config.destinations)
    replies = await store.execute(
        [("HGET", store.keys.retries(name)[1], message_id) for name in names]
    )
    for reply in replies:
        if reply:
            try:
                return msgspec.json.decode(reply)["event"]  # a RetryState
            except (msgspec.DecodeError, KeyError, TypeError):
                continue
    if not (source in config.sources and delivery_id):
        return None
    at = as_int(await store.client.hget(store.keys.delivery_log(source, delivery_id), "_at"))
    if not at:
        return None
    start = f"{max(0, at - 5_000)}-0"  # the receiving process's clock against Redis's
    keys = store.keys.event_streams(config.partition_count())
    pages = await asyncio.gather(
        *(store.client.xrange(key, start, "+", count=NEAR_DELIVERY) for key in keys)
    )
    wanted = message_id.encode()
    for page_ in pages:
        for _, fields in page_:
            if fields.get(b"message_id") == wanted:
                try:
                    return msgspec.json.decode(fields.get(b"data", b""))
                except msgspec.DecodeError:
                    return None
    return None


# --- the live tail ------------------------------------------------------------------------


async def _live(console: Console, request: Request) -> AsyncIterator[str]:
    """Server-sent events: one `data:` line per delivery (accepted, duplicate or
    rejected) from now on, until the client goes away."""
    store = console.store
    keys = store.keys
    streams: dict[str, tuple[str, str]] = {}
    for name in console.config.sources:
        streams[keys.raw(name)] = (name, "accepted")
        streams[keys.turned_away(name, "rejected")] = (name, "rejected")
        streams[keys.turned_away(name, "duplicate")] = (name, "duplicate")
    # Each stream from its newest entry now (not `$` on every read: what arrived between
    # two reads would be lost).
    names = list(streams)
    newest = await store.execute([("XREVRANGE", key, "+", "-", "COUNT", 1) for key in names])
    last = {key: (as_text(r[0][0]) if r else "0-0") for key, r in zip(names, newest, strict=True)}
    # A Redis Cluster refuses one XREAD over several slots: one read per slot, at once.
    by_slot: dict[int, list[str]] = {}
    for key in names:
        by_slot.setdefault(key_slot(key.encode()) if store.cluster else 0, []).append(key)
    # Short enough to notice a closed tab or a shutdown within a second, and to end
    # before the client's socket timeout would cut the read.
    block_ms = max(10, min(1000, int(store.timeout * 500)))
    yield "retry: 2000\n: live tail of deliveries\n\n"
    quiet_since = asyncio.get_running_loop().time()
    while names:
        if await request.is_disconnected():
            return
        if await console.auth.user(request) is None:
            return  # logged out, or the session ended, meanwhile: the tail ends too
        replies = await asyncio.gather(
            *(
                store.client.xread({k: last[k] for k in group}, count=LIVE_BATCH, block=block_ms)
                for group in by_slot.values()
            )
        )
        lines = []
        for reply in replies:
            for key, entries in reply or []:
                key = as_text(key)
                source, outcome = streams[key]
                for eid, fields in entries:
                    last[key] = as_text(eid)
                    lines.append(_live_line(source, outcome, as_text(eid), fields))
        now = asyncio.get_running_loop().time()
        if lines:
            quiet_since = now
            yield "".join(lines)
        elif now - quiet_since >= KEEP_ALIVE:
            quiet_since = now
            yield ": keep-alive\n\n"


def _live_line(source: str, outcome: str, entry_id: str, fields: dict[bytes, bytes]) -> str:
    at = as_int(fields.get(b"received_at") or fields.get(b"at"))
    at = at or as_int(entry_id.partition("-")[0])
    item: dict[str, Any] = {
        "source": source,
        "delivery_id": as_text(fields.get(b"delivery_id")),
        "at": at,
        "outcome": outcome,
    }
    if outcome == "rejected":
        item["reason"] = as_text(fields.get(b"reason"))
    return f"data: {json.dumps(item)}\n\n"
