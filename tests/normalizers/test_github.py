"""GitHub: every documented event type (octokit's real examples) gets its pinned name."""

from __future__ import annotations

import json

import pytest

from normalizers import NormalizeError
from tests.normalizers.conftest import FIXTURES, run, subset

EXAMPLES = json.loads((FIXTURES / "github" / "examples.json").read_text())
# "event.action" (or "event") -> the name it must become; reviewed by hand, see README.md.
EXPECTED = json.loads((FIXTURES / "github" / "expected_names.json").read_text())


def _key(event, example):
    return f"{event}.{example['action']}" if example.get("action") else event


ALL = [
    pytest.param(event, example, id=_key(event, example))
    for event, examples in EXAMPLES.items()
    for example in examples
]


def test_the_name_table_covers_exactly_the_documented_examples():
    assert sorted(EXPECTED) == sorted(_key(e, x) for e, xs in EXAMPLES.items() for x in xs)
    assert len(EXPECTED) == 161


@pytest.mark.parametrize(("event", "payload"), ALL)
def test_every_documented_event_gets_its_pinned_name(event, payload):
    key = _key(event, payload)
    events = run("github", payload, {"x-github-event": event})
    if EXPECTED[key] is None:  # ping: the hook was created, nothing happened
        assert events == []
        return
    [out] = events
    assert out["event"] == EXPECTED[key]
    assert out["context"]["source"]["eventType"] == key
    sender = payload.get("sender")
    if sender:
        assert out["anonymousId"] == f"github:{sender['id']}"
        assert out["context"]["externalIds"] == [
            {"id": str(sender["id"]), "type": "github_user_id"}
        ]
    else:  # a security advisory is about no person at all (README "Identity")
        assert out["anonymousId"] == "github:system"
        assert "externalIds" not in out["context"]
    assert "userId" not in out
    if payload.get("repository"):
        assert out["properties"]["repository"] == payload["repository"]["full_name"]
    else:
        assert "repository" not in out["properties"]


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
        (
            "page_build",
            None,
            {"timestamp": "2019-05-15T15:20:40.000Z", "properties": {"status": "built"}},
        ),
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


@pytest.mark.parametrize(
    ("event", "action", "name"),
    [
        ("sponsorship", "pending_cancellation", "Sponsorship Cancellation Scheduled"),
        ("marketplace_purchase", "pending_change", "Marketplace Plan Change Scheduled"),
        (
            "marketplace_purchase",
            "pending_change_cancelled",
            "Marketplace Plan Pending Change Cancelled",
        ),
    ],
)
def test_documented_actions_without_an_example_are_past_tense(event, action, name):
    [out] = run(
        "github", {"action": action, "sender": {"id": 7, "login": "x"}}, {"x-github-event": event}
    )
    assert out["event"] == name


def test_no_event_header_is_an_error():
    with pytest.raises(NormalizeError, match="X-GitHub-Event"):
        run("github", {"action": "opened"})
