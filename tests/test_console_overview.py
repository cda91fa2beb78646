"""The console's overview and audit pages, after real traffic through the real pipeline."""

from __future__ import annotations

import hashlib
import hmac
import re

import httpx

from gateway.activity import series
from gateway.app import create_app
from tests.conftest import OPERATOR, config, until

CFG = """\
key_prefix: {prefix}
console:
  enabled: true
  users:
    ops: {{password: "${{OPS}}", role: operator}}
sources:
  acme:
    type: hmac
    secrets: [s]
    signature_header: Sig
    delivery_id_header: Id
    mappings:
      - event: Thing Happened
destinations:
  refusing:
    type: http
    url: "{url}/in"
    max_attempts: 1
    start: earliest
"""


def _signed(body: bytes, delivery: str) -> dict[str, str]:
    return {"sig": hmac.new(b"s", body, hashlib.sha256).hexdigest(), "id": delivery}


def _cell(html: str, row: str, cls: str) -> str:
    """The text of a table cell `td.<cls>` in the row `data-*="<row>"`."""
    tr = re.search(rf'<tr data-[a-z]+="{row}">(.*?)</tr>', html, re.S)
    assert tr, f"no row {row}"
    td = re.search(rf'<td class="num {cls}">(.*?)</td>', tr.group(1), re.S)
    assert td, f"no cell {cls} in row {row}"
    return re.sub(r"<[^>]+>", "", td.group(1)).strip()


async def test_overview_counts_what_happened(redis_store, vendor):
    vendor.default = (400, {}, {"error": "invalid api key for project 42"})
    cfg = config(CFG.format(prefix=redis_store.keys.prefix, url=vendor.url), OPS="pw")
    app = create_app(cfg, store=redis_store, workers=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=OPERATOR) as client:
            for delivery in ("a", "b", "c", "a"):
                r = await client.post(
                    "http://gw/webhooks/acme", content=b"{}", headers=_signed(b"{}", delivery)
                )
                assert r.status_code == 200
            bad = await client.post(
                "http://gw/webhooks/acme", content=b"{}", headers={"sig": "00", "id": "x"}
            )
            assert bad.status_code == 401
            dead = redis_store.keys.dead_letters()
            await until(lambda: _length(redis_store, dead, 3), what="3 dead letters")
            # The worker counts a batch just after it stored its dead letters; the counts
            # reach Redis with the next flush (every 2 s, or this one).
            await until(lambda: _counted(app, redis_store), what="the counts in Redis")
            login = await client.post("/console/login", data={"name": "ops", "password": "pw"})
            assert login.status_code == 303
            page = await client.get("/console/")
    assert page.status_code == 200
    html = page.text
    assert _cell(html, "acme", "accepted") == "3 / 3"
    assert _cell(html, "acme", "duplicate") == "1 / 1"
    assert _cell(html, "acme", "rejected") == "1 / 1"
    assert _cell(html, "refusing", "sent") == "0 / 0"
    assert _cell(html, "refusing", "dead") == "3 / 3"
    # The destination's last error, as the vendor said it.
    assert "invalid api key for project 42" in html
    assert 'id="redis"' in html and "answers" in html
    # The chart of accepted webhooks: 60 bars, one per minute, the newest last (the 3 may
    # straddle a minute's end).
    chart = re.search(r'<tr data-source="acme">.*?<svg(.*?)</svg>', html, re.S).group(1)
    bars = [int(n) for n in re.findall(r"<title>(\d+)</title>", chart)]
    assert len(bars) == 60 and sum(bars) == 3 and sum(bars[-2:]) == 3


async def _counted(app, store) -> bool:
    await app.state.metrics.activity.flush(store)
    hour = await series(store, "m", 60)
    return hour.total("destination", "refusing", "dead_lettered") == 3


async def _length(store, key: str, n: int) -> bool:
    return await store.client.xlen(key) >= n


async def test_every_page_works_on_the_embedded_store():
    """A newcomer's first run has no Redis: the in-memory store (no INFO command there)."""
    from gateway.store import Store

    text = CFG.format(prefix="embedded", url="http://127.0.0.1:9")
    app = create_app(config(text, OPS="pw"), store=Store.connect("", "embedded", 2.0))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=OPERATOR) as client:
        await client.post("/console/login", data={"name": "ops", "password": "pw"})
        overview = await client.get("/console/")
        assert overview.status_code == 200 and 'class="error"' not in overview.text
        assert "embedded in-memory store" in overview.text
        for path in ("deliveries", "events", "dead-letters", "quarantine", "audit"):
            page = await client.get(f"/console/{path}")
            assert page.status_code == 200 and 'class="error"' not in page.text, path
