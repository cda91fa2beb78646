"""The tracking plan, as README.md writes it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.tracking import violations
from normalizers.event import Context, Event, SourceInfo, library

README = (Path(__file__).parents[1] / "README.md").read_text()
PLAN = re.search(r"```yaml\n(# tracking plan\n.*?)```", README, re.S).group(1)


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
    config = parse_config(PLAN, "README.md", {})
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
