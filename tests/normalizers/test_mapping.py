"""The YAML mapping engine: rules, functions, errors, and the dotted-path fast path."""

from __future__ import annotations

import jmespath
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import parse_config
from gateway.errors import ConfigError
from normalizers import Delivery, Mapper, normalize
from normalizers.mapping import compile_expression, headers_used
from tests.conftest import expected_message_id
from tests.normalizers.conftest import fixture


def expected_id(index: int, event: str, source: str = "s", delivery_id: str = "d-1") -> str:
    return expected_message_id(source, delivery_id, index, event)


def source(rules: str, source_type: str = "hmac", extra: str = "") -> dict:
    signature = "    signature_header: S\n" if source_type == "hmac" else ""
    text = (
        f"sources:\n  s:\n    type: {source_type}\n    secrets: [x]\n{signature}{extra}"
        f"    mappings:\n{rules}"
    )
    return parse_config(text, "m.yaml", {}).sources["s"]


def events(config, body, headers=None):
    delivery = Delivery(
        "s",
        config.__struct_config__.tag,
        "d-1",
        1_700_000_000_000,
        headers or {},
        msgspec.json.encode(body) if isinstance(body, dict) else body,
        config,
    )
    mapper = Mapper(config.mappings, config.user_id)
    return [msgspec.json.decode(msgspec.json.encode(e)) for e in normalize(delivery, mapper)]


def test_first_matching_rule_wins_and_fields_are_expressions():
    cfg = source(
        "      - when: \"kind == 'a'\"\n        event: A Happened\n"
        "        properties: {n: count, fixed: 5, nested: {x: obj.x}}\n"
        "      - when: \"kind == 'a'\"\n        event: Never\n"
    )
    [out] = events(cfg, {"kind": "a", "count": 3, "obj": {"x": "y"}})
    assert out["event"] == "A Happened"
    assert out["properties"] == {"n": 3, "fixed": 5, "nested": {"x": "y"}}


def test_no_matching_rule_falls_back_to_the_builtin_normalizer():
    cfg = source("      - when: \"type == 'never'\"\n        event: X\n")
    [out] = events(cfg, {"type": "invoice.paid", "data": {"id": "i1"}})
    assert out["event"] == "Invoice Paid"


def test_a_rule_can_extend_a_builtin_type():
    cfg = source(
        "      - when: \"type == 'charge.succeeded'\"\n        builtin: true\n"
        "        event: First Purchase\n        properties: {charge: data.object.id}\n",
        source_type="stripe",
    )
    out = events(cfg, fixture("stripe", "charge.succeeded"))
    assert [e["event"] for e in out] == ["Charge Succeeded", "First Purchase"]
    assert out[1]["properties"] == {"charge": "ch_3OkLmN2eZvKYlo2C1xyzabcd"}
    assert [e["messageId"] for e in out] == [
        expected_id(0, "Charge Succeeded"),
        expected_id(1, "First Purchase"),
    ]


def test_a_rule_can_override_a_builtin_type_or_drop_it():
    cfg = source(
        "      - when: \"type == 'charge.succeeded'\"\n        event: Paid\n"
        "      - when: \"type == 'charge.refunded'\"\n        drop: true\n",
        source_type="stripe",
    )
    assert [e["event"] for e in events(cfg, fixture("stripe", "charge.succeeded"))] == ["Paid"]
    assert events(cfg, fixture("stripe", "charge.refunded")) == []


def test_for_each_and_root_and_header():
    cfg = source(
        "      - when: \"header('X-Kind') == 'cart'\"\n        event: Item Bought\n"
        "        for_each: items\n"
        "        properties: {sku: sku, cart: root().cart_id, price: 'money(cents, `\"JPY\"`)'}\n"
    )
    out = events(
        cfg,
        {"cart_id": "c1", "items": [{"sku": "a", "cents": 500}, {"sku": "b", "cents": 7}]},
        {"x-kind": "cart"},
    )
    assert [e["properties"] for e in out] == [
        {"sku": "a", "cart": "c1", "price": 500},
        {"sku": "b", "cart": "c1", "price": 7},
    ]
    assert [e["messageId"] for e in out] == [
        expected_id(0, "Item Bought"),
        expected_id(1, "Item Bought"),
    ]


@pytest.mark.parametrize(
    ("expression", "data", "value"),
    [
        ("money(a, 'USD')", {"a": 1999}, 19.99),
        ("money(a, 'KWD')", {"a": "1234"}, 1.234),
        ("stripe_money(a, 'isk')", {"a": 500}, 5.0),
        ("currency(c)", {"c": "eur"}, "EUR"),
        ("iso_time(t)", {"t": 1700000000}, "2023-11-14T22:13:20.000Z"),
        ("lower(s)", {"s": "AbC"}, "abc"),
        ("upper(s)", {"s": "AbC"}, "ABC"),
        ("title(s)", {"s": "invoice.payment_failed"}, "Invoice Payment Failed"),
        (
            "sha256(s)",
            {"s": "a"},
            "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
        ),
        ("coalesce(a, b, c)", {"a": None, "b": "", "c": "x"}, "x"),
        ("coalesce(a)", {}, None),
    ],
)
def test_custom_functions(expression, data, value):
    assert compile_expression(expression, "p")(data) == value


@pytest.mark.parametrize(
    ("rules", "where"),
    [
        (
            "      - event: X\n        properties: {a: nope(b)}\n",
            "m.yaml:8: sources.s.mappings[0].properties.a: unknown function nope()",
        ),
        (
            "      - event: X\n        properties: {a: 'money(b)'}\n",
            "m.yaml:8: sources.s.mappings[0].properties.a: money() takes 2 argument(s), not 1",
        ),
        (
            "      - event: X\n        when: 'a =='\n",
            "m.yaml:8: sources.s.mappings[0].when: not a valid JMESPath expression (it ends",
        ),
        (
            "      - event: X\n        propertiez: {}\n",
            "m.yaml:8: sources.s.mappings[0].propertiez: unknown key `propertiez`; did you mean "
            "`properties`?",
        ),
        ("      - when: a\n", "m.yaml:7: sources.s.mappings[0]: a rule needs `event:`"),
        (
            "      - event: X\n        type: tracking\n",
            "m.yaml:8: sources.s.mappings[0].type: invalid value (valid: track, identify, group, "
            "page, screen, alias)",
        ),
        (
            "      - events: [{properties: {a: b}}]\n",
            "m.yaml:7: sources.s.mappings[0].events[0]: a track event needs `event:`",
        ),
        # header() with a computed name: the source could not know to keep that header.
        (
            "      - event: X\n        properties: {a: 'header(kind)'}\n",
            "m.yaml:8: sources.s.mappings[0].properties.a: header() needs the header's name as "
            "quoted text, e.g. header('X-Event-Kind')",
        ),
        (
            "      - event: X\n        when: \"header(join('-', ['X', 'Kind'])) == 'a'\"\n",
            "m.yaml:8: sources.s.mappings[0].when: header() needs the header's name as quoted",
        ),
        (
            "      - events: [{event: X, for_each: 'header(`1`)'}]\n",
            "m.yaml:7: sources.s.mappings[0].events[0].for_each: header() needs the header's name",
        ),
    ],
)
def test_mapping_mistakes_are_config_errors_with_their_place(rules, where):
    with pytest.raises(ConfigError) as e:
        source(rules)
    assert str(e.value).startswith(where), str(e.value)


def test_headers_used_are_every_literal_header_name_in_any_expression():
    cfg = source(
        "      - when: \"header('X-Kind') == 'a' && !header(`\\\"X-Not-Null\\\"`)\"\n"
        "        events:\n"
        "          - event: A\n            for_each: \"header('X-List') || items\"\n"
        "            properties: {p: {q: \"lower(header('X-Deep'))\"}, n: 5, s: sku}\n"
        "            traits: {t: \"header('X-Trait')\"}\n"
        "          - type: identify\n            anonymous_id: \"header('x-kind')\"\n"
        "            timestamp: \"coalesce(t, header('X-Time'))\"\n",
        extra="    user_id: \"header('X-User-Id')\"\n",
    )
    want = ("x-user-id", "x-kind", "x-not-null", "x-list", "x-deep", "x-trait", "x-time")
    assert headers_used(cfg.mappings, cfg.user_id) == want
    assert Mapper(cfg.mappings, cfg.user_id).headers == want
    assert headers_used(source("      - event: X\n        properties: {a: b}\n").mappings) == ()


def test_user_id_expression_applies_to_every_event_of_the_source():
    cfg = source("      - event: X\n", extra="    user_id: account.owner\n")
    [out] = events(cfg, {"account": {"owner": 42}})
    assert out["userId"] == "42" and "anonymousId" not in out


def test_a_rule_s_own_anonymous_id_is_kept_beside_a_user_id():
    cfg = source(
        "      - event: Booked\n        user_id: invitee.uid\n"
        "        anonymous_id: invitee.cookie\n"
    )
    [both] = events(cfg, {"invitee": {"uid": "u1", "cookie": "c-9"}})
    assert both["userId"] == "u1" and both["anonymousId"] == "c-9"
    [only] = events(cfg, {"invitee": {"cookie": "c-9"}})
    assert "userId" not in only and only["anonymousId"] == "c-9"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.sampled_from([0, 1, 0.0, 1.0, "", "0"])
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    data=json_values,
    path=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4).map(".".join),
)
def test_dotted_fast_path_agrees_with_jmespath(data, path):
    assert compile_expression(path, "p")(data) == jmespath.search(path, data)


FAST_SHAPES = [
    "a",
    "a.b",
    "a == b",
    "a != `1`",
    "a == `true`",
    "a.b == 'x'",
    "a && b",
    "a || b.c",
    "!a",
    "!(a == b)",
    "a && !b || c",
    "coalesce(a, b.c, c)",
    "coalesce(a.b, `3`)",
    "@",
    "a == `[1, 2]`",
    "a == b.c",
    "a == `0`",
    "a == `false`",
    "lower(a)",
    "upper(a.b)",
    "title(a)",
    "sha256(a)",
    "money(a, 'USD')",
    "money(a, b)",
    "stripe_money(a, 'JPY')",
    "currency(a)",
    "iso_time(a)",
    "coalesce(lower(a), b)",
    "a\n",
    " a.b ",
]


def same(x, y) -> bool:
    """Equal and of the same JSON types all the way down (True is not 1 here)."""
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
    if isinstance(x, list):
        return isinstance(y, list) and len(x) == len(y) and all(map(same, x, y))
    return type(x) is type(y) and x == y


@pytest.mark.parametrize("expression", FAST_SHAPES)
@given(data=json_values)
def test_fast_evaluator_agrees_with_jmespath(expression, data):
    from normalizers.mapping import _OPTIONS

    expected = jmespath.search(expression, data, options=_OPTIONS)
    fast = compile_expression(expression, "p")
    assert "search" not in fast.__code__.co_names  # the plain-Python path, not jmespath's
    assert same(fast(data), expected)


def test_for_each_that_finds_nothing_is_an_error_not_a_silent_drop():
    from normalizers import NormalizeError

    cfg = source("      - event: Item\n        for_each: itemz\n")
    with pytest.raises(NormalizeError, match="for_each found nothing"):
        events(cfg, {"items": [1]})
    assert events(cfg, {"itemz": []}) == []  # an empty list is a real "none"


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("      - timestamp: t\n        events: [{event: X}]\n", "move timestamp into the events"),
        ("      - type: identify\n        event: X\n", "`event:` names track events"),
    ],
)
def test_rule_shapes_that_would_be_ignored_are_refused(rules, message):
    with pytest.raises(ConfigError, match=message):
        source(rules)
