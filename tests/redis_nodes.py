"""Real local Redis topologies for the tests: a Redis Cluster and a Sentinel-managed pair.

Plain `redis-server` / `redis-cli` processes on free loopback ports, each in a temp dir of
its own, no Docker:

- `Cluster`: 3 primaries + 3 replicas (`--cluster-enabled yes`, `cluster-node-timeout`
  1000 ms), created with `redis-cli --cluster create ... --cluster-replicas 1`. Its `url` is
  `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3` (the primaries at creation; any
  node of the cluster is a valid seed, so the string stays valid after a failover).
- `SentinelSet`: a primary, its replica and 3 sentinels monitoring it as `gwmaster`
  (quorum 2, `down-after-milliseconds` 2000, `failover-timeout` 5000). Its `url` is
  `redis+sentinel://127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3/gwmaster`. Not 1000: after
  switching to a new primary a sentinel counts it unanswered from the switch but sends its
  first PING only a ping period, min(down-after, 1 s), later (sentinel.c, the instance
  reset), so with 1000 it sometimes declares the new primary down at once and fails over
  again, to the restarted, empty old primary (3 of 12 rounds of kill, failover, restart).

Nothing here sleeps a fixed time: every wait polls a condition with a deadline and fails
with what it saw last. The waits are synchronous (they poll with their own short-lived
connections); from an async test that must keep its event loop running meanwhile (a gateway
under load), call them as `await asyncio.to_thread(cluster.wait_failover, port)`.

Fixtures (import the ones a module uses: `from tests.redis_nodes import cluster  # noqa: F401`,
or load the whole module as a plugin with `pytest_plugins = ["tests.redis_nodes"]`):

- `cluster`, `sentinel` (session): one topology each for the whole session, started on
  first use, stopped at session end by a finalizer (also when tests fail), with an atexit
  kill as a backstop. A test that uses them directly must leave them whole and delete the
  keys it writes (`cluster.flush()` / `sentinel.flush()` empties everything).
- `clean_cluster`, `clean_sentinel` (function; the usual choice, also for tests that kill
  nodes): the same session topology, made whole (`heal()`: every killed node is restarted,
  a failed-over primary rejoining as the replica of its successor, then `wait_healthy()`)
  and emptied (`flush()`: FLUSHALL on every primary, WAITed onto its replicas) before the
  test, and healed and emptied again after it. A test may therefore kill nodes freely, but
  the roles it finds may differ from the start: ask `primaries()`, `primary_for_key()`,
  `primary()`, never remember ports across tests. They work without `cluster` /
  `sentinel` imported beside them.
- `fresh_cluster`, `fresh_sentinel` (function): a brand-new topology of the test's own,
  stopped after it: for a test that needs the initial roles or must not share state. Costs
  a start per test.

Measured on this 2-core machine (5 runs each, other test suites running beside, load
average 5-7): Cluster start 2.05-2.35 s (most of it is `redis-cli --cluster create` polling
once a second for the join), kill -9 of a primary to `wait_failover` returning 2.1-3.1 s,
`restart` of the killed node until all is healthy 0.04-0.5 s, `stop` 0.01-0.06 s.
SentinelSet start 0.1-1.5 s (a sentinel up before its peers reconnects to them after 1 s),
kill -9 of the primary to `wait_failover` 3.25-4.4 s, `restart` of the old primary 0.9-1.2 s.

If `redis-server` is missing the fixtures skip (fail under CI=true), as tests/services.py
does for every service.

Processes are started with `setpriv --pdeathsig KILL` (when called from the main thread and
`setpriv` exists), so even a SIGKILLed pytest leaves no redis-server behind.

Ports: a cluster node also listens on port + 10000 (its bus), so ports are drawn below the
kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768 here) such that port and bus
port are both below it: the kernel never hands these out as client source ports (the cluster
nodes' own connections to each other among them), and each port and its bus port are checked
free by binding them. A start that loses a race for a port anyway is retried on new ports.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from tests.services import require_binary

HOST = "127.0.0.1"
SLOTS = 16384
MASTER_NAME = "gwmaster"
POLL = 0.02  # seconds between two looks at a condition

Addr = tuple[str, int]


# ---------------------------------------------------------------------------------------
# processes, ports, polling


_LIVE: set[_Server] = set()  # every process started and not yet killed: the atexit backstop
_DIRS: set[str] = set()
_TAKEN: set[int] = set()  # ports (and bus ports) handed out by this process
_LOCK = threading.Lock()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_LIVE):
        server.kill()
    for path in list(_DIRS):
        shutil.rmtree(path, ignore_errors=True)


_SWEPT = False


def _sweep_stale_roots() -> None:
    """Remove the temp dirs of topologies whose pytest died without cleaning up (a SIGTERM
    skips atexit; after a SIGKILL, PDEATHSIG ends the servers but not their dirs)."""
    global _SWEPT
    if _SWEPT:
        return
    _SWEPT = True
    for path in glob.glob(os.path.join(tempfile.gettempdir(), "gw-*-*")):
        try:
            with open(os.path.join(path, "owner.pid")) as f:
                owner = int(f.read())
        except (OSError, ValueError):
            continue  # not ours, or not written yet
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # Like redis-server's own listener: a port left in TIME_WAIT counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(bus: bool = False) -> int:
    """A free loopback port (and, with `bus`, port + 10000 free too), not yet handed out."""
    low = _ephemeral_low()
    top = low - 10000 if bus else low  # port (and bus port) stay below the ephemeral range
    for _ in range(200):
        if top - 10000 > 1000:
            port = random.randrange(10000, top)
        else:  # an unusual port range: let the kernel pick, keep the bus port in range
            with socket.socket() as s:
                s.bind((HOST, 0))
                port = s.getsockname()[1]
            if bus and port + 10000 > 65535:
                continue
        wanted = [port, port + 10000] if bus else [port]
        with _LOCK:
            if any(p in _TAKEN for p in wanted) or not all(_port_is_free(p) for p in wanted):
                continue
            _TAKEN.update(wanted)
        return port
    raise RuntimeError("no free loopback port found")


def _release(port: int, bus: bool) -> None:
    with _LOCK:
        _TAKEN.discard(port)
        if bus:
            _TAKEN.discard(port + 10000)


def _poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call `check` until it returns a truthy value; it may also return (False, why).

    Connection errors count as "not yet". Raises TimeoutError with the last answer.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = check()
        except (redis.RedisError, OSError) as e:
            result = (False, f"{type(e).__name__}: {e}")
        if isinstance(result, tuple) and len(result) == 2 and result[0] is False:
            last = result[1]
        elif result:
            return result
        else:
            last = result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"waited {timeout} s for {what}; last: {last}")
        time.sleep(POLL)


def _admin(port: int) -> redis.Redis:
    """A short-lived admin connection (RESP2, strings); use it in a `with`."""
    return redis.Redis(
        HOST,
        port,
        protocol=2,
        decode_responses=True,
        socket_timeout=2,
        socket_connect_timeout=1,
        retry=None,  # an answer or an error at once: the callers poll
    )


def _command(port: int, *args: Any) -> Any:
    with _admin(port) as c:
        return c.execute_command(*args)


def _info_fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip()
    return out


def _replication(port: int) -> dict[str, str]:
    with _admin(port) as c:
        return {k: str(v) for k, v in c.info("replication").items()}


def _pairs(reply: Any) -> dict[str, str]:
    """A Sentinel reply of field/value pairs (a flat list in RESP2) as a dict."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    return {str(reply[i]): str(reply[i + 1]) for i in range(0, len(reply), 2)}


class _Server:
    """One redis-server process: a port, a dir of its own, a log, an argv to (re)start it."""

    def __init__(self, port: int, workdir: str, argv: list[str], bus: bool = False) -> None:
        self.port = port
        self.dir = workdir
        self.argv = argv
        self.bus = bus  # a cluster node: it also listens on port + 10000
        self.proc: subprocess.Popen | None = None

    @property
    def log(self) -> str:
        return os.path.join(self.dir, "redis.log")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        argv = list(self.argv)
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            # PR_SET_PDEATHSIG belongs to the thread that forks: only the main thread's
            # lifetime is the session's.
            argv = [setpriv, "--pdeathsig", "KILL", *argv]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                argv, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        _LIVE.add(self)

    def wait_up(self, timeout: float = 10) -> bool:
        """True once it answers PING; False if the process exited (a lost port race)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                return False
            try:
                if _command(self.port, "PING"):
                    return True
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError(f"redis on port {self.port} did not answer: {self.tail()}")
            time.sleep(POLL)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown, no save."""
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        _LIVE.discard(self)

    def tail(self, lines: int = 15) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"


def _server_argv(port: int, workdir: str) -> list[str]:
    """A redis-server of a topology: in its own dir, in the foreground, nothing on disk."""
    return [
        require_binary("redis-server"),
        "--port", str(port),
        "--bind", HOST,
        "--dir", workdir,
        "--logfile", os.path.join(workdir, "redis.log"),
        "--daemonize", "no",
        "--save", "",
        "--appendonly", "no",
        "--enable-debug-command", "local",
        # A primary starts a replica's full sync at once (the default waits 5 s for
        # more replicas to share a diskless transfer).
        "--repl-diskless-sync-delay", "0",
    ]  # fmt: skip


class _Topology:
    """What Cluster and SentinelSet share: servers by port, a temp root, stop()."""

    kind = "topology"

    def __init__(self) -> None:
        self.root: str | None = None
        self.servers: dict[int, _Server] = {}
        self.start_seconds: float | None = None  # how long start() took

    def _new_root(self) -> None:
        _sweep_stale_roots()
        self.root = tempfile.mkdtemp(prefix=f"gw-{self.kind}-")
        _DIRS.add(self.root)
        with open(os.path.join(self.root, "owner.pid"), "w") as f:
            f.write(str(os.getpid()))

    def _spawn_all(self, servers: list[_Server]) -> bool:
        for s in servers:
            s.spawn()
            self.servers[s.port] = s
        return all(s.wait_up() for s in servers)

    def _exited(self) -> str:
        return "; ".join(f"{s.port}: {s.tail(3)}" for s in self.servers.values() if not s.alive)

    def alive(self, port: int) -> bool:
        return self.servers[port].alive

    def kill(self, port: int) -> None:
        """SIGKILL (kill -9) the process on `port`."""
        self.servers[port].kill()

    def stop(self) -> None:
        """Kill every process and remove the temp dir. Safe to call twice."""
        for s in self.servers.values():
            s.kill()
            _release(s.port, s.bus)
        self.servers = {}
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)
            _DIRS.discard(self.root)
            self.root = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30):  # pragma: no cover - overridden
        raise NotImplementedError

    def _start_with_retries(self, build: Callable[[], None], attempts: int = 3):
        begun = time.monotonic()
        for attempt in range(attempts):
            try:
                self._new_root()
                build()
                self.start_seconds = time.monotonic() - begun
                return self
            except _PortLost as e:
                self.stop()
                if attempt == attempts - 1:
                    raise RuntimeError(f"{self.kind}: a process exited at start: {e}") from None
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")


class _PortLost(Exception):
    """A process exited at start: most likely another process took its port first."""


# ---------------------------------------------------------------------------------------
# Redis Cluster


@dataclass(frozen=True)
class ClusterNode:
    """One line of CLUSTER NODES."""

    id: str
    host: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...] = field(default=())

    @property
    def addr(self) -> Addr:
        return (self.host, self.port)

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})

    def owns(self, slot: int) -> bool:
        return any(a <= slot <= b for a, b in self.slots)


def parse_cluster_nodes(text: str) -> list[ClusterNode]:
    """CLUSTER NODES, as the Redis docs describe its lines:
    `<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv> <config-epoch>
    <link-state> <slot> ...`, slots as `n` or `a-b`, `[...]` for slots being migrated."""
    nodes = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split(",")[0].split("@")[0]
        host, _, port = address.rpartition(":")
        slots = []
        for item in parts[8:]:
            if item.startswith("["):
                continue
            a, _, b = item.partition("-")
            slots.append((int(a), int(b or a)))
        nodes.append(
            ClusterNode(
                id=parts[0],
                host=host,
                port=int(port),
                flags=frozenset(parts[2].split(",")),
                master_id=None if parts[3] == "-" else parts[3],
                slots=tuple(sorted(slots)),
            )
        )
    return nodes


class Cluster(_Topology):
    """A Redis Cluster of `primaries` primaries with `replicas_per_primary` replicas each.

    `Cluster().start()` (or `with Cluster() as c:`) returns once every node says
    cluster_state:ok, all 16384 slots are served, every replica's link is up and all nodes
    agree on who serves what.
    """

    kind = "cluster"

    def __init__(
        self,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        node_timeout_ms: int = 1000,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.n_primaries = primaries
        self.replicas_per_primary = replicas_per_primary
        self.node_timeout_ms = node_timeout_ms
        self.extra_args = tuple(extra_args)
        self.seeds: list[Addr] = []  # the primaries at creation, as `url` lists them
        self._slots_at_kill: dict[int, tuple[tuple[int, int], ...]] = {}

    # -- start / stop ------------------------------------------------------------------

    def _argv(self, port: int, workdir: str) -> list[str]:
        return [
            *_server_argv(port, workdir),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # A replica may always take over, however long it was cut off (tests kill
            # and restart nodes in quick succession).
            "--cluster-replica-validity-factor", "0",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 30) -> Cluster:
        require_binary("redis-cli")
        return self._start_with_retries(lambda: self._build(timeout))

    def _build(self, timeout: float) -> None:
        assert self.root is not None
        servers = []
        for _ in range(self.n_primaries * (1 + self.replicas_per_primary)):
            port = free_port(bus=True)
            workdir = os.path.join(self.root, str(port))
            os.mkdir(workdir)
            servers.append(_Server(port, workdir, self._argv(port, workdir), bus=True))
        if not self._spawn_all(servers):
            raise _PortLost(self._exited())
        # redis-cli makes the first `primaries` addresses the primaries.
        addresses = [f"{HOST}:{s.port}" for s in servers]
        created = subprocess.run(
            [
                require_binary("redis-cli"),
                "--cluster", "create", *addresses,
                "--cluster-replicas", str(self.replicas_per_primary),
                "--cluster-yes",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed ({created.returncode}): "
                f"{created.stdout[-2000:]}{created.stderr[-2000:]}"
            )
        self.wait_healthy(timeout)
        self.seeds = self.primaries()

    @property
    def url(self) -> str:
        """`redis+cluster://host:port,...`: the primaries at creation."""
        return "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in self.seeds)

    @property
    def ports(self) -> list[int]:
        """Every node's port, dead or alive."""
        return sorted(self.servers)

    # -- what the cluster says ---------------------------------------------------------

    def nodes(self, port: int | None = None) -> list[ClusterNode]:
        """CLUSTER NODES as seen by `port` (default: the first running node)."""
        if port is None:
            running = [p for p in self.ports if self.alive(p)]
            if not running:
                raise RuntimeError("no cluster node is running")
            last: Exception | None = None
            for p in running:
                try:
                    return self.nodes(p)
                except (redis.RedisError, OSError) as e:
                    last = e
            raise RuntimeError(f"no running node answers CLUSTER NODES: {last}")
        return parse_cluster_nodes(_command(port, "CLUSTER", "NODES"))

    def primaries(self) -> list[Addr]:
        """The primaries that serve slots now (not failed), ordered by their first slot."""
        masters = [n for n in self.nodes() if n.is_master and n.slots and not n.failing]
        return [n.addr for n in sorted(masters, key=lambda n: n.slots[0])]

    def replicas(self) -> list[Addr]:
        """The replicas now (not failed), by port."""
        nodes = self.nodes()
        return sorted(n.addr for n in nodes if "slave" in n.flags and not n.failing)

    def replicas_of(self, primary_port: int) -> list[Addr]:
        """The replicas (not failed) that replicate the primary on `primary_port`."""
        nodes = self.nodes()
        [primary] = [n for n in nodes if n.port == primary_port]
        return sorted(n.addr for n in nodes if n.master_id == primary.id and not n.failing)

    def keyslot(self, key: str | bytes) -> int:
        port = next(p for p in self.ports if self.alive(p))
        return int(_command(port, "CLUSTER", "KEYSLOT", key))

    def primary_for_key(self, key: str | bytes) -> Addr:
        """The primary that serves `key` now (CLUSTER KEYSLOT, then CLUSTER NODES)."""
        slot = self.keyslot(key)
        for n in self.nodes():
            if n.is_master and not n.failing and n.owns(slot):
                return n.addr
        raise RuntimeError(f"no healthy primary serves slot {slot} (key {key!r})")

    def _problem(self, full: bool, gone: int | None = None) -> str | None:
        """Why the cluster is not (yet) healthy, or None.

        Every running node: cluster_state:ok, all slots served by running, non-failed
        primaries in its view, its replica link up; all views agree on roles and slots.
        `full`: also every node running, known to all and in no failure state, every
        primary serving slots and having a replica. `gone`: that port must serve no slot.
        """
        running = [p for p in self.ports if self.alive(p)]
        if full and len(running) != len(self.servers):
            return f"not running: {sorted(set(self.ports) - set(running))}"
        views = {}
        for port in running:
            info = _info_fields(_command(port, "CLUSTER", "INFO"))
            if info.get("cluster_state") != "ok":
                return f"{port}: cluster_state {info.get('cluster_state')}"
            if int(info.get("cluster_slots_ok", 0)) != SLOTS:
                return f"{port}: cluster_slots_ok {info.get('cluster_slots_ok')}"
            if full and int(info.get("cluster_known_nodes", 0)) != len(self.servers):
                return f"{port}: knows {info.get('cluster_known_nodes')} nodes"
            nodes = parse_cluster_nodes(_command(port, "CLUSTER", "NODES"))
            by_id = {n.id: n for n in nodes}
            covered = 0
            for n in nodes:
                if n.port in running and n.failing:
                    return f"{port} sees {n.port} as {','.join(sorted(n.flags))}"
                if not n.is_master or not n.slots:
                    continue
                if n.port not in running or n.failing or n.port == gone:
                    return f"{port} sees slots {n.slots[0]}... served by {n.port} ({n.flags})"
                covered += sum(b - a + 1 for a, b in n.slots)
            if covered != SLOTS:
                return f"{port} sees {covered} slots served"
            if full:
                for n in nodes:
                    if n.is_master and not n.slots:  # e.g. a restarted one not demoted yet
                        return f"{port} sees {n.port} as a primary without slots"
                masters = [n for n in nodes if n.is_master]
                for m in masters:
                    if not any(r.master_id == m.id for r in nodes):
                        return f"{port} sees primary {m.port} without a replica"
            repl = _replication(port)
            if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                return f"{port}: replica link {repl.get('master_link_status')}"
            views[port] = frozenset(
                (
                    n.port,
                    n.is_master,
                    by_id[n.master_id].port if n.master_id in by_id else None,
                    n.slots,
                )
                for n in nodes
                if n.port in running
            )
        if len(set(views.values())) > 1:
            return "the nodes do not agree yet on roles and slots"
        return None

    def wait_healthy(self, timeout: float = 20) -> None:
        """Every node running, cluster_state:ok everywhere, all slots served, replica links
        up, every primary with a replica, and all nodes agreeing on it."""
        _poll(lambda: (False, why) if (why := self._problem(full=True)) else True, timeout,
              "the cluster to be healthy")  # fmt: skip

    # -- breaking and mending ----------------------------------------------------------

    def kill(self, port: int) -> None:
        """SIGKILL (kill -9) the node on `port`, as a crash would."""
        self._slots_at_kill.pop(port, None)
        with contextlib.suppress(redis.RedisError, OSError, RuntimeError):
            for n in self.nodes(port):
                if "myself" in n.flags and n.is_master and n.slots:
                    self._slots_at_kill[port] = n.slots
        super().kill(port)

    def wait_failover(self, old_primary_port: int, timeout: float = 15) -> Addr:
        """Wait until a replica serves the slots the (killed) primary on `old_primary_port`
        served, and every running node says cluster_state:ok and agrees; returns the new
        primary (for the lowest of those slots)."""
        slots = self._slots_at_kill.get(old_primary_port)
        if slots is None:
            raise ValueError(f"{old_primary_port} was not a primary when kill() ended it")

        def done():
            why = self._problem(full=False, gone=old_primary_port)
            if why:
                return (False, why)
            for n in self.nodes():
                if n.is_master and n.owns(slots[0][0]) and not n.failing:
                    if _command(n.port, "ROLE")[0] != "master":
                        return (False, f"{n.port} does not answer ROLE master yet")
                    return n.addr
            return (False, "no owner for the slots")

        return _poll(done, timeout, f"a replica to take over from {old_primary_port}")

    def restart(self, port: int, wait: bool = True, timeout: float = 20) -> None:
        """Start the killed node on `port` again from its nodes.conf: with no data (no
        persistence), it rejoins; a primary that was failed over comes back as a replica of
        its successor and syncs from it. `wait`: until the whole cluster is healthy."""
        server = self.servers[port]
        if server.alive:
            raise ValueError(f"node {port} is running")
        server.spawn()
        if not server.wait_up():
            raise RuntimeError(f"node {port} did not restart: {server.tail()}")
        if wait:
            self.wait_healthy(timeout)

    def heal(self, timeout: float = 20) -> None:
        """Restart every killed node and wait until the cluster is healthy."""
        for port in self.ports:
            if not self.alive(port):
                # A primary whose replica has not taken over (yet) comes back as the
                # primary of its slots, empty; one that was failed over, as a replica.
                self.restart(port, wait=False)
        self.wait_healthy(timeout)

    def flush(self) -> None:
        """FLUSHALL on every primary, and wait until its running replicas have it too."""
        nodes = self.nodes()
        for p in nodes:
            if p.is_master and p.slots and not p.failing:
                replicas = sum(1 for n in nodes if n.master_id == p.id and not n.failing)
                with _admin(p.port) as c:
                    c.execute_command("FLUSHALL")
                    if replicas:
                        c.execute_command("WAIT", replicas, 2000)


# ---------------------------------------------------------------------------------------
# Sentinel


# What a sentinel flags an instance with while it is not (yet) fit to use.
_BAD_FLAGS = {"s_down", "o_down", "disconnected", "failover_in_progress", "promoted"}


class SentinelSet(_Topology):
    """A primary, `replicas` replicas and `sentinels` sentinels watching it as `name`."""

    kind = "sentinel"

    def __init__(
        self,
        name: str = MASTER_NAME,
        replicas: int = 1,
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = 2000,
        failover_timeout_ms: int = 5000,
    ) -> None:
        super().__init__()
        self.name = name
        self.n_replicas = replicas
        self.n_sentinels = sentinels
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.data_ports: list[int] = []  # the primary at start, then its replicas
        self.sentinel_ports: list[int] = []

    def _data_argv(self, port: int, workdir: str, replicaof: int | None) -> list[str]:
        argv = _server_argv(port, workdir)
        if replicaof is not None:
            argv += ["--replicaof", HOST, str(replicaof)]
        return argv

    def start(self, timeout: float = 30) -> SentinelSet:
        return self._start_with_retries(lambda: self._build(timeout))

    def _build(self, timeout: float) -> None:
        assert self.root is not None
        self.data_ports = [free_port() for _ in range(1 + self.n_replicas)]
        self.sentinel_ports = [free_port() for _ in range(self.n_sentinels)]
        primary = self.data_ports[0]
        data = []
        for i, port in enumerate(self.data_ports):
            workdir = os.path.join(self.root, str(port))
            os.mkdir(workdir)
            argv = self._data_argv(port, workdir, None if i == 0 else primary)
            data.append(_Server(port, workdir, argv))
        if not self._spawn_all(data):
            raise _PortLost(self._exited())
        # Replicas first, so that each sentinel finds them in the primary's first INFO.
        _poll(lambda: (False, why) if (why := self._data_problem(primary)) else True,
              timeout, "the replicas' links")  # fmt: skip
        # The sentinels are told each other's ids and ports in their config (what they
        # write there themselves once they have met), instead of waiting for the hello
        # messages they exchange every 2 s.
        ids = {port: f"{random.getrandbits(160):040x}" for port in self.sentinel_ports}
        sentinels = []
        for port in self.sentinel_ports:
            workdir = os.path.join(self.root, str(port))
            os.mkdir(workdir)
            conf = os.path.join(workdir, "sentinel.conf")
            lines = [
                f"port {port}",
                f"bind {HOST}",
                "daemonize no",
                f"dir {workdir}",
                f"logfile {os.path.join(workdir, 'redis.log')}",
                "sentinel resolve-hostnames no",
                f"sentinel myid {ids[port]}",
                f"sentinel monitor {self.name} {HOST} {primary} {self.quorum}",
                f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}",
                f"sentinel failover-timeout {self.name} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {self.name} 1",
            ]
            lines += [
                f"sentinel known-sentinel {self.name} {HOST} {other} {ids[other]}"
                for other in self.sentinel_ports
                if other != port
            ]
            lines += [
                f"sentinel known-replica {self.name} {HOST} {replica}"
                for replica in self.data_ports[1:]
            ]
            with open(conf, "w") as f:
                f.write("\n".join(lines) + "\n")
            argv = [require_binary("redis-server"), conf, "--sentinel"]
            sentinels.append(_Server(port, workdir, argv))
        if not self._spawn_all(sentinels):
            raise _PortLost(self._exited())
        self.wait_healthy(timeout)

    @property
    def url(self) -> str:
        """`redis+sentinel://host:port,.../<master name>`."""
        hosts = ",".join(f"{HOST}:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.name}"

    @property
    def sentinels(self) -> list[Addr]:
        """The sentinels' addresses, for redis.asyncio.sentinel.Sentinel(...)."""
        return [(HOST, p) for p in self.sentinel_ports]

    def _ask_sentinels(self, *args: Any) -> Any:
        last: Exception | None = None
        for port in self.sentinel_ports:
            if self.alive(port):
                try:
                    return _command(port, "SENTINEL", *args)
                except (redis.RedisError, OSError) as e:
                    last = e
        raise RuntimeError(f"no sentinel answers: {last}")

    def primary(self) -> Addr:
        """The primary, as a sentinel says (SENTINEL GET-MASTER-ADDR-BY-NAME)."""
        host, port = self._ask_sentinels("GET-MASTER-ADDR-BY-NAME", self.name)
        return (host, int(port))

    def replica(self) -> Addr | None:
        """A replica the sentinels see up (SENTINEL REPLICAS), or None."""
        for entry in self._ask_sentinels("REPLICAS", self.name):
            r = _pairs(entry)
            if not set(r["flags"].split(",")) & _BAD_FLAGS:
                return (r["ip"], int(r["port"]))
        return None

    def _data_problem(self, primary: int) -> str | None:
        if not self.alive(primary):
            return f"primary {primary} is not running"
        if _command(primary, "ROLE")[0] != "master":
            return f"{primary} is not a master"
        for port in self.data_ports:
            if port == primary or not self.alive(port):
                continue
            repl = _replication(port)
            if repl.get("role") != "slave" or int(repl.get("master_port", 0)) != primary:
                return f"{port} does not replicate {primary}: {repl.get('role')}"
            if repl.get("master_link_status") != "up":
                return f"{port}: replica link {repl.get('master_link_status')}"
        return None

    def _problem(self, full: bool) -> str | None:
        running = [p for p in self.sentinel_ports if self.alive(p)]
        if full:
            down = [p for p in self.data_ports + self.sentinel_ports if not self.alive(p)]
            if down:
                return f"not running: {down}"
        if not running:
            return "no sentinel is running"
        primaries = set()
        for port in running:
            _, p = _command(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
            primaries.add(int(p))
        if len(primaries) != 1:
            return f"the sentinels name different primaries: {sorted(primaries)}"
        [primary] = primaries
        why = self._data_problem(primary)
        if why:
            return why
        for port in running:
            master = _pairs(_command(port, "SENTINEL", "MASTER", self.name))
            if _BAD_FLAGS & set(master["flags"].split(",")):
                return f"sentinel {port} flags the primary {master['flags']}"
            if full and int(master["num-other-sentinels"]) != self.n_sentinels - 1:
                return f"sentinel {port} knows {master['num-other-sentinels']} others"
            if full:
                for entry in _command(port, "SENTINEL", "SENTINELS", self.name):
                    s = _pairs(entry)
                    # (master_down, a vote about a past failover, lingers some seconds.)
                    if _BAD_FLAGS & set(s["flags"].split(",")):
                        return f"sentinel {port} sees sentinel {s['port']} as {s['flags']}"
            seen = {}
            for entry in _command(port, "SENTINEL", "REPLICAS", self.name):
                r = _pairs(entry)
                seen[int(r["port"])] = r["flags"]
            for p in self.data_ports:
                flags = set(seen.get(p, "unknown").split(","))
                if p != primary and self.alive(p) and ("slave" not in flags or flags & _BAD_FLAGS):
                    return f"sentinel {port} sees replica {p} as {seen.get(p)}"
        return None

    def wait_healthy(self, timeout: float = 20) -> None:
        """Everything running; the sentinels agree on the primary, know each other and see
        every replica up; the replicas' links are up."""
        _poll(lambda: (False, why) if (why := self._problem(full=True)) else True, timeout,
              "the sentinel set to be healthy")  # fmt: skip

    def kill_primary(self) -> int:
        """SIGKILL the primary; returns its port."""
        _, port = self.primary()
        self.kill(port)
        return port

    def wait_failover(self, old_port: int, timeout: float = 20) -> Addr:
        """Wait until every running sentinel names another primary than `old_port`, the
        same one, and it answers ROLE master; returns it."""

        def done():
            answers = set()
            for port in self.sentinel_ports:
                if self.alive(port):
                    host, p = _command(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
                    answers.add((host, int(p)))
            if len(answers) != 1:
                return (False, f"the sentinels say {sorted(answers)}")
            [(host, port)] = answers
            if port == old_port:
                return (False, f"the sentinels still say {old_port}")
            role = _command(port, "ROLE")[0]
            return (host, port) if role == "master" else (False, f"{port} is {role}")

        return _poll(done, timeout, f"the sentinels to fail over from {old_port}")

    def restart(self, port: int, wait: bool = True, timeout: float = 20) -> None:
        """Start the killed process on `port` again: a sentinel from its (rewritten) config,
        a data node (empty: no persistence) as a replica of the current primary.
        `wait`: until the whole set is healthy."""
        server = self.servers[port]
        if server.alive:
            raise ValueError(f"{port} is running")
        if port in self.data_ports:
            _, primary = self.primary()
            if primary == port:
                raise RuntimeError(f"the sentinels still name {port} the primary")
            server.argv = self._data_argv(port, server.dir, primary)
        server.spawn()
        if not server.wait_up():
            raise RuntimeError(f"{port} did not restart: {server.tail()}")
        if wait:
            self.wait_healthy(timeout)

    def heal(self, timeout: float = 20) -> None:
        """Restart what was killed (sentinels first), and wait until all is healthy.
        A killed primary must have been failed over first (see wait_failover)."""
        for port in self.sentinel_ports:
            if not self.alive(port):
                self.restart(port, wait=False)
        dead = [p for p in self.data_ports if not self.alive(p)]
        if dead:
            _, primary = self.primary()
            if primary in dead:
                self.wait_failover(primary, timeout)
        for port in dead:
            self.restart(port, wait=False)
        self.wait_healthy(timeout)

    def flush(self) -> None:
        """FLUSHALL on the primary, and wait until its replicas have it too."""
        _, port = self.primary()
        with _admin(port) as c:
            c.execute_command("FLUSHALL")
            c.execute_command("WAIT", self.n_replicas, 2000)


# ---------------------------------------------------------------------------------------
# pytest fixtures

_SHARED: dict[str, _Topology] = {}


def _shared(kind: str, request: pytest.FixtureRequest) -> Any:
    """The session's one Cluster / SentinelSet, started on first use; stopped at the end
    of the session (config cleanup) whichever fixture started it."""
    topology = _SHARED.get(kind)
    if topology is None or not topology.servers:
        topology = (Cluster if kind == "cluster" else SentinelSet)()
        topology.start()
        _SHARED[kind] = topology

        def stop(topology=topology) -> None:
            topology.stop()
            if _SHARED.get(kind) is topology:
                del _SHARED[kind]

        request.config.add_cleanup(stop)
    return topology


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The session's Redis Cluster (3 primaries + 3 replicas). Do not leave it broken:
    use `clean_cluster` or `fresh_cluster` to kill nodes."""
    c = _shared("cluster", request)
    request.addfinalizer(c.stop)
    yield c


@pytest.fixture(scope="session")
def sentinel(request: pytest.FixtureRequest) -> Iterator[SentinelSet]:
    """The session's primary + replica + 3 sentinels ("gwmaster")."""
    s = _shared("sentinel", request)
    request.addfinalizer(s.stop)
    yield s


def _clean(kind: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The session's topology of `kind`, healed and empty before the test, emptied after."""
    topology = _shared(kind, request)
    topology.heal()
    topology.flush()
    yield topology
    topology.heal()
    topology.flush()


@pytest.fixture
def clean_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The session's cluster, healed and empty before the test, emptied after it."""
    yield from _clean("cluster", request)


@pytest.fixture
def clean_sentinel(request: pytest.FixtureRequest) -> Iterator[SentinelSet]:
    """The session's sentinel set, healed and empty before the test, emptied after it."""
    yield from _clean("sentinel", request)


@pytest.fixture
def fresh_cluster() -> Iterator[Cluster]:
    """A new cluster of the test's own, stopped after it."""
    with Cluster() as c:
        yield c


@pytest.fixture
def fresh_sentinel() -> Iterator[SentinelSet]:
    """A new sentinel set of the test's own, stopped after it."""
    with SentinelSet() as s:
        yield s
