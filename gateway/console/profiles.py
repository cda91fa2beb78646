"""One person in the identity graph, found as `profile show` finds them (by userId,
anonymousId, email, phone or any typed identifier): identifiers, traits, visits, merges.

Read-only. Personal data (traits, IP, user agent, touches, visitor records) goes through
console.personal(): masked unless console.show_personal_data. The identifiers stay
readable (emails and phones are kept only as hashes; the others are what one looks up).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..enrich import describe
from ..errors import StoreUnavailable
from ..graph import Graph
from ..profile_cli import candidates, find_profile, visits
from .auth import Forbidden, User, page

if TYPE_CHECKING:
    from . import Console

_PERSONAL = ("traits", "ip", "userAgent", "firstTouch", "lastTouch", "webAnonymousId")


async def lookup(console: Console, text: str) -> dict[str, Any] | None:
    """The profile holding what was typed, as the page shows it; None if none does."""
    config, store = console.config, console.store
    found = await find_profile(Graph.of(store, config.identity), text)
    if found is None:
        return None
    matched, profile = found
    seen = await visits(store, config, profile)
    described = describe(profile)
    return {
        "id": profile["id"],
        "matched": matched,
        "identifiers": profile.get("identifiers", []),
        "merged_from": profile.get("merged_from", []),
        "created": profile.get("created"),
        "first_seen": profile.get("first_seen"),
        "last_seen": profile.get("last_seen"),
        "expires_at": profile.get("expires_at"),
        "personal": {
            k: _shown(console.personal(described[k])) for k in _PERSONAL if k in described
        },
        "consent": described.get("consent"),
        "pending": described.get("pendingMerges", []),
        "visitors": {anon: _shown(console.personal(visit)) for anon, visit in seen.items()},
    }


def _shown(value: Any) -> str:
    """A value as the page prints it: text as it is, the rest as indented JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def routes(console: Console) -> list[Route]:
    config = console.config
    collect = [n for n, s in config.sources.items() if s.__struct_config__.tag == "collect"]
    about = {"graph_on": config.identity.graph, "collect_sources": collect}

    def search_page(request: Request, user: User, status: int = 200, **context: Any) -> Response:
        return console.render(
            request,
            user,
            "profiles.html",
            status=status,
            nav="profiles",
            **{"query": "", "error": "", **about, **context},
        )

    async def search(request: Request, user: User) -> Response:
        if request.method == "GET":
            return search_page(request, user)
        # A POST, so that an email or phone never sits in a URL (access logs, history).
        form = await request.form()
        try:
            console.auth.check_csrf(user, form)
        except Forbidden as e:
            return await console.refused(request, user, str(e))
        text = str(form.get("id", "")).strip()[:300]
        if not config.identity.graph or not text:
            return search_page(request, user, query=text)
        if not candidates(text):
            why = f"{text!r} is not an email address or phone number the graph can use"
            return search_page(request, user, 400, query=text, error=why)
        try:
            found = await lookup(console, text)
        except StoreUnavailable as e:
            return search_page(request, user, 503, query=text, error=f"{e}: try again")
        if found is None:
            return search_page(request, user, 404, query=text, error=f"no profile has {text!r}")
        return RedirectResponse(f"/console/profiles/{quote(found['id'], safe='')}", 303)

    async def profile(request: Request, user: User) -> Response:
        profile_id = request.path_params["profile_id"]
        found = None
        if config.identity.graph:
            found = await lookup(console, f"profile:{profile_id}")
        if found is None:
            why = f"no profile {profile_id!r} (forgotten, expired, or never made)"
            return search_page(request, user, 404, error=why)
        return console.render(request, user, "profile.html", nav="profiles", profile=found, **about)

    return [
        Route("/profiles", page(console.auth, search), methods=["GET", "POST"]),
        Route("/profiles/{profile_id}", page(console.auth, profile)),
    ]
