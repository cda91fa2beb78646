"""The console's door: login, the session cookie, lockout, redirects (real Redis)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from contextlib import asynccontextmanager

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer

from gateway.app import create_app
from gateway.console.auth import COOKIE, LOCK_AFTER, Auth
from tests.conftest import OPERATOR, config

CFG = """\
console:
  enabled: true
  session_ttl: 10m
  users:
    alice: {password: "${ALICE}", role: operator}
    bob: {password: "${BOB}"}
sources:
  acme: {type: hmac, secrets: [s], signature_header: Sig}
"""
ENV = {"ALICE": "correct horse battery", "BOB": "bob-pass-1"}


@asynccontextmanager
async def console_client(store, text: str = CFG, **env: str):
    app = create_app(config(text, **{**ENV, **env}), store=store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=OPERATOR) as client:
        yield client


async def login(client: httpx.AsyncClient, name: str, password: str, next_: str = "/console/"):
    return await client.post(
        "/console/login", params={"next": next_}, data={"name": name, "password": password}
    )


async def test_a_page_sends_a_stranger_to_the_login_and_back(redis_store):
    async with console_client(redis_store) as client:
        page = await client.get("/console/audit?x=1", headers={"accept": "text/html"})
        api = await client.get("/console/audit")
        assert page.status_code == 303
        assert page.headers["location"] == "/console/login?next=/console/audit%3Fx%3D1"
        assert api.status_code == 401
        r = await login(client, "alice", ENV["ALICE"], "/console/audit?x=1")
        assert r.status_code == 303 and r.headers["location"] == "/console/audit?x=1"
        cookie = r.headers["set-cookie"]
        for flag in ("HttpOnly", "SameSite=strict", "Path=/console", "Max-Age=600"):
            assert flag.lower() in cookie.lower(), flag
        assert "secure" not in cookie.lower()  # plain http here; https gets Secure
        audit = await client.get("/console/audit")
        assert audit.status_code == 200 and "Audit log" in audit.text
        assert audit.headers["cache-control"] == "no-store"
        assert ENV["ALICE"] not in audit.text


async def test_wrong_password_and_unknown_name_get_the_same_answer(redis_store):
    async with console_client(redis_store) as client:
        wrong = await login(client, "alice", "nope")
        unknown = await login(client, "mallory", "nope")
        assert wrong.status_code == unknown.status_code == 401
        assert "wrong name or password" in wrong.text and "wrong name or password" in unknown.text
        assert COOKIE not in client.cookies


async def test_ten_failures_lock_the_name_for_every_process(redis_store):
    async with console_client(redis_store) as first:
        for _ in range(LOCK_AFTER):
            assert (await login(first, "bob", "guess")).status_code == 401
    # Another process (app) over the same Redis: the right password is refused too.
    async with console_client(redis_store) as second:
        locked = await login(second, "bob", ENV["BOB"])
        assert locked.status_code == 401 and "too many failed logins" in locked.text
        # Another name is not locked.
        assert (await login(second, "alice", ENV["ALICE"])).status_code == 303


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/elsewhere"])
async def test_after_login_only_a_console_path(redis_store, target):
    async with console_client(redis_store) as client:
        r = await login(client, "alice", ENV["ALICE"], target)
        assert r.headers["location"] == "/console/"


async def _cookie(store, text: str, age: float, name: str = "alice", **env: str) -> str:
    """A session cookie as a login of `name` `age` seconds ago would have set."""
    cfg = config(text, **{**ENV, **env})
    auth = Auth(cfg, store, time.time)
    serializer = await auth.ready()
    signer = serializer.make_signer("console-session")
    signer.get_timestamp = lambda: int(time.time() - age)  # type: ignore[method-assign]
    user = cfg.console.users[name]
    payload = {"u": name, "n": "nonce", "p": auth._password_tag(name, user.password.reveal())}
    return signer.sign(serializer.dump_payload(payload)).decode()


@pytest.mark.parametrize(
    ("age", "tamper", "welcome"),
    [(0, False, True), (11 * 60, False, False), (0, True, False)],
    ids=["fresh", "older-than-session_ttl", "tampered"],
)
async def test_session_cookie_expiry_and_signature(redis_store, age, tamper, welcome):
    value = await _cookie(redis_store, CFG, age)
    if tamper:
        value = value[:-2] + ("xx" if not value.endswith("xx") else "yy")
    async with console_client(redis_store) as client:
        client.cookies.set(COOKIE, value, path="/console")
        r = await client.get("/console/audit", headers={"accept": "text/html"})
    assert (r.status_code == 200) is welcome


async def test_a_removed_user_a_changed_password_or_another_secret_ends_sessions(redis_store):
    value = await _cookie(redis_store, CFG, 0, name="bob")
    removed = CFG.replace('    bob: {password: "${BOB}"}\n', "")
    rotated = CFG.replace("  session_ttl: 10m\n", '  session_ttl: 10m\n  session_secret: "${S}"\n')
    async with console_client(redis_store) as client:  # the cookie itself is good
        client.cookies.set(COOKIE, value, path="/console")
        r = await client.get("/console/audit", headers={"accept": "text/html"})
        assert r.status_code == 200
    for text, env in ((removed, {}), (rotated, {"S": "another-secret"}), (CFG, {"BOB": "new"})):
        async with console_client(redis_store, text, **env) as client:
            client.cookies.set(COOKIE, value, path="/console")
            r = await client.get("/console/audit", headers={"accept": "text/html"})
            assert r.status_code == 303, (text, env)


async def test_the_signing_key_is_not_made_of_the_passwords(redis_store):
    """A user who knows their own password and cookie cannot test guesses of another's
    offline: the key is random (in Redis), and a cookie signed with a key derived from
    the passwords is refused."""
    cfg = config(CFG, **ENV)
    material = "\n".join(f"{n}:{u.password.reveal()}" for n, u in sorted(cfg.console.users.items()))
    derived = hashlib.sha256(f"webhook-gateway console {cfg.key_prefix}\n{material}".encode())
    forged = URLSafeTimedSerializer(derived.digest(), salt="console-session").dumps(
        {"u": "alice", "n": "x"}
    )
    async with console_client(redis_store) as client:
        client.cookies.set(COOKIE, forged, path="/console")
        r = await client.get("/console/audit", headers={"accept": "text/html"})
    assert r.status_code == 303
    stored = await redis_store.client.get(redis_store.keys.console_secret())
    assert stored and len(stored) == 64 and stored != derived.hexdigest().encode()


async def test_logout_ends_the_session_at_once(redis_store):
    async with console_client(redis_store) as client:
        await login(client, "alice", ENV["ALICE"])
        kept = client.cookies.get(COOKIE, path="/console")
        assert (await client.get("/console/audit")).status_code == 200
        out = await client.post("/console/logout")
        assert out.status_code == 303
        client.cookies.set(COOKIE, kept, path="/console")  # the cookie, replayed
        r = await client.get("/console/audit", headers={"accept": "text/html"})
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")


async def test_concurrent_guesses_cannot_pass_the_limit(redis_store):
    async with console_client(redis_store) as client:
        answers = await asyncio.gather(*(login(client, "bob", f"guess{i}") for i in range(40)))
        locked = await login(client, "bob", ENV["BOB"])
    wrong = [r for r in answers if "wrong name or password" in r.text]
    assert len(wrong) <= LOCK_AFTER
    assert "too many failed logins" in locked.text


async def test_a_notice_needs_the_gateways_tag(redis_store):
    async with console_client(redis_store) as client:
        await login(client, "alice", ENV["ALICE"])
        forged = await client.get(
            "/console/audit", params={"done": "Session expired: log in at evil"}
        )
        tagged = await client.get("/console/audit", params={"done": "evil", "tag": "0" * 32})
    # (An action's own notice, with its tag, is shown: tests/test_console_actions.py.)
    assert "evil" not in forged.text and "evil" not in tagged.text


async def test_cookie_secure_behind_a_proxy_that_ends_tls(redis_store):
    text = CFG.replace("  session_ttl: 10m\n", "  session_ttl: 10m\n  cookie_secure: true\n")
    async with console_client(redis_store, text) as client:
        r = await login(client, "alice", ENV["ALICE"])
    assert "; secure" in r.headers["set-cookie"].lower()


async def test_redis_away_is_a_503_page_not_a_500(redis_store):
    """Every console page, the login included, says Redis does not answer (503)."""
    from gateway.store import Store
    from tests.conftest import free_port

    away = Store.connect(f"redis://127.0.0.1:{free_port()}/0", redis_store.keys.prefix, 0.5)
    try:
        app = create_app(config(CFG, **ENV), store=away)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=OPERATOR) as client:
            r = await login(client, "alice", ENV["ALICE"])
    finally:
        await away.close()
    assert r.status_code == 503
    assert "Redis does not answer" in r.text and "Traceback" not in r.text
