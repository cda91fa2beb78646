"""Ad and analytics vendors against local servers that answer like them, and real NATS."""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from destinations import DESTINATION_TYPES
from gateway.config import parse_config
from tests.destinations.conftest import event
from tests.services import NATS_URL, require_nats

NOW = 1714564900.0  # 2024-05-01T12:01:40Z, 100 s after the events' timestamp


def make(text: str):
    cfg = parse_config(f"destinations:\n  d:\n{text}", "d.yaml", {}).destinations["d"]
    return DESTINATION_TYPES[cfg.__struct_config__.tag]("d", cfg)


async def send(dest, batch, now=NOW):
    await dest.start()
    try:
        return await dest.send(batch, now)
    finally:
        await dest.close()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_mixpanel_import_and_profiles(vendor):
    dest = make(
        f"    type: mixpanel\n    project_token: tok\n    service_account: sa.user\n"
        f"    secret: sa-secret\n    project_id: '123'\n    host: {vendor.url}\n"
    )
    results = await send(dest, [event(1), event(2, kind="identify", userId="u2")])
    assert [r.outcome for r in results] == ["ok", "ok"]
    imp, engage = vendor.requests
    assert imp.path == "/import" and imp.query == "strict=1&ip=0&project_id=123"
    assert imp.headers["authorization"] == "Basic c2EudXNlcjpzYS1zZWNyZXQ="  # sa.user:sa-secret
    [record] = imp.json()
    props = record["properties"]
    assert record["event"] == "Order Completed"
    assert props["time"] == 1714564800000 and props["distinct_id"] == "stripe:cus_1"
    assert props["$insert_id"] == event(1)["messageId"].replace("-", "")
    assert len(props["$insert_id"]) <= 36 and props["revenue"] == 11.0
    assert engage.path == "/engage" and engage.query == "verbose=1"
    assert engage.json() == [
        {"$token": "tok", "$distinct_id": "u2", "$set": {"$email": "u2@example.com"}, "$ip": "0"}
    ]


async def test_mixpanel_profile_refused_under_200_is_found_by_bisecting(vendor):
    def judge(seen):
        if seen.path == "/engage":
            bad = any(p["$distinct_id"] == "bad" for p in seen.json())
            # Mixpanel's /engage answers 200 even when it refuses the update
            return (200, {}, {"status": 0, "error": "invalid $set"} if bad else {"status": 1})
        return (200, {}, {"code": 200, "num_records_imported": len(seen.json())})

    vendor.default = judge
    dest = make(
        f"    type: mixpanel\n    project_token: tok\n    secret: s\n    host: {vendor.url}\n"
    )
    batch = [
        event(1, kind="identify", userId="u1"),
        event(2, kind="identify", userId="bad"),
        event(3, kind="identify", userId="u3"),
        event(4),
    ]
    results = await send(dest, batch)
    assert [r.outcome for r in results] == ["ok", "fail", "ok", "ok"]
    assert "invalid $set" in results[1].reason


async def test_mixpanel_partial_failure_dead_letters_only_the_named_records(vendor):
    vendor.reply(
        (
            400,
            {},
            {
                "code": 400,
                "num_records_imported": 2,
                "status": "Bad Request",
                "error": "some data points in the request failed validation",
                "failed_records": [
                    {
                        "index": 1,
                        "$insert_id": "x",
                        "field": "properties.time",
                        "message": "'properties.time' is invalid",
                    }
                ],
            },
        )
    )
    dest = make(
        f"    type: mixpanel\n    project_token: t\n    secret: s\n    host: {vendor.url}\n"
    )
    results = await send(dest, [event(1), event(2), event(3)])
    assert [r.outcome for r in results] == ["ok", "fail", "ok"]
    assert "properties.time" in results[1].reason
    assert len(vendor.requests) == 1  # the imported ones are not sent again


async def test_amplitude_shape_and_invalid_indexes(vendor):
    dest = make(f"    type: amplitude\n    api_key: amp\n    endpoint: {vendor.url}/2/httpapi\n")
    results = await send(dest, [event(1), event(2, kind="identify", userId="u2")])
    assert all(r.ok for r in results)
    body = vendor.requests[0].json()
    assert body["api_key"] == "amp" and body["options"] == {"min_id_length": 1}
    track, identify = body["events"]
    assert track == {
        "event_type": "Order Completed",
        "time": 1714564800000,
        "insert_id": event(1)["messageId"],
        "platform": "webhook-gateway",
        "device_id": "stripe:cus_1",
        "event_properties": {"order_id": "o1", "revenue": 11.0, "currency": "USD"},
        "revenue": 11.0,  # Amplitude's own revenue field, besides the property
    }
    assert identify["event_type"] == "$identify" and identify["user_id"] == "u2"
    assert identify["user_properties"] == {"$set": {"email": "u2@example.com"}}
    vendor.reply(
        (
            400,
            {},
            {
                "code": 400,
                "error": "Invalid field values on some events",
                "events_with_invalid_fields": {"time": [1]},
            },
        )
    )
    results = await send(dest, [event(1), event(2), event(3)])
    assert [r.outcome for r in results] == ["retry", "fail", "retry"]
    assert results[1].reason == "Amplitude: invalid field time"


async def test_meta_capi_hashes_maps_and_dedupes_on_event_id(vendor):
    dest = make(
        f"    type: meta-capi\n    pixel_id: '777'\n    access_token: EAAB\n"
        f"    test_event_code: TEST123\n    host: {vendor.url}\n"
    )
    purchase = event(
        1,
        properties={
            "revenue": 54.5,
            "currency": "USD",
            "order_id": "o1",
            "email": "  Jenny.Rosen@Example.COM ",
            "phone": "+1 (650) 555-0100",
            "fbc": "fb.1.1714564800000.AbCd",
        },
    )
    purchase["context"]["ip"] = "203.0.113.9"
    results = await send(dest, [purchase])
    assert results[0].ok
    [seen] = vendor.requests
    assert seen.path == "/v21.0/777/events"
    body = seen.json()
    assert body["access_token"] == "EAAB" and body["test_event_code"] == "TEST123"
    [data] = body["data"]
    assert data["event_name"] == "Purchase" and data["event_id"] == purchase["messageId"]
    assert data["event_time"] == 1714564800 and data["action_source"] == "system_generated"
    user = data["user_data"]
    assert user["em"] == [sha("jenny.rosen@example.com")]
    assert user["ph"] == [sha("16505550100")]
    assert user["external_id"] == [sha("stripe:cus_1")]
    assert user["client_ip_address"] == "203.0.113.9" and user["fbc"] == "fb.1.1714564800000.AbCd"
    assert data["custom_data"] == {"value": 54.5, "currency": "USD", "order_id": "o1"}


async def test_meta_capi_backfill_limit_and_bisecting_a_refused_batch(vendor):
    def judge(seen):
        names = [d["event_name"] for d in seen.json()["data"]]
        if "Bad" in names:
            return (400, {}, {"error": {"message": "Invalid parameter", "code": 100}})
        return (200, {}, {"events_received": len(names)})

    vendor.default = judge
    dest = make(
        f"    type: meta-capi\n    pixel_id: '1'\n    access_token: t\n    host: {vendor.url}\n"
    )
    old = event(9, timestamp="2024-04-20T00:00:00.000Z")
    batch = [event(1), event(2, name="Bad"), event(3), old]
    results = await send(dest, batch)
    assert [r.outcome for r in results] == ["ok", "fail", "ok", "fail"]
    assert "7 days" in results[3].reason and "Invalid parameter" in results[1].reason
    sent_ids = {d["event_id"] for r in vendor.requests for d in r.json()["data"]}
    assert old["messageId"] not in sent_ids  # never sent: it would be refused forever


@pytest.mark.parametrize(
    ("error", "outcome", "requests"),
    [
        # Graph API rate limits come back as HTTP 400: retried, not dead-lettered
        ({"message": "User request limit reached", "code": 17}, "retry", 1),
        ({"message": "Temporary", "code": 2, "is_transient": True}, "retry", 1),
        # a bad token fails every event alike: no bisecting
        ({"message": "Invalid OAuth access token", "code": 190}, "fail", 1),
        # a wrong pixel_id: "Object with ID ... does not exist"
        ({"message": "Object does not exist", "code": 100, "error_subcode": 33}, "fail", 1),
        # an invalid parameter may be one event's: bisected down to single events
        ({"message": "Invalid parameter", "code": 100}, "fail", 7),
    ],
)
async def test_meta_capi_reads_graph_error_codes(vendor, error, outcome, requests):
    vendor.default = lambda seen: (400, {}, {"error": {**error, "fbtrace_id": "X"}})
    dest = make(
        f"    type: meta-capi\n    pixel_id: '1'\n    access_token: t\n    host: {vendor.url}\n"
    )
    results = await send(dest, [event(1), event(2), event(3), event(4)])
    assert [r.outcome for r in results] == [outcome] * 4
    assert error["message"] in results[0].reason
    assert len(vendor.requests) == requests
    if requests == 1 and outcome == "fail":
        assert "access_token" in results[0].reason


@pytest.mark.parametrize(
    ("phone", "region", "hashed"),
    [
        ("+1 (650) 555-0100", "US", "16505550100"),
        ("(650) 555-0100", "US", "16505550100"),
        ("020 7946 0958", "GB", "442079460958"),
        ("0044 20 7946 0958", "GB", "442079460958"),
        ("+49 030 123456", "US", "4930123456"),
        ("4915112345678", "DE", "4915112345678"),  # the country code without its +
        ("0151 12345678", "de", "4915112345678"),
        ("16505550100", "DE", "16505550100"),
    ],
)
async def test_meta_capi_phones_hash_in_e164_with_the_configured_region(
    vendor, phone, region, hashed
):
    dest = make(
        f"    type: meta-capi\n    pixel_id: '1'\n    access_token: t\n    host: {vendor.url}\n"
        f"    phone_region: {region}\n"
    )
    properties = {"phone": phone, "address": {"state": "California"}}
    await send(dest, [event(1, properties=properties)])
    [data] = vendor.requests[0].json()["data"]
    assert data["user_data"]["ph"] == [sha(hashed)]
    assert data["user_data"]["st"] == [sha("ca")]


async def test_meta_capi_takes_only_an_address_state(vendor):
    """A Shopify customer's account `state: enabled` is not where they live."""
    dest = make(
        f"    type: meta-capi\n    pixel_id: '1'\n    access_token: t\n    host: {vendor.url}\n"
    )
    properties = {"email": "a@example.com", "state": "enabled"}
    await send(dest, [event(1, properties=properties)])
    [data] = vendor.requests[0].json()["data"]
    assert "st" not in data["user_data"]
    assert data["user_data"]["em"] == [sha("a@example.com")]


@pytest.mark.parametrize(
    ("code", "outcome"), [(0, "ok"), (40100, "retry"), (50000, "retry"), (40002, "fail")]
)
async def test_tiktok_reads_the_code_inside_200(vendor, code, outcome):
    vendor.reply((200, {}, {"code": code, "message": "msg", "data": {}}))
    dest = make(
        f"    type: tiktok\n    pixel_code: PX1\n    access_token: tt\n"
        f"    endpoint: {vendor.url}/open_api/v1.3/event/track/\n"
    )
    [result] = await send(
        dest, [event(1, properties={"revenue": 5, "currency": "EUR", "email": "A@b.co"})]
    )
    assert result.outcome == outcome
    [seen] = vendor.requests
    assert seen.headers["access-token"] == "tt"
    body = seen.json()
    assert body["event_source_id"] == "PX1" and body["event_source"] == "web"
    [data] = body["data"]
    assert data["event"] == "CompletePayment" and data["event_id"] == event(1)["messageId"]
    assert data["user"]["email"] == sha("a@b.co")
    assert data["properties"] == {"value": 5, "currency": "EUR"}


@pytest.mark.parametrize(("code", "requests"), [(40002, 5), (40105, 1)])
async def test_tiktok_bisects_a_refused_batch_but_not_a_bad_token(vendor, code, requests):
    def judge(seen):
        names = [d["event"] for d in seen.json()["data"]]
        if code == 40105 or "Bad" in names:
            return (200, {}, {"code": code, "message": "refused", "data": {}})
        return (200, {}, {"code": 0, "message": "OK", "data": {}})

    vendor.default = judge
    dest = make(
        f"    type: tiktok\n    pixel_code: PX1\n    access_token: tt\n"
        f"    endpoint: {vendor.url}/open_api/v1.3/event/track/\n"
    )
    results = await send(dest, [event(1), event(2, name="Bad"), event(3)])
    if code == 40105:
        assert [r.outcome for r in results] == ["fail"] * 3
        assert "access_token" in results[0].reason
    else:
        assert [r.outcome for r in results] == ["ok", "fail", "ok"]
    assert len(vendor.requests) == requests


async def test_ga4_one_request_per_person_and_recommended_names(vendor):
    dest = make(
        f"    type: ga4\n    measurement_id: G-ABC\n    api_secret: sec\n"
        f"    endpoint: {vendor.url}/mp/collect\n"
    )
    batch = [event(i, anonymousId="stripe:cus_a") for i in range(30)] + [
        event(99, name="Subscription Created", anonymousId="stripe:cus_b", userId="u_b")
    ]
    old = event(100, timestamp="2024-04-25T00:00:00.000Z")
    results = await send(dest, [*batch, old])
    assert [r.outcome for r in results] == ["ok"] * 31 + ["fail"]
    assert "72 hours" in results[-1].reason
    assert all(r.query == "measurement_id=G-ABC&api_secret=sec" for r in vendor.requests)
    bodies = [r.json() for r in vendor.requests]
    assert sorted(len(b["events"]) for b in bodies) == [1, 5, 25]
    a = next(b for b in bodies if len(b["events"]) == 25)
    assert a["client_id"] == "stripe:cus_a" and "user_id" not in a
    assert a["events"][0]["name"] == "purchase"
    assert a["events"][0]["timestamp_micros"] == 1714564800000000
    assert a["events"][0]["params"]["value"] == 10.0
    b = next(b for b in bodies if len(b["events"]) == 1)
    assert b["user_id"] == "u_b" and b["events"][0]["name"] == "subscription_created"


async def test_ga4_params_fit_its_limits(vendor):
    dest = make(
        f"    type: ga4\n    measurement_id: G-ABC\n    api_secret: sec\n"
        f"    endpoint: {vendor.url}/mp/collect\n"
    )
    props = {
        "revenue": 20,
        "order_id": "o-1",
        "products": [{"product_id": "p1", "name": "Mug", "price": 10, "quantity": 2}],
        "Plan Name": "x" * 300,
        "ga_session": 1,
        "1st": True,
        "nested": {"dropped": 1},
        **{f"extra_{i}": i for i in range(40)},
    }
    await send(dest, [event(1, anonymousId="a1", properties=props, name="google_thing")])
    [ev] = vendor.requests[0].json()["events"]
    params = ev["params"]
    assert ev["name"] == "event_google_thing"
    assert len(params) == 25
    assert params["event_id"] == event(1)["messageId"] and params["value"] == 20
    assert params["transaction_id"] == "o-1"
    assert params["items"] == [{"item_id": "p1", "item_name": "Mug", "price": 10, "quantity": 2}]
    assert params["Plan_Name"] == "x" * 100
    assert params["p_ga_session"] == 1 and params["p_1st"] is True
    assert "nested" not in params
    assert all(len(k) <= 40 and k[0].isalpha() for k in params)


async def test_nats_jetstream_dedupes_on_message_id():
    import nats

    name = f"TEST_{uuid.uuid4().hex[:8].upper()}"
    subject = f"t{uuid.uuid4().hex[:8]}.{{type}}"
    nc = await nats.connect(require_nats(), connect_timeout=2)
    js = nc.jetstream()
    try:
        dest = make(
            f"    type: nats\n    url: {NATS_URL}\n    subject: '{subject}'\n"
            f"    create_stream: {name}\n"
        )
        assert all(r.ok for r in await send(dest, [event(1), event(2)], time.time()))
        assert all(r.ok for r in await send(dest, [event(1)], time.time()))  # a redo
        info = await js.stream_info(name)
        assert info.state.messages == 2
        msg = await js.get_msg(name, 1)
        assert msgspec.json.decode(msg.data)["messageId"] == event(1)["messageId"]
        assert msg.headers["Nats-Msg-Id"] == event(1)["messageId"]
        missing = make(
            f"    type: nats\n    url: {NATS_URL}\n    subject: nowhere.at.all\n    timeout: 2s\n"
        )
        [result] = await send(missing, [event(1)], time.time())
        assert result.outcome == "fail" and "no JetStream stream" in result.reason
    finally:
        try:
            await js.delete_stream(name)
        finally:
            await nc.close()


def test_an_unknown_phone_region_is_a_config_error():
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="phone_region: 'XX' is not a country code"):
        make("    type: tiktok\n    pixel_code: P\n    access_token: t\n    phone_region: XX\n")


async def test_mixpanel_a_bad_token_is_not_bisected(vendor):
    vendor.default = lambda seen: (200, {}, {"status": 0, "error": "Invalid project token"})
    dest = make(
        f"    type: mixpanel\n    project_token: tok\n    secret: s\n    host: {vendor.url}\n"
    )
    results = await send(dest, [event(i, kind="identify", userId=f"u{i}") for i in range(8)])
    assert [r.outcome for r in results] == ["fail"] * 8
    assert len(vendor.requests) == 1


# Ad platforms match on SHA-256 hex of the normalized value; a sender that hashed it
# already must not have it hashed again. Meta wants the phone as digits with the country
# code; TikTok in E.164 with its `+`:
# https://business-api.tiktok.com/portal/docs?id=1771100865818625
PREHASHED_EMAIL = hashlib.sha256(b"jenny.rosen@example.com").hexdigest()
PREHASHED_PHONE = hashlib.sha256(b"+16505550100").hexdigest()


def sent_user(vendor_type: str, seen) -> tuple[str, str]:
    """(email, phone) as the vendor received them."""
    [data] = seen.json()["data"]
    if vendor_type == "meta-capi":
        return data["user_data"]["em"][0], data["user_data"]["ph"][0]
    return data["user"]["email"], data["user"]["phone"]


@pytest.mark.parametrize(
    ("vendor_type", "email", "phone", "expected_email", "expected_phone"),
    [
        (
            "meta-capi",
            "  Jenny.Rosen@Example.COM ",
            "+1 (650) 555-0100",
            hashlib.sha256(b"jenny.rosen@example.com").hexdigest(),
            hashlib.sha256(b"16505550100").hexdigest(),
        ),
        ("meta-capi", PREHASHED_EMAIL, PREHASHED_PHONE, PREHASHED_EMAIL, PREHASHED_PHONE),
        (
            "tiktok",
            "  Jenny.Rosen@Example.COM ",
            "+1 (650) 555-0100",
            hashlib.sha256(b"jenny.rosen@example.com").hexdigest(),
            hashlib.sha256(b"+16505550100").hexdigest(),
        ),
        ("tiktok", PREHASHED_EMAIL, PREHASHED_PHONE, PREHASHED_EMAIL, PREHASHED_PHONE),
    ],
    ids=["meta-plain", "meta-prehashed", "tiktok-plain", "tiktok-prehashed"],
)
async def test_customer_data_is_hashed_once(
    vendor, vendor_type, email, phone, expected_email, expected_phone
):
    settings = {
        "meta-capi": f"    pixel_id: '1'\n    access_token: t\n    host: {vendor.url}\n",
        "tiktok": f"    pixel_code: P\n    access_token: t\n    endpoint: {vendor.url}/track\n",
    }
    dest = make(f"    type: {vendor_type}\n" + settings[vendor_type])
    [result] = await send(dest, [event(1, properties={"email": email, "phone": phone})])
    assert result.ok
    [seen] = vendor.requests
    assert sent_user(vendor_type, seen) == (expected_email, expected_phone)


def iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def sent_ids(vendor_type: str, requests) -> list[str]:
    if vendor_type == "ga4":
        return [e["params"]["event_id"] for r in requests for e in r.json()["events"]]
    return [d["event_id"] for r in requests for d in r.json()["data"]]


@pytest.mark.parametrize(
    ("vendor_type", "settings", "limit", "reason"),
    [
        ("meta-capi", "pixel_id: '1'\n    access_token: t\n    host: {url}\n", 7 * 86400, "7 days"),
        (
            "tiktok",
            "pixel_code: P\n    access_token: t\n    endpoint: {url}/t\n",
            7 * 86400,
            "7 days",
        ),
        (
            "ga4",
            "measurement_id: G-1\n    api_secret: s\n    endpoint: {url}/mp\n",
            72 * 3600,
            "72 hours",
        ),
    ],
    ids=["meta-capi", "tiktok", "ga4"],
)
async def test_events_older_than_the_platform_accepts_are_dead_lettered_unsent(
    vendor, vendor_type, settings, limit, reason
):
    dest = make(f"    type: {vendor_type}\n    " + settings.format(url=vendor.url))
    young = event(1, timestamp=iso(NOW - limit + 60), anonymousId="a")
    old = event(2, timestamp=iso(NOW - limit - 60), anonymousId="a")
    results = await send(dest, [young, old])
    assert [r.outcome for r in results] == ["ok", "fail"]
    assert reason in results[1].reason and results[1].reason.startswith("older than")
    assert sent_ids(vendor_type, vendor.requests) == [young["messageId"]]
