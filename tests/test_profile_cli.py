"""`webhook-gateway profile show|forget` on the real identity graph in Redis."""

from __future__ import annotations

import json
import uuid

from gateway.config import IdentityConfig
from gateway.graph import Graph, email_id
from gateway.identity import Visitors
from gateway.store import Store
from tests.conftest import drop_prefix
from tests.test_cli import cli

CONFIG = "redis_url: ${REDIS_URL}\nkey_prefix: ${PREFIX}\n"


async def test_show_finds_a_person_by_any_identifier_and_forget_erases_them(tmp_path, redis_url):
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    store = Store.connect(redis_url, prefix)
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    env = {"REDIS_URL": redis_url, "PREFIX": prefix}
    try:
        graph = Graph(store)
        anon = str(uuid.uuid4())
        ids = ["user:u-42", f"anon:{anon}", email_id("Ada@Example.com"), "ext:stripe:cus_1"]
        first = await graph.link(ids, 1_700_000_000_000)
        await Visitors(store, IdentityConfig()).record(
            anon, {"clickIds": {"gclid": "g1"}, "at": 1}, {"ad_storage": "granted"}, 1
        )
        # What the worker records from the person's events (and the visitor record).
        attrs = [("a:firstName", "Ada", 5), ("a:ip", "203.0.113.7", 5)]
        await graph.observe([], [([f"anon:{anon}"], attrs, ("", ""))], 1_700_000_000_000)
        for typed in ("u-42", anon, "ada@example.com", "email:ADA@example.com"):
            shown = cli("profile", "show", typed, "--config", str(path), env=env)
            assert shown.returncode == 0, (typed, shown.stderr)
            profile = json.loads(shown.stdout)
            assert profile["id"] == first.profile_id
            assert sorted(profile["identifiers"]) == sorted(ids)
            assert "Ada@Example.com" not in shown.stdout  # only the hash is kept
        assert profile["visitors"][anon]["last_touch"]["clickIds"] == {"gclid": "g1"}
        assert profile["traits"] == {"firstName": "Ada"} and profile["ip"] == "203.0.113.7"
        assert (
            profile["firstTouch"] == profile["lastTouch"] == {"clickIds": {"gclid": "g1"}, "at": 1}
        )
        assert profile["consent"] == {"ad_storage": "granted"}

        forgot = cli("profile", "forget", "u-42", "--config", str(path), env=env)
        assert forgot.returncode == 0, forgot.stderr
        assert "4 identifier(s) and 1 visitor record(s)" in forgot.stdout
        gone = cli("profile", "show", anon, "--config", str(path), env=env)
        assert gone.returncode == 1 and "no profile has" in gone.stderr
        assert await Visitors(store, IdentityConfig()).get(anon) == {}
        # Later events do not re-link what was forgotten.
        again = await graph.link(["user:u-42", f"anon:{anon}"], 1_700_000_100_000)
        assert sorted(again.blocked) == sorted(["user:u-42", f"anon:{anon}"])
        unknown = cli("profile", "show", "nobody", "--config", str(path), env=env)
        assert unknown.returncode == 1
    finally:
        await drop_prefix(store.client, prefix)
        await store.close()
