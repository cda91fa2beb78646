"""google-ads against a local server that is both Google's OAuth token endpoint (/token)
and the Google Ads API (/v26/customers/...:uploadClickConversions).

Reply shapes follow the REST reference: partial failures come back as HTTP 200 with
`partialFailureError` (a google.rpc.Status whose details hold a GoogleAdsFailure; each
error's location names the conversion by its index), whole-request errors as
{"error": {"code", "message", "status", "details"}}.
https://developers.google.com/google-ads/api/docs/best-practices/partial-failures
https://developers.google.com/google-ads/api/reference/rpc/latest/ConversionUploadErrorEnum.ConversionUploadError
"""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs

import pytest

from destinations import DESTINATION_TYPES
from gateway.config import parse_config
from gateway.errors import ConfigError
from tests.destinations.conftest import event
from tests.destinations.test_vendors import send

NOW = 1714564900.0  # 2024-05-01T12:01:40Z, 100 s after the events' timestamp
ACTION = "customers/1234567890/conversionActions/555"
UPLOAD_PATH = "/v26/customers/1234567890:uploadClickConversions"
# sha256 of the normalized values, computed outside our code (hashlib on the literals):
JENNY_EMAIL = (
    "72db2c2a5fb4bc735ccece2ce379cc6c47662d2a419916f82d5c289e48f290eb"  # jenny.rosen@example.com
)
JENNY_PHONE = "1967dd8f4b44678ba10eaff05f8ceabcc7268d481f2a637b3dc75d85f3199244"  # +16505550100
SECRETS = ("dev-TOKEN-1", "client-ID-1", "client-SECRET-1", "refresh-TOKEN-1", "ya29.ACCESS")


def make(url: str, extra: str = ""):
    text = (
        f"    type: google-ads\n    customer_id: 123-456-7890\n"
        f"    developer_token: dev-TOKEN-1\n    client_id: client-ID-1\n"
        f"    client_secret: client-SECRET-1\n    refresh_token: refresh-TOKEN-1\n"
        f"    login_customer_id: 999-000-1111\n"
        f"    conversion_actions:\n      Order Completed: {ACTION}\n"
        f"    endpoint: {url}\n    token_url: {url}/token\n" + extra
    )
    cfg = parse_config(f"destinations:\n  d:\n{text}", "d.yaml", {}).destinations["d"]
    return DESTINATION_TYPES[cfg.__struct_config__.tag]("d", cfg)


def google(upload=None, token=None):
    """A vendor answer: /token gets `token` (default: a fresh token for an hour), the
    upload `upload(seen)` (default: everything went in)."""

    def answer(seen):
        if seen.path == "/token":
            if callable(token):
                return token(seen)
            return token or (200, {}, {"access_token": "ya29.ACCESS", "expires_in": 3599})
        if upload is None:
            return (200, {}, {"results": [{} for _ in seen.json()["conversions"]]})
        return upload(seen)

    return answer


def clicked(n: int = 1, **extra):
    e = event(n, **extra)
    e["context"]["clickIds"] = {"gclid": f"Cj0KCQ-{n}"}
    return e


def failure(*errors):
    """A partialFailureError as the REST API returns it."""
    return {
        "partialFailureError": {
            "code": 3,
            "message": "Partial failure",
            "details": [
                {
                    "@type": "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure",
                    "errors": [
                        {
                            "errorCode": {"conversionUploadError": code},
                            "message": f"msg {code}",
                            "location": {
                                "fieldPathElements": [{"fieldName": "conversions", "index": i}]
                            },
                        }
                        for i, code in errors
                    ],
                    "requestId": "r1",
                }
            ],
        },
        "results": [],
    }


def uploads(vendor):
    return [r for r in vendor.requests if r.path != "/token"]


def tokens(vendor):
    return [r for r in vendor.requests if r.path == "/token"]


async def test_token_request_headers_and_conversion_fields(vendor):
    vendor.default = google()
    dest = make(vendor.url)
    purchase = event(
        1,
        timestamp="2024-05-01T14:00:00.000+02:00",
        properties={
            "revenue": 54.5,
            "currency": "usd",
            "order_id": "o-1",
            "email": "  Jenny.Rosen@Example.COM ",
            "phone": "(650) 555-0100",
        },
    )
    purchase["context"]["clickIds"] = {"gclid": "Cj0KCQ-abc", "wbraid": "ignored"}
    purchase["context"]["consent"] = {"ad_user_data": "granted", "ad_personalization": "Denied"}
    [result] = await send(dest, [purchase])
    assert result.ok
    [token] = tokens(vendor)
    assert token.method == "POST"
    assert token.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(token.body.decode()) == {
        "grant_type": ["refresh_token"],
        "client_id": ["client-ID-1"],
        "client_secret": ["client-SECRET-1"],
        "refresh_token": ["refresh-TOKEN-1"],
    }
    [upload] = uploads(vendor)
    assert upload.path == UPLOAD_PATH
    assert upload.headers["authorization"] == "Bearer ya29.ACCESS"
    assert upload.headers["developer-token"] == "dev-TOKEN-1"
    assert upload.headers["login-customer-id"] == "9990001111"
    body = upload.json()
    assert body["partialFailure"] is True and body["validateOnly"] is False
    assert body["conversions"] == [
        {
            "conversionAction": ACTION,
            "conversionDateTime": "2024-05-01 14:00:00+02:00",
            "gclid": "Cj0KCQ-abc",
            "conversionValue": 54.5,
            "currencyCode": "USD",
            "orderId": "o-1",
            "userIdentifiers": [{"hashedEmail": JENNY_EMAIL}, {"hashedPhoneNumber": JENNY_PHONE}],
            "consent": {"adUserData": "GRANTED", "adPersonalization": "DENIED"},
        }
    ]


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2024-05-01T12:00:00.000Z", "2024-05-01 12:00:00+00:00"),
        ("2024-05-01T04:30:05-07:30", "2024-05-01 04:30:05-07:30"),
        ("2024-05-01T12:00:00", "2024-05-01 12:00:00+00:00"),  # no offset: UTC
    ],
)
async def test_conversion_date_time_has_the_offset(vendor, timestamp, expected):
    vendor.default = google()
    await send(make(vendor.url), [clicked(1, timestamp=timestamp)])
    [conversion] = uploads(vendor)[0].json()["conversions"]
    assert conversion["conversionDateTime"] == expected


async def test_the_token_is_cached_and_refreshed_before_it_expires(vendor):
    issued = iter(["tok-1", "tok-2", "tok-3"])
    vendor.default = google(
        token=lambda seen: (200, {}, {"access_token": next(issued), "expires_in": 3600})
    )
    dest = make(vendor.url)
    await dest.start()
    try:
        for offset in (0, 10, 600, 3000):  # all well inside the hour
            assert (await dest.send([clicked(1)], NOW + offset))[0].ok
        assert len(tokens(vendor)) == 1
        # 30 s before expiry: too close, a new token is fetched before sending
        assert (await dest.send([clicked(2)], NOW + 3570))[0].ok
    finally:
        await dest.close()
    assert len(tokens(vendor)) == 2
    bearers = [r.headers["authorization"] for r in uploads(vendor)]
    assert bearers == ["Bearer tok-1"] * 4 + ["Bearer tok-2"]


async def test_partial_failure_maps_each_conversion(vendor):
    vendor.default = google(
        upload=lambda seen: (
            200,
            {},
            failure(
                (1, "CLICK_CONVERSION_ALREADY_EXISTS"),
                (2, "TOO_RECENT_EVENT"),
                (3, "EXPIRED_EVENT"),
                (4, "UNPARSEABLE_GCLID"),
            ),
        )
    )
    results = await send(make(vendor.url), [clicked(i) for i in range(6)])
    assert [r.outcome for r in results] == ["ok", "ok", "retry", "fail", "fail", "ok"]
    assert "TOO_RECENT_EVENT" in results[2].reason and results[2].retry_after == 6 * 3600
    assert results[3].reason == "Google Ads EXPIRED_EVENT: msg EXPIRED_EVENT"
    assert "msg UNPARSEABLE_GCLID" in results[4].reason
    assert len(uploads(vendor)) == 1  # nothing is sent again


async def test_401_is_retried_with_a_new_token_a_hint_and_no_secret(vendor):
    """A 401 means the access token was revoked or expired early: the batch is retried
    (not dead-lettered) and the next attempt asks for a new token."""
    vendor.default = google(
        upload=lambda seen: (
            401,
            {},
            {
                "error": {
                    "code": 401,
                    "message": "Request had invalid authentication credentials.",
                    "status": "UNAUTHENTICATED",
                }
            },
        )
    )
    dest = make(vendor.url)
    results = await send(dest, [clicked(1), clicked(2), clicked(3)])
    assert [r.outcome for r in results] == ["retry"] * 3
    assert "invalid authentication credentials" in results[0].reason
    assert "check this destination's developer_token" in results[0].reason
    assert results[0].status == 401
    assert len(uploads(vendor)) == 1  # not bisected: every event would fail alike
    assert not any(s in r.reason for r in results for s in SECRETS)
    vendor.default = google()
    assert [r.outcome for r in await send(dest, [clicked(4)])] == ["ok"]
    assert len(tokens(vendor)) == 2  # the next attempt asked for a new token


async def test_500_is_retried(vendor):
    vendor.default = google(upload=lambda seen: (500, {}, {"error": {"code": 500}}))
    results = await send(make(vendor.url), [clicked(1), clicked(2)])
    assert [r.outcome for r in results] == ["retry", "retry"]
    assert results[0].status == 500


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (
            400,
            {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
            "fail",
        ),
        (401, {"error": "invalid_client", "error_description": "Unauthorized"}, "fail"),
        (503, {"error": "backend"}, "retry"),
    ],
)
async def test_token_endpoint_failures(vendor, status, body, outcome):
    vendor.default = google(token=(status, {}, body))
    results = await send(make(vendor.url), [clicked(1), clicked(2)])
    assert [r.outcome for r in results] == [outcome] * 2
    assert uploads(vendor) == []  # nothing is uploaded without a token
    assert not any(s in r.reason for r in results for s in SECRETS)
    if outcome == "fail":
        assert body["error"] in results[0].reason and "refresh_token" in results[0].reason


async def test_events_without_click_id_or_identifiers_fail_and_the_rest_go(vendor):
    vendor.default = google()
    anonymous = event(2)  # no click id, no email, no phone
    by_email = event(3, properties={"email": "jenny.rosen@example.com"})
    from_props = event(4, properties={"wbraid": "WB-4"})
    results = await send(make(vendor.url), [clicked(1), anonymous, by_email, from_props])
    assert [r.outcome for r in results] == ["ok", "fail", "ok", "ok"]
    assert "no click id" in results[1].reason
    sent = uploads(vendor)[0].json()["conversions"]
    assert [c.get("gclid") for c in sent] == ["Cj0KCQ-1", None, None]
    assert sent[1]["userIdentifiers"] == [{"hashedEmail": JENNY_EMAIL}]
    assert sent[2]["wbraid"] == "WB-4"


async def test_only_events_with_a_conversion_action_are_routed():
    from destinations import Route

    dest = make("http://127.0.0.1:9")
    route = Route(dest.config)
    assert route.wants("stripe", "track", "Order Completed")
    assert not route.wants("stripe", "track", "Order Refunded")
    assert not route.wants("stripe", "identify", "")
    # and one that reaches send() anyway is refused, not guessed
    [result] = await dest.send([clicked(1, name="Order Refunded")], NOW)
    assert result.outcome == "fail" and "no conversion action" in result.reason


async def test_older_than_90_days_is_dead_lettered_unsent(vendor):
    vendor.default = google()
    old = clicked(1, timestamp="2024-01-30T00:00:00.000Z")  # 92 days before NOW
    young = clicked(2, timestamp="2024-02-05T00:00:00.000Z")  # 86 days
    results = await send(make(vendor.url), [old, young])
    assert [r.outcome for r in results] == ["fail", "ok"]
    assert results[0].reason.startswith("older than") and "90-day" in results[0].reason
    assert [c["gclid"] for c in uploads(vendor)[0].json()["conversions"]] == ["Cj0KCQ-2"]


def test_config_checks():
    with pytest.raises(ConfigError, match=r"conversion_actions\.Order Completed"):
        parse_config(
            "destinations:\n  d:\n    type: google-ads\n    customer_id: '1'\n"
            "    developer_token: a\n    client_id: b\n    client_secret: c\n"
            "    refresh_token: d\n    conversion_actions:\n      Order Completed: '555'\n",
            "d.yaml",
            {},
        )
    with pytest.raises(ConfigError, match="customer_id"):
        parse_config(
            "destinations:\n  d:\n    type: google-ads\n    customer_id: abc\n"
            "    developer_token: a\n    client_id: b\n    client_secret: c\n"
            f"    refresh_token: d\n    conversion_actions:\n      X: {ACTION}\n",
            "d.yaml",
            {},
        )


@pytest.mark.parametrize(
    ("written", "normalized"),
    [
        (" Jenny.Rosen+ads@GMail.com ", "jennyrosen+ads@gmail.com"),
        ("j.rosen@googlemail.com", "jrosen@googlemail.com"),
        ("Jenny.Rosen@Example.COM", "jenny.rosen@example.com"),  # dots matter elsewhere
        ("jenny.rosen@gmail.com.example.org", "jenny.rosen@gmail.com.example.org"),
    ],
)
async def test_gmail_addresses_lose_their_dots_before_hashing(vendor, written, normalized):
    vendor.default = google()
    await send(make(vendor.url), [event(1, properties={"email": written})])
    [conversion] = uploads(vendor)[0].json()["conversions"]
    expected = hashlib.sha256(normalized.encode()).hexdigest()
    assert conversion["userIdentifiers"] == [{"hashedEmail": expected}]
