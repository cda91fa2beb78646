"""The first-party visitor: an id in a cookie the gateway sets, and what the landing told.

`POST /v1/id` (gateway/collect.py) reads or mints the visitor's anonymousId (UUIDv4) in
an HttpOnly cookie set by the gateway itself on the site's own domain: not capped at 7
days the way script-set cookies are in Safari, not blocked as a third party. The same call
records the ad click ids and campaign of the landing URL (first and last touch) and the
visitor's consent, in Redis, for the identity graph and the ad-platform destinations.

Consent uses Google consent mode's names (`ad_storage`, `ad_user_data`,
`ad_personalization`, `analytics_storage`: granted/denied); Segment's
`categoryPreferences` (`Advertising`, `Analytics`: true/false) are understood too. Under
`identity.consent: required` no click id is kept until `ad_storage` is granted; under
`implied`, unless it is denied. Denied also forgets click ids kept before.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import msgspec

from .config import IdentityConfig
from .store import Store

if TYPE_CHECKING:
    from .graph import Graph

CLICK_IDS = ("gclid", "gbraid", "wbraid", "fbclid", "ttclid", "msclkid", "li_fat_id")
"""URL parameters ad platforms add to a click (Google, Meta, TikTok, Microsoft, LinkedIn)."""
COOKIE_IDS = {"_fbp": "fbp", "_ttp": "ttp"}
"""First-party cookies the platforms' own tags set on the site's domain."""
CAMPAIGN = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "name",
    "utm_term": "term",
    "utm_content": "content",
}
"""UTM parameters -> Segment's context.campaign names."""
CONSENT_NAMES = ("ad_storage", "ad_user_data", "ad_personalization", "analytics_storage")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_MAX_VALUE = 512  # a click id or UTM value longer than this is junk, not an id

_encode = msgspec.json.Encoder().encode


def visitor_id(cookie_header: str | None, name: str) -> str | None:
    """The visitor's anonymousId from the request's cookies, if it is one we could have
    minted (a UUIDv4); anything else is ignored and a new one minted."""
    value = cookies(cookie_header).get(name, "").lower()
    return value if _UUID.match(value) else None


def mint() -> str:
    return str(uuid.uuid4())


def cookies(header: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (header or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in out:
            out[name] = value.strip().strip('"')
    return out


def set_cookie(config: IdentityConfig, value: str) -> str:
    parts = [
        f"{config.cookie_name}={value}",
        f"Max-Age={int(config.cookie_max_age)}",
        "Path=/",
        "HttpOnly",
        "SameSite=Lax",
    ]
    if config.cookie_domain:
        parts.append(f"Domain={config.cookie_domain}")
    if config.cookie_secure:
        parts.append("Secure")
    return "; ".join(parts)


def consent_of(value: Any) -> dict[str, str]:
    """Google consent-mode states from either vocabulary; unknown values are left out."""
    out: dict[str, str] = {}
    if not isinstance(value, dict):
        return out
    for name in CONSENT_NAMES:
        state = value.get(name)
        if isinstance(state, str) and state.strip().lower() in ("granted", "denied"):
            out[name] = state.strip().lower()  # GRANTED, as Google's APIs write it, too
        elif isinstance(state, bool):
            out[name] = "granted" if state else "denied"
    prefs = value.get("categoryPreferences")
    if isinstance(prefs, dict):
        ads, analytics = prefs.get("Advertising"), prefs.get("Analytics")
        if isinstance(ads, bool):
            for name in ("ad_storage", "ad_user_data", "ad_personalization"):
                out.setdefault(name, "granted" if ads else "denied")
        if isinstance(analytics, bool):
            out.setdefault("analytics_storage", "granted" if analytics else "denied")
    return out


def ads_allowed(mode: str, consent: dict[str, str]) -> bool:
    state = consent.get("ad_storage")
    return state == "granted" if mode == "required" else state != "denied"


def touch(url: Any, referrer: Any, cookie_header: str | None, now_ms: int) -> dict[str, Any]:
    """What a landing tells: click ids (Meta's as `fbc`), the platforms' cookies, UTM."""
    out: dict[str, Any] = {}
    params: dict[str, str] = {}
    if isinstance(url, str) and len(url) <= 8192:
        try:
            parts = urlsplit(url)
        except ValueError:
            parts = None
        if parts is not None and parts.scheme in ("http", "https"):
            params = dict(parse_qsl(parts.query))
            out["url"] = url
    clicks = {k: v for k in CLICK_IDS if (v := params.get(k)) and len(v) <= _MAX_VALUE}
    if "fbclid" in clicks:
        # Meta's click id cookie format: fb.<subdomain index>.<creation ms>.<fbclid>.
        clicks["fbc"] = f"fb.1.{now_ms}.{clicks.pop('fbclid')}"
    jar = cookies(cookie_header)
    for cookie, name in COOKIE_IDS.items():
        value = jar.get(cookie)
        if value and len(value) <= _MAX_VALUE:
            clicks[name] = value
    if clicks:
        out["clickIds"] = clicks
    campaign = {
        name: v for key, name in CAMPAIGN.items() if (v := params.get(key)) and len(v) <= 512
    }
    if campaign:
        out["campaign"] = campaign
    if isinstance(referrer, str) and referrer and len(referrer) <= 8192:
        out["referrer"] = referrer
    if out:
        out["at"] = now_ms
    return out


class Visitors:
    """Per visitor, in one Redis hash: consent, first and last touch, first/last seen."""

    def __init__(self, store: Store, config: IdentityConfig, graph: Graph | None = None) -> None:
        self.store = store
        self.config = config
        self.graph = graph

    def key(self, anonymous_id: str) -> str:
        # On the identity graph's hash tag: the graph copies a visitor's record into the
        # profile the visitor joins, in the same script (gateway/graph.py).
        return f"{self.store.keys.prefix}:{{idg}}:v:{anonymous_id}"

    async def record(
        self, anonymous_id: str, landing: dict[str, Any], consent: dict[str, str], now_ms: int
    ) -> dict[str, Any]:
        """Keep what this visit told (one round trip); returns what was kept of it."""
        key = self.key(anonymous_id)
        allowed = ads_allowed(self.config.consent, consent)
        if not allowed:
            landing = {k: v for k, v in landing.items() if k != "clickIds"}
        has_marketing = "clickIds" in landing or "campaign" in landing
        calls: list[tuple[Any, ...]] = [
            ("HSETNX", key, "first_seen", now_ms),
            ("HSET", key, "last_seen", now_ms),
        ]
        if consent:
            calls.append(("HSET", key, "consent", _encode(consent), "consent@", now_ms))
        if not allowed:
            # Denied (or not granted where it is required): forget what was kept before.
            calls.append(("HDEL", key, "first_touch", "first_touch@", "last_touch", "last_touch@"))
            calls.append(("HSET", key, "ads", "denied"))
        else:
            calls.append(("HDEL", key, "ads"))
        if allowed and has_marketing:
            data = _encode(landing)
            calls.append(("HSETNX", key, "first_touch", data))
            calls.append(("HSETNX", key, "first_touch@", now_ms))
            calls.append(("HSET", key, "last_touch", data, "last_touch@", now_ms))
        calls.append(("PEXPIRE", key, int(float(self.config.anonymous_ttl) * 1000)))
        if self.graph is None:
            await self.store.execute(calls)
        else:
            # The visitor's profile, if they have one, takes this visit's consent and
            # touch at once (a denial drops its click ids now, not at the visitor's next
            # collected event, which a site honouring the denial may never send).
            calls.append(
                self.graph.observe_command(
                    [([f"anon:{anonymous_id}"], [], ("", ""))], now_ms, self.config.consent
                )
            )
            await self.graph.execute(calls)
        return landing

    async def get(self, anonymous_id: str) -> dict[str, Any]:
        raw = await self.store.client.hgetall(self.key(anonymous_id))
        out: dict[str, Any] = {}
        for k, v in raw.items():
            name = k.decode() if isinstance(k, bytes) else k
            text = v.decode() if isinstance(v, bytes) else v
            if name in ("consent", "first_touch", "last_touch"):
                out[name] = msgspec.json.decode(text)
            elif name in ("first_seen", "last_seen"):
                out[name] = int(text)
            elif name.endswith("@"):
                continue  # when the field beside it was written (for the graph's merge)
            else:
                out[name] = text
        return out


def now_ms(clock: Any = time.time) -> int:
    return int(clock() * 1000)
