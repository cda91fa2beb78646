"""Every catalog vendor, through the real front door (real Redis) and the normalizer.

For each vendor: a request signed independently (its SDK, a published vector or its
documented algorithm, see tests/sources/cases_*.py) is accepted, the same request again
is a duplicate, a tampered one gets 401, and the stored delivery becomes the events the
built-in normalizer promises. `send`'s own signer is checked against the same gateway.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.sources.catalog import VENDORS, render_sample
from gateway.vendor_cli import sign_sample, vendors_markdown
from gateway.worker import Pipeline
from normalizers import normalize
from tests.conftest import Clock, config, gateway_client, raw_entries
from tests.sources.catalog_cases import Case, Signed, all_cases, flip_body

CASES = all_cases()
CATALOG = sorted(name for name, v in VENDORS.items() if not v.builtin)


def test_the_catalog_names_at_least_sixty_vendors() -> None:
    assert len(VENDORS) >= 60, sorted(VENDORS)


@pytest.mark.parametrize("name", sorted(VENDORS))
def test_every_vendor_has_an_independent_case_and_a_sample(name: str) -> None:
    vendor = VENDORS[name]
    assert vendor.samples(), f"{name}: no sample under gateway/sources/samples/{name}/"
    assert (vendor.samples()[next(iter(vendor.samples()))].parent / "ORIGIN").is_file()
    if not vendor.builtin:
        assert name in CASES, f"{name}: no Case in tests/sources/cases_*.py"


def _config(name: str, case: Case) -> str:
    return json.dumps({"sources": {name: {"type": name, **case.config}}})


def _sample(name: str, case: Case, now: float) -> tuple[str, bytes]:
    samples = VENDORS[name].samples()
    event = case.sample or next(iter(samples))
    return event, render_sample(samples[event], now, seed=f"{name}-{now}")


async def _post(client, name: str, signed: Signed, content_type: str):
    headers = {"content-type": content_type, **signed.headers}
    url = f"/webhooks/{name}" + (f"?{signed.query}" if signed.query else "")
    return await client.post(url, content=signed.body, headers=headers)


@pytest.mark.parametrize("name", sorted(CASES))
async def test_vendor_signed_request_is_accepted_once_and_tamper_refused(
    name: str, redis_store
) -> None:
    case = CASES[name]
    vendor = VENDORS[name]
    clock = Clock()
    cfg = config(_config(name, case))
    _, body = _sample(name, case, clock.now)
    signed = case.sign(body, clock.now)
    async with gateway_client(cfg, redis_store, clock) as client:
        ok = vendor.ack.status if vendor.ack is not None else 200
        first = await _post(client, name, signed, vendor.content_type)
        assert first.status_code == ok, (case.why, first.text)
        again = await _post(client, name, signed, vendor.content_type)
        assert again.status_code == ok, again.text
        if vendor.ack is None:
            assert first.json()["status"] == "accepted"
            assert again.json() == {**first.json(), "status": "duplicate"}
        else:
            assert first.content == vendor.ack.body
        broken = (case.tamper or flip_body)(signed)
        refused = await _post(client, name, broken, vendor.content_type)
        assert refused.status_code == 401, refused.text

    entries = await raw_entries(redis_store, name)
    assert len(entries) == 1
    pipeline = Pipeline(cfg, redis_store)
    fields = {k.encode(): (v.encode() if isinstance(v, str) else v) for k, v in entries[0].items()}
    events = normalize(pipeline.delivery(name, fields), pipeline.mappers[name])
    assert len(events) == case.events
    assert events[0].event == case.event or events[0].type == case.event
    assert len({e.message_id for e in events}) == len(events)


SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BUILTIN_CONFIG = {"secrets": ["s3cret-for-send"]}
SIGNABLE = sorted(
    name
    for name, v in VENDORS.items()
    if v.scheme.key_kind == "secret" and (name in CASES or v.builtin)
)


@pytest.mark.parametrize("name", SIGNABLE)
async def test_send_signs_every_sample_as_the_vendor_does(name: str, redis_store) -> None:
    """`webhook-gateway send`'s requests (signature, delivery id and event headers) are
    accepted by the gateway, whose verification the cases above tie to the vendor's own."""
    vendor = VENDORS[name]
    case = CASES.get(name)
    settings = (
        case.config
        if case
        else ({"secrets": [SW_SECRET]} if name == "standard-webhooks" else BUILTIN_CONFIG)
    )
    cfg = config(json.dumps({"sources": {name: {"type": name, **settings}}}))
    clock = Clock()
    async with gateway_client(cfg, redis_store, clock) as client:
        for i, (event, path) in enumerate(vendor.samples().items()):
            body = render_sample(path, clock.now, seed=f"send-{i}")
            signed = sign_sample(vendor, cfg.sources[name], body, clock.now, f"dlv_{i}", event)
            answer = await _post(client, name, signed, signed.headers["content-type"])
            ok = vendor.ack.status if vendor.ack is not None else 200
            assert answer.status_code == ok, (event, answer.text)
    events = []
    pipeline = Pipeline(cfg, redis_store)
    for entry in await raw_entries(redis_store, name):
        fields = {k.encode(): (v.encode() if isinstance(v, str) else v) for k, v in entry.items()}
        events += normalize(pipeline.delivery(name, fields), pipeline.mappers[name])
    assert events, "the samples became no events"


def test_send_refuses_to_sign_for_a_public_key_vendor() -> None:
    keyed = [v for v in VENDORS.values() if v.scheme.key_kind == "public_key"]
    if not keyed:
        pytest.skip("no public-key vendor in the catalog yet")
    vendor = keyed[0]
    with pytest.raises(ConfigError, match="private key"):
        sign_sample(vendor, None, b"[]", 0.0, "d", "e")


def test_docs_table_is_current() -> None:
    """docs/vendors.md is what `webhook-gateway vendors --markdown` prints."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "vendors.md"
    assert docs.read_text() == vendors_markdown(), (
        "regenerate: webhook-gateway vendors --markdown > docs/vendors.md"
    )
