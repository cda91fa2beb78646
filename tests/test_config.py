"""config.yaml: typed decoding, ${VAR} expansion, and errors that say file:line: key.path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.config import ByteSize, Duration, Secret, parse_config
from gateway.config_schema import config_schema
from gateway.errors import ConfigError

GOOD = """\
redis_url: ${REDIS_URL:-}
sources:
  stripe:
    type: stripe
    secrets: ["${STRIPE_SECRET}"]
    dedupe_ttl: 3d
    max_body: 512KiB
"""


def test_good_config_is_typed():
    cfg = parse_config(GOOD, "c.yaml", {"STRIPE_SECRET": "whsec_abc"})
    assert cfg.redis_url == ""
    stripe = cfg.sources["stripe"]
    assert stripe.secrets == [Secret("whsec_abc")]
    assert stripe.dedupe_ttl == 3 * 86400
    assert stripe.max_body == 512 * 1024
    assert stripe.tolerance == 300
    assert cfg.redis_timeout == 2


def test_secrets_do_not_show_in_reprs():
    cfg = parse_config(GOOD, "c.yaml", {"STRIPE_SECRET": "whsec_topsecret"})
    assert "topsecret" not in repr(cfg)
    assert "topsecret" not in str(cfg.sources["stripe"].secrets)


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        # A typo names the key, its line and a suggestion.
        (
            GOOD.replace("secrets:", "secretz:"),
            {"STRIPE_SECRET": "x"},
            "c.yaml:5: sources.stripe.secretz: unknown key `secretz`; did you mean `secrets`?",
        ),
        # An unset variable names the variable, never a value.
        (
            GOOD,
            {},
            "c.yaml:5: sources.stripe.secrets[0]: environment variable STRIPE_SECRET is not set",
        ),
        (
            GOOD.replace("3d", "three days"),
            {"STRIPE_SECRET": "x"},
            "c.yaml:6: sources.stripe.dedupe_ttl: expected a duration such as 30s",
        ),
        (
            GOOD.replace("512KiB", "lots"),
            {"STRIPE_SECRET": "x"},
            "c.yaml:7: sources.stripe.max_body: expected a size such as",
        ),
        (
            GOOD.replace("type: stripe", "type: strype"),
            {"STRIPE_SECRET": "x"},
            "c.yaml:4: sources.stripe.type: unknown source type 'strype'; did you mean 'stripe'?",
        ),
        (
            GOOD.replace("    type: stripe\n", ""),
            {"STRIPE_SECRET": "x"},
            "c.yaml:3: sources.stripe: `type:` is required",
        ),
        (
            GOOD.replace('["${STRIPE_SECRET}"]', "[]"),
            {},
            "c.yaml:5: sources.stripe.secrets: at least one secret is required",
        ),
        (
            GOOD.replace('["${STRIPE_SECRET}"]', "whsec_x"),
            {},
            "c.yaml:5: sources.stripe.secrets: expected `array`, got `str`",
        ),
        (
            GOOD + "redis_urll: x\n",
            {"STRIPE_SECRET": "x"},
            "c.yaml:8: redis_urll: unknown key `redis_urll`; did you mean `redis_url`?",
        ),
        (
            GOOD + "  stripe:\n    type: stripe\n",
            {"STRIPE_SECRET": "x"},
            "c.yaml:8: sources: key `stripe` appears twice",
        ),
        ("sources: [a, b]\n", {}, "c.yaml:1: sources: must be a mapping"),
        ("- a\n- b\n", {}, "c.yaml:1: the config must be a mapping"),
        ("sources:\n  stripe: {type: stripe\n", {}, "c.yaml:3: not valid YAML"),
        (
            "sources:\n  bad/name: {type: stripe, secrets: [x]}\n",
            {},
            "c.yaml:2: sources.bad/name: a source name is used in the URL",
        ),
        (
            "destinations:\n  ph: {api_key: x}\n",
            {},
            "c.yaml:2: destinations.ph: `type:` is required (one of: amplitude, file, ga4,",
        ),
        (
            "sources:\n  p:\n    type: hmac\n    secrets: [x]\n    signature_header: S\n"
            "    signed_content: '{timestamp}.{body}'\n",
            {},
            "c.yaml:6: sources.p.signed_content: uses {timestamp}: set timestamp_header",
        ),
        (
            "sources:\n  p:\n    type: hmac\n    secrets: [x]\n    signature_header: S\n"
            "    signed_content: '{ts}.{body}'\n",
            {},
            "c.yaml:6: sources.p.signed_content: unknown placeholder {ts}",
        ),
        (
            "sources:\n  p:\n    type: hmac\n    secrets: [x]\n",
            {},
            "c.yaml:2: sources.p: object missing required field `signature_header`",
        ),
        (
            "sources:\n  p:\n    type: hmac\n    secrets: [zz]\n    signature_header: S\n"
            "    secret_encoding: hex\n",
            {},
            "c.yaml:4: sources.p.secrets[0]: the secret is not valid hex",
        ),
    ],
    ids=[
        "typo",
        "unset-var",
        "bad-duration",
        "bad-size",
        "unknown-type",
        "no-type",
        "no-secrets",
        "secrets-not-list",
        "top-level-typo",
        "duplicate-key",
        "sources-not-mapping",
        "not-mapping",
        "yaml-syntax",
        "bad-source-name",
        "destination-without-type",
        "timestamp-without-source",
        "unknown-placeholder",
        "hmac-missing-field",
        "bad-hex-secret",
    ],
)
def test_errors_name_file_line_and_key(text, env, expected):
    with pytest.raises(ConfigError) as e:
        parse_config(text, "c.yaml", env)
    assert str(e.value).startswith(expected), str(e.value)


def test_unset_variable_error_never_shows_other_values():
    text = GOOD.replace("${REDIS_URL:-}", "redis://:hunter2@${REDIS_HOST}/0")
    with pytest.raises(ConfigError) as e:
        parse_config(text, "c.yaml", {"STRIPE_SECRET": "x"})
    assert "REDIS_HOST" in str(e.value)
    assert "hunter2" not in str(e.value)


def test_variables_and_defaults():
    text = (
        "redis_url: ${URL:-redis://localhost:6379/0}\n"
        "key_prefix: ${PREFIX}\n"
        "redis_timeout: ${TIMEOUT:-3}\n"
        "sources:\n  s:\n    type: github\n    secrets: ['${A}${B:-b}', '$${LITERAL}']\n"
        "    raw_retention: ${KEEP:-500}\n"
    )
    cfg = parse_config(text, "c.yaml", {"PREFIX": "p1", "A": "a"})
    assert cfg.redis_url == "redis://localhost:6379/0"
    assert cfg.key_prefix == "p1"
    assert cfg.redis_timeout == 3
    assert [s.reveal() for s in cfg.sources["s"].secrets] == ["ab", "${LITERAL}"]
    assert cfg.sources["s"].raw_retention == 500  # an unquoted ${..} becomes an int


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30),
        ("30s", 30),
        ("5m", 300),
        ("1.5h", 5400),
        ("7d", 604800),
        ("250ms", 0.25),
        ("2w", 1209600),
    ],
)
def test_durations(text, seconds):
    assert Duration.parse(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1024", 1024),
        ("1KiB", 1024),
        ("1MiB", 1048576),
        ("1MB", 1000000),
        ("512kb", 512000),
        ("2 GiB", 2 * 1024**3),
    ],
)
def test_sizes(text, size):
    assert ByteSize.parse(text) == size


def test_schema_covers_every_source_type():
    from gateway.sources.catalog import VENDORS

    schema = config_schema()
    json.dumps(schema)  # serializable
    mapping = schema["$defs"]["Config"]["properties"]["sources"]["additionalProperties"]
    types = set(mapping["discriminator"]["mapping"])
    hand_written = {"stripe", "standard-webhooks", "github", "shopify", "intercom", "slack"}
    assert types == {"hmac", "collect", *VENDORS}
    assert hand_written <= types
    paddle = schema["$defs"]["PaddleConfig"]
    assert paddle["properties"]["tolerance"]["default"] == "300s"
    assert "3 days" in paddle["properties"]["dedupe_ttl"]["description"]
    assert paddle["additionalProperties"] is False
    square = schema["$defs"]["SquareConfig"]
    assert "public URL" in square["properties"]["url"]["description"]
    stripe = schema["$defs"]["StripeConfig"]
    assert stripe["properties"]["dedupe_ttl"]["default"] == "7d"
    assert stripe["properties"]["tolerance"]["default"] == "300s"
    assert "secrets" in stripe["required"]
    assert stripe["additionalProperties"] is False


def test_the_example_configs_commented_console_and_alerts_are_valid():
    """config.yaml ends with commented console and alerts examples: uncommented, they are
    a valid config (what a user gets by deleting the '# ')."""
    text = (Path(__file__).parents[1] / "config.yaml").read_text()
    base, _, tail = text.partition("# The console and /metrics")
    kept = ("#   ", "# console:", "# alerts:")
    block = "\n".join(line[2:] for line in tail.splitlines() if line.startswith(kept))
    env = {"CONSOLE_ADMIN_PASSWORD": "x", "SLACK_WEBHOOK_URL": "https://hooks.slack.com/x"}
    cfg = parse_config(base + block + "\n", "config.yaml", env)
    assert cfg.console.enabled and cfg.console.users["admin"].role == "operator"
    assert [rule.name for rule in cfg.alerts.rules] == ["destination failing"]
