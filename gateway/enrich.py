"""Enrichment: every event, webhook or collected, meets the identity graph on its way to
the events stream.

For a batch of events the normalize worker makes ONE round trip (gateway/graph.py
`Graph.observe`): the links the events state (identify's anonymousId + userId + email, a
Stripe customer's id + email, ...), then, per event, its profile, with what the event tells
about the person recorded on it. Each event then gains, where it has none of its own:

    userId                  the profile's userId
    anonymousId             the person's web anonymousId, replacing a vendor's id
                            (`stripe:cus_123`); the vendor id stays in context.externalIds
    context.traits          match keys: email, phone, firstName, lastName, name, address
    context.ip, .userAgent  of the person's latest collected event (their web session)
    context.campaign        UTM of the latest landing
    context.clickIds        click ids of the latest landing (only if ad consent allows)
    context.consent         consent-mode states (ad_storage, ad_user_data, ...)
    context.profile         {id, firstTouch, lastTouch}

messageIds never change. An event whose person is not known yet goes out as it is; when a
later link gives its profile a userId, the worker emits one `alias` event (previousId: the
id those events went out under, userId: the person's), which PostHog, Mixpanel and
Amplitude turn into a merge of the two histories.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from normalizers.event import Context, Event, SourceInfo, iso_time, message_id

from .config import Config
from .graph import Graph, Observation, external_id, identifiers_of
from .identity import ads_allowed, consent_of, touch
from .metrics import Metrics
from .store import Store

if TYPE_CHECKING:
    from .worker import Outcome

MATCH_KEYS = ("email", "phone", "firstName", "lastName", "name")
"""Traits kept on a profile as the person's match keys (plus `address`)."""
_MAX_TRAIT = 256
_MAX_ADDRESS = 1024
LINK_CACHE = 100_000
"""Identifier sets a worker remembers having linked (skipped when seen again soon)."""
LINK_CACHE_SECONDS = 600.0
MERGE_SOURCE = "identity"
"""The `context.source.eventType` of the alias events that join two histories."""

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def _ms(iso: str | None, default: int) -> int:
    """Unix ms of an event's ISO 8601 time (default if it has none)."""
    if not iso:
        return default
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return default


def view(event: Event) -> dict[str, Any]:
    """The parts of an event `identifiers_of` reads, as JSON names (cheaper than encoding)."""
    ctx = event.context
    return {
        "type": event.type,
        "userId": event.user_id,
        "anonymousId": event.anonymous_id,
        "previousId": event.previous_id,
        "traits": event.traits,
        "context": {
            "source": {"name": ctx.source.name, "type": ctx.source.type},
            "externalIds": [{"type": x.type, "id": x.id} for x in ctx.external_ids],
            "traits": ctx.traits,
        },
    }


def vendor_id(event: Event) -> tuple[str, str]:
    """The id the event goes out under when it is only its vendor's (`stripe:cus_123`),
    with that id's graph identifier; ("", "") if it is not one."""
    anonymous = event.anonymous_id
    if event.user_id is not None or not anonymous:
        return "", ""
    ctx = event.context
    for x in ctx.external_ids:
        if anonymous == f"{ctx.source.type}:{x.id}":
            return anonymous, external_id(x.type, x.id) or ""
    return "", ""


def stands_in(event: Event, vendor: str | None = None) -> bool:
    """Its anonymousId is no person's own: a vendor's id (`vendor`, if already known), or
    `<source>:system`."""
    if vendor is None:
        vendor = vendor_id(event)[0]
    return bool(vendor) or event.anonymous_id == f"{event.context.source.name}:system"


class Enricher:
    """Links and enriches the events of a batch; see the module docstring."""

    def __init__(self, config: Config, store: Store, metrics: Metrics | None = None) -> None:
        self.identity = config.identity
        self.graph = Graph.of(store, config.identity)
        self.collected = {
            name for name, s in config.sources.items() if s.__struct_config__.tag == "collect"
        }
        self.metrics = metrics or Metrics()
        self._linked: collections.OrderedDict[tuple[str, ...], float] = collections.OrderedDict()
        self.log = structlog.get_logger("gateway.identity")

    def _fresh_link(self, ids: tuple[str, ...], now: float) -> bool:
        """True when this worker linked exactly these identifiers a short while ago."""
        seen = self._linked.get(ids)
        return seen is not None and now - seen < LINK_CACHE_SECONDS

    def _linked_now(self, done: list[tuple[str, ...]], now: float) -> None:
        """Remember links once Redis has confirmed them (a failed round trip is redone
        in full, links included)."""
        for ids in done:
            self._linked[ids] = now
            self._linked.move_to_end(ids)
        while len(self._linked) > LINK_CACHE:
            self._linked.popitem(last=False)

    def attributes(self, event: Event, at: int) -> list[tuple[str, str, int]]:
        """What this event tells about its person, as profile attributes."""
        out: list[tuple[str, str, int]] = []
        ctx = event.context
        if self.identity.match_keys:
            sources = [ctx.traits, event.traits] if event.type == "identify" else [ctx.traits]
            for traits in sources:
                for key in MATCH_KEYS:
                    value = traits.get(key)
                    if isinstance(value, str) and value.strip() and len(value) <= _MAX_TRAIT:
                        out.append(("a:" + key, value.strip(), at))
                address = traits.get("address")
                if isinstance(address, dict) and address:
                    text = _encode(address).decode()
                    if len(text) <= _MAX_ADDRESS:
                        out.append(("a:address", text, at))
        if ctx.source.name in self.collected:
            # A collected event is the person's own web (or app) session.
            if event.anonymous_id:
                out.append(("a:anon", event.anonymous_id, at))
            if ctx.ip:
                out.append(("a:ip", ctx.ip, at))
            if ctx.user_agent:
                out.append(("a:ua", ctx.user_agent[: _MAX_TRAIT * 2], at))
            consent = consent_of(ctx.consent)
            if consent:
                out.append(("a:consent", _encode(consent).decode(), at))
            url = ctx.page.get("url")
            if isinstance(url, str) and ads_allowed(self.identity.consent, consent):
                landing = touch(url, ctx.page.get("referrer"), None, at)
                if "clickIds" in landing or "campaign" in landing:
                    text = _encode(landing).decode()
                    out += [("f:ft", text, at), ("a:lt", text, at)]
        return out

    async def enrich(self, outcomes: Sequence[Outcome], now_ms: int | None = None) -> list[Any]:
        """Link and enrich the outcomes' events in place (one round trip), append the
        merge (alias) events due; returns the commands to write with the events."""
        if not self.identity.graph:
            return []
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        wall = time.monotonic()
        items: list[tuple[Outcome, Event, int | None, str]] = []
        links: list[tuple[list[str], int, str | None]] = []
        calls: list[tuple[list[str], list[tuple[str, str, int]], tuple[str, str]]] = []
        for outcome in outcomes:
            for event in outcome.events:
                ids = identifiers_of(view(event), self.graph.phone_region)
                if not ids:
                    continue
                at = min(_ms(event.timestamp, now_ms), now_ms)
                if event.context.source.name in self.collected:
                    # A client's clock says when; what it tells about the person is as of
                    # when the gateway got it (a message dated 1970 is not a first touch).
                    at = min(_ms(event.received_at, now_ms), now_ms)
                link = None
                if (len(ids) > 1 or not ids[0].startswith("anon:")) and not self._fresh_link(
                    tuple(ids), wall
                ):
                    link = len(links)
                    links.append((ids, at, None))
                vendor = vendor_id(event)
                items.append((outcome, event, link, vendor[0]))
                calls.append((ids, self.attributes(event, at), vendor))
        if not items:
            return []
        results, observed = await self.graph.observe(links, calls, now_ms, self.identity.consent)
        self._linked_now([tuple(ids) for ids, _, _ in links], wall)
        self._count(results)
        writes: list[Any] = []
        due: dict[str, tuple[Outcome, Event, dict[str, Any]]] = {}
        for (outcome, event, link, vendor), seen in zip(items, observed, strict=True):
            if link is not None and results[link].conflicts:
                # The event names identifiers of two people: it is left as it is rather
                # than given one of them.
                continue
            self.apply(event, seen, vendor)
            profile = seen.profile
            if profile and profile.get("pending") and profile["id"] not in due:
                due[profile["id"]] = (outcome, event, profile)
        for pid, (outcome, event, profile) in due.items():
            users = [x[5:] for x in profile["identifiers"] if x.startswith("user:")]
            if len(users) != 1:
                continue
            merged = [
                merge_event(event, previous, users[0], since)
                for previous, since in sorted(profile["pending"].items())
            ]
            outcome.events.extend(merged)
            writes.append(self.graph.clear_pending(pid, profile["pending"]))
            self.metrics.identity.labels("history_joined").inc(len(merged))
        return writes

    def _count(self, results: list[Any]) -> None:
        conflicts, kinds = 0, set()
        for r in results:
            if r.created:
                self.metrics.identity.labels("profile_created").inc()
            if r.merged:
                self.metrics.identity.labels("profiles_merged").inc(len(r.merged))
            if r.conflicts:
                conflicts += r.conflicts
                kinds.update(x.partition(":")[0] for x in r.refused)
            if r.blocked:
                self.metrics.identity.labels("blocked").inc(len(r.blocked))
        if conflicts:
            self.metrics.identity.labels("conflict").inc(conflicts)
            # One line per batch, with identifier types only: the values are personal data.
            self.log.warning(
                "identity.conflict",
                count=conflicts,
                kept_apart=sorted(kinds),
                reason="joining would break identity.limits (two userIds, or too many of "
                "one type); they stay apart and those events are not enriched",
            )

    def apply(self, event: Event, seen: Observation, vendor: str | None = None) -> None:
        """Give the event what its profile (or, without one, its visitor record) knows.
        `vendor`: the vendor id it goes out under, when the caller knows it already."""
        profile = seen.profile
        ctx = event.context
        if profile is not None:
            attrs = profile["values"]
            users = [x[5:] for x in profile["identifiers"] if x.startswith("user:")]
            if event.user_id is None and len(users) == 1:
                if stands_in(event, vendor):
                    # The web id, else none: a vendor's id stays in externalIds, and a
                    # `<source>:system` id shared by every guest must not become a
                    # device of this person.
                    event.anonymous_id = attrs.get("anon")
                event.user_id = users[0]
            elif attrs.get("anon") and stands_in(event, vendor):
                event.anonymous_id = attrs["anon"]
        elif seen.visitor:
            v = seen.visitor
            attrs = {
                "consent": v.get("consent"),
                "lt": v.get("last_touch"),
                "ft": v.get("first_touch"),
            }
        else:
            return
        traits = dict(ctx.traits)
        for key in MATCH_KEYS:
            if key not in traits and attrs.get(key):
                traits[key] = attrs[key]
        if "address" not in traits and attrs.get("address"):
            traits["address"] = _json(attrs["address"])
        if traits != ctx.traits:
            ctx.traits = traits
        if ctx.ip is None and attrs.get("ip"):
            ctx.ip = attrs["ip"]
        if ctx.user_agent is None and attrs.get("ua"):
            ctx.user_agent = attrs["ua"]
        consent = _json(attrs.get("consent")) or {}
        own = consent_of(ctx.consent)  # the event's own answer wins, in either vocabulary
        if consent:
            ctx.consent = {**consent, **own, **ctx.consent}
        ads = ads_allowed(self.identity.consent, {**consent, **own})
        first, last = _json(attrs.get("ft")) or {}, _json(attrs.get("lt")) or {}
        if not ctx.campaign and last.get("campaign"):
            ctx.campaign = dict(last["campaign"])
        if ads and not ctx.click_ids:
            clicks = last.get("clickIds") or first.get("clickIds")
            if clicks:
                ctx.click_ids = dict(clicks)
        about: dict[str, Any] = {}
        if profile is not None:
            about["id"] = profile["id"]
        for name, landing in (("firstTouch", first), ("lastTouch", last)):
            if landing:
                # Without ad consent only the campaign shows: the URL and referrer carry
                # the click ids too.
                keep = ("url", "referrer", "campaign", "clickIds") if ads else ("campaign",)
                shown = {k: landing[k] for k in keep if k in landing}
                if isinstance(landing.get("at"), int):
                    shown["at"] = iso_time(landing["at"])
                about[name] = shown
        if about:
            ctx.profile = about


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return _decode(text)
    except msgspec.DecodeError:
        return None


def merge_event(cause: Event, previous: str, user_id: str, since_ms: int) -> Event:
    """The alias event that joins `previous` (what a person's events went out under before
    they were known) to their userId. Its messageId depends only on the two ids, so a
    second emission (another worker, a redo) is a copy destinations drop."""
    source = cause.context.source
    return Event(
        type="alias",
        message_id=message_id(MERGE_SOURCE, f"{previous}\n{user_id}", 0, "alias", None),
        timestamp=iso_time(since_ms) or cause.received_at,
        received_at=cause.received_at,
        context=Context(
            source=SourceInfo(
                name=source.name,
                type=source.type,
                delivery_id=source.delivery_id,
                event_type=MERGE_SOURCE + ".merge",
            ),
            library=cause.context.library,
        ),
        user_id=user_id,
        previous_id=previous,
    )


def describe(profile: Mapping[str, Any]) -> dict[str, Any]:
    """A profile's recorded attributes as a person reads them (`profile show`)."""
    attrs = {k: v for k, (v, _) in profile.get("attributes", {}).items()}
    out: dict[str, Any] = {}
    traits = {k: attrs[k] for k in MATCH_KEYS if attrs.get(k)}
    if attrs.get("address"):
        traits["address"] = _json(attrs["address"])
    if traits:
        out["traits"] = traits
    for key, name in (("anon", "webAnonymousId"), ("ip", "ip"), ("ua", "userAgent")):
        if attrs.get(key):
            out[name] = attrs[key]
    for key, name in (("consent", "consent"), ("ft", "firstTouch"), ("lt", "lastTouch")):
        if attrs.get(key):
            out[name] = _json(attrs[key])
    if profile.get("pending"):
        out["pendingMerges"] = sorted(profile["pending"])
    return out
