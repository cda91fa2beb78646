"""The local Redis Cluster and Sentinel topologies (tests/redis_nodes.py) do what they say,
checked with the `redis` package's own cluster and sentinel clients and with plain
connections to single nodes."""

from __future__ import annotations

import os
import signal
import socket

import pytest
import redis as sync_redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from tests.redis_nodes import (  # noqa: F401 (fixtures)
    HOST,
    SentinelSet,
    clean_cluster,
    clean_sentinel,
    cluster,
    sentinel,
)


def direct(port: int) -> sync_redis.Redis:
    """A plain (non-cluster) connection to one node: it answers MOVED for a key it does
    not serve, so a GET through it proves who serves the key."""
    return sync_redis.Redis(HOST, port, decode_responses=True, socket_timeout=2)


def role(port: int) -> list:
    with direct(port) as c:
        return c.execute_command("ROLE")


def cluster_client(c) -> RedisCluster:
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in c.seeds],
        decode_responses=True,
        socket_timeout=1,
        socket_connect_timeout=1,
    )


async def test_cluster_url_roles_and_key_routing(cluster, clean_cluster):  # noqa: F811
    assert clean_cluster is cluster  # the session's one cluster
    hosts = cluster.url.removeprefix("redis+cluster://").split(",")
    assert hosts == [f"{h}:{p}" for h, p in cluster.seeds] and len(hosts) == 3

    primaries, replicas = cluster.primaries(), cluster.replicas()
    assert len(primaries) == 3 and len(replicas) == 3
    assert sorted(primaries + replicas) == [(HOST, p) for p in cluster.ports]
    for _, port in primaries:
        assert role(port)[0] == "master"
    for _, port in replicas:
        kind, _, master_port, state, _ = role(port)
        assert (kind, state) == ("slave", "connected")
        assert (HOST, master_port) in primaries

    # Slots given in the CLUSTER KEYSLOT reference page.
    assert cluster.keyslot("somekey") == 11058
    assert cluster.keyslot("foo{hash_tag}") == cluster.keyslot("bar{hash_tag}") == 2515

    client = cluster_client(cluster)
    try:
        keys: dict[tuple[str, int], list[str]] = {p: [] for p in primaries}
        for i in range(30):  # k0..k29: their slots are fixed, and cover all three shards
            key = f"k{i}"
            await client.set(key, f"v{i}")
            keys[cluster.primary_for_key(key)].append(key)
        assert all(keys.values()), keys
        for (_, port), owned in keys.items():
            with direct(port) as node:
                assert node.dbsize() == len(owned)
                for key in owned:
                    assert node.get(key) == f"v{key[1:]}"
            assert [await client.get(k) for k in owned] == [f"v{k[1:]}" for k in owned]
    finally:
        await client.aclose()

    cluster.flush()
    for _, port in primaries + replicas:
        with direct(port) as node:
            assert node.dbsize() == 0


async def test_cluster_failover_keeps_a_replicated_key(clean_cluster):  # noqa: F811
    c = clean_cluster
    client = cluster_client(c)
    try:
        key = "failover:{a}"
        await client.set(key, "before")
        node = client.get_node_from_key(key)
        assert await client.execute_command("WAIT", 1, 2000, target_nodes=node) == 1

        _, old = c.primary_for_key(key)
        [(_, replica)] = c.replicas_of(old)
        process = c.servers[old].proc
        c.kill(old)
        assert process.returncode == -signal.SIGKILL

        assert c.wait_failover(old, timeout=15) == (HOST, replica)
        assert c.primary_for_key(key) == (HOST, replica)
        assert role(replica)[0] == "master"
        assert await client.get(key) == "before"  # the client found the new primary
        await client.set(key, "after")

        c.restart(old)  # back, empty, as the replica of its successor
        for port in c.ports:  # every node agrees at once, read without the module's parser
            with direct(port) as node:
                text = node.execute_command("CLUSTER", "NODES")
            [line] = [x for x in text.splitlines() if f"{HOST}:{old}@" in x.split()[1]]
            flags, master_id = line.split()[2].split(","), line.split()[3]
            [new_line] = [x for x in text.splitlines() if f"{HOST}:{replica}@" in x.split()[1]]
            assert "slave" in flags and not {"fail", "fail?"} & set(flags), (port, line)
            assert master_id == new_line.split()[0], (port, line)
        assert (HOST, old) in c.replicas_of(replica)
        assert role(old)[:4] == ["slave", HOST, replica, "connected"]
        with direct(old) as node:
            node.execute_command("READONLY")
            assert node.get(key) == "after"  # synced from the new primary
    finally:
        await client.aclose()


async def reconnected_get(master, key: str) -> str | None:
    """GET through a sentinel-managed client whose pooled connection went to the killed
    primary. The command that finds that connection dead fails: redis-py's sentinel
    connections do not retry by default, and a retry would reconnect to the old address
    (redis-py issue #3874: only `connect()`, used when a connection is taken from the
    pool, asks the sentinels). The next command asks the sentinels and reaches the new
    primary."""
    try:
        return await master.get(key)
    except sync_redis.ConnectionError:
        return await master.get(key)


async def test_sentinel_failover_and_the_client_follows(sentinel, clean_sentinel):  # noqa: F811
    s = clean_sentinel
    assert s is sentinel
    ports = [p for _, p in s.sentinels]
    assert s.url == "redis+sentinel://" + ",".join(f"{HOST}:{p}" for p in ports) + "/gwmaster"

    old = s.primary()
    replica = s.replica()
    assert replica is not None and replica != old
    assert role(old[1])[0] == "master"
    assert role(replica[1])[:4] == ["slave", HOST, old[1], "connected"]

    client = Sentinel(s.sentinels, socket_timeout=1, socket_connect_timeout=1)
    master = client.master_for("gwmaster", decode_responses=True, socket_timeout=1)
    try:
        await master.set("sentinel:k", "before")
        assert await master.wait(1, 2000) == 1

        process = s.servers[old[1]].proc
        assert s.kill_primary() == old[1]
        assert process.returncode == -signal.SIGKILL

        new = s.wait_failover(old[1], timeout=20)
        assert new == replica
        assert s.primary() == new and role(new[1])[0] == "master"
        assert await reconnected_get(master, "sentinel:k") == "before"
        assert await client.discover_master("gwmaster") == new
        await master.set("sentinel:k", "after")

        s.restart(old[1])  # back, empty, as a replica of the new primary
        assert s.replica() == old
        assert role(old[1])[:4] == ["slave", HOST, new[1], "connected"]
        with direct(old[1]) as node:
            assert node.get("sentinel:k") == "after"
    finally:
        await master.aclose()
        for c in client.sentinels:
            await c.aclose()


def test_stop_kills_everything_and_removes_the_dirs():
    s = SentinelSet().start()
    root, servers = s.root, list(s.servers.values())
    assert len(servers) == 5 and os.path.isdir(root)
    s.stop()
    assert not os.path.exists(root)
    for server in servers:
        assert server.proc.returncode is not None
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, server.port), timeout=1).close()
    s.stop()  # twice is harmless
