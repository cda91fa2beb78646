"""Dead letters and the delivery log: what never arrived, and what happened to each event.

`dlq replay` puts dead letters back in their destination's retry set, due now, with a
fresh attempt count (for max_attempts; the delivery log numbers on, so the replay's first
send shows as attempt N + 1 after N before it): the deliver worker sends them again with
their original messageId and timestamp (destinations that already took one drop the copy).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from .config import Config
from .deliver import RetryState
from .store import Store, is_entry_id, stream_entries

_encode = msgspec.json.Encoder().encode
PAGE = 500


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
    until_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Dead letters (oldest first), filtered by destination, time and entry/message ids;
    read PAGE entries at a time (a million of them is one request too many for Redis's
    timeout), or, given only entry ids, just those entries."""
    return [item async for item in _matching(store, destination, since_ms, ids, until_ms)]


async def _matching(
    store: Store,
    destination: str | None,
    since_ms: int | None,
    ids: list[str] | None,
    until_ms: int | None,
) -> AsyncIterator[dict[str, Any]]:
    """The dead letters the filters match, one at a time as they are read."""
    wanted = set(ids or ())
    async for entry_id, fields in _entries(store, since_ms, until_ms, ids):
        item = _fields(entry_id, fields)
        if destination and item.get("destination") != destination:
            continue
        if wanted and item["id"] not in wanted and item.get("message_id") not in wanted:
            continue
        yield item


async def _pages(
    store: Store,
    destination: str | None,
    since_ms: int | None,
    ids: list[str] | None,
    until_ms: int | None,
) -> AsyncIterator[list[dict[str, Any]]]:
    """The matching dead letters, PAGE at a time: a caller acts on (and deletes) each page
    before the next is read, so a million of them never sit in memory together. (Reading
    goes on after the last entry read, so deleting what was read disturbs nothing.)"""
    page: list[dict[str, Any]] = []
    async for item in _matching(store, destination, since_ms, ids, until_ms):
        page.append(item)
        if len(page) >= PAGE:
            yield page
            page = []
    if page:
        yield page


async def _entries(
    store: Store, since_ms: int | None, until_ms: int | None, ids: list[str] | None
) -> AsyncIterator[tuple[bytes, dict[bytes, bytes]]]:
    key = store.keys.dead_letters()
    if ids and all(is_entry_id(i) for i in ids):
        for entry_id in ids:
            for entry in await store.client.xrange(key, entry_id, entry_id):
                yield entry
        return
    async for entry in stream_entries(store, key, since_ms, until_ms, PAGE):
        yield entry


async def replay_dead_letters(
    config: Config,
    store: Store,
    destination: str | None = None,
    since_ms: int | None = None,
    ids: list[str] | None = None,
    until_ms: int | None = None,
) -> tuple[int, list[str]]:
    """Requeue dead letters for their destination, a page at a time; returns
    (requeued, problems)."""
    requeued, problems = 0, []
    async for page in _pages(store, destination, since_ms, ids, until_ms):
        done, trouble = await _replay_page(config, store, page)
        requeued += done
        problems.extend(trouble)
    return requeued, problems


async def _replay_page(
    config: Config, store: Store, page: list[dict[str, Any]]
) -> tuple[int, list[str]]:
    now = time.time()
    problems, writes, entry_ids = [], [], []
    replayed: dict[tuple[str, str], set[str]] = {}
    for item in page:
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
        writes += [
            ("HSET", retry_data, message_id, _encode(state)),
            ("ZADD", retry_key, now, message_id),
        ]
        entry_ids.append(item["id"])
        replayed.setdefault((item.get("source", ""), item.get("delivery_id", "")), set()).add(
            message_id
        )
    if not entry_ids:
        return 0, problems
    # On a replica before the dead letters are deleted.
    await store.execute(writes, replicated=True)
    await store.execute([("XDEL", store.keys.dead_letters(), *entry_ids)])
    for (source, delivery_id), mids in replayed.items():
        if source and delivery_id and not await _still_dead(store, source, delivery_id, mids):
            # Out of the console's dead-lettered search; a replay that fails again is
            # indexed again by the deliver worker.
            key = store.keys.delivery_index(source, "dead_lettered")
            await store.execute([("ZREM", key, delivery_id)])
    return len(entry_ids), problems


async def _still_dead(store: Store, source: str, delivery_id: str, replayed: set[str]) -> bool:
    """Whether another event of the delivery (not one of `replayed`) is dead-lettered:
    its last attempt at some destination failed for good, and it is not back in that
    destination's retry set (replayed in an earlier page, or by an earlier replay)."""
    log = await store.client.hgetall(store.keys.delivery_log(source, delivery_id))
    for message_id in log:
        mid = message_id.decode()
        if mid.startswith("_") or mid in replayed:
            continue
        last: dict[str, str] = {}
        for attempt in await event_attempts(store, mid):
            last[attempt.get("destination", "")] = attempt.get("outcome", "")
        for name, outcome in last.items():
            if outcome != "fail":
                continue
            retry_key, _ = store.keys.retries(name)
            if await store.client.zscore(retry_key, mid) is None:
                return True
    return False


def _attempts(item: dict[str, Any]) -> int:
    """The attempts a dead letter had (0 when unreadable: the log then numbers from 1)."""
    try:
        return max(0, int(item.get("attempts") or 0))
    except ValueError:
        return 0


async def purge_dead_letters(
    store: Store,
    destination: str | None = None,
    since_ms: int | None = None,
    ids: list[str] | None = None,
    until_ms: int | None = None,
) -> int:
    """Delete the dead letters the filters match (as dead_letters reads them), each page
    as soon as it is read."""
    deleted = 0
    async for page in _pages(store, destination, since_ms, ids, until_ms):
        [n] = await store.execute([("XDEL", store.keys.dead_letters(), *(i["id"] for i in page))])
        deleted += int(n)
    return deleted


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
