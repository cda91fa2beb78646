"""`webhook-gateway profile show ID` and `profile forget ID`: one person in the identity
graph (gateway/graph.py), found by any of their identifiers."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .cli import _with_store
from .config import Config
from .enrich import describe
from .graph import Graph, email_id, phone_id
from .identity import Visitors
from .store import Store

_TYPED = ("user", "anon", "ext", "profile")


def candidates(text: str) -> list[str]:
    """The graph identifiers a person may have typed: `user:u1`, `anon:...`, `ext:type:id`,
    `profile:<id>`, `email:a@b.c` or a bare address (hashed, as the graph keeps it),
    `phone:+1...` or `+1...`, else a bare id tried as a userId, then an anonymousId."""
    text = text.strip()
    kind, sep, rest = text.partition(":")
    if sep and kind in _TYPED and rest:
        return [text]
    if (sep and kind == "email") or "@" in text:
        found = email_id(rest if sep and kind == "email" else text)
        return [found] if found else []
    if (sep and kind == "phone") or text.startswith("+"):
        found = phone_id(rest if sep and kind == "phone" else text)
        return [found] if found else []
    return [f"user:{text}", f"anon:{text}"]


async def find_profile(graph: Graph, text: str) -> tuple[str, dict[str, Any]] | None:
    for identifier in candidates(text):
        found = await graph.profile(identifier)
        if found is not None:
            return identifier, found
    return None


def _none(text: str) -> int:
    print(f"no profile has {text!r}", file=sys.stderr)
    return 1


async def visits(store: Store, config: Config, profile: dict[str, Any]) -> dict[str, Any]:
    """The visitor records of a profile's anonymousIds (what `profile show` lists)."""
    visitors = Visitors(store, config.identity)
    seen = {}
    for identifier in profile.get("identifiers", []):
        if identifier.startswith("anon:"):
            visit = await visitors.get(identifier[5:])
            if visit:
                seen[identifier[5:]] = visit
    return seen


def show_command(args: argparse.Namespace) -> int:
    async def work(config: Config, store: Store) -> int:
        graph = Graph.of(store, config.identity)
        found = await find_profile(graph, args.id)
        if found is None:
            return _none(args.id)
        _, profile = found
        seen = await visits(store, config, profile)
        shown = {k: v for k, v in profile.items() if k not in ("attributes", "pending")}
        print(
            json.dumps({**shown, **describe(profile), "visitors": seen}, indent=2, sort_keys=True)
        )
        return 0

    return _with_store(args, work)


def forget_command(args: argparse.Namespace) -> int:
    async def work(config: Config, store: Store) -> int:
        graph = Graph.of(store, config.identity)
        found = await find_profile(graph, args.id)
        if found is None:
            return _none(args.id)
        identifier, profile = found
        anon = [i[5:] for i in profile.get("identifiers", []) if i.startswith("anon:")]
        # One script: the profile, its identifiers and their visitor records.
        await graph.forget(identifier, int(time.time() * 1000))
        n = len(profile.get("identifiers", []))
        print(
            f"forgot profile {profile.get('id')}: {n} identifier(s) and {len(anon)} visitor "
            "record(s); its identifiers will not be linked again"
        )
        return 0

    return _with_store(args, work)


def add_commands(sub: Any, config_option: Any) -> None:
    profile = sub.add_parser("profile", help="one person in the identity graph")
    actions = profile.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="a profile's identifiers, visits and merges")
    show.add_argument("id", help="any identifier: a userId, anonymousId, email, +phone, ...")
    config_option(show)
    show.set_defaults(run=show_command)
    forget = actions.add_parser("forget", help="erase a profile and never link its ids again")
    forget.add_argument("id", help="any identifier of the person")
    config_option(forget)
    forget.set_defaults(run=forget_command)
