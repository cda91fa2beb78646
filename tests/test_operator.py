"""The operator surfaces (/metrics, the console) stay off the webhook port by default.

In-process, the ASGI client's URL sets the connection's local port (scope["server"]) as
uvicorn sets it from the socket; the `serve` tests bind real sockets.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import httpx
import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError
from tests.conftest import OPERATOR, free_port, gateway_client

CFG = """\
sources:
  acme: {type: hmac, secrets: [s], signature_header: Sig}
"""
PUBLIC = "http://127.0.0.1:8000"


async def test_metrics_answer_on_the_operator_port_only(redis_store):
    async with gateway_client(CFG, redis_store) as client:
        public = await client.get(PUBLIC + "/metrics")
        console = await client.get(PUBLIC + "/console/")
        scraped = await client.get(OPERATOR + "/metrics")
        webhook_on_operator = await client.post(OPERATOR + "/webhooks/acme", content=b"{}")
        health = await client.get(OPERATOR + "/healthz")
    assert public.status_code == 404 and console.status_code == 404
    assert scraped.status_code == 200 and "gateway_deliveries_total" in scraped.text
    # The operator listener takes no webhooks: nothing of the public API is served there.
    assert webhook_on_operator.status_code == 404
    assert health.json()["status"] == "ok"


async def test_public_metrics_need_the_bearer_token(redis_store):
    cfg = CFG + 'operator: {listen: public, metrics_token: "${TOKEN}"}\n'
    async with gateway_client(cfg, redis_store, TOKEN="t0ken") as client:
        none = await client.get(PUBLIC + "/metrics")
        wrong = await client.get(PUBLIC + "/metrics", headers={"authorization": "Bearer nope"})
        right = await client.get(PUBLIC + "/metrics", headers={"authorization": "Bearer t0ken"})
        webhook = await client.post(PUBLIC + "/webhooks/acme", content=b"{}")
    assert none.status_code == 401 and wrong.status_code == 401
    assert none.headers["www-authenticate"].startswith("Bearer")
    assert "t0ken" not in none.text
    assert right.status_code == 200 and "gateway_deliveries_total" in right.text
    assert webhook.status_code == 401  # still the webhook endpoint (unsigned: refused)


@pytest.mark.parametrize(
    ("operator", "message"),
    [
        ("{listen: public}", "operator.metrics_token: with listen: public"),
        ("{listen: nowhere}", "operator.listen: host:port"),
        ('{listen: "127.0.0.1:99999"}', "operator.listen: host:port"),
    ],
)
def test_operator_config_errors(operator, message):
    with pytest.raises(ConfigError) as e:
        parse_config(CFG + f"operator: {operator}\n", "c.yaml", {})
    assert message in str(e.value)


def test_console_enabled_without_users_is_a_config_error():
    with pytest.raises(ConfigError, match=r"console\.users: the console is enabled but nobody"):
        parse_config(CFG + "console: {enabled: true}\n", "c.yaml", {})


def _serve(tmp_path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    path = tmp_path / "config.yaml"
    path.write_text(CFG)
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "LOG_LEVEL": "info", **(env or {})},
    )


def _started(proc: subprocess.Popen) -> dict:
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith(b"{") and json.loads(line)["event"] == "gateway.starting":
            return json.loads(line)
    raise AssertionError("no gateway.starting line")


@pytest.mark.parametrize("processes", ["1", "2"])
def test_serve_binds_the_operator_listener(tmp_path, processes):
    """A real `serve` (one process, and two under the supervisor): port 0 is a free one,
    logged; /metrics there, 404 on the webhook port."""
    port = free_port()
    proc = _serve(
        tmp_path, "--port", str(port), "--operator-listen", "127.0.0.1:0", "--workers", processes
    )
    try:
        operator = _started(proc)["operator"]
        assert operator.startswith("http://127.0.0.1:") and not operator.endswith(":0")
        scraped = _poll(operator + "/metrics")
        assert scraped.status_code == 200 and "# TYPE gateway_stream_lag gauge" in scraped.text
        assert _poll(f"http://127.0.0.1:{port}/metrics").status_code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_serve_says_which_setting_to_change_when_the_operator_port_is_taken(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        busy = taken.getsockname()[1]
        busy_listen = f"127.0.0.1:{busy}"
        proc = _serve(tmp_path, "--port", str(free_port()), "--operator-listen", busy_listen)
        _, err = proc.communicate(timeout=30)
        same = _serve(tmp_path, "--port", "8123", "--operator-listen", "127.0.0.1:8123")
        _, err_same = same.communicate(timeout=30)
    finally:
        taken.close()
    assert proc.returncode == 2
    assert f"operator.listen 127.0.0.1:{busy}" in err.decode()
    assert "choose a free port" in err.decode()
    assert same.returncode == 2 and "are the same port" in err_same.decode()


def _poll(url: str) -> httpx.Response:
    import time

    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
