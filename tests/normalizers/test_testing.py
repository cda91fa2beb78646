"""`webhook-gateway test`'s matching rule: an expected event is a subset of the actual one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from normalizers.testing import subset


@pytest.mark.parametrize(
    ("expected", "actual", "matches"),
    [
        pytest.param(False, False, True, id="false matches false"),
        pytest.param(True, True, True, id="true matches true"),
        pytest.param(False, True, False, id="false is not true"),
        pytest.param(True, 1, False, id="true is not 1"),
        pytest.param(1, True, False, id="1 is not true"),
        pytest.param(False, 0, False, id="false is not 0"),
        pytest.param(0, False, False, id="0 is not false"),
        pytest.param(False, None, False, id="false is not null"),
        pytest.param(None, None, True, id="null matches null"),
        pytest.param(None, 0, False, id="null is not 0"),
        pytest.param(None, "", False, id="null is not empty text"),
        pytest.param(1, 1.0, True, id="1 matches 1.0"),
        pytest.param(24.0, 24, True, id="24.0 matches 24"),
        pytest.param(0.1, 0.10000001, False, id="numbers compare exactly"),
        pytest.param("1", 1, False, id="text is not a number"),
        pytest.param({"a": False}, {"a": False, "b": 1}, True, id="keys not given are not checked"),
        pytest.param({"a": False}, {"b": False}, False, id="a missing key fails"),
        pytest.param({"a": None}, {}, True, id="an expected null matches a missing key"),
        pytest.param({"a": None}, {"a": False}, False, id="an expected null is not false"),
        pytest.param({"a": {"b": True}}, {"a": {"b": True, "c": 2}}, True, id="nested objects"),
        pytest.param([1, [True, None]], [1.0, [True, None]], True, id="nested lists"),
        pytest.param([1, [True]], [1, [1]], False, id="a nested true is not 1"),
        pytest.param([{"a": 1}], [{"a": 1}, {"a": 2}], False, id="lists must have the same length"),
        pytest.param([{"a": 1}, {"b": 2}], [{"b": 2}, {"a": 1}], False, id="list order matters"),
        pytest.param({"a": 1}, [{"a": 1}], False, id="an object is not a list"),
    ],
)
def test_subset(expected, actual, matches):
    assert subset(expected, actual) is matches


CONFIG = """\
sources:
  calendly:
    type: hmac
    secrets: [x]
    signature_header: Calendly-Webhook-Signature
    event_type_field: event
    mappings:
      - when: "event == 'invitee.created'"
        event: Meeting Scheduled
        timestamp: created_at
        properties:
          rescheduled: payload.rescheduled
          no_show: payload.no_show
          questions: length(payload.questions_and_answers)
    tests:
      - name: a booking that was not rescheduled
        payload:
          created_at: "2020-11-23T17:51:19.000000Z"
          event: invitee.created
          payload: {rescheduled: false, no_show: null, questions_and_answers: []}
        expect:
          - event: Meeting Scheduled
            properties: {rescheduled: {rescheduled}, no_show: null, questions: 0}
"""


@pytest.mark.parametrize(
    ("expected", "returncode", "summary"),
    [
        ("false", 0, "1 passed, 0 failed"),
        ("true", 1, "0 passed, 1 failed"),
        ("0", 1, "0 passed, 1 failed"),
    ],
)
def test_the_test_command_compares_booleans_as_booleans(tmp_path, expected, returncode, summary):
    """A `tests:` case expecting `rescheduled: false` passes (it always failed before)."""
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.replace("{rescheduled}", expected))
    r = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "test", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == returncode, r.stdout + r.stderr
    assert summary in r.stdout
