"""`redis_url` forms (one Redis, a Redis Cluster, Sentinel) and how a cluster pipeline
routes commands: pure parsing, no server (the cluster and Sentinel themselves are run in
tests/test_cluster.py)."""

from __future__ import annotations

import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.store import command_key, parse_redis_url


def test_one_redis_urls_are_as_before():
    for url in ("redis://localhost:6379/0", "rediss://u:p@h:6380/2", "unix:///run/redis.sock"):
        assert parse_redis_url(url).kind == "single"


def test_cluster_url_names_some_nodes_and_their_credentials():
    t = parse_redis_url("redis+cluster://app:s%3Acret@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002")
    assert t.kind == "cluster"
    assert t.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002))
    assert (t.username, t.password, t.ssl) == ("app", "s:cret", False)
    assert "s:cret" not in t.label() and "10.0.0.2:7001" in t.label()
    assert parse_redis_url("rediss+cluster://h:7000").ssl is True


def test_sentinel_url_names_the_sentinels_the_master_and_a_db():
    t = parse_redis_url("redis+sentinel://:pw@s1:26379,s2/mymaster/3")
    assert t.kind == "sentinel"
    assert t.nodes == (("s1", 26379), ("s2", 26379))  # the Sentinel port by default
    assert (t.master, t.db, t.password) == ("mymaster", 3, "pw")
    assert "pw" not in t.label() and "mymaster" in t.label()
    assert t.sentinel_password is None  # the URL's password is the primary's
    t = parse_redis_url("redis+sentinel://:pw@s1/mymaster?sentinel_password=s%40cret")
    assert (t.password, t.sentinel_password, t.master) == ("pw", "s@cret", "mymaster")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://s1:26379", "name the primary"),
        ("redis+cluster://h:7000/1", "only database 0"),
        ("redis+cluster://h:notaport", "is not host:port"),
        ("redis+cluster://h:7000,", "is not host:port"),
        ("redis+sentinel://s1/m/x", "not a database number"),
        ("redis+cluster://h:7000?ssl=1", "unknown URL option 'ssl'"),
        ("redis+sentinel://s1/m?timeout=1", "sentinel_password are read"),
        ("memcached://h:11211", "redis+cluster://"),
        ("redis+shard://h:1", "redis+sentinel://"),
    ],
)
def test_bad_urls_say_what_is_wrong(url, says):
    with pytest.raises(ValueError) as info:
        parse_redis_url(url)
    assert says in str(info.value)


def test_a_bad_url_is_a_config_error_at_its_line():
    with pytest.raises(ConfigError) as info:
        parse_config("redis_url: redis+sentinel://s1:26379\n", "c.yaml", {})
    assert "c.yaml:1" in str(info.value) and "name the primary" in str(info.value)


def test_replicated_durability_needs_a_redis():
    with pytest.raises(ConfigError) as info:
        parse_config("durability: replicated\n", "c.yaml", {})
    assert "no replica" in str(info.value)
    cfg = parse_config("redis_url: redis://h:6379/0\ndurability: replicated\n", "c.yaml", {})
    assert cfg.durability == "replicated"
    with pytest.raises(ConfigError):
        parse_config("redis_url: redis://h:6379/0\ndurability: always\n", "c.yaml", {})


def test_commands_are_routed_by_their_first_key_or_their_scripts_first_key():
    assert command_key(("XADD", "gw:{events}:stream", "*", "a", "b")) == "gw:{events}:stream"
    assert command_key(("EVALSHA", "abc", 2, "gw:{s}:raw", "gw:{s}:seen:1", 1)) == "gw:{s}:raw"
    assert command_key((b"HSET", b"gw:log:event:m1", b"f", b"v")) == "gw:log:event:m1"
    assert command_key(("EVALSHA", "abc", 0, "arg")) is None
    assert command_key(("WAIT", 1, 100)) is None
    assert command_key(("SCRIPT", "LOAD", "return 1")) is None
