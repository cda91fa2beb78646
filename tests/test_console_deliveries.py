"""The console's deliveries, events and live tail, over a real gateway: signed Stripe
webhooks posted to the public side, the workers running, an HTTP destination on a free
port, the real Redis; pages read on the operator listener after logging in."""

from __future__ import annotations

import asyncio
import html
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
import stripe

from gateway.app import create_app
from tests.conftest import config, drop_prefix, free_port, until
from tests.destinations.conftest import VendorServer

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"
SECRETS = {"stripe": "whsec_console_a", "billing": "whsec_console_b"}
# Values of the charge.succeeded fixture that must never show while bodies are masked.
SECRET_VALUES = ("jennyrosen@example.com", "Jenny Rosen", "cus_NffrFeUfNV2Hib")


@dataclass
class Gateway:
    public: httpx.AsyncClient
    console: httpx.AsyncClient
    hook: VendorServer
    app: Any
    port: int

    async def post(
        self, name: str = "charge.succeeded", event_id: str | None = None, source: str = "stripe"
    ) -> httpx.Response:
        event = json.loads((FIXTURES / f"{name}.json").read_text())
        if event_id:
            event["id"] = event_id
        return await self.post_body(json.dumps(event), source)

    async def post_body(
        self, body: str, source: str = "stripe", secret: str = "", **headers: str
    ) -> httpx.Response:
        header = stripe.WebhookSignature.generate_signature_header(body, secret or SECRETS[source])
        return await self.public.post(
            f"/webhooks/{source}", content=body, headers={"Stripe-Signature": header, **headers}
        )

    async def page(self, path: str) -> str:
        response = await self.console.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text[:500])
        return html.unescape(response.text)


@asynccontextmanager
async def gateway(
    redis_url: str, show_bodies: bool = False, log: str = "7d", mapping: str = ""
) -> AsyncIterator[Gateway]:
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    port = free_port()
    hook = VendorServer()
    hook.start()
    cfg = config(f"""
redis_url: {redis_url}
key_prefix: {prefix}
delivery_log_retention: {log}
worker: {{claim_idle: 1s}}
operator: {{listen: "127.0.0.1:{port}"}}
console:
  enabled: true
  show_bodies: {str(show_bodies).lower()}
  users:
    alice: {{password: pw-alice, role: read-only}}
sources:
  stripe: {{type: stripe, secrets: [{SECRETS["stripe"]}], tolerance: 1h{mapping}}}
  billing: {{type: stripe, secrets: [{SECRETS["billing"]}], tolerance: 1h}}
destinations:
  hook: {{type: http, url: "{hook.url}/in", max_attempts: 1, linger: 10ms, start: earliest}}
""")
    app = create_app(cfg, workers=True)
    client = redis.Redis.from_url(redis_url)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with (
                httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as public,
                httpx.AsyncClient(
                    transport=transport, base_url=f"http://127.0.0.1:{port}"
                ) as console,
            ):
                login = await console.post(
                    "/console/login?next=/console/", data={"name": "alice", "password": "pw-alice"}
                )
                assert login.status_code == 303, login.text
                yield Gateway(public, console, hook, app, port)
    finally:
        hook.stop(wait=False)
        await drop_prefix(client, prefix)
        await client.aclose()


def rows(page: str, table: str) -> list[str]:
    """The data-delivery attribute of each row of a results table, in order."""
    body = page[page.index(f'id="{table}"') :]
    body = body[: body.index("</table>")]
    return re.findall(r'data-delivery="([^"]*)"', body)


async def test_find_a_delivery_by_id_and_see_its_events_and_a_400(redis_url):
    async with gateway(redis_url) as gw:
        gw.hook.default = (400, {}, b'{"error": "this endpoint takes no charges"}')
        assert (await gw.post(event_id="evt_console_find")).json()["status"] == "accepted"
        # The search by id finds it in the delivery log once the worker normalized it.
        found = await until(
            lambda: _page_if(gw, "/console/deliveries?id=evt_console_find", "normalized into 1"),
            what="the delivery in the log",
        )
        assert 'href="/console/deliveries/stripe/evt_console_find"' in found
        assert 'data-source="billing"' not in found  # the other source has no such delivery

        page = await until(
            lambda: _page_if(gw, "/console/deliveries/stripe/evt_console_find", "HTTP 400"),
            what="the 400 attempt on the delivery page",
        )
        assert "Charge Succeeded" in page  # the event it became
        attempt = re.search(
            r'<tr class="attempt outcome-fail" data-destination="hook">(.*?)</tr>', page, re.S
        )
        assert attempt, page
        cells = re.findall(r"<td[^>]*>(.*?)</td>", attempt.group(1), re.S)
        assert re.sub("<[^>]+>", "", cells[2]) == "fail"
        assert cells[3] == "400"
        assert "this endpoint takes no charges" in cells[5]  # the vendor's message
        # It is a dead letter of hook: the page links the dead letters of that destination.
        assert 'href="/console/dead-letters?destination=hook"' in page
        # The kept header (the signature) and the body's shape (masked) are there.
        assert "stripe-signature" in page and '"billing_details"' in page

        # The event page by messageId shows the same attempt, and the event's JSON.
        message_id = re.search(r'data-message-id="([^"]+)"', page).group(1)
        event = await gw.page(
            f"/console/events?message_id={message_id}&source=stripe&delivery_id=evt_console_find"
        )
        assert "this endpoint takes no charges" in event
        assert 'id="event-json"' in event
        assert 'href="/console/deliveries/stripe/evt_console_find"' in event


async def test_an_unknown_id_says_so(redis_url):
    async with gateway(redis_url) as gw:
        page = (await gw.console.get("/console/deliveries?id=evt_never_sent")).text
        assert 'id="not-found"' in page
        assert "not in the delivery log" in page
        response = await gw.console.get("/console/deliveries/stripe/evt_never_sent")
        assert response.status_code == 404


async def test_with_the_log_off_a_stored_delivery_is_found_by_its_id(redis_url):
    async with gateway(redis_url, log="0s") as gw:
        assert (await gw.post(event_id="evt_console_nolog")).json()["status"] == "accepted"
        page = await gw.page("/console/deliveries?id=evt_console_nolog")
        assert "stored, but not in the delivery log" in page and "(the log is off)" in page
        assert 'href="/console/deliveries/stripe/evt_console_nolog"' in page
        delivery = await gw.page("/console/deliveries/stripe/evt_console_nolog")
        assert "stripe-signature" in delivery and '"billing_details"' in delivery


@pytest.mark.parametrize("show_bodies", [False, True])
async def test_bodies_are_masked_unless_allowed(redis_url, show_bodies):
    async with gateway(redis_url, show_bodies=show_bodies) as gw:
        await gw.post(event_id="evt_console_mask")
        page = await until(
            lambda: _page_if(gw, "/console/deliveries/stripe/evt_console_mask", "Charge Succeeded"),
            what="the delivery page",
        )
        events = await gw.page("/console/events")
        assert "evt_console_mask" in events
        for text in (page, events):
            shown = [v for v in SECRET_VALUES if v in text]
            assert shown == (list(SECRET_VALUES) if show_bodies else []), shown
        assert ("values masked" in page) is not show_bodies


# A mapping that reads a header: the source keeps it with the delivery.
EMAIL_MAPPING = """, mappings: [{when: "type == 'charge.succeeded'", event: Paid,
    properties: {email: "header('X-Customer-Email')"}}]"""


@pytest.mark.parametrize("show_bodies", [False, True])
async def test_kept_header_values_are_masked_unless_allowed(redis_url, show_bodies):
    async with gateway(redis_url, show_bodies=show_bodies, mapping=EMAIL_MAPPING) as gw:
        body = (FIXTURES / "charge.succeeded.json").read_text()
        event = json.loads(body)
        event["id"] = "evt_console_header"
        body = json.dumps(event)
        sent = await gw.post_body(body, **{"X-Customer-Email": "carol@example.org"})
        assert sent.json()["status"] == "accepted"
        page = await gw.page("/console/deliveries/stripe/evt_console_header")
        table = page[page.index('id="headers"') :]
        table = table[: table.index("</table>")]
        shown = dict(re.findall(r"<th>([^<]+)</th><td><code>([^<]*)</code>", table))
        assert set(shown) == {"stripe-signature", "x-customer-email"}, shown
        # The vendor's signature is shown as sent; the personal one only with show_bodies.
        assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", shown["stripe-signature"])
        assert shown["x-customer-email"] == ("carol@example.org" if show_bodies else "•••")
        assert ("carol@example.org" in page) is show_bodies


@pytest.mark.parametrize(
    ("query", "said"),
    [
        pytest.param("from=1900-01-01T00:00:00Z", "from: outside the times", id="before 1970"),
        pytest.param("from=99999999999999999999999", "from: outside the times", id="huge from"),
        pytest.param("to=99999999999999999999999", "to: outside the times", id="huge to"),
        pytest.param("after=WyAtNSwgMCwgInN0cmlwZSIsICIiXQ", "start again", id="negative cursor"),
        pytest.param(
            "outcome=quarantined&after=WyAtNSwgMCwgInN0cmlwZSIsICIiXQ",
            "start again",
            id="negative cursor, index",
        ),
    ],
)
async def test_a_bad_time_or_cursor_is_a_400_that_says_why(redis_url, query, said):
    import base64

    # (the cursor above is [-5, 0, "stripe", ""], written by hand)
    assert base64.urlsafe_b64decode("WyAtNSwgMCwgInN0cmlwZSIsICIiXQ==") == b'[ -5, 0, "stripe", ""]'
    async with gateway(redis_url) as gw:
        r = await gw.console.get(f"/console/deliveries?{query}")
        assert r.status_code == 400, (r.status_code, r.text[:300])
        assert said in html.unescape(r.text)
        # The audit log's cursor, too.
        r = await gw.console.get("/console/audit?before=garbage")
        assert r.status_code == 400 and "start again from the newest page" in r.text


async def test_outcome_filters(redis_url):
    async with gateway(redis_url) as gw:
        await gw.post(event_id="evt_console_ok")
        # Quarantined: signed, but not a Stripe event the normalizer can read.
        bad = json.dumps({"id": "evt_console_quarantined", "object": "not-an-event"})
        assert (await gw.post_body(bad)).json()["status"] == "accepted"
        # Rejected: a bad signature (nothing stored).
        body = json.dumps({"id": "evt_console_forged", "object": "event"})
        rejected = await gw.post_body(body, secret="whsec_wrong")
        assert rejected.status_code == 401
        # Duplicate: the same event again.
        assert (await gw.post(event_id="evt_console_ok")).json()["status"] == "duplicate"

        quarantined = await until(
            lambda: _page_if(
                gw, "/console/deliveries?outcome=quarantined", "evt_console_quarantined"
            ),
            what="the quarantined delivery",
        )
        assert rows(quarantined, "deliveries") == ["evt_console_quarantined"]
        assert 'href="/console/quarantine?source=stripe"' in await gw.page(
            "/console/deliveries/stripe/evt_console_quarantined"
        )
        # Turned-away requests reach Redis with the activity flush (every 2 s). A forged
        # request is refused before its id is read: it shows with its reason.
        forged = await until(
            lambda: _page_if(gw, "/console/deliveries?outcome=rejected&source=stripe", "401"),
            what="the rejected delivery",
        )
        assert rows(forged, "deliveries") == [""]
        assert "401 bad_signature: no signature matched" in forged
        duplicate = await until(
            lambda: _page_if(gw, "/console/deliveries?outcome=duplicate", "evt_console_ok"),
            what="the duplicate",
        )
        assert rows(duplicate, "deliveries") == ["evt_console_ok"]
        everything = await until(
            lambda: _page_if(gw, "/console/deliveries", "normalized into 1"), what="statuses"
        )
        # All stored: the two accepted deliveries, not the forged one nor the copy.
        assert rows(everything, "deliveries") == ["evt_console_quarantined", "evt_console_ok"]
        assert rows(await gw.page("/console/deliveries?outcome=dead_lettered"), "deliveries") == []
        assert rows(await gw.page("/console/deliveries?outcome=ignored"), "deliveries") == []
        # A time range before anything was sent shows nothing; one covering now, both.
        assert rows(await gw.page("/console/deliveries?to=1h"), "deliveries") == []
        assert len(rows(await gw.page("/console/deliveries?from=1h"), "deliveries")) == 2
        bad_time = await gw.console.get("/console/deliveries?from=yesterday")
        assert bad_time.status_code == 400 and "not a time" in bad_time.text


async def test_pages_go_back_in_time_without_repeats(redis_url):
    async with gateway(redis_url) as gw:
        sent = []
        for i in range(70):  # two sources, merged: more than a page (50)
            source = "stripe" if i % 3 else "billing"
            event_id = f"evt_console_page_{i:03d}"
            assert (await gw.post(event_id=event_id, source=source)).status_code == 200
            sent.append(event_id)
        first = await gw.page("/console/deliveries")
        shown = rows(first, "deliveries")
        assert shown == list(reversed(sent))[:50]
        older = re.search(r'id="older" href="([^"]+)"', first).group(1)
        second = await gw.page(older)
        rest = rows(second, "deliveries")
        assert rest == list(reversed(sent))[50:]
        assert 'id="older"' not in second
        damaged = await gw.console.get("/console/deliveries?after=not-a-cursor")
        assert damaged.status_code == 400 and "start again from the newest page" in damaged.text
        # One source only: its own deliveries, paged the same way.
        billing = rows(await gw.page("/console/deliveries?source=billing"), "deliveries")
        assert billing == [e for e in reversed(sent) if int(e[-3:]) % 3 == 0]


async def test_the_live_tail_streams_a_delivery_posted_after_connecting(redis_url):
    import uvicorn

    async with gateway(redis_url) as gw:
        # The live tail streams: a real server on the operator port (ASGITransport buffers).
        server = uvicorn.Server(
            uvicorn.Config(
                gw.app, host="127.0.0.1", port=gw.port, log_level="warning", lifespan="off"
            )
        )
        task = asyncio.create_task(server.serve())
        try:
            await until(lambda: server.started or task.done(), what="uvicorn to start")
            cookie = gw.console.cookies.get("gw_console")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}") as browser:
                refused = await browser.get("/console/live/stream")
                assert refused.status_code == 401
                async with browser.stream(
                    "GET", "/console/live/stream", headers={"cookie": f"gw_console={cookie}"}
                ) as stream:
                    assert stream.headers["content-type"].startswith("text/event-stream")
                    lines = stream.aiter_lines()
                    assert (await anext(lines)).startswith("retry:")  # connected
                    await gw.post(event_id="evt_console_live", source="billing")
                    seen = await asyncio.wait_for(_data_line(lines), 10)
                    assert seen["source"] == "billing"
                    assert seen["delivery_id"] == "evt_console_live"
                    assert seen["outcome"] == "accepted"
                    assert abs(seen["at"] / 1000 - __import__("time").time()) < 60
                    # Logged out meanwhile: the tail ends (it does not outlive its session).
                    out = await gw.console.post("/console/logout")
                    assert out.status_code == 303
                    ended = await asyncio.wait_for(_data_line_or_end(lines), 10)
                    assert ended is None
            # The client went away: the server's stream ends within a read or two.
            await until(lambda: not server.server_state.tasks, 5, "the stream to end")
        finally:
            server.should_exit = True
            await task


async def test_without_a_login(redis_url):
    async with gateway(redis_url) as gw:
        anonymous = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gw.app), base_url=f"http://127.0.0.1:{gw.port}"
        )
        async with anonymous:
            for path in ("/console/deliveries", "/console/deliveries/stripe/x", "/console/events"):
                page = await anonymous.get(path, headers={"accept": "text/html"})
                assert page.status_code == 303
                assert page.headers["location"].startswith("/console/login?next=")
            assert (await anonymous.get("/console/live/stream")).status_code == 401


async def _page_if(gw: Gateway, path: str, text: str) -> str | None:
    page = await gw.page(path)
    return page if text in page else None


async def _data_line_or_end(lines: AsyncIterator[str]) -> dict[str, Any] | None:
    """The next data line, or None once the server ended the stream."""
    async for line in lines:
        if line.startswith("data: "):
            return json.loads(line[6:])
    return None


async def _data_line(lines: AsyncIterator[str]) -> dict[str, Any]:
    async for line in lines:
        if line.startswith("data: "):
            return json.loads(line[6:])
    raise AssertionError("the stream ended")


async def test_paging_is_exact_when_times_tie(redis_store):
    """Deliveries received in the same ms (index scores) or with the same stream entry id
    in two sources are each shown once, in order, however small the page."""
    from gateway.console.search import search

    keys = redis_store.keys
    client = redis_store.client
    for source in ("a", "b"):
        for i in range(4):  # the same ids in both streams
            await client.xadd(keys.raw(source), {"delivery_id": f"{source}{i}"}, id=f"1000-{i}")
        await client.zadd(
            keys.delivery_index(source, "quarantined"), {f"{source}-{i}": 5000 for i in range(5)}
        )
    for outcome, expected in (
        ("all", [f"{s}{i}" for i in (3, 2, 1, 0) for s in ("b", "a")]),
        ("quarantined", [f"{s}-{i}" for s in ("b", "a") for i in (4, 3, 2, 1, 0)]),
    ):
        for size in (1, 2, 3):
            seen, cursor = [], None
            for _ in range(len(expected) + 1):  # a cursor that does not move ends here
                page = await search(redis_store, ["a", "b"], outcome, cursor=cursor, page=size)
                seen += [r.delivery_id for r in page.rows]
                if page.cursor is None:
                    break
                cursor = page.cursor
            assert seen == expected, (outcome, size)
