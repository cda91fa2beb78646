"""Dead letters and the delivery log: what never arrived, and what happened to each event.

`dlq replay` puts dead letters back in their destination's retry set, due now, with a
fresh attempt count (for max_attempts; the delivery log numbers on, so the replay's first
send shows as attempt N + 1 after N before it): the deliver worker sends them again with
their original messageId and timestamp (destinations that already took one drop the copy).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .config import Config
from .deliver import RetryState
from .store import Store

_encode = msgspec.json.Encoder().encode


def _fields(entry_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
    item: dict[str, Any] = {
        k.decode(): v.decode("utf-8", "replace") for k, v in fields.items() if k != b"data"
    }
    item["id"] = entry_id.decode()
    item["_data"] = fields.get(b"data", b"{}")
    return item


async def dead_letters(
    store: Store,
    destination: str | None = None,
    since_ms: int | None = None,
    ids: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Dead letters (oldest first), filtered by destination, time and entry/message ids."""
    start = f"{since_ms}-0" if since_ms is not None else "-"
    out = []
    for entry_id, fields in await store.client.xrange(store.keys.dead_letters(), start, "+"):
        item = _fields(entry_id, fields)
        if destination and item.get("destination") != destination:
            continue
        if ids and item["id"] not in ids and item.get("message_id") not in ids:
            continue
        out.append(item)
    return out


async def replay_dead_letters(
    config: Config,
    store: Store,
    destination: str | None = None,
    since_ms: int | None = None,
    ids: list[str] | None = None,
) -> tuple[int, list[str]]:
    """Requeue dead letters for their destination; returns (requeued, problems)."""
    now = time.time()
    requeued, problems = 0, []
    for item in await dead_letters(store, destination, since_ms, ids):
        name = item.get("destination", "")
        if name not in config.destinations:
            problems.append(f"{item['id']}: destination {name!r} is not in the config")
            continue
        event = msgspec.json.decode(item["_data"])
        retry_key, retry_data = store.keys.retries(name)
        state = RetryState(
            event=event, attempts=0, first_at=now, reason="replayed", earlier=_attempts(item)
        )
        message_id = item.get("message_id", "")
        await store.execute(
            [
                ("HSET", retry_data, message_id, _encode(state)),
                ("ZADD", retry_key, now, message_id),
            ],
            replicated=True,  # on a replica before the dead letter is deleted
        )
        await store.execute([("XDEL", store.keys.dead_letters(), item["id"])])
        requeued += 1
    return requeued, problems


def _attempts(item: dict[str, Any]) -> int:
    """The attempts a dead letter had (0 when unreadable: the log then numbers from 1)."""
    try:
        return max(0, int(item.get("attempts") or 0))
    except ValueError:
        return 0


async def purge_dead_letters(store: Store, destination: str | None = None) -> int:
    items = await dead_letters(store, destination)
    if not items:
        return 0
    await store.execute([("XDEL", store.keys.dead_letters(), *[i["id"] for i in items])])
    return len(items)


async def event_attempts(store: Store, message_id: str) -> list[dict[str, Any]]:
    raw = await store.client.lrange(store.keys.attempts(message_id), 0, -1)
    return [msgspec.json.decode(x) for x in raw]


async def delivery_report(
    config: Config, store: Store, delivery_id: str, source: str | None = None
) -> list[dict[str, Any]]:
    """For each source that has this delivery: its status, events and their attempts."""
    out = []
    for name in [source] if source else list(config.sources):
        log = await store.client.hgetall(store.keys.delivery_log(name, delivery_id))
        if not log:
            continue
        status = log.pop(b"_status", b"").decode()
        raw_id = log.pop(b"_raw", b"").decode()
        received = log.pop(b"_at", b"").decode()
        events = []
        for message_id, event_name in log.items():
            mid = message_id.decode()
            if mid.startswith("_"):  # a field a later version added: not an event
                continue
            events.append(
                {
                    "message_id": mid,
                    "event": event_name.decode(),
                    "attempts": await event_attempts(store, mid),
                }
            )
        out.append(
            {
                "source": name,
                "delivery_id": delivery_id,
                "status": status,
                "raw_id": raw_id or None,
                "received_at_ms": int(received) if received.isdigit() else None,
                "events": events,
            }
        )
    return out
