"""`webhook-gateway ...`: thin subcommands that parse arguments, call, and print."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import DEFAULT_CONFIG, Config, load_config
from .config_schema import config_schema
from .errors import ConfigError


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="webhook-gateway",
        description="Verify, dedupe and durably accept vendor webhooks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTP gateway (and, by default, the workers)")
    _config_option(serve)
    serve.add_argument(
        "--host",
        default=os.environ.get("HOST", "127.0.0.1"),
        help="address to listen on (default: $HOST or %(default)s)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "8000")),
        help="port to listen on (default: $PORT or %(default)s)",
    )
    serve.add_argument(
        "--operator-listen",
        metavar="HOST:PORT",
        default=os.environ.get("OPERATOR_LISTEN"),
        help="where the console and /metrics answer, instead of the config's operator.listen "
        "(default: $OPERATOR_LISTEN, else the config's; `public`: on --port)",
    )
    serve.add_argument(
        "--no-workers",
        action="store_true",
        help="run only the HTTP tier (scale workers apart with `worker`)",
    )
    serve.add_argument(
        "--workers",
        "--processes",
        dest="processes",
        type=_processes,
        default=1,
        metavar="N",
        help="HTTP processes sharing the port, each with its own in-process workers unless "
        "--no-workers (default: %(default)s, one process)",
    )
    serve.set_defaults(run=_serve)

    worker = sub.add_parser("worker", help="run only the workers (no HTTP), to scale them apart")
    _config_option(worker)
    worker.add_argument("--name", help="this worker's consumer name (default: host-pid-random)")
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on this port (GET /metrics); with --processes N, "
        "each process on its own port of P..P+N-1",
    )
    worker.add_argument(
        "--processes",
        type=_processes,
        default=1,
        metavar="N",
        help="worker processes to run (default: %(default)s); with --name, each is "
        "named NAME-<pid>",
    )
    worker.set_defaults(run=_worker)

    replay = sub.add_parser("replay", help="normalize stored raw deliveries again")
    _config_option(replay)
    replay.add_argument("--source", required=True)
    replay.add_argument("--since", help="ISO 8601, unix seconds, or a duration ago (2h, 7d)")
    replay.add_argument("--until", help="same forms as --since")
    replay.add_argument("--delivery", help="only this delivery id")
    replay.set_defaults(run=_replay)

    events = sub.add_parser("events", help="look at the events stream")
    events_sub = events.add_subparsers(dest="action", required=True, metavar="ACTION")
    tail = events_sub.add_parser("tail", help="print the newest events as JSON lines")
    _config_option(tail)
    tail.add_argument("-n", type=int, default=10, help="how many (default: %(default)s)")
    tail.set_defaults(run=_events_tail)

    show = events_sub.add_parser("show", help="one event's delivery attempts")
    _config_option(show)
    show.add_argument("message_id")
    show.set_defaults(run=_events_show)

    lag = events_sub.add_parser(
        "lag",
        help="each destination's lag and pending entries on every partition; exit 0 when "
        "all are 0 (drained: events_partitions can be changed)",
    )
    _config_option(lag)
    lag.add_argument(
        "--partitions",
        type=_processes,
        metavar="N",
        help="look at N partitions (default: the config's; give the old count after a change)",
    )
    lag.add_argument("--json", action="store_true")
    lag.set_defaults(run=_events_lag)

    drain = events_sub.add_parser(
        "drain",
        help="deliver what is in the events stream (no normalizing) until every partition "
        "is drained, then exit: the step before changing events_partitions",
    )
    _config_option(drain)
    drain.add_argument(
        "--partitions",
        type=_processes,
        metavar="N",
        help="drain N partitions (default: the config's)",
    )
    drain.add_argument(
        "--timeout",
        type=float,
        default=0,
        metavar="SECONDS",
        help="give up (exit 1) after this long (default: wait as long as it takes)",
    )
    drain.set_defaults(run=_events_drain)

    deliveries = sub.add_parser("deliveries", help="what an inbound delivery became")
    d_sub = deliveries.add_subparsers(dest="action", required=True, metavar="ACTION")
    d_show = d_sub.add_parser("show", help="its events and every attempt to deliver them")
    _config_option(d_show)
    d_show.add_argument("delivery_id")
    d_show.add_argument("--source", help="the source (default: look in every source)")
    d_show.add_argument("--json", action="store_true")
    d_show.set_defaults(run=_deliveries_show)

    dlq = sub.add_parser("dlq", help="dead letters: events a destination will never take")
    dlq_sub = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    dlq_list = dlq_sub.add_parser("list", help="list dead letters with their reasons")
    _config_option(dlq_list)
    dlq_list.add_argument("--destination")
    dlq_list.add_argument("--json", action="store_true", help="one JSON object per line")
    dlq_list.set_defaults(run=_dlq_list)
    dlq_replay = dlq_sub.add_parser("replay", help="send dead letters again")
    _config_option(dlq_replay)
    dlq_replay.add_argument("--destination")
    dlq_replay.add_argument("--since", help="ISO 8601, unix seconds, or a duration ago")
    dlq_replay.add_argument(
        "--id", action="append", default=[], help="a dead letter's id or messageId (repeatable)"
    )
    dlq_replay.set_defaults(run=_dlq_replay)
    dlq_purge = dlq_sub.add_parser("purge", help="delete dead letters")
    _config_option(dlq_purge)
    dlq_purge.add_argument("--destination")
    dlq_purge.set_defaults(run=_dlq_purge)

    quarantine = sub.add_parser("quarantine", help="what could not become events, and why")
    q_sub = quarantine.add_subparsers(dest="action", required=True, metavar="ACTION")
    q_list = q_sub.add_parser("list", help="list quarantined deliveries with their reasons")
    _config_option(q_list)
    q_list.add_argument("--source")
    q_list.add_argument("--json", action="store_true", help="one JSON object per line")
    q_list.set_defaults(run=_quarantine_list)
    q_rerun = q_sub.add_parser("rerun", help="normalize them again with the current config")
    _config_option(q_rerun)
    q_rerun.add_argument("--source")
    q_rerun.set_defaults(run=_quarantine_rerun)

    check = sub.add_parser("check-config", help="validate a config file without starting")
    check.add_argument("path", nargs="?", help="config file (or --config)")
    _config_option(check)
    check.set_defaults(run=_check_config)

    schema = sub.add_parser("config-schema", help="print the JSON Schema of the config file")
    schema.set_defaults(run=_config_schema)

    event_schema = sub.add_parser("event-schema", help="print the JSON Schema of an event")
    event_schema.set_defaults(run=_event_schema)

    mapper = sub.add_parser(
        "map", help="print the events a payload becomes, one JSON object per line (no Redis)"
    )
    mapper.add_argument("--source", required=True, help="the source's name in the config")
    _config_option(mapper)
    mapper.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'K: V'",
        help="a request header, e.g. 'X-GitHub-Event: push' (repeatable)",
    )
    mapper.add_argument("file", help="the payload file, or - for standard input")
    mapper.set_defaults(run=_map)

    tester = sub.add_parser("test", help="run the mapping tests written in the config")
    _config_option(tester)
    tester.set_defaults(run=_test)

    from . import profile_cli, vendor_cli

    vendor_cli.add_commands(sub, _config_option)
    profile_cli.add_commands(sub, _config_option)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _processes(text: str) -> int:
    """argparse type of --workers/--processes: a whole number, at least 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def _worker(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from . import logs
    from .multiproc import run_workers, worker_processes

    logs.configure()
    config = load_config(args.config)
    if not config.redis_url:
        print(
            "error: `worker` needs redis_url (REDIS_URL): with the in-memory store, run "
            "`serve`, which runs the workers in-process",
            file=sys.stderr,
        )
        return 2
    if args.processes > 1:
        return worker_processes(config, args.config, args.processes, args.name, args.metrics_port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        ports = (args.metrics_port, 1) if args.metrics_port else None
        await run_workers(config, args.config, args.name, ports, stop)

    asyncio.run(main())
    return 0


def _with_store(args: argparse.Namespace, work: Callable[[Config, Any], Awaitable[int]]) -> int:
    """Run `work(config, store)` against the configured Redis (never the in-memory one)."""
    import asyncio

    from .store import Store

    config = load_config(args.config)
    if not config.redis_url:
        print(
            "error: this command reads the data in Redis: set redis_url (REDIS_URL); the "
            "in-memory store of a running `serve` is not reachable from here",
            file=sys.stderr,
        )
        return 2

    async def main() -> int:
        store = Store.connect(
            config.redis_url, config.key_prefix, float(config.redis_timeout), config.durability
        )
        try:
            return await work(config, store)
        finally:
            await store.close()

    return asyncio.run(main())


def _replay(args: argparse.Namespace) -> int:
    from .replay import parse_time, progress_line, replay

    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    async def work(config: Config, store: Any) -> int:
        if args.source not in config.sources:
            print(f"error: no source named {args.source!r} in {args.config}", file=sys.stderr)
            return 2
        total = None if since or until else await store.client.xlen(store.keys.raw(args.source))
        done = await replay(
            config,
            store,
            args.source,
            since,
            until,
            args.delivery,
            progress_line(f"replay {args.source}", total),
        )
        print(file=sys.stderr)
        for failure in done.failures[:20]:
            print(f"  failed: {failure}", file=sys.stderr)
        print(
            f"replayed {done.deliveries} deliveries into {done.events} events "
            f"({done.failed} failed)"
        )
        return 1 if done.failed else 0

    return _with_store(args, work)


def _events_tail(args: argparse.Namespace) -> int:
    from .replay import tail_events

    async def work(config: Config, store: Any) -> int:
        partitions = config.partition_count()
        events = await tail_events(store, args.n, partitions)
        for data in events:
            sys.stdout.buffer.write(data + b"\n")
        if not events:
            where = store.keys.events()
            if partitions > 1:
                where = f"{where} or the {partitions - 1} other partitions"
            print(
                f"no events in {where} on {_store_label(config)} (config "
                f"{args.config}, key_prefix {config.key_prefix!r})",
                file=sys.stderr,
            )
        return 0

    return _with_store(args, work)


def _lag_report(rows: list[Any], as_json: bool) -> bool:
    """Print `events lag` rows; whether every one is settled (drained)."""
    if as_json:
        print(json.dumps([vars(r) for r in rows], indent=2))
    else:
        print(f"{'partition':>9}  {'length':>8}  {'lag':>8}  {'pending':>7}  destination")
        for r in rows:
            lag = "?" if r.lag is None else str(r.lag)
            note = f"  ({r.note})" if r.note else ""
            print(
                f"{r.partition:>9}  {r.length:>8}  {lag:>8}  {r.pending:>7}  {r.destination}{note}"
            )
    drained = all(r.settled for r in rows)
    if not as_json:
        partitions = len({r.partition for r in rows})
        if drained:
            print(
                f"drained: every destination has read and settled all {partitions} partition(s)",
                file=sys.stderr,
            )
        else:
            left = sum(r.lag or 0 for r in rows)
            pending = sum(r.pending for r in rows)
            print(
                f"not drained: {left} entries not read yet, {pending} pending",
                file=sys.stderr,
            )
    return drained


def _events_lag(args: argparse.Namespace) -> int:
    from .replay import partition_lag

    async def work(config: Config, store: Any) -> int:
        if not config.destinations:
            print("no destinations in the config: nothing reads the events", file=sys.stderr)
            return 0
        rows = await partition_lag(config, store, args.partitions)
        return 0 if _lag_report(rows, args.json) else 1

    return _with_store(args, work)


def _events_drain(args: argparse.Namespace) -> int:
    import asyncio

    import msgspec

    from . import logs
    from .deliver import DeliverWorker
    from .replay import partition_lag

    logs.configure()

    async def work(config: Config, store: Any) -> int:
        if args.partitions is not None:
            config = msgspec.structs.replace(config, events_partitions=args.partitions)
        if not config.destinations:
            print("no destinations in the config: nothing to drain", file=sys.stderr)
            return 0
        # Only the destinations' readers: nothing is normalized into the partitions
        # meanwhile (stop the normalize workers first; `serve --no-workers` keeps taking
        # webhooks, which wait in the raw streams).
        worker = DeliverWorker(config, store)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
        try:
            while True:
                rows = await partition_lag(config, store)
                busy = any(run.holding or run.inflight for run in worker.runners)
                if all(r.settled for r in rows) and not busy:
                    break
                if task.done() or (deadline is not None and time.monotonic() > deadline):
                    _lag_report(rows, False)
                    print("error: gave up before the partitions were drained", file=sys.stderr)
                    return 1
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            await task
        return 0 if _lag_report(await partition_lag(config, store), False) else 1

    return _with_store(args, work)


def _quarantine_list(args: argparse.Namespace) -> int:
    from .replay import quarantine_entries

    async def work(config: Config, store: Any) -> int:
        items = await quarantine_entries(store, args.source)
        for item in items:
            if args.json:
                print(json.dumps(item))
            else:
                when = time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(item.get("at", "0")) / 1000)
                )
                print(
                    f"{when}  {item.get('source')}  {item.get('delivery_id')}  "
                    f"[{item.get('stage')}] {item.get('reason')}"
                )
        if not args.json:
            print(f"{len(items)} quarantined", file=sys.stderr)
        return 0

    return _with_store(args, work)


def _quarantine_rerun(args: argparse.Namespace) -> int:
    from .replay import RerunRunning, rerun_quarantine

    async def work(config: Config, store: Any) -> int:
        try:
            fixed, failing, reasons = await rerun_quarantine(config, store, args.source)
        except RerunRunning as e:
            print(e, file=sys.stderr)
            return 1
        for reason in reasons[:20]:
            print(f"  still failing: {reason}", file=sys.stderr)
        print(f"{fixed} now normalized, {failing} still in the quarantine")
        return 1 if failing else 0

    return _with_store(args, work)


def _events_show(args: argparse.Namespace) -> int:
    from .dlq import event_attempts

    async def work(config: Config, store: Any) -> int:
        if _delivery_log_off(config, args):
            return 1
        attempts = await event_attempts(store, args.message_id)
        if not attempts:
            print(
                f"no delivery attempts recorded for {args.message_id} (not sent yet, or "
                f"older than delivery_log_retention)",
                file=sys.stderr,
            )
            return 1
        for a in attempts:
            print(_attempt_line(a))
        return 0

    return _with_store(args, work)


def _delivery_log_off(config: Config, args: argparse.Namespace) -> bool:
    """Say so when the delivery log is off: "not found" would send the reader looking."""
    if int(config.delivery_log_retention) > 0:  # as the workers read it (whole seconds)
        return False
    print(
        f"the delivery log is off (delivery_log_retention: 0 in {args.config}): nothing is "
        "recorded; set it (e.g. 7d) to keep what deliveries become",
        file=sys.stderr,
    )
    return True


def _attempt_line(a: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(a.get("at", 0)))
    # Destinations that speak no HTTP (postgres, nats, ...) have no status to show.
    status = f"HTTP {a['status']}  " if a.get("status") else ""
    reason = f"  {a['reason']}" if a.get("reason") else ""
    return (
        f"{when}  {a.get('destination')}  attempt {a.get('attempt')}  {a.get('outcome')}  "
        f"{status}{a.get('latency_ms')} ms{reason}"
    )


def _deliveries_show(args: argparse.Namespace) -> int:
    from .dlq import delivery_report

    async def work(config: Config, store: Any) -> int:
        if _delivery_log_off(config, args):
            return 1
        report = await delivery_report(config, store, args.delivery_id, args.source)
        if not report:
            print(
                f"no delivery {args.delivery_id!r} in the delivery log (not normalized yet, "
                f"or older than delivery_log_retention)",
                file=sys.stderr,
            )
            return 1
        if args.json:
            print(json.dumps(report, indent=2))
            return 0
        for item in report:
            print(f"{item['source']} {item['delivery_id']}: {item['status']}")
            for event in item["events"]:
                print(f"  {event['message_id']}  {event['event']}")
                for attempt in event["attempts"] or [{"outcome": "not sent yet"}]:
                    print(
                        "    " + (_attempt_line(attempt) if "at" in attempt else attempt["outcome"])
                    )
        return 0

    return _with_store(args, work)


def _dlq_list(args: argparse.Namespace) -> int:
    from .dlq import dead_letters

    async def work(config: Config, store: Any) -> int:
        items = await dead_letters(store, args.destination)
        for item in items:
            item.pop("_data", None)
            if args.json:
                print(json.dumps(item))
                continue
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(item.get("at", "0")) / 1000))
            print(
                f"{item['id']}  {when}  {item.get('destination')}  {item.get('message_id')}  "
                f"{item.get('source')}/{item.get('delivery_id')}  {item.get('event')}  "
                f"attempts={item.get('attempts')}  {item.get('reason')}"
            )
        if not args.json:
            print(f"{len(items)} dead letter(s)", file=sys.stderr)
        return 0

    return _with_store(args, work)


def _dlq_replay(args: argparse.Namespace) -> int:
    from .dlq import replay_dead_letters
    from .replay import parse_time

    try:
        since = parse_time(args.since) if args.since else None
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    async def work(config: Config, store: Any) -> int:
        done, problems = await replay_dead_letters(
            config, store, args.destination, since, args.id or None
        )
        for problem in problems:
            print(f"  skipped: {problem}", file=sys.stderr)
        print(f"{done} dead letter(s) queued to be sent again (by the running workers)")
        return 1 if problems else 0

    return _with_store(args, work)


def _dlq_purge(args: argparse.Namespace) -> int:
    from .dlq import purge_dead_letters

    async def work(config: Config, store: Any) -> int:
        print(f"{await purge_dead_letters(store, args.destination)} dead letter(s) deleted")
        return 0

    return _with_store(args, work)


def _check_config(args: argparse.Namespace) -> int:
    from .sources import build_sources

    path = args.path or args.config
    config = load_config(path)
    build_sources(config.sources)
    base = Path(path).resolve().parent
    for name, source in config.sources.items():
        for i, test in enumerate(source.tests):
            if test.payload_file is not None and not (base / test.payload_file).is_file():
                raise ConfigError(
                    f"no such file: {test.payload_file} (relative to the config file)",
                    path,
                    path=f"sources.{name}.tests[{i}].payload_file",
                )
    sources = ", ".join(f"{n} ({c.__struct_config__.tag})" for n, c in config.sources.items())
    print(
        f"{path}: OK: {len(config.sources)} source(s){': ' + sources if sources else ''}; "
        f"{len(config.destinations)} destination(s); store: {_store_label(config)}"
    )
    return 0


def _config_schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_schema(), indent=2))
    return 0


def _event_schema(args: argparse.Namespace) -> int:
    from normalizers import event_schema

    print(json.dumps(event_schema(), indent=2))
    return 0


def _map(args: argparse.Namespace) -> int:
    import msgspec

    config = load_config(args.config)
    if args.source not in config.sources:
        known = ", ".join(sorted(config.sources)) or "none"
        print(
            f"error: no source named {args.source!r} in {args.config} (sources: {known})",
            file=sys.stderr,
        )
        return 2
    headers = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            print(f"error: --header {item!r}: expected 'Name: value'", file=sys.stderr)
            return 2
        headers[name.strip().lower()] = value.strip()
    try:
        if args.file == "-":
            body = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as f:
                body = f.read()
    except OSError as e:
        print(f"error: cannot read {args.file}: {e.strerror}", file=sys.stderr)
        return 2
    from .dry_run import map_payload

    result = map_payload(config, args.source, body, headers, time.time())
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.error is not None:
        print(f"error: {args.file}: {result.error}", file=sys.stderr)
        return 1
    out = sys.stdout.buffer
    for event in result.events:
        out.write(msgspec.json.encode(event) + b"\n")
    if not result.events:
        print("note: this payload becomes no events", file=sys.stderr)
    return 0


def _test(args: argparse.Namespace) -> int:
    from pathlib import Path

    from normalizers.testing import run_source_tests

    config = load_config(args.config)
    base = Path(args.config).resolve().parent
    passed = failed = 0
    for name, source in config.sources.items():
        for result in run_source_tests(name, source, base):
            if result.ok:
                passed += 1
                print(f"ok    {name}: {result.name}")
            else:
                failed += 1
                print(f"FAIL  {name}: {result.name}")
                print("\n".join("      " + line for line in result.diff.splitlines()))
    if not passed + failed:
        print(f"{args.config}: no mapping tests (add `tests:` under a source)")
        return 0
    print(f"\n{passed} passed, {failed} failed")
    return 1 if failed else 0


def _serve(args: argparse.Namespace) -> int:
    import msgspec
    import structlog
    import uvicorn

    from . import logs
    from .app import create_app
    from .operator import bind_listener

    logs.configure()
    config = load_config(args.config)
    if args.operator_listen:
        operator = msgspec.structs.replace(config.operator, listen=args.operator_listen)
        try:
            operator.check()
        except ConfigError as e:
            print(f"error: --operator-listen: {e.message}", file=sys.stderr)
            return 2
        config = msgspec.structs.replace(config, operator=operator)
    sockets: list[Any] = []
    operator_url = "on the webhook port (operator.listen: public)"
    if (address := config.operator.address()) is not None:
        if address[1] == args.port and args.port != 0:
            print(
                f"error: operator.listen ({config.operator.listen}) and --port ({args.port}) "
                "are the same port: the console and /metrics need a listener of their own",
                file=sys.stderr,
            )
            return 2
        try:
            sockets.append(bind_listener(*address))
        except OSError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        port = sockets[0].getsockname()[1]  # the one chosen, for port 0
        operator = msgspec.structs.replace(config.operator, listen=f"{address[0]}:{port}")
        config = msgspec.structs.replace(config, operator=operator)
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        operator_url = f"http://{host}:{port}"
    options: dict[str, Any] = dict(
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,  # one structured line per delivery is logged by the gateway
        server_header=False,
        # The gateway never looks at the client address: skip X-Forwarded-* parsing.
        proxy_headers=False,
        lifespan="on",
    )
    log = structlog.get_logger("gateway")
    if args.processes > 1:
        from .multiproc import serve_processes

        log.info(
            "gateway.starting",
            version=__version__,
            url=f"http://{args.host}:{args.port}",
            operator=operator_url,
            config=args.config,
            processes=args.processes,
            workers="off (--no-workers)" if args.no_workers else "normalize, deliver (in each)",
        )
        return serve_processes(
            config, args.config, args.processes, not args.no_workers, sockets, **options
        )
    app = create_app(config, workers=not args.no_workers)
    log.info(
        "gateway.starting",
        version=__version__,
        url=f"http://{args.host}:{args.port}",
        operator=operator_url,
        config=args.config,
        workers="off (--no-workers)" if args.no_workers else "normalize, deliver (in-process)",
    )
    settings = uvicorn.Config(app, **options)
    server = uvicorn.Server(settings)
    try:
        server.run(sockets=[settings.bind_socket(), *sockets])
    finally:
        for sock in sockets:
            sock.close()
    return 0


def _store_label(config: Config) -> str:
    if not config.redis_url:
        return "embedded in-memory (development only: nothing survives a restart)"
    from .store import parse_redis_url

    return parse_redis_url(config.redis_url).label()  # no password


if __name__ == "__main__":
    raise SystemExit(main())
