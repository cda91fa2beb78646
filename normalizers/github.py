"""GitHub webhooks -> events named "Object Action" from X-GitHub-Event and `action`.

`pull_request` + `opened` -> `Pull Request Opened`, a merged close -> `Pull Request
Merged`, `star` + `created` -> `Star Created`, `push` -> `Push`, `create` of a branch ->
`Branch Created`. Any event type GitHub adds later is named by the same rule. `ping`
(sent when a hook is created) produces no event. The sender is the person
(`github:<user id>`); the time is the main object's own time when it has one.
https://docs.github.com/en/webhooks/webhook-events-and-payloads
"""

from __future__ import annotations

from typing import Any

from .base import Delivery, Draft, NormalizeError, Person, dig, register, scalars, title

# The object an event is about, when its name is not the event's name in the singular.
OBJECTS = {
    "issues": "Issue",
    "projects_v2_item": "Project Item",
    "projects_v2": "Project",
    "repository_vulnerability_alert": "Vulnerability Alert",
    "installation_repositories": "Installation Repositories",
    "github_app_authorization": "GitHub App Authorization",
    # GitHub: "Someone purchased / cancelled / changed a GitHub Marketplace plan".
    "marketplace_purchase": "Marketplace Plan",
    # "activity relating to a webhook itself"
    "meta": "Webhook",
    # "owners block or unblock a non-member": the user is what is blocked.
    "org_block": "User",
}
# Actions GitHub names in the present tense, or not as a verb.
ACTIONS = {
    "synchronize": "synchronized",
    "create": "created",
    "dismiss": "dismissed",
    "resolve": "resolved",
    "requested_action": "action requested",
    "checks_requested": "checks requested",
    "in_progress": "started",
    "suspend": "suspended",
    "unsuspend": "unsuspended",
    "ready_for_review": "marked ready for review",
    "pending_tier_change": "tier change scheduled",
    "pending_cancellation": "cancellation scheduled",
    "pending_change": "change scheduled",
}
# Events without an action.
NAMES = {
    "push": "Push",
    "fork": "Repository Forked",
    "gollum": "Wiki Updated",
    "public": "Repository Made Public",
    "status": "Commit Status Updated",
    # Both are sent whatever the outcome (`build.status`, `status`: errored, failure, ...).
    "page_build": "Page Build Completed",
    "repository_import": "Repository Import Completed",
    "team_add": "Team Added to Repository",
    "workflow_dispatch": "Workflow Dispatched",
    "deploy_key": "Deploy Key",
}
# Keys of the payload that never describe the main object.
_ENVELOPE = {
    "action",
    "repository",
    "organization",
    "sender",
    "installation",
    "enterprise",
    "changes",
}
# Where an event's object lives when not under the event's own name.
_OBJECT_KEYS = {
    "issue_comment": "comment",
    "commit_comment": "comment",
    "discussion_comment": "comment",
    "pull_request_review_comment": "comment",
    "pull_request_review": "review",
    "pull_request_review_thread": "thread",
    "membership": "team",
    "org_block": "blocked_user",
    "code_scanning_alert": "alert",
    "dependabot_alert": "alert",
    "secret_scanning_alert": "alert",
    "repository_vulnerability_alert": "alert",
    "page_build": "build",
}
# The time an action happened at, most specific first.
_ACTION_TIMES = {
    "published": ("published_at",),
    "released": ("published_at",),
    "prereleased": ("published_at",),
    "closed": ("merged_at", "closed_at"),
    "submitted": ("submitted_at",),
    "completed": ("completed_at",),
    "created": ("created_at",),
    "opened": ("created_at",),
    "started": ("started_at",),
    # workflow_run / workflow_job in_progress: when the run or job began, not its last update
    "in_progress": ("run_started_at", "started_at"),
}
_TIME_KEYS = (
    "updated_at",
    "submitted_at",
    "completed_at",
    "started_at",
    "created_at",
    "starred_at",
    "timestamp",
)


@register("github")
def normalize(delivery: Delivery) -> list[Draft]:
    kind = delivery.headers.get("x-github-event")
    if not kind:
        raise NormalizeError("no X-GitHub-Event header: cannot tell what happened")
    payload = delivery.object
    if kind == "ping":
        return []
    action = payload.get("action") if isinstance(payload.get("action"), str) else None
    main = _main_object(kind, payload)
    props: dict[str, Any] = {
        "action": action,
        "repository": dig(payload, "repository", "full_name"),
        "repository_id": dig(payload, "repository", "id"),
        "organization": dig(payload, "organization", "login"),
        "sender": dig(payload, "sender", "login"),
    }
    if kind == "push":
        props.update(_push(payload))
        when = dig(payload, "head_commit", "timestamp")
    else:
        props.update(
            {
                k: v
                for k, v in scalars(main, skip=("body",)).items()
                if not k.endswith("_url") or k == "html_url"
            }
        )
        props.update(
            scalars({k: v for k, v in payload.items() if k not in _ENVELOPE}, skip=("body",))
        )
        keys = (*_ACTION_TIMES.get(action or "", ()), *_TIME_KEYS)
        when = next((main[k] for k in keys if main.get(k)), None)
        when = when or next((payload[k] for k in keys if payload.get(k)), None)
    sender = payload.get("sender") if isinstance(payload.get("sender"), dict) else {}
    person = Person(vendor_id=sender.get("id"), id_type="github_user_id")
    return [
        Draft(
            event=_name(kind, action, payload),
            properties=props,
            timestamp=when,
            event_type=f"{kind}.{action}" if action else kind,
            person=person,
        )
    ]


def _name(kind: str, action: str | None, payload: dict[str, Any]) -> str:
    if kind in ("create", "delete"):
        ref_type = payload.get("ref_type") or "ref"
        return title(ref_type, "created" if kind == "create" else "deleted")
    if kind == "pull_request" and action == "closed" and dig(payload, "pull_request", "merged"):
        return "Pull Request Merged"
    if kind == "repository_dispatch":
        return "Repository Dispatched"
    obj = OBJECTS.get(kind) or title(kind)
    if action is None:
        return NAMES.get(kind) or obj
    return f"{obj} {title(ACTIONS.get(action, action))}"


def _main_object(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The object the event is about: payload[kind] (`pull_request`, `release`, ...)."""
    for key in (
        _OBJECT_KEYS.get(kind, kind),
        kind,
        kind.removesuffix("s"),
        "check_run",
        "workflow_run",
        "workflow_job",
    ):
        value = payload.get(key)
        if isinstance(value, dict):
            return value
    return {}


def _push(p: dict[str, Any]) -> dict[str, Any]:
    commits = p.get("commits") if isinstance(p.get("commits"), list) else []
    return {
        "ref": p.get("ref"),
        "before": p.get("before"),
        "after": p.get("after"),
        "created": p.get("created"),
        "deleted": p.get("deleted"),
        "forced": p.get("forced"),
        "commits": len(commits),
        "head_commit": dig(p, "head_commit", "id"),
        "head_commit_message": dig(p, "head_commit", "message"),
        "pusher": dig(p, "pusher", "name"),
        "compare": p.get("compare"),
    }
