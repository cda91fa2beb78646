"""deploy/: the Prometheus alerting rules and the Grafana dashboard.

Both files are loaded as Prometheus and Grafana would read them and their structure is
checked; then every PromQL expression in them is parsed with promql-parser (Python
binding of a Rust port of Prometheus's own parser, not our code) and each metric name,
label name and label value it selects or groups by is looked up in what the real gateway
exports after real traffic: webhooks accepted, duplicated, refused and answered 503 (a
Redis that does not answer), normalized (one linked into the identity graph) and
quarantined, and delivered to local HTTP servers that answer 200, 500 then 200, and 400.
A rule on a renamed metric or a misspelt label would never fire; here it fails.

The metrics text is `app.state.metrics.render()`, what /metrics serves, read without
going through a listener.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.deliver import DeliverWorker
from gateway.store import Store
from gateway.worker import NormalizeWorker
from tests.conftest import free_port, gateway_client, until
from tests.destinations.conftest import VendorServer

ROOT = Path(__file__).parents[1]
RULES_FILE = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD_FILE = ROOT / "deploy" / "grafana" / "webhook-gateway.json"
RULES = yaml.safe_load(RULES_FILE.read_text())
DASHBOARD = json.loads(DASHBOARD_FILE.read_text())

# Labels Prometheus adds to every scraped series, and its own per-target series.
TARGET_LABELS = {"job", "instance"}
PROMETHEUS_OWN = {"up"}
# Grafana's variables, replaced by what Grafana would put there before Prometheus parses.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "6h",
    "$source": ".*",
    "$destination": ".*",
}
# A dashboard variable's query: label_values(metric, label), Grafana's own syntax.
LABEL_VALUES = re.compile(r"^label_values\((\w+),\s*(\w+)\)$")


def rules() -> list[dict[str, Any]]:
    return [rule for group in RULES["groups"] for rule in group["rules"]]


def panels() -> list[dict[str, Any]]:
    """Every panel, those inside rows too."""
    out = []
    for panel in DASHBOARD["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every rule and every dashboard target, Grafana's variables
    replaced."""
    found = [(f"rule {r['alert']}", r["expr"]) for r in rules()]
    for panel in panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((f"panel {panel['title']!r} {target['refId']}", expr))
    return found


# -- (a) the files' structure -------------------------------------------------------


def test_the_rule_file_has_groups_of_complete_alerting_rules():
    assert RULES["groups"], "no rule groups"
    for group in RULES["groups"]:
        assert group["name"] and group["rules"], group
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)), "alert names repeat"
    for rule in rules():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert promql_parser.parse_duration(rule["for"]).total_seconds() > 0, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        promql_parser.parse(rule["expr"])  # raises on a syntax error


def test_the_rules_cover_what_an_operator_must_hear_about():
    """Down, Redis refusing writes, dead letters, failing and slow destinations, lag,
    the quarantine and a silent source: one rule each, on the metric that tells it."""
    by_metric = defaultdict(set)
    for rule in rules():
        for selector, _ in selectors(promql_parser.parse(rule["expr"])):
            by_metric[selector.name].add(rule["alert"])
    assert by_metric["up"] == {"WebhookGatewayDown"}
    assert len(by_metric["gateway_deliveries_total"]) == 2  # 503s; a silent source
    assert len(by_metric["gateway_destination_events_total"]) == 2  # dead letters; ratio
    for metric in (
        "gateway_destination_batch_seconds_bucket",
        "gateway_stream_lag",
        "gateway_quarantined_total",
    ):
        assert len(by_metric[metric]) == 1, metric


def test_the_dashboard_is_an_importable_model_with_a_datasource_input():
    [source] = DASHBOARD["__inputs"]
    assert source["name"] == "DS_PROMETHEUS"
    assert (source["type"], source["pluginId"]) == ("datasource", "prometheus")
    assert DASHBOARD["uid"] and DASHBOARD["title"] and DASHBOARD["schemaVersion"] >= 36
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    graphs = [panel for panel in panels() if panel["type"] != "row"]
    assert graphs
    for panel in graphs:
        assert panel["title"] and {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
            assert target["expr"].strip(), panel["title"]
    # Nothing points at a datasource of the machine it was exported from.
    uids = re.findall(r'"uid":\s*"([^"]*)"', DASHBOARD_FILE.read_text())
    assert set(uids) <= {"${DS_PROMETHEUS}", "-- Grafana --", DASHBOARD["uid"]}


def test_the_dashboard_shows_what_the_issue_asks_for():
    shown: dict[str, set[str]] = defaultdict(set)
    quantiles = set()
    for where, expr in expressions():
        if not where.startswith("panel"):
            continue
        tree = promql_parser.parse(expr)
        for selector, grouped in selectors(tree):
            shown[selector.name] |= grouped
        quantiles |= histogram_quantiles(tree)
    assert {"source", "outcome"} <= shown["gateway_deliveries_total"]  # per source
    assert "source" in shown["gateway_events_total"]
    assert {"destination", "outcome"} <= shown["gateway_destination_events_total"]
    assert {"le", "destination"} <= shown["gateway_destination_batch_seconds_bucket"]
    assert {0.5, 0.99} <= quantiles  # batch latency p50 and p99, from the histogram
    assert {"stream", "group"} <= shown["gateway_stream_lag"]
    assert {"source", "stage"} <= shown["gateway_quarantined_total"]


# -- walking PromQL ------------------------------------------------------------------


def selectors(node: Any, grouped: frozenset[str] = frozenset()) -> Iterator[tuple[Any, set]]:
    """Every vector selector in the expression, with the labels the expression groups or
    matches it by (`by (...)`, `on (...)`): those must exist on its series too."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node, set(grouped)
    elif isinstance(node, promql_parser.MatrixSelector):
        yield from selectors(node.vector_selector, grouped)
    elif isinstance(node, promql_parser.AggregateExpr):
        modifier = node.modifier
        if modifier is not None and modifier.type == promql_parser.AggModifierType.By:
            grouped = grouped | set(modifier.labels)
        yield from selectors(node.expr, grouped)
    elif isinstance(node, promql_parser.BinaryExpr):
        matching = node.modifier.matching if node.modifier is not None else None
        if matching is not None and matching.type == promql_parser.LabelModifierType.Include:
            grouped = grouped | set(matching.labels)
        yield from selectors(node.lhs, grouped)
        yield from selectors(node.rhs, grouped)
    elif isinstance(node, promql_parser.Call):
        for arg in node.args:
            yield from selectors(arg, grouped)
    elif isinstance(
        node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr
    ):
        yield from selectors(node.expr, grouped)
    else:
        assert isinstance(node, promql_parser.NumberLiteral | promql_parser.StringLiteral), node


def histogram_quantiles(node: Any) -> set[float]:
    found = set()

    def visit(n: Any) -> None:
        if isinstance(n, promql_parser.Call) and n.func.name == "histogram_quantile":
            found.add(n.args[0].val)

    promql_parser.walk(node, visit, None)
    return found


def regex_alternatives(pattern: str) -> list[str] | None:
    """`a|b|c` of plain words: the values it names; None for a real pattern."""
    words = pattern.split("|")
    return words if all(re.fullmatch(r"\w+", w) for w in words) else None


# -- (b) every name against the real /metrics ---------------------------------------

CFG = """
schema: enforce
events:
  Thing Happened:
    properties:
      size: {{type: integer, required: true}}
sources:
  acme:
    type: hmac
    secrets: [s]
    signature_header: Sig
    delivery_id_header: Id
    user_id: user
    mappings:
      - event: Thing Happened
        properties: {{size: size}}
destinations:
  fine: {{type: http, url: "{vendor}/fine", batch: true, linger: 10ms}}
  flaky: {{type: http, url: "{vendor}/flaky", batch: true, linger: 10ms, backoff: 10ms}}
  refusing: {{type: http, url: "{vendor}/refusing", batch: true, linger: 10ms}}
"""


def signed(body: bytes, delivery: str) -> dict[str, str]:
    return {"sig": hmac.new(b"s", body, hashlib.sha256).hexdigest(), "id": delivery}


def exported(text: str) -> dict[str, dict[str, set[str]]]:
    """{sample name: {label: values}} from Prometheus text, by prometheus_client's parser."""
    out: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = out[sample.name]
            for label, value in sample.labels.items():
                labels[label].add(value)
    return out


@pytest.fixture
def vendor_answers():
    """A local HTTP server: /fine answers 200, /flaky 500 once then 200, /refusing 400."""
    server = VendorServer()
    flaky = iter([(500, {}, b'{"error": "try later"}')])

    def judge(seen):
        if seen.path == "/fine":
            return (200, {}, b"{}")
        if seen.path == "/flaky":
            return next(flaky, (200, {}, b"{}"))
        return (400, {}, b'{"error": "bad event"}')

    server.default = judge
    server.start()
    yield server
    server.stop(wait=False)


async def real_metrics(redis_store: Store, vendor: VendorServer) -> str:
    cfg = CFG.format(vendor=vendor.url)
    async with gateway_client(cfg, redis_store) as client:
        for delivery, body in (
            ("a", b'{"size": 3, "user": "u1"}'),
            ("b", b'{"size": 4}'),
            ("c", b"<xml/>"),
        ):
            r = await client.post("/webhooks/acme", content=body, headers=signed(body, delivery))
            assert r.json()["status"] == "accepted"
        dup = await client.post("/webhooks/acme", content=b"{}", headers=signed(b"{}", "a"))
        assert dup.json()["status"] == "duplicate"
        bad = await client.post("/webhooks/acme", content=b"{}", headers={"sig": "0", "id": "x"})
        assert bad.status_code == 401
        assert (await client.post("/webhooks/nobody", content=b"{}")).status_code == 404
        app = client._transport.app  # type: ignore[attr-defined]
        metrics, config = app.state.metrics, app.state.config
    deliver = DeliverWorker(config, redis_store, "d", metrics)
    for runner in deliver.runners:
        await runner.ensure_group()  # before the events exist: they start at the latest
    normalize = NormalizeWorker(config, redis_store, "n", metrics)
    await normalize.ensure_groups()
    assert await normalize.read_once() == 3
    stop = asyncio.Event()
    task = asyncio.create_task(deliver.run(stop))

    def counted(name: str, **labels: str) -> float:
        for family in text_string_to_metric_families(metrics.render().decode()):
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return s.value
        return 0

    def delivered() -> bool:
        events = "gateway_destination_events_total"
        return (
            counted(events, destination="fine", outcome="sent") == 2
            and counted(events, destination="flaky", outcome="sent") == 2
            and counted(events, destination="refusing", outcome="dead_lettered") == 2
        )

    try:
        await until(delivered, seconds=20, what="every destination's outcome")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    # /metrics reads the lag from Redis when it is scraped; so does this.
    streams = {redis_store.keys.raw("acme"): "raw:acme", redis_store.keys.events(): "events"}
    await metrics.update_lag(redis_store, streams)
    return metrics.render().decode()


async def unavailable_metrics() -> str:
    """A gateway whose Redis does not answer: the webhook gets 503, counted `unavailable`."""
    dead = Store.connect(f"redis://127.0.0.1:{free_port()}/0", "deploy-test", timeout=0.5)
    cfg = CFG.format(vendor="http://127.0.0.1:9")
    try:
        async with gateway_client(cfg, dead) as client:
            body = b'{"size": 1}'
            r = await client.post("/webhooks/acme", content=body, headers=signed(body, "u"))
            assert r.status_code == 503
            return client._transport.app.state.metrics.render().decode()  # type: ignore[attr-defined]
    finally:
        await dead.close()


async def test_every_metric_and_label_the_rules_and_dashboard_use_is_exported(
    redis_store, vendor_answers
):
    text = await real_metrics(redis_store, vendor_answers) + await unavailable_metrics()
    real = exported(text)
    problems = []
    checked = 0
    for where, expr in expressions():
        for selector, grouped in selectors(promql_parser.parse(expr)):
            checked += 1
            name = selector.name
            if name in PROMETHEUS_OWN:
                continue
            if name not in real:
                problems.append(f"{where}: {name} is not exported")
                continue
            labels = real[name]
            for label in grouped - TARGET_LABELS - set(labels):
                problems.append(f"{where}: {name} has no label {label!r} to group by")
            for matcher in selector.matchers.matchers:
                if matcher.name in TARGET_LABELS:
                    continue
                if matcher.name not in labels:
                    problems.append(f"{where}: {name} has no label {matcher.name!r}")
                    continue
                if matcher.op in (promql_parser.MatchOp.Equal, promql_parser.MatchOp.NotEqual):
                    values = [matcher.value]
                else:
                    values = regex_alternatives(matcher.value) or []
                for value in values:
                    if value not in labels[matcher.name]:
                        problems.append(
                            f"{where}: {name}{{{matcher.name}}} is never {value!r} "
                            f"(seen: {sorted(labels[matcher.name])})"
                        )
    assert checked >= len(expressions())
    assert not problems, "\n".join(problems)


async def test_the_dashboard_variables_list_real_label_values(redis_store, vendor_answers):
    real = exported(await real_metrics(redis_store, vendor_answers))
    variables = DASHBOARD["templating"]["list"]
    assert {v["name"] for v in variables} >= {"source", "destination"}
    for variable in variables:
        metric, label = LABEL_VALUES.match(variable["query"]["query"]).groups()
        assert metric in real and label in real[metric], variable["name"]
    assert real["gateway_deliveries_total"]["source"] >= {"acme"}
    assert real["gateway_destination_events_total"]["destination"] == {
        "fine",
        "flaky",
        "refusing",
    }
