"""Finding deliveries for the console without a scan.

Every page is a bounded read per source, whatever is stored (docs/console.md):

- all stored: the source's raw stream, XREVRANGE ... COUNT page (entry ids are times);
- ignored / quarantined / dead_lettered: the delivery_index sorted set (scored by the ms
  the delivery was received), ZREVRANGEBYSCORE ... LIMIT 0 page;
- rejected / duplicate: the capped turned-away streams (activity.py), XREVRANGE;
- by id: one HMGET of the delivery log per source, then (only for a delivery the log does
  not know) the seen mark the accept wrote, which names the raw entry.

With no source chosen, the newest page of each source is read and merged (newest first).
The cursor names the last row shown (its sort key and source), so the next page starts
right after it in every source: O(page size x sources) Redis work per page.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from ..store import MAX_SEQ, entry_key

if TYPE_CHECKING:
    from ..store import Store

PAGE = 50
INDEXED = ("ignored", "quarantined", "dead_lettered")
TURNED_AWAY = ("rejected", "duplicate")
OUTCOMES = ("all", *INDEXED, *TURNED_AWAY)
MAX_MS = 2**63 - 1
"""The latest time a search may name (unix ms)."""

SortKey = tuple[int, int, str, str]  # (ms or score, sequence, source, member): newest first


class BadQuery(ValueError):
    """A search the console cannot run; the message says what to change."""


@dataclass
class Row:
    source: str
    delivery_id: str
    at: int  # received (unix ms)
    outcome: str  # normalized, ignored, quarantined, dead_lettered, pending, rejected, ...
    status: str = ""  # the delivery log's status, or why it was turned away
    stored: bool = True  # False: nothing was stored (a rejected request): no page to open
    key: SortKey = (0, 0, "", "")


@dataclass
class Page:
    rows: list[Row] = field(default_factory=list)
    cursor: str | None = None  # the next (older) page, None when this is the last


def encode_cursor(key: SortKey) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(list(key))).decode().rstrip("=")


def decode_cursor(text: str) -> SortKey:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        a, b, c, d = msgspec.json.decode(raw, type=tuple[int, int, str, str])
    except (ValueError, msgspec.DecodeError):
        raise BadQuery("this page link is damaged: start again from the newest page") from None
    if not (0 <= a <= MAX_MS and 0 <= b <= MAX_SEQ):
        # (Redis refuses such a stream id or score: the link was not made here)
        raise BadQuery("this page link is damaged: start again from the newest page")
    return (a, b, c, d)


def check_time(name: str, ms: int) -> int:
    """`ms` if a stream can hold it (0 .. 2**63 - 1 unix ms), else BadQuery."""
    if not 0 <= ms <= MAX_MS:
        raise BadQuery(
            f"{name}: outside the times the gateway can store (1970 to the year 292 million): "
            "give a time after 1970-01-01T00:00:00Z"
        )
    return ms


def _entry_key(entry_id: str, source: str) -> SortKey:
    return (*entry_key(entry_id), source, "")


def _stream_end(source: str, cursor: SortKey | None, until_ms: int | None) -> str:
    """XREVRANGE's upper bound for `source`, right after the cursor in the merged order
    (a row of a source later in the merged order with the same id is still to come)."""
    if cursor is None:
        return f"{until_ms}-{MAX_SEQ}" if until_ms is not None else "+"
    ms, seq, after, _ = cursor
    return f"{ms}-{seq}" if source < after else f"({ms}-{seq}"


async def _stream_page(
    store: Store,
    key: str,
    source: str,
    cursor: SortKey | None,
    since_ms: int | None,
    until_ms: int | None,
    count: int,
) -> list[tuple[str, dict[bytes, bytes]]]:
    end = _stream_end(source, cursor, until_ms)
    start = f"{since_ms}-0" if since_ms is not None else "-"
    reply = await store.client.xrevrange(key, end, start, count=count)
    return [(eid.decode(), fields) for eid, fields in reply]


async def _index_page(
    store: Store,
    key: str,
    source: str,
    cursor: SortKey | None,
    since_ms: int | None,
    until_ms: int | None,
    count: int,
) -> list[tuple[str, int]]:
    """(delivery id, received ms) of an outcome index, newest first, after the cursor."""
    low = since_ms if since_ms is not None else "-inf"
    client = store.client
    if cursor is None:
        high: Any = until_ms if until_ms is not None else "+inf"
    else:
        score, _, after, member = cursor
        if source == after:
            # Ties on the score: go on from the cursor's own rank (O(log n)), so no
            # delivery received in the same ms is skipped or shown twice.
            rank, now = await asyncio.gather(
                client.zrevrank(key, member), client.zscore(key, member)
            )
            if rank is not None and now is not None and int(now) == score:
                reply = await client.zrevrange(key, rank + 1, rank + count, withscores=True)
                return [
                    (m.decode(), int(s)) for m, s in reply if since_ms is None or int(s) >= since_ms
                ]
            high = f"({score}"
        else:
            high = score if source < after else f"({score}"
    reply = await client.zrevrangebyscore(key, high, low, start=0, num=count, withscores=True)
    return [(m.decode(), int(s)) for m, s in reply]


def _outcome_of(status: str, dead: bool) -> str:
    if dead:
        return "dead_lettered"
    if not status:
        return "pending"
    if status.startswith("quarantined"):
        return "quarantined"
    if status.startswith("normalized into 0 "):
        return "ignored"
    return "normalized"


async def _log_fields(store: Store, pairs: list[tuple[str, str]]) -> list[tuple[str, bool]]:
    """(status, dead-lettered) of each (source, delivery id): one pipeline for the page."""
    keys = store.keys
    calls: list[tuple[Any, ...]] = []
    for source, delivery_id in pairs:
        calls.append(("HGET", keys.delivery_log(source, delivery_id), "_status"))
        calls.append(("ZSCORE", keys.delivery_index(source, "dead_lettered"), delivery_id))
    replies = await store.execute(calls) if calls else []
    out = []
    for status, dead in zip(replies[::2], replies[1::2], strict=True):
        out.append((as_text(status), dead is not None))
    return out


async def _source_rows(
    store: Store,
    source: str,
    outcome: str,
    cursor: SortKey | None,
    since_ms: int | None,
    until_ms: int | None,
    count: int,
) -> list[Row]:
    keys = store.keys
    if outcome in INDEXED:
        found = await _index_page(
            store, keys.delivery_index(source, outcome), source, cursor, since_ms, until_ms, count
        )
        return [
            Row(source, did, score, outcome, key=(score, 0, source, did)) for did, score in found
        ]
    if outcome in TURNED_AWAY:
        entries = await _stream_page(
            store, keys.turned_away(source, outcome), source, cursor, since_ms, until_ms, count
        )
        rows = []
        for eid, fields in entries:
            f = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
            why = " ".join(x for x in (f.get("status", ""), f.get("reason", "")) if x)
            if f.get("detail"):
                why += f": {f['detail']}"
            rows.append(
                Row(
                    source,
                    f.get("delivery_id", ""),
                    int(f.get("at") or eid.partition("-")[0]),
                    outcome,
                    status=why,
                    stored=outcome == "duplicate" and bool(f.get("delivery_id")),
                    key=_entry_key(eid, source),
                )
            )
        return rows
    entries = await _stream_page(store, keys.raw(source), source, cursor, since_ms, until_ms, count)
    rows = []
    for eid, fields in entries:
        try:
            at = int(fields.get(b"received_at") or eid.partition("-")[0])
        except ValueError:
            at = int(eid.partition("-")[0])
        did = fields.get(b"delivery_id", b"").decode("utf-8", "replace")
        rows.append(Row(source, did, at, "pending", key=_entry_key(eid, source)))
    return rows


async def search(
    store: Store,
    sources: list[str],
    outcome: str,
    since_ms: int | None = None,
    until_ms: int | None = None,
    cursor: str | None = None,
    page: int = PAGE,
) -> Page:
    """One page of deliveries of `sources`, newest first: at most `page` rows read from
    each source, merged."""
    if outcome not in OUTCOMES:
        raise BadQuery(f"no outcome {outcome!r}: choose one of {', '.join(OUTCOMES)}")
    after = decode_cursor(cursor) if cursor else None
    per_source = await asyncio.gather(
        *(_source_rows(store, s, outcome, after, since_ms, until_ms, page) for s in sources)
    )
    merged = sorted((r for rows in per_source for r in rows), key=lambda r: r.key, reverse=True)
    shown = merged[:page]
    more = len(merged) > page or any(len(rows) == page for rows in per_source)
    if outcome == "all":
        for row, (status, dead) in zip(
            shown, await _log_fields(store, [(r.source, r.delivery_id) for r in shown]), strict=True
        ):
            row.status, row.outcome = status, _outcome_of(status, dead)
    elif outcome in INDEXED:
        for row, (status, _) in zip(
            shown, await _log_fields(store, [(r.source, r.delivery_id) for r in shown]), strict=True
        ):
            row.status = status
    return Page(shown, encode_cursor(shown[-1].key) if more and shown else None)


@dataclass
class Found:
    """A delivery found by its id in one source."""

    source: str
    delivery_id: str
    in_log: bool
    status: str = ""
    at: int = 0
    raw_entry: str = ""


async def find_by_id(store: Store, sources: list[str], delivery_id: str) -> list[Found]:
    """The delivery `delivery_id` in each source: from the delivery log (one HMGET per
    source), else from the seen mark of the accept (it names the raw entry), for a
    delivery stored but not normalized yet, or when the log is off or expired."""
    keys = store.keys
    logs = await store.execute(
        [("HMGET", keys.delivery_log(s, delivery_id), "_status", "_at", "_raw") for s in sources]
    )
    found = []
    for source, (status, at, raw) in zip(sources, logs, strict=True):
        if status is not None:
            found.append(
                Found(source, delivery_id, True, as_text(status), as_int(at), as_text(raw))
            )
    if found:
        return found
    for source in sources:
        entry = await raw_by_id(store, source, delivery_id)
        if entry is not None:
            eid, fields = entry
            at = as_int(fields.get(b"received_at")) or int(eid.partition("-")[0])
            found.append(Found(source, delivery_id, False, "", at, eid))
    return found


async def raw_by_id(
    store: Store, source: str, delivery_id: str, entry_id: str = ""
) -> tuple[str, dict[bytes, bytes]] | None:
    """The raw entry of one delivery: `entry_id` (from the delivery log), else the one the
    seen mark names (kept for the source's dedupe_ttl). Two reads, never a scan."""
    if not entry_id:
        mark = await store.client.get(store.keys.seen(source, delivery_id))
        if mark is None:
            return None
        entry_id = as_text(mark)
    reply = await store.client.xrange(store.keys.raw(source), entry_id, entry_id)
    if not reply:
        return None
    eid, fields = reply[0]
    if fields.get(b"delivery_id", b"").decode("utf-8", "replace") != delivery_id:
        return None  # a collect source's seen mark, or an id reused after trimming
    return eid.decode(), fields


def as_text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
