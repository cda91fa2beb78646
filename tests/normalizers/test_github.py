"""GitHub: every documented event type (octokit's real examples) gets its pinned name."""

from __future__ import annotations

import json

import pytest

from normalizers import NormalizeError
from tests.normalizers.conftest import FIXTURES, RECEIVED_AT, assert_same, expected_event, run

EXAMPLES = json.loads((FIXTURES / "github" / "examples.json").read_text())
# "event.action" (or "event") -> the name it must become; reviewed by hand, see docs/events.md.
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
    else:  # a security advisory is about no person at all (docs/events.md "Identity")
        assert out["anonymousId"] == "github:system"
        assert "externalIds" not in out["context"]
    assert "userId" not in out
    if payload.get("repository"):
        assert out["properties"]["repository"] == payload["repository"]["full_name"]
    else:
        assert "repository" not in out["properties"]


def _example(event, action=None):
    return next(e for e in EXAMPLES[event] if e.get("action") == action)


def _edited(example, edit):
    """A deep copy of `example` with `edit` merged in (nested dicts merged key by key)."""
    out = json.loads(json.dumps(example))

    def merge(into, changes):
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    merge(out, edit)
    return out


# What octokit's examples are about: Codertocat's Hello-World, pull request #2 and issue #1.
HELLO_WORLD = {
    "repository": "Codertocat/Hello-World",
    "repository_id": 186853002,
    "sender": "Codertocat",
}
PULL_REQUEST_2 = HELLO_WORLD | {
    "url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/2",
    "id": 279147437,
    "node_id": "MDExOlB1bGxSZXF1ZXN0Mjc5MTQ3NDM3",
    "html_url": "https://github.com/Codertocat/Hello-World/pull/2",
    "number": 2,
    "state": "open",
    "locked": False,
    "title": "Update the README with new information.",
    "created_at": "2019-05-15T15:20:33Z",
    "updated_at": "2019-05-15T15:20:33Z",
    "author_association": "OWNER",
    "draft": False,
    "merged": False,
    "mergeable_state": "unknown",
    "comments": 0,
    "review_comments": 0,
    "maintainer_can_modify": False,
    "commits": 1,
    "additions": 1,
    "deletions": 1,
    "changed_files": 1,
}
ISSUE_1 = HELLO_WORLD | {
    "url": "https://api.github.com/repos/Codertocat/Hello-World/issues/1",
    "html_url": "https://github.com/Codertocat/Hello-World/issues/1",
    "id": 444500041,
    "node_id": "MDU6SXNzdWU0NDQ1MDAwNDE=",
    "number": 1,
    "title": "Spelling error in the README file",
    "state": "open",
    "locked": False,
    "comments": 0,
    "created_at": "2019-05-15T15:20:18Z",
    "updated_at": "2019-05-15T15:20:18Z",
    "author_association": "OWNER",
    "draft": False,
}
CODERTOCAT = "21031067"

NAMES_AND_TIMES = [
    pytest.param(
        "pull_request",
        "opened",
        {},
        "Pull Request Opened",
        "2019-05-15T15:20:33.000Z",
        CODERTOCAT,
        PULL_REQUEST_2 | {"action": "opened"},
        id="pull-request-opened",
    ),
    pytest.param(
        "pull_request",
        "opened",
        {
            "action": "edited",
            "changes": {"title": {"from": "Update the README"}},
            "pull_request": {"updated_at": "2019-05-15T15:21:10Z"},
        },
        "Pull Request Edited",
        "2019-05-15T15:21:10.000Z",  # the edit: updated_at
        CODERTOCAT,
        PULL_REQUEST_2 | {"action": "edited", "updated_at": "2019-05-15T15:21:10Z"},
        id="pull-request-edited",
    ),
    pytest.param(
        "pull_request",
        "synchronize",
        {},
        "Pull Request Synchronized",
        "2019-05-15T15:20:33.000Z",
        CODERTOCAT,
        PULL_REQUEST_2
        | {
            "action": "synchronize",
            "before": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e",
            "after": "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
        },
        id="pull-request-synchronize-is-past-tense",
    ),
    pytest.param(
        "issues",
        "opened",
        {},
        "Issue Opened",
        "2019-05-15T15:20:18.000Z",
        CODERTOCAT,
        ISSUE_1 | {"action": "opened"},
        id="issue-opened",
    ),
    pytest.param(
        "issues",
        "opened",
        {
            "action": "closed",
            # updated_at a second later, so that the time taken is visibly closed_at
            "issue": {
                "state": "closed",
                "closed_at": "2019-05-15T15:20:55Z",
                "updated_at": "2019-05-15T15:20:56Z",
            },
        },
        "Issue Closed",
        "2019-05-15T15:20:55.000Z",  # closed_at
        CODERTOCAT,
        ISSUE_1
        | {
            "action": "closed",
            "state": "closed",
            "closed_at": "2019-05-15T15:20:55Z",
            "updated_at": "2019-05-15T15:20:56Z",
        },
        id="issue-closed-at-its-closed-at",
    ),
    pytest.param(
        "star",
        "created",
        {},
        "Star Created",
        "2019-05-15T15:20:40.000Z",
        CODERTOCAT,
        HELLO_WORLD | {"action": "created", "starred_at": "2019-05-15T15:20:40Z"},
        id="star-created-at-starred-at",
    ),
    pytest.param(
        "push",
        None,
        {},
        "Push",
        "2019-05-15T15:20:41.000Z",  # head_commit.timestamp
        CODERTOCAT,
        HELLO_WORLD
        | {
            "ref": "refs/tags/simple-tag",
            "before": "0000000000000000000000000000000000000000",
            "after": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "created": True,
            "deleted": False,
            "forced": False,
            "commits": 0,
            "head_commit": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "head_commit_message": "Adding a .gitignore file",
            "pusher": "Codertocat",
            "compare": "https://github.com/Codertocat/Hello-World/compare/simple-tag",
        },
        id="push",
    ),
    pytest.param(
        "create",
        None,
        {},
        "Tag Created",
        RECEIVED_AT,  # a create or delete payload has no time of its own
        CODERTOCAT,
        HELLO_WORLD
        | {
            "ref": "simple-tag",
            "ref_type": "tag",
            "master_branch": "master",
            "pusher_type": "user",
        },
        id="tag-created",
    ),
    pytest.param(
        "create",
        None,
        {"ref": "feature/login", "ref_type": "branch"},
        "Branch Created",
        RECEIVED_AT,
        CODERTOCAT,
        HELLO_WORLD
        | {
            "ref": "feature/login",
            "ref_type": "branch",
            "master_branch": "master",
            "pusher_type": "user",
        },
        id="branch-created",
    ),
    pytest.param(
        "delete",
        None,
        {"ref_type": "tag"},
        "Tag Deleted",
        RECEIVED_AT,
        CODERTOCAT,
        HELLO_WORLD | {"ref": "simple-tag", "ref_type": "tag", "pusher_type": "user"},
        id="tag-deleted",
    ),
    pytest.param(
        "release",
        "published",
        {},
        "Release Published",
        "2019-05-15T15:20:53.000Z",  # published_at, not created_at
        CODERTOCAT,
        HELLO_WORLD
        | {
            "action": "published",
            "url": "https://api.github.com/repos/Codertocat/Hello-World/releases/17372790",
            "html_url": "https://github.com/Codertocat/Hello-World/releases/tag/0.0.1",
            "id": 17372790,
            "node_id": "MDc6UmVsZWFzZTE3MzcyNzkw",
            "tag_name": "0.0.1",
            "target_commitish": "master",
            "draft": False,
            "prerelease": False,
            "created_at": "2019-05-15T15:19:25Z",
            "published_at": "2019-05-15T15:20:53Z",
        },
        id="release-published-at-published-at",
    ),
    pytest.param(
        "workflow_run",
        "completed",
        {},
        "Workflow Run Completed",
        "2021-12-16T19:37:22.000Z",  # updated_at (the run has no completed_at)
        "54248166",
        {
            "action": "completed",
            "repository": "Codertocat/Hello-World",
            "repository_id": 283462325,
            "organization": "Codertocat",
            "sender": "Codertocat",
            "check_suite_id": 4683454167,
            "check_suite_node_id": "CS_kwDOF6lyTM8AAAABFyfW1w",
            "created_at": "2021-12-16T19:37:22Z",
            "event": "workflow_dispatch",
            "head_branch": "main",
            "head_sha": "5779607b49aab1200488439f02372c57b4f75444",
            "html_url": "https://github.com/octo-org/octo-repo/actions/runs/1589141559",
            "id": 1589141559,
            "name": "Manually triggered workflow",
            "node_id": "WFR_kwLOF6lyTM5euGA3",
            "run_attempt": 1,
            "run_number": 36,
            "run_started_at": "2021-12-16T19:37:22Z",
            "status": "queued",  # sic: octokit's example
            "updated_at": "2021-12-16T19:37:22Z",
            "url": "https://api.github.com/repos/octo-org/octo-repo/actions/runs/1589141559",
            "workflow_id": 16340987,
        },
        id="workflow-run-completed",
    ),
    pytest.param(
        "workflow_run",
        "requested",
        {
            "action": "in_progress",
            "workflow_run": {
                "status": "in_progress",
                "run_started_at": "2020-10-05T16:33:49Z",
                "updated_at": "2020-10-05T16:33:52Z",
            },
        },
        "Workflow Run Started",  # as workflow_job's in_progress: "Workflow Job Started"
        "2020-10-05T16:33:49.000Z",  # when it started (run_started_at), not updated_at
        "15669918",
        {
            "action": "in_progress",
            "repository": "octo-org/octo-repo",
            "repository_id": 300029405,
            "organization": "octo-org",
            "sender": "Codertocat",
            "name": "",
            "check_suite_id": 1291536064,
            "check_suite_node_id": "MDg6V29ya2Zsb3cyODIzNTI1",
            "created_at": "2020-10-05T16:33:24Z",
            "event": "repository_dispatch",
            "head_branch": "master",
            "head_sha": "3484a3fb816e0859fd6e1cea078d76385ff50625",
            "path": ".github/workflows/test.yml",
            "display_title": "ci(action): update actions/setup-node digest to 8c91899",
            "html_url": "https://github.com/octo-org/octo-repo/actions/runs/289782451",
            "id": 289782451,
            "node_id": "MDExOldvcmtmbG93UnVuMjg5NzgyNDUx",
            "run_number": 163,
            "run_attempt": 1,
            "run_started_at": "2020-10-05T16:33:49Z",
            "status": "in_progress",
            "updated_at": "2020-10-05T16:33:52Z",
            "url": "https://api.github.com/repos/octo-org/octo-repo/actions/runs/289782451",
            "workflow_id": 2823525,
        },
        id="workflow-run-in-progress-is-started",
    ),
    pytest.param(
        "page_build",
        None,
        {},
        "Page Build Completed",
        "2019-05-15T15:20:40.000Z",  # the build's updated_at
        CODERTOCAT,
        HELLO_WORLD
        | {
            "url": "https://api.github.com/repos/Codertocat/Hello-World/pages/builds/130514899",
            "status": "built",
            "commit": "507fc9acd0d04ac4a9db87d12cb228c052cd813a",
            "duration": 16984,
            "created_at": "2019-05-15T15:20:23Z",
            "updated_at": "2019-05-15T15:20:40Z",
            "id": 130514899,
        },
        id="page-build",
    ),
]


@pytest.mark.parametrize(
    ("event", "example", "edit", "name", "timestamp", "sender_id", "properties"),
    NAMES_AND_TIMES,
)
def test_names_and_times(event, example, edit, name, timestamp, sender_id, properties):
    """The whole event an example (`edit`ed: another action, a branch instead of a tag)
    becomes: its name, the time of what happened, the sender, every property."""
    payload = _edited(_example(event, example), edit)
    action = payload.get("action")
    [out] = run("github", payload, {"x-github-event": event})
    expected = expected_event(
        "github",
        f"{event}.{action}" if action else event,
        ("anonymousId", f"github:{sender_id}"),
        timestamp,
        event=name,
        properties=properties,
        external_ids=[{"id": sender_id, "type": "github_user_id"}],
    )
    assert_same(out, expected)


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
