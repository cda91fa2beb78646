"""Dead letters and the quarantine in the console: listed newest first, a page at a time,
and acted on (replay, purge, rerun) with the CLI's own engine (gateway/dlq.py,
gateway/replay.py), each action by an operator, with the CSRF token and a confirmation,
and written to the audit log.

A page never reads a whole stream (a dead-letter stream may hold a million entries):
time filters are stream id ranges, and a filter no index covers (destination, message
id, source) reads newest first, at most SCAN_BUDGET entries per page, then says how far
it looked and offers to look further.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import msgspec
from redis.exceptions import RedisError, ResponseError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..dlq import purge_dead_letters, replay_dead_letters
from ..errors import StoreUnavailable
from ..replay import RerunRunning, RerunStopped, parse_time, rerun_quarantine
from ..store import CLUSTER_ERRORS, MAX_SEQ, Store, entry_key, is_entry_id
from .auth import User, action, page

if TYPE_CHECKING:
    from . import Console

PAGE = 50
SCAN_CHUNK = 500
SCAN_BUDGET = 5_000
"""Entries one page may read while filtering on a field no index covers."""
MAX_SELECTED = 500
"""Checkboxes one form may send (two pages' worth, with room to spare)."""
_MAX_MS = 2**63 - 1
"""The latest time a filter may name (unix ms): later is no time at all."""
SCOPES = ("selected", "all")


Fields = dict[bytes, bytes]
_DOWN = (StoreUnavailable, RedisError, *CLUSTER_ERRORS, OSError)


# --- reading a stream newest first --------------------------------------------------------


@dataclass
class Scan:
    rows: list[tuple[str, Fields]] = field(default_factory=list)
    older: str | None = None
    """The cursor of the next (older) page; None when the range is read to its start."""
    scanned: int = 0
    stopped: bool = False
    """The page is not full because SCAN_BUDGET entries were read without enough matches."""


async def newest_first(
    store: Store,
    key: str,
    *,
    before: str | None,
    since_ms: int | None,
    until_ms: int | None,
    keep: Callable[[Fields], bool],
    want: int = PAGE,
    budget: int | None = None,
) -> Scan:
    """Up to `want` entries that `keep` accepts, newest first, older than the cursor
    `before` and inside [since_ms, until_ms]; XREVRANGE with COUNT, never the whole stream."""
    end = f"({before}" if before else (f"{until_ms}-{MAX_SEQ}" if until_ms is not None else "+")
    start = f"{since_ms}-0" if since_ms is not None else "-"
    budget = SCAN_BUDGET if budget is None else budget
    scan = Scan()
    while scan.scanned < budget:
        count = min(SCAN_CHUNK, budget - scan.scanned)
        chunk = await store.client.xrevrange(key, end, start, count=count)
        for entry_id, fields in chunk:
            scan.scanned += 1
            scan.older = entry_id.decode()
            if keep(fields):
                scan.rows.append((scan.older, fields))
                if len(scan.rows) == want:
                    return scan
        if len(chunk) < count:
            scan.older = None  # the start of the range: nothing older
            return scan
        end = f"({scan.older}"
    scan.stopped = True
    return scan


async def indexed_newest_first(
    store: Store,
    index: str,
    key: str,
    *,
    before: str | None,
    since_ms: int | None,
    until_ms: int | None,
    want: int = PAGE,
) -> Scan:
    """Up to `want` entries of the stream `key` listed in the sorted set `index` (entry
    ids scored by their ms), newest first, older than `before`, in [since_ms, until_ms]:
    a page of the index and one XRANGE per entry. Index entries whose entry is gone
    (replayed, purged, trimmed) are dropped from it as they are met, at most SCAN_BUDGET
    per page."""
    tops = [t for t in (_entry_ms(before) if before else None, until_ms) if t is not None]
    high = str(min(tops)) if tops else "+inf"
    low = str(since_ms) if since_ms is not None else "-inf"
    below = entry_key(before) if before else None
    scan, offset = Scan(), 0
    while scan.scanned < SCAN_BUDGET:
        raw = await store.client.zrevrangebyscore(index, high, low, start=offset, num=want)
        ids = [i.decode() for i in raw]
        offset += len(ids)
        ids = [i for i in ids if below is None or entry_key(i) < below]
        pipe = store.client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(key, entry_id, entry_id)
        found = await pipe.execute() if ids else []
        gone = []
        for entry_id, entries in zip(ids, found, strict=True):
            scan.scanned += 1
            if not entries:
                gone.append(entry_id)
                continue
            scan.rows.append((entry_id, entries[0][1]))
            scan.older = entry_id
            if len(scan.rows) == want:
                break
        if gone:
            await store.client.zrem(index, *gone)
            offset -= len(gone)
        if len(scan.rows) == want:
            return scan
        if len(raw) < want:
            scan.older = None  # the start of the range: nothing older
            return scan
    scan.stopped = True
    return scan


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


def _text(fields: Fields, name: str) -> str:
    return fields.get(name.encode(), b"").decode("utf-8", "replace")


# --- filters ------------------------------------------------------------------------------


@dataclass
class Filter:
    """A list page's filter, as the query string (or an action's form) gives it."""

    values: dict[str, str]
    since_ms: int | None = None
    until_ms: int | None = None
    error: str = ""

    @classmethod
    def of(cls, params: Mapping[str, Any], names: tuple[str, ...], now: float) -> Filter:
        """The filter of a page's query string, or of an action's form: a form carries
        the times the page was shown with (since_ms, until_ms), and those are used, not
        a relative time (`2h`) read again later, so the action covers what the page did."""
        values = {n: str(params.get(n) or "").strip()[:200] for n in names}
        f = cls(values)
        for name in ("since", "until"):
            if not values.get(name):
                continue
            pinned = str(params.get(f"{name}_ms") or "")
            try:
                ms = int(pinned) if pinned.isdigit() else parse_time(values[name], now)
            except (ValueError, OverflowError) as e:
                f.error = f"{name}: {e}"
                continue
            if not 0 <= ms <= _MAX_MS:
                f.error = f"{name}: {values[name]!r} is outside the times a stream can hold"
                continue
            setattr(f, f"{name}_ms", ms)
        return f

    def __getitem__(self, name: str) -> str:
        return self.values.get(name, "")

    def query(self) -> dict[str, str]:
        """The filter's non-empty fields (for links)."""
        return {k: v for k, v in self.values.items() if v}

    def pinned(self) -> dict[str, str]:
        """The fields of an action form: the query, with the absolute times it meant when
        the page was shown."""
        out = self.query()
        for name in ("since", "until"):
            ms = getattr(self, f"{name}_ms")
            if ms is not None:
                out[f"{name}_ms"] = str(ms)
        return out

    def time_range(self) -> str:
        """The absolute time range (UTC, to the ms), or "" without one."""
        if self.since_ms is None and self.until_ms is None:
            return ""
        since = _utc(self.since_ms) if self.since_ms is not None else "the first"
        until = _utc(self.until_ms) if self.until_ms is not None else "the last"
        return f"from {since} to {until}"

    def describe(self) -> str:
        """The filter in the audit log's words (with the absolute time range)."""
        words = " ".join(f"{k}={v}" for k, v in self.query().items()) or "no filter (all)"
        return f"{words} ({self.time_range()})" if self.time_range() else words


def _utc(ms: int) -> str:
    try:
        moment = datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        return f"{ms} ms"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


DEAD_LETTER_FILTER = ("destination", "since", "until", "message")
QUARANTINE_FILTER = ("source",)


def _back(console: Console, path: str, f: Filter, done: str) -> RedirectResponse:
    """Back to the list page with its filter, and what happened (base.html shows `done`)."""
    return console.after(path, f.query(), done)


def _older(f: Filter, scan: Scan) -> str:
    """The query string of the next (older) page."""
    return urlencode({**f.query(), "before": scan.older}) if scan.older else ""


def _selected(form: Any) -> list[str]:
    """The entry ids ticked in the form (only well-formed ones, at most MAX_SELECTED)."""
    ids = [str(v) for v in form.getlist("id") if is_entry_id(str(v))]
    return list(dict.fromkeys(ids))[:MAX_SELECTED]


def _ids_note(problems: list[str]) -> str:
    return f"; skipped: {'; '.join(problems[:5])}" if problems else ""


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


# --- dead letters ---------------------------------------------------------------------------


async def _dead_letter_page(console: Console, f: Filter, before: str | None) -> dict[str, Any]:
    store = console.store
    key = store.keys.dead_letters()
    total = int(await store.client.xlen(key))
    message = f["message"]
    if f.error:
        return {"rows": [], "total": total, "scan": Scan()}
    destination = f["destination"]
    listed: list[str] = []
    if is_entry_id(message):
        listed = [message]
    elif message:  # a messageId: its dead letters' entry ids, kept by the deliver worker
        members = await store.client.smembers(store.keys.dead_letter_of_message(message))
        listed = sorted((m.decode() for m in members), key=entry_key, reverse=True)
    if listed:  # read just those entries
        pipe = store.client.pipeline(transaction=False)
        for entry_id in listed[:PAGE]:
            pipe.xrange(key, entry_id, entry_id)
        rows = [(e.decode(), fields) for found in await pipe.execute() for e, fields in found]
        if destination:
            rows = [r for r in rows if r[1].get(b"destination") == destination.encode()]
        scan = Scan(rows=rows, scanned=len(listed))
    elif destination and not message:
        # A page of the destination's index, not of the whole stream; past its end, the
        # dead letters written before the index existed (an upgrade) are read from the
        # stream, a bounded read as for any unindexed filter.
        scan = await indexed_newest_first(
            store, store.keys.dead_letters_of(destination), key,
            before=before, since_ms=f.since_ms, until_ms=f.until_ms,
        )  # fmt: skip
        if scan.older is None and len(scan.rows) < PAGE:
            mark = await store.client.get(store.keys.dead_letters_indexed_since())
            marks = [m for m in (before, mark.decode() if mark else None) if m]
            wanted = destination.encode()
            rest = await newest_first(
                store, key, before=min(marks, key=entry_key) if marks else None,
                since_ms=f.since_ms, until_ms=f.until_ms,
                keep=lambda fields: fields.get(b"destination") == wanted,
                want=PAGE - len(scan.rows),
            )  # fmt: skip
            shown = {entry_id for entry_id, _ in scan.rows}
            scan.rows += [row for row in rest.rows if row[0] not in shown]
            scan.scanned += rest.scanned
            scan.stopped = rest.stopped
            scan.older = rest.older
    else:
        destination = f["destination"].encode()

        def keep(fields: Fields) -> bool:
            if destination and fields.get(b"destination") != destination:
                return False
            return not message or fields.get(b"message_id", b"").decode() == message

        scan = await newest_first(
            store, key, before=before, since_ms=f.since_ms, until_ms=f.until_ms, keep=keep
        )
    rows = []
    for entry_id, fields in scan.rows:
        try:
            event = msgspec.json.decode(fields.get(b"data", b"{}"))
        except msgspec.DecodeError:
            event = None
        rows.append(
            {
                "id": entry_id,
                **{n: _text(fields, n) for n in ("destination", "message_id", "source")},
                **{n: _text(fields, n) for n in ("delivery_id", "event", "attempts", "reason")},
                "at": _text(fields, "at") or _entry_ms(entry_id),
                "data": _pretty(console.body(event)) if event is not None else "(unreadable)",
            }
        )
    return {"rows": rows, "total": total, "scan": scan}


async def _or_down(reading: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """A list page's rows, or an empty page saying Redis does not answer."""
    try:
        return await reading
    except ResponseError as e:
        if "Invalid stream ID" not in str(e):
            raise
        # (the filters are checked first; this is the last word on one Redis refuses)
        why = "bad filter: Redis refuses this range of entries; change the filter"
        return {"rows": [], "total": "?", "scan": Scan(), "bad": why}
    except _DOWN as e:
        why = f"Redis does not answer ({type(e).__name__}): nothing to show, try again"
        return {"rows": [], "total": "?", "scan": Scan(), "down": why}


def _target(f: Filter, scope: str, form: Any) -> str:
    """What an action is on, in the audit log's words."""
    if scope == "selected":
        return f"selected: {', '.join(_selected(form)) or 'none'}"
    return f"matching: {f.describe()}"


async def _replay(console: Console, f: Filter, scope: str, form: Any) -> str:
    """A replay (dlq.replay_dead_letters, as `dlq replay` does it); what happened."""
    if scope == "selected" and not _selected(form):
        # (an empty id list would be no filter at all: everything)
        return "nothing replayed: no dead letter was selected"
    done, problems = await replay_dead_letters(
        console.config, console.store, **_dlq_filter(f, scope, form)
    )
    if not done and not problems:
        return "nothing replayed: no dead letter matches the filter"
    return (
        f"replayed {done} dead letter(s): back in their destination's retry set, the "
        f"running workers send them again{_ids_note(problems)}"
    )


async def _purge(console: Console, f: Filter, scope: str, form: Any) -> str:
    """A purge (dlq.purge_dead_letters, as `dlq purge` does it); what happened."""
    if scope == "selected" and not _selected(form):
        return "nothing deleted: no dead letter was selected"
    deleted = await purge_dead_letters(console.store, **_dlq_filter(f, scope, form))
    return f"deleted {deleted} dead letter(s)"


def _dlq_filter(f: Filter, scope: str, form: Any) -> dict[str, Any]:
    """dlq's filter arguments: the ticked entries, or everything the page's filter matches."""
    if scope == "selected":
        return {"ids": _selected(form)}
    return {
        "destination": f["destination"] or None,
        "since_ms": f.since_ms,
        "until_ms": f.until_ms,
        "ids": [f["message"]] if f["message"] else None,
    }


# --- the quarantine -------------------------------------------------------------------------


async def _quarantine_page(console: Console, f: Filter, before: str | None) -> dict[str, Any]:
    store = console.store
    key = store.keys.quarantine()
    total = int(await store.client.xlen(key))
    source = f["source"].encode()
    scan = await newest_first(
        store,
        key,
        before=before,
        since_ms=None,
        until_ms=None,
        keep=lambda fields: not source or fields.get(b"source") == source,
    )
    rows = []
    for entry_id, fields in scan.rows:
        event = None
        if b"event" in fields:  # a schema violation keeps the event it refused
            try:
                event = _pretty(console.body(msgspec.json.decode(fields[b"event"])))
            except msgspec.DecodeError:
                event = "(unreadable)"
        rows.append(
            {
                "id": entry_id,
                **{n: _text(fields, n) for n in ("source", "delivery_id", "stage", "reason")},
                "at": _text(fields, "at") or _entry_ms(entry_id),
                "event": event,
            }
        )
    return {"rows": rows, "total": total, "scan": scan}


def loaded_config(config: Any, loaded_at_ms: int) -> dict[str, Any]:
    """What identifies the config this process runs with: when it was loaded and, per
    source, a fingerprint of what normalizing depends on (its mapping rules, userId path
    and schema mode, and the tracking plan), so a fix can be seen to be in effect."""
    plan = msgspec.json.encode(config.events)
    sources = []
    for name, source in config.sources.items():
        schema = source.schema or config.schema
        tag = source.__struct_config__.tag
        material = msgspec.json.encode([name, tag, source.mappings, source.user_id, schema])
        digest = hashlib.sha256(material + b"\n" + plan).hexdigest()[:12]
        sources.append(
            {
                "name": name,
                "type": source.__struct_config__.tag,
                "rules": len(source.mappings),
                "fingerprint": digest,
            }
        )
    return {"loaded_at": loaded_at_ms, "sources": sources, "schema": config.schema}


# --- routes ---------------------------------------------------------------------------------


class BadCursor(ValueError):
    pass


def _before(request: Request) -> str | None:
    """The page's cursor: an entry id, or None (the newest page); BadCursor otherwise."""
    before = request.query_params.get("before") or None
    if before is not None and not is_entry_id(before):
        raise BadCursor("bad filter: this page link is damaged: start again from the newest page")
    return before


def routes(console: Console) -> list[Route]:
    # The console reruns with the config this process was started with (see the page).
    loaded = loaded_config(console.config, int(console.clock() * 1000))

    async def dead_letter_list(request: Request, user: User) -> Response:
        f = Filter.of(request.query_params, DEAD_LETTER_FILTER, console.clock())
        try:
            before = _before(request)
        except BadCursor as e:
            f.error = str(e)
            before = None
        context = await _or_down(_dead_letter_page(console, f, before))
        if context.get("bad"):
            f.error = context["bad"]
        return console.render(
            request,
            user,
            "dead_letters.html",
            nav="dead-letters",
            f=f,
            destinations=list(console.config.destinations),
            filtered_scan=bool(f["destination"] or f["message"]),
            scan_budget=SCAN_BUDGET,
            page_query=_older(f, context["scan"]),
            status=400 if f.error else 200,
            **context,
        )

    def dead_letter_action(name: str, work: Callable[..., Any]) -> Callable[..., Any]:
        async def handler(request: Request, user: User, form: Any) -> Response:
            f = Filter.of(form, DEAD_LETTER_FILTER, console.clock())
            if f.error:
                return _back(console, "/console/dead-letters", f, f"nothing done: {f.error}")
            scope = str(form.get("scope", ""))
            if scope not in SCOPES:
                # Never "everything" by default: a form naming one entry without its
                # scope would otherwise act on every dead letter.
                why = "nothing done: the form says neither scope=selected nor scope=all"
                return _back(console, "/console/dead-letters", f, why)
            if scope == "all" and form.getlist("id"):
                why = "nothing done: entries were ticked and scope=all sent: choose one"
                return _back(console, "/console/dead-letters", f, why)
            target = _target(f, scope, form)
            try:
                result = await work(console, f, scope, form)
            except _DOWN as e:
                result = (
                    f"failed: Redis did not answer ({type(e).__name__}); what was done before "
                    "it failed stays done: reload the page to see what is left"
                )
            await console.auth.audit(user, name, target, result)
            return _back(console, "/console/dead-letters", f, result)

        return handler

    async def quarantine_list(request: Request, user: User) -> Response:
        f = Filter.of(request.query_params, QUARANTINE_FILTER, console.clock())
        try:
            before = _before(request)
        except BadCursor as e:
            f.error = str(e)
            before = None
        context = (
            {"rows": [], "total": "?", "scan": Scan()}
            if f.error
            else await _or_down(_quarantine_page(console, f, before))
        )
        if context.get("bad"):
            f.error = context["bad"]
        return console.render(
            request,
            user,
            "quarantine.html",
            nav="quarantine",
            f=f,
            sources=list(console.config.sources),
            loaded=loaded,
            scan_budget=SCAN_BUDGET,
            page_query=_older(f, context["scan"]),
            status=400 if f.error else 200,
            **context,
        )

    async def quarantine_rerun(request: Request, user: User, form: Any) -> Response:
        f = Filter.of(form, QUARANTINE_FILTER, console.clock())
        source = f["source"] or None
        target = f"source={source}" if source else "all sources"
        if source is not None and source not in console.config.sources:
            result = f"nothing rerun: no source named {source!r} in the loaded config"
        else:
            try:
                fixed, failing, reasons = await rerun_quarantine(
                    console.config, console.store, source
                )
            except RerunStopped as e:
                result = f"failed: {e}"
                await console.auth.audit(user, "quarantine.rerun", target, result)
                return _back(console, "/console/quarantine", f, result)
            except RerunRunning as e:
                return _back(console, "/console/quarantine", f, f"nothing rerun: {e}")
            except _DOWN as e:
                result = (
                    f"failed: Redis did not answer ({type(e).__name__}); deliveries normalized "
                    "before it failed have left the quarantine"
                )
                await console.auth.audit(user, "quarantine.rerun", target, result)
                return _back(console, "/console/quarantine", f, result)
            result = (
                f"rerun with the config loaded at start-up: {fixed} now normalized, "
                f"{failing} still in the quarantine"
            )
            if reasons:
                result += f"; still failing: {'; '.join(reasons[:5])}"
                if len(reasons) > 5:
                    result += f"; and {len(reasons) - 5} more"
        await console.auth.audit(user, "quarantine.rerun", target, result)
        return _back(console, "/console/quarantine", f, result)

    refused = console.refused
    return [
        Route("/dead-letters", page(console.auth, dead_letter_list)),
        Route(
            "/dead-letters/replay",
            action(console.auth, dead_letter_action("dlq.replay", _replay), refused),
            methods=["POST"],
        ),
        Route(
            "/dead-letters/purge",
            action(console.auth, dead_letter_action("dlq.purge", _purge), refused),
            methods=["POST"],
        ),
        Route("/quarantine", page(console.auth, quarantine_list)),
        Route(
            "/quarantine/rerun",
            action(console.auth, quarantine_rerun, refused),
            methods=["POST"],
        ),
    ]
