"""The operator console in a real browser: Debian's Chromium driven by Playwright against a
real `webhook-gateway serve` (workers on) in a subprocess, the real Redis, and a local HTTP
server standing in for the destination (it refuses with a vendor's 400, later accepts).

- An operator logs in, finds a delivery by its id, sees its event and the 400 with the
  vendor's message, replays the dead letter and watches the attempt turn to sent.
- A typo in a mapping quarantines a delivery (the tracking plan requires a property the
  typo leaves out); the gateway is restarted with the fixed mapping and the operator
  reruns the quarantine: the delivery leaves it and its event appears.
- A read-only user is refused every action, and so is a form without the CSRF token;
  Redis shows nothing changed.

Screenshots of each page are always taken (and checked to be PNGs); with
CONSOLE_SCREENSHOTS=1 they go to docs/img/ for the docs.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import stripe

from gateway.store import Keys
from tests.conftest import drop_keys
from tests.destinations.conftest import VendorServer
from tests.services import require_chromium
from tests.test_cli import Server

ROOT = Path(__file__).parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "stripe"
SECRET = "whsec_console_browser"
OPERATOR, VIEWER = "olivia", "victor"
# What the destination says when it refuses an event (a vendor-like JSON error).
VENDOR_MESSAGE = "Charge Succeeded is not an event this endpoint accepts"
REFUSAL = (400, {}, {"error": {"type": "invalid_request_error", "message": VENDOR_MESSAGE}})
ACCEPTED = (200, {}, {"status": "ok"})
# A typo in the mapping (amount_paid_cents does not exist): the plan requires `amount`.
BROKEN, FIXED = "amount_paid_cents", "amount_paid"

CONFIG = """\
redis_url: ${{REDIS_URL}}
key_prefix: ${{PREFIX}}
worker: {{claim_idle: 1s}}
console:
  enabled: true
  users:
    olivia: {{password: "${{CONSOLE_OLIVIA_PASSWORD}}", role: operator}}
    victor: {{password: "${{CONSOLE_VICTOR_PASSWORD}}", role: read-only}}
events:
  Charge Succeeded: {{}}
  Invoice Paid:
    properties:
      amount: {{type: integer, required: true}}
sources:
  stripe:
    type: stripe
    secrets: ["${{STRIPE_WEBHOOK_SECRET}}"]
    schema: enforce
    mappings:
      - when: "type == 'invoice.paid'"
        event: Invoice Paid
        properties:
          amount: data.object.{amount}
          invoice: data.object.id
destinations:
  crm:
    type: http
    url: ${{HOOK_URL}}/events
    max_attempts: 1
    linger: 10ms
"""

CHARGE = json.loads((FIXTURES / "charge.succeeded.json").read_text())
INVOICE = json.loads((FIXTURES / "invoice.paid.json").read_text())
PNG = b"\x89PNG\r\n\x1a\n"


def poll(check: Callable[[], Any], seconds: float = 20, what: str = "the condition") -> Any:
    """`check()` until truthy; fail after `seconds` (never a fixed wait)."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {seconds} s for {what}; last value: {result!r}")
        time.sleep(0.05)


@dataclass
class World:
    tmp_path: Path
    env: dict[str, str]
    hook: VendorServer
    server: Server
    redis: redis.Redis
    keys: Keys

    @property
    def console(self) -> str:
        return self.server.operator_url + "/console"

    def post(self, event: dict[str, Any]) -> None:
        body = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(body, SECRET)
        r = httpx.post(
            self.server.url + "/webhooks/stripe",
            content=body,
            headers={"Stripe-Signature": header, "content-type": "application/json"},
        )
        assert r.json() == {"status": "accepted", "delivery_id": event["id"]}, r.text

    def start(self, amount: str) -> None:
        """`serve` with the mapping reading `amount`, once its console answers."""
        self.server = Server(self.tmp_path, self.env, config=CONFIG.format(amount=amount))
        poll(
            lambda: _answers(self.console + "/login"),
            what="the console on the operator listener",
        )

    def dead_letters(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        return self.redis.xrange(self.keys.dead_letters())

    def quarantined(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        return self.redis.xrange(self.keys.quarantine())


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def world(tmp_path: Path, redis_url: str) -> Iterator[World]:
    """The gateway with the broken mapping, after a charge (refused by the destination:
    dead-lettered) and an invoice (quarantined) went through its workers."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    hook = VendorServer()
    hook.default = REFUSAL
    hook.start()
    env = {
        "REDIS_URL": redis_url,
        "PREFIX": prefix,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "HOOK_URL": hook.url,
        "CONSOLE_OLIVIA_PASSWORD": secrets.token_urlsafe(12),
        "CONSOLE_VICTOR_PASSWORD": secrets.token_urlsafe(12),
        "LOG_LEVEL": "info",
    }
    client = redis.Redis.from_url(redis_url)
    w = World(tmp_path, env, hook, None, client, Keys(prefix))  # type: ignore[arg-type]
    try:
        w.start(BROKEN)
        w.post(CHARGE)
        w.post(INVOICE)
        poll(lambda: w.dead_letters() and w.quarantined(), what="a dead letter and a quarantine")
        yield w
    finally:
        if w.server is not None:
            w.server.stop()
        hook.stop(wait=False)
        drop_keys(redis_url, prefix)
        client.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = require_chromium()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable)
        try:
            yield chromium
        finally:
            chromium.close()


def log_in(browser: Any, w: World, name: str) -> Any:
    """A page of a browser context of its own, logged in as `name` with the login form."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(w.console + "/login")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Password", exact=True).fill(w.env[f"CONSOLE_{name.upper()}_PASSWORD"])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(w.console + "/")
    assert page.locator("header .who").inner_text().split() == [
        name,
        "operator" if name == OPERATOR else "read-only",
        "Log",
        "out",
    ]
    return page


def reload_until(page: Any, selector: str, what: str, seconds: float = 20) -> Any:
    """Reload `page` until `selector` is on it (the console pages do not refresh)."""

    def shown() -> bool:
        if page.locator(selector).count():
            return True
        page.reload()
        return False

    poll(shown, seconds, what)
    return page.locator(selector)


def screenshot(page: Any, folder: Path, name: str) -> None:
    path = folder / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data.startswith(PNG), path
    width, height = struct.unpack(">II", data[16:24])  # IHDR: a real image, page-wide
    assert width == 1280 and height >= 400, (path, width, height)


def shots(tmp_path: Path) -> Path:
    if os.environ.get("CONSOLE_SCREENSHOTS") == "1":
        folder = ROOT / "docs" / "img"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return tmp_path


def message_id(w: World, delivery_id: str) -> str:
    """The event's messageId, from the dead letter the worker wrote (not from the page)."""
    for _, fields in w.dead_letters():
        if fields[b"delivery_id"].decode() == delivery_id:
            return fields[b"message_id"].decode()
    raise AssertionError(f"no dead letter of {delivery_id}")


def attempt_cells(page: Any, message: str, outcome: str) -> list[str]:
    row = page.locator(
        f'section.event[data-message-id="{message}"] tr.attempt.outcome-{outcome}'
        '[data-destination="crm"]'
    )
    return [c.strip() for c in row.first.locator("td").all_inner_texts()]


def test_operator_finds_a_400_replays_it_and_reruns_a_fixed_mapping(world, browser, tmp_path):
    w = world
    folder = shots(tmp_path)
    charge, invoice = CHARGE["id"], INVOICE["id"]
    charge_message = message_id(w, charge)
    page = log_in(browser, w, OPERATOR)

    # 1. Find the delivery by its id, open it: its event and the destination's 400.
    page.get_by_role("link", name="Deliveries", exact=True).click()
    search = page.locator("form#by-id")
    search.get_by_label("Delivery id").fill(charge)
    search.get_by_role("button", name="Find").click()
    page.locator("#found").get_by_role("link", name=charge).click()
    page.wait_for_url(f"{w.console}/deliveries/stripe/{charge}")
    event = page.locator(f'section.event[data-message-id="{charge_message}"]')
    assert event.locator("h3 a").inner_text() == "Charge Succeeded"
    cells = attempt_cells(page, charge_message, "fail")
    assert cells[:4] == ["crm", "1", "fail", "400"]
    assert VENDOR_MESSAGE in cells[5]
    assert page.locator("#dead-lettered").inner_text() == "Dead-lettered at crm."
    screenshot(page, folder, "delivery")

    # 2. The dead letter: select it, confirm, replay; the destination now accepts.
    page.get_by_role("link", name="Dead letters", exact=True).click()
    row = page.locator(f'#dead-letters tr[data-message-id="{charge_message}"]')
    assert VENDOR_MESSAGE in row.locator("td.reason").inner_text()
    assert page.locator("#dead-letters tbody tr").count() == 1
    screenshot(page, folder, "dead-letters")
    w.hook.default = ACCEPTED
    page.get_by_label(f"select {charge_message}").check()
    selection = page.locator("form#selection")
    selection.locator('input[name="confirm"]').check()
    selection.get_by_role("button", name="Replay selected").click()
    notice = page.get_by_role("status").inner_text()
    assert notice.startswith("replayed 1 dead letter(s)"), notice
    assert page.locator("#dead-letters tr[data-message-id]").count() == 0
    assert w.dead_letters() == []

    page.goto(f"{w.console}/deliveries/stripe/{charge}")
    reload_until(
        page,
        f'section.event[data-message-id="{charge_message}"] tr.attempt.outcome-ok',
        "the replayed attempt to be sent",
    )
    assert attempt_cells(page, charge_message, "ok")[:4] == ["crm", "2", "ok", "200"]
    # No longer listed as dead-lettered (the replay took it out of that index).
    assert page.locator("#dead-lettered").count() == 0
    # The destination got it again (one event per request), after its refusal.
    assert [r.json()["messageId"] for r in w.hook.requests] == [charge_message] * 2

    # 3. The quarantine: the typo's delivery, and a rerun with the same config fails again.
    page.get_by_role("link", name="Quarantine", exact=True).click()
    entry = page.locator(f'#quarantine tr[data-delivery-id="{invoice}"]')
    assert "Invoice Paid: property 'amount' is required" in entry.locator("td.reason").inner_text()
    screenshot(page, folder, "quarantine")
    broken_print = page.locator('#loaded-config tr[data-source="stripe"] code').inner_text()
    rerun = page.locator('form.action[action="/console/quarantine/rerun"]')
    rerun.locator('input[name="confirm"]').check()
    rerun.get_by_role("button").click()
    notice = page.get_by_role("status").inner_text()
    assert "0 now normalized, 1 still in the quarantine" in notice, notice
    assert len(w.quarantined()) == 1

    # Fix the mapping, restart the gateway (same Redis and prefix), rerun.
    w.server.stop()
    w.start(FIXED)
    page.goto(w.console + "/quarantine")
    if page.url.startswith(w.console + "/login"):  # (a new port: the cookie may not follow)
        page = log_in(browser, w, OPERATOR)
        page.goto(w.console + "/quarantine")
    fixed_print = page.locator('#loaded-config tr[data-source="stripe"] code').inner_text()
    assert fixed_print != broken_print  # the page shows the fix is loaded
    rerun = page.locator('form.action[action="/console/quarantine/rerun"]')
    rerun.locator('input[name="confirm"]').check()
    rerun.get_by_role("button").click()
    notice = page.get_by_role("status").inner_text()
    assert "1 now normalized, 0 still in the quarantine" in notice, notice
    assert page.locator("#quarantine tr[data-delivery-id]").count() == 0
    assert w.quarantined() == []

    page.goto(f"{w.console}/deliveries/stripe/{invoice}")
    reload_until(page, "section.event tr.attempt.outcome-ok", "the rerun's event to be sent")
    assert page.locator("section.event h3 a").all_inner_texts() == ["Invoice Paid"]
    assert page.locator("#quarantined").count() == 0
    delivered = w.hook.requests[-1].json()
    assert delivered["event"] == "Invoice Paid"
    assert delivered["properties"]["amount"] == INVOICE["data"]["object"]["amount_paid"]

    # 4. The playground shows what a payload becomes with the loaded (fixed) mapping.
    page.get_by_role("link", name="Playground", exact=True).click()
    page.locator('select[name="source"]').select_option("stripe")
    page.locator('textarea[name="payload"]').fill(json.dumps(INVOICE, indent=2))
    page.get_by_role("button", name="Show the events").click()
    assert page.locator("#playground-result").inner_text().startswith("1 event ")
    shown = json.loads(page.locator("pre.event").inner_text())
    assert (shown["event"], shown["properties"]["invoice"]) == (
        "Invoice Paid",
        INVOICE["data"]["object"]["id"],
    )
    screenshot(page, folder, "playground")

    # 5. The overview counts what happened (each process adds its counts every 2 s).
    page.get_by_role("link", name="Overview", exact=True).click()
    counts = {
        '#sources tr[data-source="stripe"] td.accepted': "2 / 2",
        '#destinations tr[data-destination="crm"] td.sent': "2 / 2",
        '#destinations tr[data-destination="crm"] td.dead': "1 / 1",
    }
    shown: dict[str, str] = {}

    def counted() -> bool:
        shown.update({k: page.locator(k).inner_text() for k in counts})
        if shown == counts:
            return True
        page.reload()
        return False

    try:
        poll(counted, what="the overview's counts")
    except AssertionError as e:
        raise AssertionError(f"{e}: shown {shown}, wanted {counts}") from None
    screenshot(page, folder, "overview")


def _refused(page: Any, submit: Callable[[], None], path: str) -> str:
    """Submit a form from the page; the reply must be the 403 page: its reason."""
    with page.expect_response(lambda r: r.url.endswith(path) and r.request.method == "POST") as r:
        submit()
    assert r.value.status == 403, r.value.status
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Refused"
    return page.locator("p.error").inner_text()


def _unchanged(w: World, before: tuple[Any, ...]) -> None:
    assert (w.dead_letters(), w.quarantined(), len(w.hook.requests)) == before
    assert w.redis.xlen(w.keys.audit()) == 0  # no action was taken (or logged as taken)


def test_a_read_only_user_is_refused_every_action(world, browser):
    w = world
    before = (w.dead_letters(), w.quarantined(), len(w.hook.requests))
    [(entry, _)] = before[0]
    page = log_in(browser, w, VIEWER)

    page.goto(w.console + "/dead-letters")
    assert page.locator('#dead-letters input[type="checkbox"]').count() == 0
    assert "Your role is read-only" in page.locator("main").inner_text()
    # The browser sends what an operator's form would: the entry, the session's token, yes.
    token = page.locator('#selection input[name="csrf"]').input_value()
    assert len(token) == 64
    why = _refused(
        page,
        lambda: page.evaluate(
            """([entry, token]) => {
                const form = document.getElementById('selection');
                for (const [name, value] of [['id', entry], ['confirm', 'yes']]) {
                    const input = document.createElement('input');
                    input.type = 'hidden'; input.name = name; input.value = value;
                    form.appendChild(input);
                }
                form.submit();
            }""",
            [entry.decode(), token],
        ),
        "/console/dead-letters/replay",
    )
    assert why == f"{VIEWER} has the read-only role: replay, purge and rerun need an operator"

    page.goto(w.console + "/quarantine")
    assert page.locator('form[action="/console/quarantine/rerun"]').count() == 0
    why = _refused(
        page,
        lambda: page.evaluate(
            """(token) => {
                const form = document.createElement('form');
                form.method = 'post'; form.action = '/console/quarantine/rerun';
                form.innerHTML = `<input name="csrf" value="${token}">
                                  <input name="confirm" value="yes">`;
                document.body.appendChild(form);
                form.submit();
            }""",
            token,
        ),
        "/console/quarantine/rerun",
    )
    assert "read-only role" in why
    _unchanged(w, before)


def test_an_action_without_the_csrf_token_is_refused(world, browser):
    w = world
    before = (w.dead_letters(), w.quarantined(), len(w.hook.requests))
    page = log_in(browser, w, OPERATOR)
    charge_message = message_id(w, CHARGE["id"])

    # The operator's own form, ticked and confirmed, with its hidden token taken out.
    page.goto(w.console + "/dead-letters")
    page.get_by_label(f"select {charge_message}").check()
    selection = page.locator("form#selection")
    selection.locator('input[name="confirm"]').check()
    selection.locator('input[name="csrf"]').evaluate("input => input.remove()")
    why = _refused(
        page,
        lambda: selection.get_by_role("button", name="Replay selected").click(),
        "/console/dead-letters/replay",
    )
    assert "CSRF token is missing" in why

    # The session's own token but no confirmation: refused too.
    page.goto(w.console + "/dead-letters")
    token = page.locator('#selection input[name="csrf"]').input_value()
    r = page.request.post(w.console + "/quarantine/rerun", form={"csrf": token})
    assert r.status == 403 and "not confirmed" in r.text()

    # A request with the session's cookie but no token, or another session's token.
    for form in ({"confirm": "yes"}, {"confirm": "yes", "csrf": "0" * 64}):
        for path in ("/quarantine/rerun", "/dead-letters/purge"):
            r = page.request.post(w.console + path, form={**form, "scope": "all"})
            assert r.status == 403, (path, form, r.status)
            assert "CSRF token is missing or not this session" in r.text()
    _unchanged(w, before)
