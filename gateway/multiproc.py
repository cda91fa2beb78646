"""More than one process: `serve --workers N` and `worker --processes N`.

Both run on uvicorn's own supervisor (uvicorn.supervisors.Multiprocess), not a process
manager of ours: the parent binds the port once (serve) and spawns N children that
share it; it restarts a child that dies, and on SIGINT/SIGTERM sends SIGTERM to every
child and waits for each (each shuts down as a single `serve` does: in-flight requests
answered, workers stopped). A child that fails before it starts (uvicorn's exit code 3)
stops the parent instead of being restarted forever.

The children get the config the parent loaded and checked (pickled to them with the
factory below), not its path: every process runs the same config, also a child that
replaces a dead one after the file was edited. Each child's log lines carry its `pid`.

Metrics: the parent makes a directory of its own and sets PROMETHEUS_MULTIPROC_DIR to
it before it starts a child, so every child keeps its values there (prometheus_client's
multiprocess mode) and each GET /metrics of the run reports the sum over its processes
(see gateway.metrics). The parent marks a process that it replaced (or stopped) dead, which
drops that process's gauges (its counters stay in the sums), and removes the directory
when it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from . import __version__, logs
from .config import Config
from .metrics import MULTIPROC_DIR


def serve_processes(
    config: Config,
    config_path: str,
    processes: int,
    in_process_workers: bool,
    more_sockets: list[Any],
    **options: Any,
) -> int:
    """`serve --workers N`: N processes of the HTTP app (and its workers) on one port,
    and on `more_sockets` (the operator listener's), bound by the caller."""
    from .sources import build_sources

    build_sources(config.sources)  # what create_app would refuse, refused here, once
    factory = GatewayFactory(config, config_path, in_process_workers)
    return _supervise(
        uvicorn.Config(factory, factory=True, workers=processes, **options), True, more_sockets
    )


def worker_processes(
    config: Config, config_path: str, processes: int, name: str | None, metrics_port: int | None
) -> int:
    """`worker --processes N`: N worker processes, no HTTP (uvicorn serves no socket)."""
    factory = WorkerFactory(config, config_path, name, metrics_port, processes)
    return _supervise(
        uvicorn.Config(factory, factory=True, workers=processes, log_config=None, lifespan="on"),
        False,
    )


@dataclass(frozen=True)
class GatewayFactory:
    """Builds the gateway app in a child (uvicorn pickles it into each one)."""

    config: Config
    config_path: str
    workers: bool

    def __call__(self) -> Any:
        from .app import create_app

        with _startup(self.config_path):
            return create_app(self.config, workers=self.workers)


@dataclass(frozen=True)
class WorkerFactory:
    """A child of `worker --processes N`: an ASGI app with only a lifespan, which runs
    the normalize and deliver workers (uvicorn's server gives it signals and shutdown)."""

    config: Config
    config_path: str
    name: str | None
    metrics_port: int | None
    processes: int

    def __call__(self) -> Any:
        from starlette.applications import Starlette

        with _startup(self.config_path):
            # One consumer name per process: two processes under one name would share
            # each other's pending entries.
            name = f"{self.name}-{os.getpid()}" if self.name else None
            ports = (self.metrics_port, self.processes) if self.metrics_port else None

            @contextlib.asynccontextmanager
            async def lifespan(app: Starlette) -> AsyncIterator[None]:
                stop = asyncio.Event()
                started = asyncio.get_running_loop().create_future()
                task = asyncio.create_task(
                    run_workers(self.config, self.config_path, name, ports, stop, started)
                )
                await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
                if task.done():
                    task.result()  # it failed to start: uvicorn reports it and exits (3)
                task.add_done_callback(lambda done: _exit_unless(stop, done))
                try:
                    yield
                finally:
                    stop.set()
                    _, late = await asyncio.wait([task], timeout=10)
                    for t in late:  # its entries stay pending and are reclaimed later
                        t.cancel()

            return Starlette(lifespan=lifespan)


async def run_workers(
    config: Config,
    config_path: str,
    name: str | None,
    metrics_ports: tuple[int, int] | None,
    stop: asyncio.Event,
    started: asyncio.Future[None] | None = None,
) -> None:
    """The normalize and deliver workers until `stop`; metrics on the first free port
    of `metrics_ports` (first, count), if given. `worker` runs this in each process."""
    from .deliver import DeliverWorker
    from .metrics import Metrics
    from .store import Store
    from .worker import NormalizeWorker

    store = Store.connect(
        config.redis_url, config.key_prefix, float(config.redis_timeout), config.durability
    )
    try:
        structlog.get_logger("gateway").info(
            "worker.starting", version=__version__, config=config_path
        )
        metrics = Metrics()
        if metrics_ports:
            _serve_metrics(metrics, *metrics_ports)
        normalize = NormalizeWorker(config, store, name, metrics)
        deliver = DeliverWorker(config, store, normalize.consumer, metrics)
        if started is not None:
            started.set_result(None)
        tasks = [normalize.run(stop), deliver.run(stop), metrics.activity.run(store, stop)]
        if config.alerts.rules:  # every process runs them; Redis makes them agree (alerts/)
            from .alerts import Alerts

            tasks.append(Alerts(config, store).run(stop))
        await asyncio.gather(*tasks)
    finally:
        await store.close()


def _exit_unless(stop: asyncio.Event, task: asyncio.Task[Any]) -> None:
    """The workers ended though nobody stopped them: say why, end this process (as
    SIGTERM would), and uvicorn's supervisor starts another."""
    if not stop.is_set():
        error = None if task.cancelled() else task.exception()
        structlog.get_logger("gateway").error(
            "workers.ended",
            error=f"{type(error).__name__}: {error}" if error else "returned",
            action="restarting the process",
        )
        os.kill(os.getpid(), signal.SIGTERM)


def _serve_metrics(metrics: Any, first: int, count: int) -> int:
    """Serve GET /metrics on the first port of first..first+count-1 that is free."""
    from prometheus_client import start_http_server

    error = None
    for port in range(first, first + count):
        try:
            start_http_server(port, registry=metrics.registry)
        except OSError as e:
            error = e
            continue
        if count > 1:
            structlog.get_logger("gateway").info("worker.metrics", port=port)
        return port
    ports = f"{first}" if count == 1 else f"any of {first}-{first + count - 1}"
    raise OSError(f"--metrics-port: cannot listen on {ports}: {error}")


@contextlib.contextmanager
def _startup(config_path: str) -> Any:
    """Logging as in the parent (plus the pid) and metrics shared with the other
    processes; a failure to build exits with uvicorn's startup-failure code, so that the
    supervisor stops instead of restarting it."""
    _die_with_parent()
    logs.configure()
    processors = structlog.get_config()["processors"]
    structlog.configure(processors=[*processors[:-1], _add_pid, processors[-1]])
    try:
        from .metrics import share_between_processes

        share_between_processes()
        yield
    except Exception as e:
        structlog.get_logger("gateway").exception(
            "process.failed_to_start", config=config_path, error=f"{type(e).__name__}: {e}"
        )
        sys.exit(STARTUP_FAILURE)


def _die_with_parent() -> None:
    """A child gets SIGTERM (a graceful stop) when the supervisor dies, even by SIGKILL:
    an orphan would keep serving on the inherited socket and hold the port against the
    next start (Linux prctl PR_SET_PDEATHSIG; elsewhere nothing is done)."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    try:
        import ctypes

        if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0) != 0:
            return  # PR_SET_PDEATHSIG = 1; refused: nothing more to do here
    except (OSError, AttributeError):
        return
    # The supervisor may have died before prctl took effect: then this process was
    # handed to another (init, a subreaper). Not "is the parent pid 1": in a container
    # the supervisor itself is pid 1.
    if parent is not None and parent.pid is not None and os.getppid() != parent.pid:
        os.kill(os.getpid(), signal.SIGTERM)


def _add_pid(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    event["pid"] = os.getpid()
    return event


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, logging (in our structured log) a child it replaces, and
    marking each process that left it dead for the shared metrics."""

    def __init__(self, config: uvicorn.Config, sockets: list[Any], metrics_dir: str) -> None:
        super().__init__(config, sockets=sockets)
        self.metrics_dir = metrics_dir
        self.known: set[int] = set()

    def keep_subprocess_alive(self) -> None:
        before = list(self.processes)
        super().keep_subprocess_alive()
        # Every pass of the supervisor's loop comes here (after the signals: SIGHUP's
        # restart and SIGTTOU's removal too), before a replacement is logged.
        self.mark_gone_dead()
        log = structlog.get_logger("gateway")
        for old, new in zip(before, self.processes, strict=False):
            if new is not old:
                log.warning(
                    "process.restarted",
                    pid=old.pid,
                    exitcode=old.exitcode,
                    signal=_signal_name(old.exitcode),
                    new_pid=new.pid,
                )
            elif old.exitcode == STARTUP_FAILURE:
                log.error("process.failed_to_start", pid=old.pid, action="stopping")

    def mark_gone_dead(self) -> None:
        """prometheus_client's mark_process_dead for each process no longer run: its
        `live*` gauges (gateway_stream_lag) are dropped; its counters stay in the sums."""
        from prometheus_client.multiprocess import mark_process_dead

        now = {p.pid for p in self.processes if p.pid is not None}
        for pid in self.known - now:
            mark_process_dead(pid, self.metrics_dir)
        self.known = now


def _signal_name(exitcode: int | None) -> str | None:
    if exitcode is None or exitcode >= 0:
        return None
    with contextlib.suppress(ValueError):
        return signal.Signals(-exitcode).name
    return None


def _supervise(config: uvicorn.Config, listen: bool, more_sockets: Sequence[Any] = ()) -> int:
    """Run uvicorn's supervisor until SIGINT/SIGTERM; uvicorn's exit code 3 if a child
    failed to start (as a single `serve` exits), else 0."""
    sockets = [config.bind_socket(), *more_sockets] if listen else []
    try:
        with _shared_metrics() as metrics_dir:
            supervisor = _Supervisor(config, sockets, metrics_dir)
            supervisor.run()
    finally:
        for sock in sockets:
            sock.close()
    failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
    return STARTUP_FAILURE if failed else 0


@contextlib.contextmanager
def _shared_metrics() -> Any:
    """A new directory in PROMETHEUS_MULTIPROC_DIR while the children run (each inherits
    it when it starts, before it imports prometheus_client); removed afterwards."""
    directory = tempfile.mkdtemp(prefix="webhook-gateway-metrics-")
    before = os.environ.get(MULTIPROC_DIR)
    os.environ[MULTIPROC_DIR] = directory
    try:
        yield directory
    finally:
        if before is None:
            os.environ.pop(MULTIPROC_DIR, None)
        else:
            os.environ[MULTIPROC_DIR] = before
        shutil.rmtree(directory, ignore_errors=True)
