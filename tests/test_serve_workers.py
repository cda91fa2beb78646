"""`serve --workers N` and `worker --processes N`: real processes on one port, real Redis.

Which process answered is read from the children's JSON log lines (each carries `pid`);
the processes themselves from /proc.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
import stripe
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import drop_keys, free_port
from tests.test_cli import Server, Worker, cli

SECRET = "whsec_multiproc"
CONFIG = """\
redis_url: ${REDIS_URL}
key_prefix: ${PREFIX}
sources:
  stripe:
    type: stripe
    secrets: ["${STRIPE_WEBHOOK_SECRET}"]
destinations:
  out:
    type: file
    path: ${EVENTS_FILE}
    start: earliest
"""


@pytest.fixture
def setup(tmp_path, redis_url):
    """The environment of a gateway on the real Redis, its own key prefix (dropped after)."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    env = {
        "REDIS_URL": redis_url,
        "PREFIX": prefix,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "EVENTS_FILE": str(tmp_path / "events.jsonl"),
        "LOG_LEVEL": "info",
    }
    client = redis.Redis.from_url(redis_url)
    yield env, client
    client.close()
    drop_keys(redis_url, prefix)


# -- /proc ---------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def running(pid: int) -> bool:
    """Alive: in /proc and not a zombie (a zombie has ended; only its entry is left)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        stat = _stat(int(entry)) if entry.isdigit() else None
        if stat and stat[1] == pid and stat[0] not in ("Z", "X"):
            found.add(int(entry))
    return found


def descendants(pid: int) -> set[int]:
    found = children(pid)
    for child in list(found):
        found |= descendants(child)
    return found


def stop_all(proc: Server | Worker) -> set[int]:
    """SIGTERM to the parent only (as a service manager sends it), then every process it
    had must end by itself; returns them. Whatever is left (the test failed) is killed,
    so that no test leaves processes running."""
    family = descendants(proc.proc.pid)
    try:
        proc.stop()
        wait_for(lambda: not any(running(p) for p in family), seconds=5, what="no process left")
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()
        for pid in family:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
    return family


def served_children(pid: int) -> set[int]:
    """The parent's spawned children (not multiprocessing's resource tracker)."""
    return {c for c in children(pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()}


def two_children(proc: Server | Worker, gone: int | None = None) -> set[int]:
    """Wait until the parent has two spawned children (neither of them `gone`)."""

    def check() -> set[int] | None:
        kids = served_children(proc.proc.pid)
        return kids if len(kids) == 2 and gone not in kids else None

    return wait_for(check, what=f"two children of {proc.proc.pid}", log=proc.log)


def wait_for(condition, seconds: float = 15, what: str = "the condition", log: Path | None = None):
    """Poll `condition` until truthy; on timeout, fail with its last value (and the tail
    of `log`, to say why)."""
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            tail = "\n".join(log.read_text().splitlines()[-30:]) if log else ""
            raise AssertionError(f"waited {seconds} s for {what}; last value: {result!r}\n{tail}")
        time.sleep(0.05)


# -- webhooks ------------------------------------------------------------------------


def post_webhooks(url: str, ids: list[str]) -> list[httpx.Response]:
    """Signed Stripe events, 16 at a time, each on a connection of its own (so that the
    kernel hands them to whichever process accepts first)."""

    def one(event_id: str) -> httpx.Response:
        body = json.dumps(
            {
                "id": event_id,
                "object": "event",
                "type": "customer.created",
                "created": int(time.time()),
                "data": {"object": {"id": f"cus_{event_id}", "object": "customer"}},
            }
        )
        header = stripe.WebhookSignature.generate_signature_header(body, SECRET)
        return httpx.post(
            url + "/webhooks/stripe", content=body, headers={"Stripe-Signature": header}
        )

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, ids))


def log_lines(server: Server) -> list[dict]:
    return [json.loads(x) for x in server.log.read_text().splitlines() if x.startswith("{")]


def answered_by(server: Server) -> dict[str, int]:
    """delivery id -> the pid of the process that accepted it, from the log."""
    return {
        x["delivery_id"]: x["pid"] for x in log_lines(server) if x["event"] == "delivery.accepted"
    }


def send_to_each(server: Server, pids: set[int], sent: list[str]) -> None:
    """Show that each of `pids` answers on the shared port: with the parent's other
    children paused (SIGSTOP, for well under uvicorn's 5 s health check), a batch of
    webhooks must all be accepted by that one. (Left alone, the kernel may hand every
    connection to the same process for a long while: which one wins is not fair.)"""
    for pid in pids:
        wait_for(
            lambda pid=pid: any(
                x["event"] == "gateway.ready" and x["pid"] == pid for x in log_lines(server)
            ),
            what=f"process {pid} ready",
            log=server.log,
        )
        others = served_children(server.proc.pid) - {pid}
        ids = [f"evt_{uuid.uuid4().hex[:16]}" for _ in range(4)]
        for other in others:
            os.kill(other, signal.SIGSTOP)
        try:
            replies = post_webhooks(server.url, ids)
        finally:
            for other in others:
                os.kill(other, signal.SIGCONT)
        for r in replies:
            assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
        sent.extend(ids)
        # Each accepted delivery is logged once, by the process that accepted it (the line
        # may be written just after the answer).
        lines = wait_for(
            lambda ids=ids: (
                found
                if len(found := [x for x in log_lines(server) if x.get("delivery_id") in ids])
                >= len(ids)
                else None
            ),
            what="the accepted deliveries in the log",
        )
        assert sorted((x["delivery_id"], x["event"], x["pid"]) for x in lines) == [
            (i, "delivery.accepted", pid) for i in sorted(ids)
        ]


def settled(client: redis.Redis, stream: str) -> bool:
    """The stream has consumer groups, and each has read up to its last entry and
    acknowledged everything (whatever the groups are called: a process that used a group
    of its own would be caught by the counts, not hang the wait)."""
    if not client.exists(stream):
        return False
    last = client.xinfo_stream(stream)["last-generated-id"]
    groups = client.xinfo_groups(stream)
    return bool(groups) and all(
        g["last-delivered-id"] == last and g["pending"] == 0 for g in groups
    )


def assert_each_webhook_became_one_event(
    client: redis.Redis, prefix: str, events_file: Path, sent: list[str]
) -> None:
    raw, events = f"{prefix}:{{stripe}}:raw", f"{prefix}:{{events}}:stream"
    wait_for(
        lambda: (
            client.xlen(raw) == len(sent)
            and settled(client, raw)
            and client.xlen(events) >= len(sent)
            and settled(client, events)
        ),
        what="every delivery normalized and delivered",
    )
    assert client.xlen(events) == len(sent)  # one event per delivery: none twice
    lines = [json.loads(x) for x in events_file.read_text().splitlines()]
    delivered = [x["context"]["source"]["deliveryId"] for x in lines]
    assert sorted(delivered) == sorted(sent)  # each delivered once, none missing


def consumer_pids(client: redis.Redis, stream: str, group: str) -> set[int]:
    """The pids in the names of a group's consumers (named host-pid-random)."""
    names = [c["name"].decode() for c in client.xinfo_consumers(stream, group)]
    return {int(name.split("-")[-2]) for name in names}


# -- metrics -------------------------------------------------------------------------


def shared_dir(pid: int) -> str | None:
    """PROMETHEUS_MULTIPROC_DIR in the environment a process started with."""
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        name, _, value = item.partition(b"=")
        if name == b"PROMETHEUS_MULTIPROC_DIR":
            return value.decode()
    return None


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    """GET /metrics of the operator listener at `url`: (name, labels, value) of every sample."""
    r = httpx.get(url + "/metrics")
    assert r.status_code == 200, r.text
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    ]


def scrape_from(server: Server, pid: int) -> list[tuple[str, dict[str, str], float]]:
    """GET /metrics answered by `pid`: the parent's other children paused meanwhile."""
    others = served_children(server.proc.pid) - {pid}
    for other in others:
        os.kill(other, signal.SIGSTOP)
    try:
        return scrape(server.operator_url)
    finally:
        for other in others:
            os.kill(other, signal.SIGCONT)


def values(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> list:
    """The values of the samples `name` with (at least) these labels."""
    return [v for n, ls, v in samples if n == name and labels.items() <= ls.items()]


def lag(samples: list[tuple[str, dict[str, str], float]], group: str) -> list:
    return values(samples, "gateway_stream_lag", stream="raw:stripe", group=group)


# -- tests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("serve", "--workers", "0"), ("serve", "--processes", "-2"), ("worker", "--processes", "0")],
)
def test_fewer_than_one_process_is_a_usage_error(args):
    r = cli(*args)
    assert r.returncode == 2
    assert "must be at least 1" in r.stderr and "usage:" in r.stderr


def test_a_bad_config_fails_once_in_the_parent(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("sources:\n  s: {type: nope}\n")
    r = cli("serve", "--config", str(path), "--workers", "3", "--port", str(free_port()))
    assert r.returncode == 2
    assert r.stderr.count("sources.s.type: unknown source type 'nope'") == 1
    assert "Traceback" not in r.stderr


def test_serve_with_two_processes(tmp_path, setup):
    """`serve --workers 2`: two processes answer on one port; every accepted webhook
    becomes exactly one event (two copies of the workers, one consumer group); a child
    killed with SIGKILL is replaced while the port keeps answering; SIGTERM to the parent
    stops every process."""
    env, client = setup
    server = Server(tmp_path, env, "--workers", "2", config=CONFIG)
    sent: list[str] = []
    try:
        kids = two_children(server)
        send_to_each(server, kids, sent)
        assert set(answered_by(server)) == set(sent)
        assert_each_webhook_became_one_event(client, env["PREFIX"], Path(env["EVENTS_FILE"]), sent)
        # Both processes ran a normalize worker of their own (a consumer of the group only
        # shows in Redis once it has read something: not asked of both).
        started = [x for x in log_lines(server) if x["event"] == "worker.started"]
        assert {x["pid"] for x in started} == kids
        assert {int(x["consumer"].split("-")[-2]) for x in started} == kids
        raw = f"{env['PREFIX']}:{{stripe}}:raw"
        assert consumer_pids(client, raw, "normalize") <= kids

        victim, survivor = sorted(kids)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not running(victim), what="the killed child to end")
        # The port keeps answering meanwhile (the other process)...
        ids = [f"evt_{uuid.uuid4().hex[:16]}" for _ in range(8)]
        for r in post_webhooks(server.url, ids):
            assert r.status_code == 200 and r.json()["status"] == "accepted"
        sent.extend(ids)
        # ...and the supervisor starts a replacement, which answers too.
        new = two_children(server, gone=victim)
        assert survivor in new
        [replacement] = new - {survivor}
        send_to_each(server, {replacement}, sent)
        restarted = [x for x in log_lines(server) if x["event"] == "process.restarted"]
        assert [(x["pid"], x["signal"], x["new_pid"]) for x in restarted] == [
            (victim, "SIGKILL", replacement)
        ]
        assert_each_webhook_became_one_event(client, env["PREFIX"], Path(env["EVENTS_FILE"]), sent)
    finally:
        family = stop_all(server)
    assert family >= new  # (and multiprocessing's resource tracker): all ended
    assert server.proc.returncode == 0


def test_serve_metrics_are_the_sums_over_the_processes(tmp_path, setup):
    """`serve --workers 2`: GET /metrics, whichever process answers, reports the counts
    of both (prometheus_client's multiprocess mode) and each stream lag once, not summed.
    A child killed with SIGKILL and replaced: its counts stay in the sums, its gauges are
    dropped. The metrics directory the parent made is removed when it exits."""
    env, client = setup
    env = {**env, "TMPDIR": str(tmp_path)}  # where the parent makes its metrics directory
    server = Server(tmp_path, env, "--workers", "2", config=CONFIG)
    raw = f"{env['PREFIX']}:{{stripe}}:raw"
    sent: list[str] = []
    accepted = {"source": "stripe", "outcome": "accepted"}
    try:
        kids = two_children(server)
        [directory] = {shared_dir(pid) for pid in kids}
        assert directory and Path(directory).parent == tmp_path and Path(directory).is_dir()
        send_to_each(server, kids, sent)  # 4 accepted by each process (their log lines)
        # What the in-process workers counted (both read the stream): summed as well.
        assert_each_webhook_became_one_event(client, env["PREFIX"], Path(env["EVENTS_FILE"]), sent)
        out = {"destination": "out"}
        samples = wait_for(
            lambda: (
                m
                if sum(values(m := scrape(server.operator_url), "gateway_events_total"))
                >= len(sent)
                and sum(values(m, "gateway_destination_events_total", **out)) >= len(sent)
                else None
            ),
            what="every event counted as made and sent",
        )
        assert values(samples, "gateway_events_total", source="stripe") == [len(sent)]
        assert values(samples, "gateway_destination_events_total", **out, outcome="sent") == [
            len(sent)
        ]
        [batches] = values(samples, "gateway_destination_batch_seconds_count", **out)
        assert batches >= 1
        assert values(samples, "gateway_destination_batch_seconds_bucket", **out, le="+Inf") == [
            batches
        ]

        # A consumer group that nobody reads: by Redis's definition its lag is every
        # entry of the stream, one per webhook.
        client.xgroup_create(raw, "probe", id="0")
        for pid in sorted(kids):  # each answers a scrape (and so writes the lag it read)
            samples = scrape_from(server, pid)
            assert values(samples, "gateway_deliveries_total", **accepted) == [len(sent)]
            assert lag(samples, "probe") == [len(sent)]

        # A group that only the victim read the lag of, gone from Redis before it dies.
        victim, survivor = sorted(kids)
        client.xgroup_create(raw, "gone", id="0")
        assert lag(scrape_from(server, victim), "gone") == [len(sent)]
        client.xgroup_destroy(raw, "gone")
        os.kill(victim, signal.SIGKILL)
        new = two_children(server, gone=victim)
        [replacement] = new - {survivor}
        wait_for(
            lambda: [x for x in log_lines(server) if x["event"] == "process.restarted"],
            what="the replacement logged",
        )
        assert shared_dir(replacement) == directory
        send_to_each(server, {replacement}, sent)
        for pid in (survivor, replacement):
            samples = scrape_from(server, pid)
            # The victim's 4 included (its counter file stays), the replacement's 4 too.
            assert values(samples, "gateway_deliveries_total", **accepted) == [len(sent)]
            assert lag(samples, "probe") == [len(sent)]
            assert lag(samples, "gone") == []  # the dead process's gauge is not reported
    finally:
        stop_all(server)
    assert server.proc.returncode == 0
    assert not Path(directory).exists()


CHILD = """\
from gateway.metrics import Metrics, share_between_processes

share_between_processes()
first, second = Metrics(), Metrics()
first.delivery("s", "accepted")
second.delivery("s", "accepted", 2)
first.delivery("s", "accepted")
"""


def test_metrics_in_a_child_of_a_multiprocess_run(tmp_path):
    """A child (a process started with PROMETHEUS_MULTIPROC_DIR set) counts into that
    directory, and a second Metrics there adds to the first's counts instead of writing
    over them. A process that imported prometheus_client before the variable was set
    refuses to start (its values would be in memory, not in the directory)."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    value = registry.get_sample_value(
        "gateway_deliveries_total", {"source": "s", "outcome": "accepted"}
    )
    assert value == 4

    late = "import os, prometheus_client\nos.environ['PROMETHEUS_MULTIPROC_DIR'] = {!r}\n"
    late = late.format(str(tmp_path)) + CHILD
    env.pop("PROMETHEUS_MULTIPROC_DIR")
    r = subprocess.run([sys.executable, "-c", late], env=env, capture_output=True, text=True)
    assert r.returncode == 1
    assert "prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set" in r.stderr


def test_worker_with_two_processes(tmp_path, setup):
    """`serve --workers 2 --no-workers` only accepts; `worker --processes 2` makes each
    delivery one event, each process under its own consumer name and metrics port (each
    reporting the counts of both); SIGTERM stops them all."""
    env, client = setup
    first = _two_free_ports()
    server = Server(tmp_path, env, "--workers", "2", "--no-workers", config=CONFIG)
    worker = None
    raw = f"{env['PREFIX']}:{{stripe}}:raw"
    sent = [f"evt_{uuid.uuid4().hex[:16]}" for _ in range(40)]
    try:
        for r in post_webhooks(server.url, sent):
            assert r.status_code == 200
        assert client.xlen(raw) == len(sent)
        assert client.xinfo_groups(raw) == []  # --no-workers: nobody normalizes
        worker = Worker(
            server.config, "--processes", "2", "--name", "w", "--metrics-port", str(first), env=env
        )
        kids = two_children(worker)
        # Both processes read the one consumer group, each under its own name.
        wait_for(
            lambda: (
                {
                    (x["pid"], x["consumer"])
                    for x in worker.lines()
                    if x["event"] == "worker.started"
                }
                == {(pid, f"w-{pid}") for pid in kids}
            ),
            what="both worker processes reading",
            log=worker.log,
        )
        ids = [f"evt_{uuid.uuid4().hex[:16]}" for _ in range(40)]
        for r in post_webhooks(server.url, ids):
            assert r.status_code == 200
        sent.extend(ids)
        assert_each_webhook_became_one_event(client, env["PREFIX"], Path(env["EVENTS_FILE"]), sent)
        names = {c["name"].decode() for c in client.xinfo_consumers(raw, "normalize")}
        assert names and names <= {f"w-{pid}" for pid in kids}
        # Each process serves metrics, on the first free port from --metrics-port, and
        # both report the events of both: all of them (whichever process made each).
        for port in (first, first + 1):
            url = f"http://127.0.0.1:{port}"
            samples = wait_for(
                lambda url=url: (
                    m
                    if sum(values(m := scrape(url), "gateway_events_total")) >= len(sent)
                    else None
                ),
                what=f"every event counted on port {port}",
            )
            assert values(samples, "gateway_events_total", source="stripe") == [len(sent)]
    finally:
        try:
            if worker:
                family = stop_all(worker)
        finally:
            stop_all(server)
    assert family >= kids  # all ended
    assert worker.proc.returncode == 0 and server.proc.returncode == 0


def _two_free_ports() -> int:
    """A port p with p + 1 free too (for `--metrics-port p` with two processes), below
    the kernel's ephemeral range: there, the test's own client connections could take
    one in the meantime."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(100):
        p = rng.randrange(max(1024, low - 10_000), low - 1)
        try:
            for port in (p, p + 1):
                with socket.socket() as s:
                    s.bind(("0.0.0.0", port))
        except OSError:
            continue
        return p
    raise AssertionError("no two consecutive free ports")


def test_a_process_that_cannot_start_stops_them_all(tmp_path, setup):
    """A child that fails before it serves is not restarted over and over: the parent
    stops every process and exits 3 (uvicorn's startup failure, as a single process)."""
    env, _ = setup
    first = _two_free_ports()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    taken = [socket.socket(), socket.socket()]
    try:
        for s, port in zip(taken, (first, first + 1), strict=True):
            s.bind(("0.0.0.0", port))
            s.listen()
        worker = Worker(config, "--processes", "2", "--metrics-port", str(first), env=env)
        try:
            worker.proc.wait(timeout=30)
        finally:
            stop_all(worker)
    finally:
        for s in taken:
            s.close()
    assert worker.proc.returncode == 3
    lines = worker.lines()
    started = {x["pid"] for x in lines if x["event"] == "worker.starting"}
    failed = {x["pid"] for x in lines if x["event"] == "process.failed_to_start"}
    assert failed and failed <= started
    assert [x for x in lines if x["event"] == "process.restarted"] == []
    assert f"cannot listen on any of {first}-{first + 1}" in worker.log.read_text()


def test_children_stop_when_the_parent_is_killed(tmp_path, setup):
    """SIGKILL of the supervisor (an OOM kill, a crashed container runtime): its children
    must not keep serving the inherited socket, or the next start cannot bind the port."""
    env, _ = setup
    # A killed supervisor cannot remove its metrics directory: keep it in tmp_path
    env = {**env, "TMPDIR": str(tmp_path)}
    server = Server(tmp_path, env, "--workers", "2", "--no-workers", config=CONFIG)
    kids: set[int] = set()
    try:
        kids = two_children(server)
        server.proc.kill()
        server.proc.wait()
        wait_for(lambda: not any(running(p) for p in kids), seconds=10, what="no orphan left")
        again = Server(
            tmp_path, env, "--workers", "2", "--no-workers", config=CONFIG, port=server.port
        )
        stop_all(again)
    finally:
        for pid in kids:
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_supervisor_that_is_pid_1_keeps_its_children(tmp_path, setup):
    """In a container the supervisor is pid 1 (the Dockerfile's exec-form CMD): its
    children must not mistake that for having been orphaned (they used to SIGTERM
    themselves at start, and were replaced, forever). A new pid namespace (unshare) makes
    `serve` pid 1 here."""
    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare or "unshare", "--pid", "--fork", "true"], capture_output=True)
    if unshare is None or probe.returncode != 0:
        pytest.skip("no unshare with pid namespaces here")
    env, _ = setup
    env = {**env, "TMPDIR": str(tmp_path)}  # its metrics directory, left by the kill below
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    port = free_port()
    log = tmp_path / "pid1.log"
    proc = subprocess.Popen(
        [unshare, "--pid", "--fork", "--kill-child", sys.executable, "-m", "gateway.cli",
         "serve", "--workers", "2", "--no-workers", "--config", str(config), "--port", str(port),
         "--operator-listen", "127.0.0.1:0"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/healthz"

        def up() -> bool:
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, seconds=30, what="the gateway to answer", log=log)
        # both children start (each logs gateway.ready), and neither is replaced
        wait_for(
            lambda: log.read_text().count('"gateway.ready"') >= 2,
            seconds=30,
            what="two children ready",
            log=log,
        )
        assert all(up() for _ in range(20))
        assert "process.restarted" not in log.read_text(), log.read_text()[-2000:]
    finally:
        proc.kill()  # unshare; --kill-child takes the namespace's pid 1, and so all of it
        proc.wait(20)
