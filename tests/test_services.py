"""A missing service skips its tests with the command that starts it, and fails them in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def missing_services(tmp_path_factory) -> Path:
    closed = free_port()  # nothing listens there
    path = tmp_path_factory.mktemp("services") / "test_missing.py"
    path.write_text(
        "from tests.services import require_binary, require_nats, require_postgres, "
        "require_redis\n"
        f"def test_redis(): require_redis('redis://127.0.0.1:{closed}/0')\n"
        f"def test_postgres(): require_postgres('postgresql://postgres@127.0.0.1:{closed}/x')\n"
        f"def test_nats(): require_nats('nats://127.0.0.1:{closed}')\n"
        "def test_binary(): require_binary('redis-server-that-is-not-there')\n"
    )
    return path


def _pytest(path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rsf", "-p", "no:cacheprovider", str(path)],
        capture_output=True,
        text=True,
        cwd=path.parent,
        env=env,
        timeout=120,
    )


def test_outside_ci_a_missing_service_is_a_skip_that_says_what_to_start(missing_services):
    r = _pytest(missing_services, None)
    assert r.returncode == 0, r.stdout
    assert "4 skipped" in r.stdout
    assert "no Redis answers at redis://127.0.0.1:" in r.stdout
    assert "start it with: pg_ctlcluster" in r.stdout
    assert "start it with: nats-server -a 127.0.0.1 -p 4222 -js" in r.stdout
    assert "no `redis-server-that-is-not-there` on PATH" in r.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_in_ci_a_missing_service_fails_the_run(missing_services, ci):
    r = _pytest(missing_services, ci)
    assert r.returncode == 1, r.stdout
    assert "4 failed" in r.stdout
    assert r.stdout.count("CI=true and a service the suite needs is missing") >= 4
    assert "Traceback" not in r.stdout
