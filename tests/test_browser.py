"""analytics.js in a real browser: Segment's @segment/analytics-next (npm) in headless
Chromium (Debian's package, driven by Playwright), against the gateway on a real socket.

The site (tests/js/page.html, served by a static server of the test's own on another
port) does what docs/identity.md tells a site to do: POST /v1/id with the landing URL and the
visitor's consent (the gateway sets its HttpOnly cookie), hands the anonymousId to
analytics.js, and loads analytics.js with only its CDN pointed at the gateway
(`cdnURL`); the settings document the gateway serves must then send every event back to
the gateway. Nothing may leave 127.0.0.1: a request anywhere else (Segment's CDN or API)
fails the test.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import stripe

from destinations import DESTINATION_TYPES
from gateway.config import parse_config
from gateway.deliver import DeliverWorker
from gateway.identity import Visitors
from gateway.store import Store
from gateway.worker import NormalizeWorker, Pipeline
from tests.conftest import config, gateway_client, raw_entries, served_gateway, until
from tests.destinations.test_deliver import idle
from tests.services import require_chromium, require_js

WRITE_KEY = "wk_browser_0123456789"
STRIPE_SECRET = "whsec_browser"
FIXTURES = Path(__file__).parent / "fixtures"
EMAIL = "ada@example.com"
GRANTED = {"ad_storage": "granted", "ad_user_data": "granted", "analytics_storage": "granted"}
QUERY = (
    "?utm_source=google&utm_medium=cpc&utm_campaign=spring"
    "&gclid=EAIaIQobChMI-browser&fbclid=IwAR-browser&ttclid=E.C.P.browser-tt"
)
ADS_CONFIG = """destinations:
  meta:
    type: meta-capi
    pixel_id: '1234'
    access_token: meta-token
    host: {url}
  tiktok:
    type: tiktok
    pixel_code: PIXEL1
    access_token: tiktok-token
    endpoint: {url}/tiktok/event/track/
  google:
    type: google-ads
    customer_id: 123-456-7890
    developer_token: dev-token
    client_id: client-id
    client_secret: client-secret
    refresh_token: refresh-token
    conversion_actions:
      Order Completed: customers/1234567890/conversionActions/77
    endpoint: {url}/google
    token_url: {url}/token
"""


def _ad_platforms(seen):
    """One local server in the place of Meta's, TikTok's and Google's APIs."""
    if seen.path == "/token":
        return (200, {}, {"access_token": "ya29.browser", "expires_in": 3599})
    if seen.path.startswith("/google/"):
        return (200, {}, {"results": [{} for _ in seen.json()["conversions"]]})
    if seen.path.startswith("/tiktok/"):
        return (200, {}, {"code": 0, "message": "OK", "data": {}})
    return (200, {}, {"events_received": len(seen.json()["data"])})


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def static_site(root: Path) -> Iterator[str]:
    """The site's own web server: tests/js (page.html and the npm packages), on a port of
    its own (bound to port 0: the system picks a free one)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _cfg(site: str):
    return config(
        json.dumps(
            {
                "sources": {
                    "web": {"type": "collect", "write_keys": [WRITE_KEY], "origins": [site]},
                    "stripe": {"type": "stripe", "secrets": [STRIPE_SECRET]},
                },
                # The test's page is http: a Secure cookie would not be kept.
                "identity": {"cookie_secure": False},
            }
        )
    )


@dataclass
class Browser:
    """A Chromium page on the site, and what it asked for."""

    context: Any
    page: Any
    version: str
    requests: list[str] = field(default_factory=list)
    responses: list[tuple[str, int]] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    async def visit(self, url: str) -> dict[str, Any]:
        """Open `url` (page.html) and wait for its script to finish; its result."""
        await self.page.goto(url)
        await self.page.wait_for_function("window.result || window.failed", timeout=10_000)
        failed = await self.page.evaluate("window.failed")
        assert failed is None, f"{failed}\nconsole: {self.console}"
        result = await self.page.evaluate("window.result")
        assert result["failures"] == [], self.console
        return result


@asynccontextmanager
async def chromium(gateway: str, consent: dict = GRANTED) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    executable = require_chromium()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable)
        try:
            context = await browser.new_context()
            page = await context.new_page()
            b = Browser(context, page, browser.version)

            await context.add_init_script(
                "window.TEST = "
                + json.dumps(
                    {
                        "gateway": gateway,
                        "writeKey": WRITE_KEY,
                        "consent": consent,
                        "userId": "user-42",
                        "traits": {"email": EMAIL},
                    }
                )
            )
            page.on("console", lambda m: b.console.append(f"{m.type}: {m.text}"))
            # Requests are watched, never routed: with any route set, Playwright answers
            # the browser's CORS preflights itself (permissively), which would hide the
            # gateway's own answers (crNetworkManager.ts, isInterceptedOptionsPreflight).
            page.on("request", lambda r: b.requests.append(f"{r.method} {r.url}"))
            page.on("response", lambda r: b.responses.append((r.url, r.status)))
            yield b
            outside = [r for r in b.requests if not r.split(" ")[1].startswith("http://127.0.0.1:")]
            assert outside == [], f"requests left the machine: {outside}"
        finally:
            await browser.close()


async def _events(store: Store, cfg) -> list:
    pipeline = Pipeline(cfg, store)
    out = []
    for entry in await raw_entries(store, "web"):
        fields = {k.encode(): (v.encode() if isinstance(v, str) else v) for k, v in entry.items()}
        out.extend(pipeline.run("web", entry["id"], fields).events)
    return out


async def _pay(cfg, store: Store) -> None:
    """The visitor pays: Stripe knows them by the email they identified with (written in
    capitals, as a checkout form may keep it) and signs its checkout event."""
    checkout = json.loads((FIXTURES / "stripe" / "checkout.session.completed.json").read_text())
    checkout["id"] = "evt_browser_checkout"
    checkout["created"] = int(time.time())  # paid now: the ad platforms take recent ones
    checkout["data"]["object"]["customer_details"]["email"] = EMAIL.upper()
    body = json.dumps(checkout)
    signature = stripe.WebhookSignature.generate_signature_header(
        body, STRIPE_SECRET, timestamp=int(time.time())
    )
    async with gateway_client(cfg, store) as client:
        r = await client.post(
            "/webhooks/stripe", content=body, headers={"stripe-signature": signature}
        )
        assert r.json()["status"] == "accepted", r.text


async def _order(store: Store) -> dict:
    stored = [json.loads(f[b"data"]) for _, f in await store.client.xrange(store.keys.events())]
    [order] = [e for e in stored if e.get("event") == "Order Completed"]
    return order


async def _count(store: Store, n: int) -> bool:
    return len(await raw_entries(store, "web")) >= n


async def test_analytics_js_in_chromium_gets_the_cookie_and_sends_to_the_gateway(
    redis_store, vendor
):
    js = require_js("@segment/analytics-next")
    with static_site(js) as site:
        cfg = _cfg(site)
        landing = f"{site}/page.html{QUERY}"
        async with served_gateway(cfg, redis_store) as gateway, chromium(gateway) as browser:
            assert gateway.rsplit(":", 1)[1] != site.rsplit(":", 1)[1]
            result = await browser.visit(landing)
            jar = await browser.context.cookies(gateway)
            await until(lambda: _count(redis_store, 2), what="the first visit's messages")
            # The visitor comes back: the browser sends the cookie, the id is the same.
            again = await browser.visit(f"{site}/page.html?utm_source=newsletter")
            await until(lambda: _count(redis_store, 4), what="the second visit's messages")

    aid = result["anonymousId"]
    assert again["anonymousId"] == aid
    # analytics.js took its settings from the gateway, and those sent it to the gateway.
    assert f"GET {gateway}/v1/projects/{WRITE_KEY}/settings" in browser.requests
    assert f"POST {gateway}/v1/p" in browser.requests
    assert f"POST {gateway}/v1/i" in browser.requests

    # The gateway's cookie is in the browser, HttpOnly (the page's script cannot read
    # it), holding the id the page was given.
    [cookie] = [c for c in jar if c["name"] == "gw_aid"]
    assert cookie["value"] == aid
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert "gw_aid" not in result["documentCookie"]

    # Two visits, a page and an identify each, stored as they arrived.
    entries = await raw_entries(redis_store, "web")
    bodies = [json.loads(e["body"]) for e in entries]
    assert [b["type"] for b in bodies] == ["page", "identify", "page", "identify"]
    assert [e["delivery_id"] for e in entries[:2]] == result["messageIds"]
    for entry, body in zip(entries, bodies, strict=True):
        assert body["anonymousId"] == aid
        assert body["context"]["library"]["name"] == "analytics.js"
        assert "writeKey" not in body  # a credential, not part of the message
        stored = json.loads(entry["headers"])
        assert stored["x-collect-ip"] == "127.0.0.1"
        assert stored["user-agent"] == result["userAgent"]

    events = await _events(redis_store, cfg)
    assert [e.type for e in events] == ["page", "identify", "page", "identify"]
    page, identify = events[0], events[1]
    for event in events:
        assert event.anonymous_id == aid
        assert event.context.ip == "127.0.0.1"
        # Chromium's own user agent, as analytics.js put it in the message.
        assert event.context.user_agent == result["userAgent"]
        assert f"Chrome/{browser.version.split('.')[0]}." in event.context.user_agent
    assert page.message_id == result["messageIds"][0]
    assert page.context.page["url"] == landing
    assert page.context.page["search"] == QUERY
    assert page.context.campaign == {"source": "google", "medium": "cpc", "name": "spring"}
    assert identify.user_id == "user-42"
    assert identify.traits == {"email": EMAIL}
    assert identify.context.page["url"] == landing

    # What the landing told, kept for the visitor (consent was granted in /v1/id).
    kept = await Visitors(redis_store, cfg.identity).get(aid)
    assert kept["consent"] == GRANTED
    first = kept["first_touch"]
    assert first["url"] == landing
    assert first["clickIds"]["gclid"] == "EAIaIQobChMI-browser"
    assert first["clickIds"]["fbc"].startswith("fb.1.")
    assert first["clickIds"]["fbc"].endswith(".IwAR-browser")
    assert first["campaign"] == {"source": "google", "medium": "cpc", "name": "spring"}
    assert kept["last_touch"]["campaign"] == {"source": "newsletter"}
    assert "clickIds" not in kept["last_touch"]

    # Then the visitor pays. Stripe knows them by the email they identified with; its
    # signed checkout event becomes an Order Completed that carries the visitor's ids
    # and the click of the landing, so analytics tools and ad platforms can attribute it.
    worker = NormalizeWorker(cfg, redis_store, "w1")
    await worker.ensure_groups()
    await _pay(cfg, redis_store)
    while await worker.read_once():
        pass
    stored = [
        json.loads(f[b"data"])
        for _, f in await redis_store.client.xrange(redis_store.keys.events())
    ]
    [order] = [e for e in stored if e.get("event") == "Order Completed"]
    assert order["anonymousId"] == aid
    assert order["userId"] == "user-42"
    clicks = order["context"]["clickIds"]
    assert clicks["gclid"] == "EAIaIQobChMI-browser"
    assert clicks["fbc"] == first["clickIds"]["fbc"]
    assert order["context"]["consent"] == GRANTED
    assert order["context"]["userAgent"] == result["userAgent"]

    # And the ad platforms each get the purchase with the click of the landing, the hashed
    # email and the ids they dedupe by (local servers in their place).
    vendor.default = _ad_platforms
    ads = parse_config(ADS_CONFIG.format(url=vendor.url), "ads.yaml", {}).destinations
    for name, dest_cfg in ads.items():
        dest = DESTINATION_TYPES[dest_cfg.__struct_config__.tag](name, dest_cfg)
        await dest.start()
        try:
            [sent] = await dest.send([order], time.time())
        finally:
            await dest.close()
        assert sent.ok, (name, sent)
    email = hashlib.sha256(EMAIL.encode()).hexdigest()  # the identified email, normalized
    value, currency = order["properties"]["total"], order["properties"]["currency"]
    assert (value, currency.lower()) == (54.5, "usd")  # the fixture's amount_total 5450
    by_path = {r.path.split("/")[1]: r for r in vendor.requests if r.path != "/token"}
    [meta] = by_path["v21.0"].json()["data"]
    assert meta["event_name"] == "Purchase" and meta["event_id"] == order["messageId"]
    assert meta["user_data"]["fbc"] == clicks["fbc"] and meta["user_data"]["em"] == [email]
    assert meta["custom_data"]["value"] == value
    assert meta["custom_data"]["currency"].lower() == "usd"
    [tiktok] = by_path["tiktok"].json()["data"]
    assert tiktok["event_id"] == order["messageId"]
    assert tiktok["user"]["ttclid"] == "E.C.P.browser-tt" and tiktok["user"]["email"] == email
    assert tiktok["properties"]["value"] == value
    [google] = by_path["google"].json()["conversions"]
    assert google["gclid"] == "EAIaIQobChMI-browser"
    assert google["orderId"] == order["properties"]["order_id"]
    assert google["conversionValue"] == value and google["currencyCode"].lower() == "usd"
    assert {"hashedEmail": email} in google["userIdentifiers"]


async def test_analytics_js_retries_a_message_the_gateway_could_not_store(private_redis):
    """Redis away: the gateway answers 503; analytics.js keeps the message and resends it
    with an `X-Retry-Count` header (src/plugins/segmentio/fetch-dispatcher.ts), which the
    browser first asks the gateway about in a CORS preflight. Once Redis is back the
    retry must be stored: nothing lost."""
    js = require_js("@segment/analytics-next")
    store = Store.connect(private_redis.url, "t", timeout=0.5)
    try:
        with static_site(js) as site:
            async with served_gateway(_cfg(site), store) as gateway, chromium(gateway) as browser:
                await browser.visit(f"{site}/page.html")
                await until(lambda: _count(store, 2), what="the visit's messages")
                private_redis.stop()
                await browser.page.evaluate("window.ajs.track('Retried', {n: 1})")
                assert (f"{gateway}/v1/t", 503) in browser.responses
                private_redis.start()  # empty: it keeps nothing on disk
                await until(lambda: _count(store, 1), seconds=5, what="the retried message")
        [entry] = await raw_entries(store, "web")
        assert json.loads(entry["body"])["event"] == "Retried"
        assert browser.requests.count(f"POST {gateway}/v1/t") >= 2
    finally:
        await store.close()


async def test_the_page_can_read_retry_after_on_a_429(redis_store):
    """Over the limit, the gateway answers 429 with Retry-After; analytics.js waits that
    long only if it can read the header (parseRetryAfter in
    src/plugins/segmentio/shared-dispatcher.ts), and a cross-origin page reads only the
    CORS-safelisted response headers unless the server exposes more (Fetch standard,
    "CORS-safelisted response-header name"; Retry-After is not one)."""
    js = require_js("@segment/analytics-next")
    with static_site(js) as site:
        cfg = config(
            json.dumps(
                {
                    "sources": {
                        "web": {
                            "type": "collect",
                            "write_keys": [WRITE_KEY],
                            "origins": [site],
                            "limit_per_ip": "3/1m",  # /v1/id, /v1/p, /v1/i: the 4th is refused
                        }
                    },
                    "identity": {"cookie_secure": False},
                }
            )
        )
        async with served_gateway(cfg, redis_store) as gateway, chromium(gateway) as browser:
            await browser.visit(f"{site}/page.html")
            status, retry_after = await browser.page.evaluate(
                """([gateway, writeKey]) => fetch(gateway + '/v1/t', {
                     method: 'POST', headers: {'Content-Type': 'text/plain'},
                     body: JSON.stringify({writeKey, type: 'track', event: 'E', anonymousId: 'a'}),
                   }).then((r) => [r.status, r.headers.get('Retry-After')])""",
                [gateway, WRITE_KEY],
            )
    assert status == 429
    # The sliding window is weighted from two fixed ones (gateway/ratelimit.py): a wait
    # can reach two windows when the burst came early in the last one.
    assert retry_after is not None and 0 < int(retry_after) <= 121


DENIED = {"ad_storage": "denied", "ad_user_data": "denied", "analytics_storage": "granted"}


async def test_with_ad_consent_denied_no_ad_platform_gets_the_purchase(redis_store, vendor):
    """The same visit and checkout, but the visitor's consent banner denied ads: the
    purchase still joins the visitor, without the click ids, and the deliver worker sends
    it to none of Meta, TikTok and Google Ads, each recording why in the delivery log."""
    js = require_js("@segment/analytics-next")
    vendor.default = _ad_platforms
    with static_site(js) as site:
        cfg = _cfg(site)
        async with served_gateway(cfg, redis_store) as gateway:
            async with chromium(gateway, DENIED) as browser:
                result = await browser.visit(f"{site}/page.html{QUERY}")
            await until(lambda: _count(redis_store, 2), what="the visit's messages")
    worker = NormalizeWorker(cfg, redis_store, "w1")
    await worker.ensure_groups()
    await _pay(cfg, redis_store)
    while await worker.read_once():
        pass
    order = await _order(redis_store)
    assert order["anonymousId"] == result["anonymousId"]
    assert order["context"]["consent"]["ad_user_data"] == "denied"
    assert "clickIds" not in order["context"]

    ads = parse_config(
        f"key_prefix: {redis_store.keys.prefix}\n"
        + ADS_CONFIG.format(url=vendor.url).replace(
            "\n    type:", "\n    start: earliest\n    type:"
        ),
        "ads.yaml",
        {},
    )
    deliver = DeliverWorker(ads, redis_store, "d1")
    for runner in deliver.runners:
        await runner.ensure_group()
    stop = asyncio.Event()
    task = asyncio.create_task(deliver.run(stop))
    try:
        await until(lambda: idle(redis_store, *deliver.runners), what="every event settled")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert vendor.requests == []  # not even Google's token: nothing was to be sent
    assert sum(r.stats.withheld for r in deliver.runners) >= 3
    log = [
        json.loads(x)
        for x in await redis_store.client.lrange(
            redis_store.keys.attempts(order["messageId"]), 0, -1
        )
    ]
    assert sorted(x["destination"] for x in log) == ["google", "meta", "tiktok"]
    assert {x["outcome"] for x in log} == {"skipped"}
    assert all(x["reason"].startswith("consent: ads denied") for x in log)
