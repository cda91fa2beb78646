"""The mapping playground: pick a source, paste a payload (and headers), see the events it
becomes, or why it becomes none: the engine of `webhook-gateway map` (dry_run.map_payload),
with no signature check and nothing stored.

Open to read-only users (it changes nothing), but a POST: it needs the session's CSRF
token, so another site cannot make a logged-in browser run it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dry_run import map_payload
from .auth import Forbidden, User, page

if TYPE_CHECKING:
    from . import Console


def parse_headers(text: str) -> dict[str, str]:
    """`Name: value` lines (blank lines skipped) as the lower-case names the sources read;
    ValueError names the first line that is not one."""
    headers = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or " " in name.strip():
            raise ValueError(f"headers, line {number}: {line.strip()[:80]!r} is not 'Name: value'")
        headers[name.strip().lower()] = value.strip()
    return headers


def routes(console: Console) -> list[Route]:
    config = console.config

    async def playground(request: Request, user: User) -> Response:
        sources = list(config.sources)
        context: dict[str, Any] = {
            "sources": sources,
            "source": sources[0] if sources else "",
            "payload": "",
            "headers": "",
            "result": None,
            "events": [],
            "error": "",
        }
        status = 200
        if request.method == "POST":
            form = await request.form()
            try:
                console.auth.check_csrf(user, form)
            except Forbidden as e:
                return await console.refused(request, user, str(e))
            context["source"] = str(form.get("source", ""))
            context["payload"] = str(form.get("payload", ""))
            context["headers"] = str(form.get("headers", ""))
            context.update(_run(console, context["source"], context["payload"], context["headers"]))
            if context["error"]:
                status = 400
        return console.render(
            request, user, "playground.html", status=status, nav="playground", **context
        )

    return [Route("/playground", page(console.auth, playground), methods=["GET", "POST"])]


def _run(console: Console, source: str, payload: str, header_text: str) -> dict[str, Any]:
    """What the page shows for one try: the events (pretty JSON), notes, or an error."""
    config = console.config
    if source not in config.sources:
        known = ", ".join(config.sources) or "none"
        return {"error": f"no source named {source!r} in the loaded config (sources: {known})"}
    try:
        headers = parse_headers(header_text)
    except ValueError as e:
        return {"error": str(e)}
    body = payload.encode()
    limit = int(config.sources[source].max_body)
    if len(body) > limit:
        return {
            "error": f"the payload is {len(body):,} bytes: this source takes at most "
            f"{limit:,} (max_body), so the gateway would refuse it with 413"
        }
    result = map_payload(config, source, body, headers, console.clock())
    # Exactly what `map` prints (its JSON), indented.
    events = [msgspec.json.format(msgspec.json.encode(e), indent=2).decode() for e in result.events]
    error = f"this payload cannot be normalized: {result.error}" if result.error else ""
    return {"result": result, "events": events, "error": error}
