"""`webhook-gateway vendors`, `send` and `handshakes` as a user runs them."""

from __future__ import annotations

import httpx
import redis

from gateway.sources.catalog import VENDORS
from tests.test_cli import cli

CONFIG = """
redis_url: ${REDIS_URL}
key_prefix: ${PREFIX}
sources:
  paddle:
    type: paddle
    secrets: ["${PADDLE_SECRET}"]
  shop:
    type: shopify
    secrets: ["${SHOP_SECRET}"]
  plain:
    type: hmac
    secrets: ["x"]
    signature_header: X-Sig
"""


def test_vendors_lists_every_catalog_type():
    r = cli("vendors")
    assert r.returncode == 0, r.stderr
    for name in VENDORS:
        assert f"\n{name} " in r.stdout, name
    assert f"{len(VENDORS)} vendor(s)" in r.stdout
    payments = cli("vendors", "--category", "payments")
    assert "stripe" in payments.stdout and "github " not in payments.stdout


def test_send_posts_a_signed_sample_the_gateway_accepts(serve, redis_url):
    env = {"PADDLE_SECRET": "pdl_ntfset_from_env", "SHOP_SECRET": "shpss_from_env"}
    server = serve(CONFIG, env)
    prefix = server.env["PREFIX"]
    first = cli(
        "send",
        "paddle",
        "--config",
        str(server.config),
        "--url",
        f"{server.url}/webhooks/paddle",
        env={**env, "PREFIX": prefix},
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Paddle Billing transaction.completed" in first.stdout
    assert '-> 200 {"status":"accepted","delivery_id":"evt_' in first.stdout
    # Header-named event types (Shopify's topic) come from the sample's name.
    shop = cli(
        "send",
        "shop",
        "--event",
        "orders/paid",
        "--config",
        str(server.config),
        "--url",
        f"{server.url}/webhooks/shop",
        env={**env, "PREFIX": prefix},
    )
    assert shop.returncode == 0, shop.stdout + shop.stderr
    client = redis.Redis.from_url(redis_url)
    raw = client.xrange(f"{prefix}:{{paddle}}:raw")
    assert len(raw) == 1
    topics = [f[b"headers"] for _, f in client.xrange(f"{prefix}:{{shop}}:raw")]
    assert len(topics) == 1 and b'"x-shopify-topic":"orders/paid"' in topics[0]


def test_send_explains_what_it_cannot_do(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.replace("${REDIS_URL}", '""'))
    env = {"REDIS_URL": "", "PREFIX": "x", "PADDLE_SECRET": "a", "SHOP_SECRET": "b"}
    generic = cli("send", "plain", "--config", str(path), env=env)
    assert generic.returncode == 2
    assert "no catalog vendor" in generic.stderr
    unknown = cli("send", "paddle", "--event", "nope", "--config", str(path), env=env)
    assert unknown.returncode == 2
    assert "no sample for 'nope' (samples: transaction.completed" in unknown.stderr
    missing = cli("send", "nosuch", "--config", str(path), env=env)
    assert "no source named 'nosuch'" in missing.stderr
    down = cli(
        "send",
        "paddle",
        "--config",
        str(path),
        "--url",
        "http://127.0.0.1:9/webhooks/paddle",
        env=env,
    )
    assert down.returncode == 1
    assert "is the gateway running?" in down.stderr


HANDSHAKE_CONFIG = """
redis_url: ${REDIS_URL}
key_prefix: ${PREFIX}
sources:
  asana:
    type: asana
    secrets: []
"""


def test_handshakes_shows_the_secret_asana_handed_over(serve):
    """Asana's set-up request carries the signing secret in X-Hook-Secret: the gateway
    echoes it (as Asana requires) and keeps it for the operator, masked unless asked."""
    server = serve(HANDSHAKE_CONFIG)
    env = {"PREFIX": server.env["PREFIX"]}
    before = cli("handshakes", "asana", "--config", str(server.config), env=env)
    assert before.returncode == 0, before.stderr
    assert "no handshake received" in before.stdout
    secret = "b537207f20cbfa02357cf448134da559e8bd39d61597dcd5631b8012eae53e81"
    answer = httpx.post(f"{server.url}/webhooks/asana", headers={"X-Hook-Secret": secret})
    assert answer.status_code == 200
    assert answer.headers["x-hook-secret"] == secret
    masked = cli("handshakes", "asana", "--config", str(server.config), env=env)
    assert masked.returncode == 0, masked.stderr
    assert secret not in masked.stdout
    assert "b537… (64 chars)" in masked.stdout
    shown = cli("handshakes", "asana", "--reveal", "--config", str(server.config), env=env)
    assert secret in shown.stdout
    assert "warning" not in shown.stderr
    # A second set-up request (anyone who knows the URL can send one) is kept after the
    # first, and the operator is warned to pick theirs.
    httpx.post(f"{server.url}/webhooks/asana", headers={"X-Hook-Secret": "not-yours"})
    both = cli("handshakes", "asana", "--reveal", "--config", str(server.config), env=env)
    assert both.stdout.index(secret) < both.stdout.index("not-yours")
    assert "warning: 2 set-up requests arrived" in both.stderr
    cleared = cli("handshakes", "asana", "--clear", "--config", str(server.config), env=env)
    assert cleared.returncode == 0, cleared.stderr
    after = cli("handshakes", "asana", "--config", str(server.config), env=env)
    assert "no handshake received" in after.stdout
    # The secret never reaches the log.
    assert secret not in server.log.read_text()


def test_the_readme_vendors_by_name_example_is_a_valid_config():
    """docs/sources.md's `type: zoom` / `sendgrid` / `twilio` block, as written."""
    from pathlib import Path

    from gateway.config import parse_config
    from tests.sources.cases_keys import SENDGRID_PUBLIC

    readme = (Path(__file__).resolve().parents[2] / "docs" / "sources.md").read_text()
    section = readme[readme.index("### Vendors by name") :]
    block = section[section.index("```yaml\n") + 8 : section.index("```\n", 8)]
    cfg = parse_config(
        block,
        "docs/sources.md",
        {
            "ZOOM_WEBHOOK_SECRET_TOKEN": "zoom-secret",
            "SENDGRID_VERIFICATION_KEY": SENDGRID_PUBLIC,
            "TWILIO_AUTH_TOKEN": "12345",
        },
    )
    assert {n: c.__struct_config__.tag for n, c in cfg.sources.items()} == {
        "zoom": "zoom",
        "sendgrid": "sendgrid",
        "twilio": "twilio",
    }
