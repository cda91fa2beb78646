"""The `webhook-gateway` command as a user runs it: a real server process on a free port."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import stripe

from tests.conftest import drop_keys, free_port
from tests.services import require_binary

ROOT = Path(__file__).parents[1]
CONFIG = """\
redis_url: ${REDIS_URL:-}
key_prefix: ${PREFIX}
sources:
  stripe:
    type: stripe
    secrets: ["${STRIPE_WEBHOOK_SECRET}"]
    max_body: 64KiB
"""


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=60,
    )


def test_check_config_accepts_the_example_config():
    r = cli("check-config", str(ROOT / "config.yaml"))
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout and "4 source(s)" in r.stdout
    assert r.stdout.count("\n") == 1


def test_check_config_reports_a_typo_with_its_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.replace("secrets:", "secretz:"))
    r = cli("check-config", str(path), env={"PREFIX": "p", "STRIPE_WEBHOOK_SECRET": "x"})
    assert r.returncode == 2
    assert f"{path}:6: sources.stripe.secretz: unknown key `secretz`" in r.stderr
    assert "Traceback" not in r.stderr


def test_check_config_names_a_missing_variable(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if k != "STRIPE_WEBHOOK_SECRET"}
    r = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        env={**env, "PREFIX": "p"},
        timeout=60,
    )
    assert r.returncode == 2
    assert "STRIPE_WEBHOOK_SECRET is not set" in r.stderr


def test_check_config_missing_file(tmp_path):
    r = cli("check-config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2
    assert "config file not found" in r.stderr


def test_check_config_takes_config_like_every_command(tmp_path):
    r = cli("check-config", "--config", str(ROOT / "config.yaml"))
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout


def test_check_config_finds_a_missing_payload_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        CONFIG
        + "    tests:\n      - name: paid\n        payload_file: fixtures/paid.json\n"
        + "        expect: []\n"
    )
    r = cli("check-config", str(path), env={"PREFIX": "p", "STRIPE_WEBHOOK_SECRET": "x"})
    assert r.returncode == 2
    assert "sources.stripe.tests[0].payload_file: no such file: fixtures/paid.json" in r.stderr
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures/paid.json").write_text("{}")
    r = cli("check-config", str(path), env={"PREFIX": "p", "STRIPE_WEBHOOK_SECRET": "x"})
    assert r.returncode == 0, r.stderr


def test_events_tail_says_where_it_looked_when_empty(tmp_path, redis_url):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    env = {"REDIS_URL": redis_url, "PREFIX": prefix, "STRIPE_WEBHOOK_SECRET": "x"}
    r = cli("events", "tail", "--config", str(path), env=env)
    assert r.returncode == 0 and r.stdout == ""
    assert f"no events in {prefix}:{{events}}:stream on redis" in r.stderr
    assert f"key_prefix '{prefix}'" in r.stderr


def test_config_schema_is_json():
    r = cli("config-schema")
    assert r.returncode == 0
    assert json.loads(r.stdout)["title"] == "webhook-gateway config"


class Server:
    """`webhook-gateway serve` in a subprocess, on a free port (or the given one)."""

    def __init__(
        self,
        tmp_path: Path,
        env: dict[str, str],
        *args: str,
        config: str = CONFIG,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        # The console and /metrics: a listener of their own, on a free port of this test's.
        self.operator_port = free_port()
        self.operator_url = f"http://127.0.0.1:{self.operator_port}"
        path = tmp_path / "config.yaml"
        path.write_text(config)
        self.config, self.env = path, env
        self.log = tmp_path / f"server-{self.port}-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--config",
                str(path),
                "--port",
                str(self.port),
                "--operator-listen",
                f"127.0.0.1:{self.operator_port}",
                *args,
            ],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("gateway did not start: " + self.log.read_text())

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(timeout=15)
        return self.log.read_text()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


class Worker:
    """`webhook-gateway worker` in a subprocess; its stderr (JSON log lines) in a file."""

    def __init__(self, config_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = config_path.parent / f"worker-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "worker", "--config", str(config_path), *args],
            env={**os.environ, "LOG_LEVEL": "info", **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )

    def lines(self) -> list[dict]:
        """The JSON log lines written so far."""
        text = self.log.read_text()
        return [json.loads(x) for x in text.splitlines() if x.startswith("{")]

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        return self.log.read_text()


@pytest.fixture
def served(tmp_path, redis_url):
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    env = {
        "REDIS_URL": redis_url,
        "PREFIX": prefix,
        "STRIPE_WEBHOOK_SECRET": "whsec_cli",
        "LOG_LEVEL": "info",
    }
    server = Server(tmp_path, env, "--no-workers")
    yield server
    server.stop()
    drop_keys(redis_url, prefix)


def test_serve_accepts_a_stripe_webhook_and_logs_it(served):
    body = json.dumps({"id": "evt_cli", "object": "event", "created": int(time.time())})
    header = stripe.WebhookSignature.generate_signature_header(body, "whsec_cli")
    r = httpx.post(
        served.url + "/webhooks/stripe", content=body, headers={"Stripe-Signature": header}
    )
    assert r.status_code == 200
    assert r.json() == {"status": "accepted", "delivery_id": "evt_cli"}
    assert httpx.get(served.url + "/readyz").status_code == 200
    log = served.stop()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    accepted = [x for x in lines if x["event"] == "delivery.accepted"]
    assert accepted and accepted[0]["source"] == "stripe"
    assert accepted[0]["outcome"] == "accepted"
    assert accepted[0]["delivery_id"] == "evt_cli"
    assert "duration_ms" in accepted[0]
    assert "whsec_cli" not in log


def _raw_request(port: int, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head)
    return sock


def _read_status(sock: socket.socket, timeout: float) -> int | None:
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return None
    data = sock.recv(65536)
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None


def test_declared_oversize_body_is_refused_before_it_is_sent(served):
    sock = _raw_request(
        served.port,
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n",
    )
    try:
        assert _read_status(sock, 5) == 413  # no body byte was sent
    finally:
        sock.close()


def test_chunked_oversize_body_is_refused_while_reading(served):
    sock = _raw_request(
        served.port,
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    chunk = b"x" * 16384
    sent = 0
    status = None
    try:
        while sent < 64 * 1024 * 1024:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            status = _read_status(sock, 0)
            if status:
                break
        status = status or _read_status(sock, 5)
    finally:
        sock.close()
    assert status == 413
    assert sent < 16 * 1024 * 1024  # refused long before the (endless) body ended


def test_serve_without_redis_url_warns_loudly(tmp_path):
    env = {"REDIS_URL": "", "PREFIX": "p", "STRIPE_WEBHOOK_SECRET": "whsec_x"}
    server = Server(tmp_path, env)
    log = server.stop()
    assert "NOTHING SURVIVES A RESTART" in log


def test_serve_with_a_bad_config_exits_with_the_error(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("sources:\n  s: {type: nope}\n")
    r = cli("serve", "--config", str(path), "--port", str(free_port()))
    assert r.returncode == 2
    assert "sources.s.type: unknown source type 'nope'" in r.stderr


def test_readme_quick_start_works_as_written(tmp_path):
    """The README's `serve` on the example config.yaml, then its curl snippet, verbatim."""
    require_binary("curl", "tools")
    require_binary("openssl", "tools")
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"```sh\n(BODY=.*?)```", readme, re.S).group(1)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_WEBHOOK_SECRET")}
    env.pop("REDIS_URL", None)
    events_file = tmp_path / "events.jsonl"
    env["EVENTS_FILE"] = str(events_file)
    env["OPERATOR_LISTEN"] = "127.0.0.1:0"  # another test's gateway may hold 9180
    log = (tmp_path / "log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the quick-start server did not start"
                time.sleep(0.1)
        script = snippet.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        first = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
        again = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            events_file.exists() and events_file.read_text().strip()
        ):
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "HTTP/1.1 200 OK" in first.stdout
    assert '{"status":"accepted","delivery_id":"evt_test_1"}' in first.stdout
    assert '{"status":"duplicate","delivery_id":"evt_test_1"}' in again.stdout
    [line] = events_file.read_text().splitlines()  # the example's file destination
    assert json.loads(line)["context"]["source"]["deliveryId"] == "evt_test_1"


def test_serve_with_a_bad_log_level_says_which_are_valid(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("sources: {}\n")
    r = cli("serve", "--config", str(path), env={"LOG_LEVEL": "loud"})
    assert r.returncode == 2
    assert "LOG_LEVEL must be one of debug, info, warning, error, critical" in r.stderr


MAPPED = """\
sources:
  forms:
    type: hmac
    secrets: [x]
    signature_header: Sig
    delivery_id_field: event_id
    mappings:
      - when: "event_type == 'form_response'"
        event: Form Submitted
        properties: {form_id: form_response.form_id}
    tests:
      - name: submission
        payload: {event_id: e1, event_type: form_response, form_response: {form_id: f1}}
        expect:
          - {event: Form Submitted, properties: {form_id: f1}}
"""


def test_map_prints_one_event_per_line(tmp_path):
    (tmp_path / "config.yaml").write_text(MAPPED)
    (tmp_path / "p.json").write_text(
        '{"event_id": "e9", "event_type": "form_response", "form_response": {"form_id": "f2"}}'
    )
    r = cli(
        "map",
        "--source",
        "forms",
        "--config",
        str(tmp_path / "config.yaml"),
        str(tmp_path / "p.json"),
    )
    assert r.returncode == 0, r.stderr
    [line] = r.stdout.splitlines()
    event = json.loads(line)
    assert event["event"] == "Form Submitted"
    assert event["properties"] == {"form_id": "f2"}
    assert event["context"]["source"]["deliveryId"] == "e9"


def test_map_reads_headers_and_stdin(tmp_path):
    (tmp_path / "config.yaml").write_text("sources:\n  gh: {type: github, secrets: [x]}\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "map",
            "--source",
            "gh",
            "--config",
            str(tmp_path / "config.yaml"),
            "--header",
            "X-GitHub-Event: star",
            "--header",
            "X-GitHub-Delivery: d1",
            "-",
        ],
        input='{"action": "created", "sender": {"id": 1, "login": "o"}}',
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["event"] == "Star Created"


def test_map_explains_a_payload_it_cannot_map(tmp_path):
    (tmp_path / "config.yaml").write_text("sources:\n  gh: {type: github, secrets: [x]}\n")
    (tmp_path / "p.json").write_text("{}")
    r = cli(
        "map", "--source", "gh", "--config", str(tmp_path / "config.yaml"), str(tmp_path / "p.json")
    )
    assert r.returncode == 1
    assert "X-GitHub-Event" in r.stderr


def test_test_command_passes_and_fails_with_a_diff(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(MAPPED)
    ok = cli("test", "--config", str(path))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "1 passed, 0 failed" in ok.stdout
    path.write_text(MAPPED.replace("properties: {form_id: f1}}", "properties: {form_id: f9}}"))
    bad = cli("test", "--config", str(path))
    assert bad.returncode == 1
    assert "FAIL  forms: submission" in bad.stdout
    assert '-      "form_id": "f9"' in bad.stdout and '+      "form_id": "f1"' in bad.stdout


def test_serve_runs_the_worker_and_events_tail_shows_the_event(tmp_path, redis_url):
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    env = {
        "REDIS_URL": redis_url,
        "PREFIX": prefix,
        "STRIPE_WEBHOOK_SECRET": "whsec_cli",
        "LOG_LEVEL": "info",
    }
    server = Server(tmp_path, env)  # with workers (the default)
    try:
        body = (Path(__file__).parent / "fixtures/stripe/charge.succeeded.json").read_text()
        header = stripe.WebhookSignature.generate_signature_header(body, "whsec_cli")
        r = httpx.post(
            server.url + "/webhooks/stripe", content=body, headers={"Stripe-Signature": header}
        )
        assert r.json()["status"] == "accepted"
        deadline = time.monotonic() + 10
        tail = None
        while time.monotonic() < deadline:
            tail = cli(
                "events", "tail", "-n", "1", "--config", str(tmp_path / "config.yaml"), env=env
            )
            if tail.stdout.strip():
                break
            time.sleep(0.2)
        assert tail is not None and tail.returncode == 0, tail.stderr if tail else None
        event = json.loads(tail.stdout)
        assert event["event"] == "Charge Succeeded"
        assert event["context"]["source"]["deliveryId"] == "evt_3OkLmN2eZvKYlo2C0charge1"
    finally:
        log = server.stop()
        drop_keys(redis_url, prefix)
    assert '"normalize.batch"' in log and '"Charge Succeeded":1' in log
