"""GitHub: every documented event type (octokit's real examples) gets an "Object Action" name."""

from __future__ import annotations

import json
import re

import pytest

from normalizers import NormalizeError
from tests.normalizers.conftest import FIXTURES, run, subset

EXAMPLES = json.loads((FIXTURES / "github" / "examples.json").read_text())
ALL = [
    pytest.param(event, example, id=f"{event}.{example.get('action') or '-'}")
    for event, examples in EXAMPLES.items()
    for example in examples
]
NAME = re.compile(r"^[A-Z][A-Za-z0-9]*( [A-Za-z0-9]+)*$")


@pytest.mark.parametrize(("event", "payload"), ALL)
def test_every_documented_event_gets_a_sensible_name(event, payload):
    events = run("github", payload, {"x-github-event": event})
    if event == "ping":
        assert events == []
        return
    [out] = events
    assert NAME.match(out["event"]), out["event"]
    assert out["context"]["source"]["eventType"].startswith(event)
    sender = payload.get("sender")
    if sender:
        assert out["anonymousId"] == f"github:{sender['id']}"
        assert out["context"]["externalIds"] == [
            {"id": str(sender["id"]), "type": "github_user_id"}
        ]
    if payload.get("repository"):
        assert out["properties"]["repository"] == payload["repository"]["full_name"]


def _example(event, action=None):
    return next(e for e in EXAMPLES[event] if e.get("action") == action)


@pytest.mark.parametrize(
    ("event", "action", "expected"),
    [
        (
            "pull_request",
            "opened",
            {"event": "Pull Request Opened", "properties": {"number": 2, "state": "open"}},
        ),
        ("issues", "opened", {"event": "Issue Opened", "timestamp": "2019-05-15T15:20:18.000Z"}),
        ("star", "created", {"event": "Star Created", "timestamp": "2019-05-15T15:20:40.000Z"}),
        (
            "push",
            None,
            {"event": "Push", "properties": {"ref": "refs/tags/simple-tag", "commits": 0}},
        ),
        ("create", None, {"event": "Tag Created"}),
        ("pull_request", "synchronize", {"event": "Pull Request Synchronized"}),
        ("release", "published", {"event": "Release Published"}),
        ("workflow_run", "completed", {"event": "Workflow Run Completed"}),
    ],
)
def test_names_and_times(event, action, expected):
    [out] = run("github", _example(event, action), {"x-github-event": event})
    assert subset(expected, out), out


def test_merged_pull_request_is_merged_not_closed():
    payload = json.loads(json.dumps(_example("pull_request", "closed")))
    payload["pull_request"]["merged"] = True
    [out] = run("github", payload, {"x-github-event": "pull_request"})
    assert out["event"] == "Pull Request Merged"


def test_an_event_type_github_adds_later_is_named_by_the_rule():
    [out] = run(
        "github",
        {"action": "frobnicated", "sender": {"id": 7, "login": "x"}},
        {"x-github-event": "shiny_new_thing"},
    )
    assert out["event"] == "Shiny New Thing Frobnicated"


def test_no_event_header_is_an_error():
    with pytest.raises(NormalizeError, match="X-GitHub-Event"):
        run("github", {"action": "opened"})
