"""POST /v1/id: the first-party visitor id cookie, the landing's click ids, consent."""

from __future__ import annotations

import json
import re

import pytest

from gateway.identity import Visitors
from gateway.store import Store
from tests.conftest import Clock, config, gateway_client

SITE = "https://www.example.com"
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
LANDING = (
    SITE + "/pricing?utm_source=google&utm_medium=cpc&utm_campaign=spring"
    "&gclid=EAIaIQobChMI-abc&fbclid=IwAR2xyz&ttclid=E.C.P.tt1&msclkid=ms42&li_fat_id=li-7"
)
GRANTED = {"ad_storage": "granted", "ad_user_data": "granted", "analytics_storage": "granted"}


def _cfg(**identity):
    return config(
        json.dumps(
            {
                "sources": {"web": {"type": "collect", "write_keys": ["wk"], "origins": [SITE]}},
                "identity": identity,
            }
        )
    )


async def _id(store, body, *, cfg=None, cookie=None, origin=SITE, clock=None):
    headers = {"Content-Type": "text/plain"}
    if origin:
        headers["Origin"] = origin
    if cookie:
        headers["Cookie"] = cookie
    async with gateway_client(cfg or _cfg(), store, clock or Clock(NOW)) as client:
        return await client.post("/v1/id", content=json.dumps(body), headers=headers)


async def test_a_new_visitor_gets_an_id_cookie_and_the_landings_click_ids(redis_store):
    answer = await _id(
        redis_store,
        {"url": LANDING, "referrer": "https://www.google.com/", "consent": GRANTED},
        cookie="_fbp=fb.1.1700000000000.123456789; _ttp=ttp-cookie-1",
    )
    assert answer.status_code == 200, answer.text
    aid = answer.json()["anonymousId"]
    assert UUID4.match(aid)
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"gw_aid={aid}; ")
    for attribute in ("HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=34560000"):
        assert attribute in cookie
    assert answer.headers["access-control-allow-origin"] == SITE
    assert answer.headers["access-control-allow-credentials"] == "true"
    assert answer.json()["clickIds"] == {
        "gclid": "EAIaIQobChMI-abc",
        "fbc": f"fb.1.{int(NOW * 1000)}.IwAR2xyz",  # Meta's fbc format, from the fbclid
        "ttclid": "E.C.P.tt1",
        "msclkid": "ms42",
        "li_fat_id": "li-7",
        "fbp": "fb.1.1700000000000.123456789",
        "ttp": "ttp-cookie-1",
    }
    kept = await Visitors(redis_store, _cfg().identity).get(aid)
    assert kept["consent"] == GRANTED
    assert kept["first_touch"] == kept["last_touch"]
    assert kept["first_touch"]["campaign"] == {
        "source": "google",
        "medium": "cpc",
        "name": "spring",
    }
    assert kept["first_touch"]["referrer"] == "https://www.google.com/"
    assert kept["first_seen"] == kept["last_seen"] == int(NOW * 1000)
    ttl = await redis_store.client.pttl(Visitors(redis_store, _cfg().identity).key(aid))
    assert 399 * 86400_000 < ttl <= 400 * 86400_000


async def test_a_returning_visitor_keeps_the_id_and_the_first_touch(redis_store):
    first = await _id(redis_store, {"url": LANDING, "consent": GRANTED})
    aid = first.json()["anonymousId"]
    later = await _id(
        redis_store,
        {"url": SITE + "/?gclid=second-click&utm_source=newsletter", "consent": GRANTED},
        cookie=f"other=1; gw_aid={aid}",
        clock=Clock(NOW + 3600),
    )
    assert later.json()["anonymousId"] == aid
    kept = await Visitors(redis_store, _cfg().identity).get(aid)
    assert kept["first_touch"]["clickIds"]["gclid"] == "EAIaIQobChMI-abc"
    assert kept["last_touch"]["clickIds"] == {"gclid": "second-click"}
    assert kept["last_touch"]["campaign"] == {"source": "newsletter"}
    assert kept["last_seen"] == int((NOW + 3600) * 1000)


@pytest.mark.parametrize(
    "cookie", ["gw_aid=not-a-uuid", "gw_aid=12345678-1234-1234-1234-123456789abc"]
)
async def test_a_cookie_we_could_not_have_minted_is_replaced(redis_store, cookie):
    answer = await _id(redis_store, {"url": SITE}, cookie=cookie)
    aid = answer.json()["anonymousId"]
    assert UUID4.match(aid) and aid not in cookie


@pytest.mark.parametrize(
    ("mode", "consent", "kept"),
    [
        ("required", {}, False),  # nothing about advertising until granted
        ("required", {"ad_storage": "denied"}, False),
        ("required", {"categoryPreferences": {"Advertising": True}}, True),  # Segment's names
        ("implied", {}, True),
        ("implied", {"categoryPreferences": {"Advertising": False}}, False),
    ],
)
async def test_consent_decides_whether_click_ids_are_kept(redis_store, mode, consent, kept):
    cfg = _cfg(consent=mode)
    answer = await _id(redis_store, {"url": LANDING, "consent": consent}, cfg=cfg)
    aid = answer.json()["anonymousId"]
    stored = await Visitors(redis_store, cfg.identity).get(aid)
    assert ("clickIds" in answer.json()) is kept
    assert ("first_touch" in stored) is kept
    assert (stored.get("ads") == "denied") is (not kept)
    assert (answer.json().get("ads") == "denied") is (not kept)


async def test_a_denial_forgets_click_ids_kept_before(redis_store):
    first = await _id(redis_store, {"url": LANDING, "consent": GRANTED})
    aid = first.json()["anonymousId"]
    await _id(
        redis_store, {"url": SITE, "consent": {"ad_storage": "denied"}}, cookie=f"gw_aid={aid}"
    )
    stored = await Visitors(redis_store, _cfg().identity).get(aid)
    assert "first_touch" not in stored and "last_touch" not in stored
    assert stored["ads"] == "denied"
    assert stored["consent"] == {"ad_storage": "denied"}


async def test_only_the_sites_pages_may_ask(redis_store):
    stranger = await _id(redis_store, {"url": SITE}, origin="https://evil.example")
    nobody = await _id(redis_store, {"url": SITE}, origin=None)
    assert stranger.status_code == nobody.status_code == 401
    assert "origins" in stranger.json()["detail"]
    assert "set-cookie" not in stranger.headers
    async with gateway_client(_cfg(), redis_store) as client:
        pre = await client.options(
            "/v1/id", headers={"Origin": SITE, "Access-Control-Request-Method": "POST"}
        )
        bad = await client.post("/v1/id", content=b"{", headers={"Origin": SITE})
        get = await client.get("/v1/id", headers={"Origin": SITE})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-credentials"] == "true"
    assert bad.status_code == 400
    assert get.status_code == 405


async def test_cookie_settings_are_the_configs(redis_store):
    cfg = _cfg(cookie_name="vid", cookie_domain="example.com", cookie_secure=False,
               cookie_max_age="30d")  # fmt: skip
    answer = await _id(redis_store, {"url": SITE}, cfg=cfg)
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("vid=") and "Domain=example.com" in cookie
    assert "Max-Age=2592000" in cookie and "Secure" not in cookie


def test_a_cookie_longer_than_browsers_keep_is_a_config_error():
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="400 days"):
        _cfg(cookie_max_age="500d")


async def test_redis_away_is_503(private_redis):
    store = Store.connect(private_redis.url, "t", timeout=0.5)
    private_redis.stop()
    try:
        answer = await _id(store, {"url": SITE})
    finally:
        await store.close()
    assert answer.status_code == 503
    assert answer.headers["retry-after"]
