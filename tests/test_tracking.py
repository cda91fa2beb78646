"""The tracking plan, as docs/mappings.md writes it."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import msgspec
import pytest
import redis as sync_redis

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.tracking import violations
from normalizers.event import Context, Event, SourceInfo, library
from tests.conftest import drop_keys
from tests.destinations.conftest import VendorServer, wait_for
from tests.test_cli import Worker

DOC = (Path(__file__).parents[1] / "docs" / "mappings.md").read_text()
PLAN = re.search(r"```yaml\n(# tracking plan\n.*?)```", DOC, re.S).group(1)


def event(name: str | None, type_: str = "track", **values) -> Event:
    context = Context(source=SourceInfo("s", "hmac", "d"), library=library())
    field = "traits" if type_ != "track" else "properties"
    return Event(
        type=type_,
        message_id="m",
        timestamp="t",
        received_at="t",
        context=context,
        event=name,
        **{field: values},
    )


@pytest.fixture(scope="module")
def plan():
    config = parse_config(PLAN, "docs/mappings.md", {})
    assert config.schema == "enforce"
    return config.events


@pytest.mark.parametrize(
    ("candidate", "problems"),
    [
        (event("Order Completed", order_id="o1", currency="USD", revenue=9.5), []),
        (
            event("Order Completed", order_id="o1"),
            ["Order Completed: property 'currency' is required"],
        ),
        (
            event("Order Completed", order_id=5, currency="USD", revenue="9.5"),
            [
                "Order Completed: property 'order_id' should be string, got number",
                "Order Completed: property 'revenue' should be number, got string",
            ],
        ),
        (event("Order Shipped"), ["event 'Order Shipped' is not in the tracking plan"]),
        (
            event("Form Submitted", form_id="f", extra=1),
            ["Form Submitted: properties not in the plan: extra"],
        ),
        (event(None, "identify", email="a@example.com"), []),
        (
            event(None, "identify", email=3),
            ["identify: property 'email' should be string, got number"],
        ),
        (event(None, "group", anything=1), []),
    ],
)
def test_plan(plan, candidate, problems):
    assert violations(candidate, plan) == problems


def test_plan_mistakes_are_config_errors():
    with pytest.raises(
        ConfigError, match=r"p.yaml:4: events.X.properties.a.type: invalid value \(valid: string,"
    ):
        parse_config("events:\n  X:\n    properties:\n      a: {type: text}\n", "p.yaml", {})


TYPED_PLAN = """
events:
  Integer Given: {properties: {value: {type: integer, required: true}}}
  Number Given: {properties: {value: {type: number, required: true}}}
  Boolean Given: {properties: {value: {type: boolean, required: true}}}
  Object Given: {properties: {value: {type: object, required: true}}}
  Array Given: {properties: {value: {type: array, required: true}}}
  Any Given: {properties: {value: {type: any, required: true}}}
"""


@pytest.mark.parametrize(
    ("name", "value", "problems"),
    [
        ("Integer Given", "3", []),
        ("Integer Given", "-7", []),
        ("Integer Given", "true", ["should be integer, got boolean"]),
        # As in JSON Schema, a number is an integer when it has no fraction: 1.0 is one
        # (a vendor or a mapping may well write a count as 2.0).
        ("Integer Given", "1.0", []),
        ("Integer Given", "-0.0", []),
        ("Integer Given", "1.5", ["should be integer, got number"]),
        ("Integer Given", '"3"', ["should be integer, got string"]),
        ("Number Given", "2", []),
        ("Number Given", "1.5", []),
        ("Number Given", "true", ["should be number, got boolean"]),
        ("Number Given", '"1.5"', ["should be number, got string"]),
        ("Boolean Given", "true", []),
        ("Boolean Given", "false", []),
        ("Boolean Given", "1", ["should be boolean, got number"]),
        ("Boolean Given", '"true"', ["should be boolean, got string"]),
        ("Object Given", '{"a": 1}', []),
        ("Object Given", "{}", []),
        ("Object Given", "[1]", ["should be object, got array"]),
        ("Object Given", '"{}"', ["should be object, got string"]),
        ("Array Given", '[1, "a"]', []),
        ("Array Given", "[]", []),
        ("Array Given", '{"a": 1}', ["should be array, got object"]),
        ("Array Given", '"a,b"', ["should be array, got string"]),
        ("Any Given", '"x"', []),
        ("Any Given", "0", []),
        ("Any Given", "false", []),
        ("Any Given", "{}", []),
        ("Any Given", "[]", []),
        ("Any Given", "null", ["is required"]),  # any value, but a value
    ],
)
def test_property_types(name, value, problems):
    """`value` is JSON text, decoded as the worker decodes a payload."""
    plan = parse_config(TYPED_PLAN, "types.yaml", {}).events
    candidate = event(name, value=msgspec.json.decode(value))
    assert violations(candidate, plan) == [f"{name}: property 'value' {p}" for p in problems]


WARNED = """\
redis_url: {redis_url}
key_prefix: {prefix}
schema: warn
events:
  Form Submitted:
    properties:
      form_id: {{type: integer, required: true}}
sources:
  forms:
    type: hmac
    secrets: [x]
    signature_header: Sig
    mappings:
      - event: Form Submitted
        properties: {{form_id: form_id}}
destinations:
  hook: {{type: http, url: "{vendor}/hook", start: earliest}}
"""


def test_warn_logs_event_off_plan_and_still_delivers(tmp_path, redis_url):
    """A real `worker` process: the off-plan event reaches the destination, and the worker's
    stderr says what is wrong with it."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    vendor = VendorServer()
    vendor.start()
    path = tmp_path / "config.yaml"
    path.write_text(WARNED.format(redis_url=redis_url, prefix=prefix, vendor=vendor.url))
    client = sync_redis.Redis.from_url(redis_url)
    client.xadd(
        f"{prefix}:{{forms}}:raw",
        {
            "source": "forms",
            "delivery_id": "f-17",
            "received_at": 1714564800000,
            "headers": "{}",
            "body": b'{"form_id": "F-17"}',
        },
    )
    worker = Worker(path)
    try:
        assert wait_for(lambda: vendor.requests), worker.stop()
        assert wait_for(lambda: any(x["event"] == "event.off_plan" for x in worker.lines())), (
            worker.stop()
        )
    finally:
        log = worker.stop()
        vendor.stop()
        quarantined = client.xlen(f"{prefix}:{{quarantine}}:stream")
        client.close()
        drop_keys(redis_url, prefix)
    [sent] = vendor.requests
    body = sent.json()
    assert (body["event"], body["properties"]) == ("Form Submitted", {"form_id": "F-17"})
    [line] = [json.loads(x) for x in log.splitlines() if '"event.off_plan"' in x]
    assert {k: line[k] for k in ("level", "source", "problem")} == {
        "level": "warning",
        "source": "forms",
        "problem": "Form Submitted: property 'form_id' should be integer, got string",
    }
    assert quarantined == 0


ENFORCED = """
key_prefix: {prefix}
schema: enforce
events:
  Typed:
    properties:
      value: {{type: {type}, required: {required}}}
sources:
  forms:
    type: hmac
    secrets: [x]
    signature_header: Sig
    mappings:
      - event: Typed
        properties: {{value: value}}
"""


@pytest.mark.parametrize(
    ("type_", "good", "bad", "got"),
    [
        ("string", '"a"', "1", "number"),
        ("number", "1.5", '"1.5"', "string"),
        ("integer", "2.0", "2.5", "number"),
        ("boolean", "false", "0", "number"),
        ("object", '{"a": 1}', "[1]", "array"),
        ("array", "[]", "{}", "object"),
    ],
)
async def test_the_worker_enforces_each_type(redis_store, type_, good, bad, got):
    """Through the normalize worker on the real Redis: the good value becomes an event,
    the bad one goes to the quarantine with the reason."""
    from gateway.worker import NormalizeWorker
    from tests.test_worker import events, put

    text = ENFORCED.format(prefix=redis_store.keys.prefix, type=type_, required="true")
    worker = NormalizeWorker(parse_config(text, "plan.yaml", {}), redis_store, "w")
    await worker.ensure_groups()
    await put(redis_store, "forms", "good", f'{{"value": {good}}}'.encode())
    await put(redis_store, "forms", "bad", f'{{"value": {bad}}}'.encode())
    assert await worker.read_once() == 2
    [stored] = await events(redis_store)
    assert stored["delivery_id"] == b"good"
    assert msgspec.json.decode(stored["data"])["properties"] == {"value": json.loads(good)}
    [(_, q)] = await redis_store.client.xrange(redis_store.keys.quarantine())
    assert (q[b"delivery_id"], q[b"stage"]) == (b"bad", b"schema")
    assert q[b"reason"].decode() == f"Typed: property 'value' should be {type_}, got {got}"


@pytest.mark.parametrize(
    ("required", "payload", "outcome"),
    [
        ("false", b'{"value": null}', "event"),
        ("false", b"{}", "event"),
        ("true", b'{"value": null}', "Typed: property 'value' is required"),
        ("true", b"{}", "Typed: property 'value' is required"),
    ],
)
async def test_a_null_counts_as_missing(redis_store, required, payload, outcome):
    from gateway.worker import NormalizeWorker
    from tests.test_worker import events, put

    text = ENFORCED.format(prefix=redis_store.keys.prefix, type="any", required=required)
    worker = NormalizeWorker(parse_config(text, "plan.yaml", {}), redis_store, "w")
    await worker.ensure_groups()
    await put(redis_store, "forms", "d", payload)
    await worker.read_once()
    quarantine = await redis_store.client.xrange(redis_store.keys.quarantine())
    if outcome == "event":
        assert [e["event"] for e in await events(redis_store)] == [b"Typed"]
        assert quarantine == []
    else:
        assert await events(redis_store) == []
        assert [q[b"reason"].decode() for _, q in quarantine] == [outcome]
