"""`webhook-gateway ...`: thin subcommands that parse arguments, call, and print."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from . import __version__
from .config import DEFAULT_CONFIG, Config, load_config
from .config_schema import config_schema
from .errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="webhook-gateway",
        description="Verify, dedupe and durably accept vendor webhooks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTP gateway (and, by default, the workers)")
    serve.add_argument(
        "--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)"
    )
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
        "--no-workers",
        action="store_true",
        help="run only the HTTP tier (scale workers apart with `worker`)",
    )
    serve.set_defaults(run=_serve)

    worker = sub.add_parser("worker", help="run only the workers (no HTTP), to scale them apart")
    worker.add_argument(
        "--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)"
    )
    worker.add_argument("--name", help="this worker's consumer name (default: host-pid-random)")
    worker.set_defaults(run=_worker)

    check = sub.add_parser("check-config", help="validate a config file without starting")
    check.add_argument("path", nargs="?", default=DEFAULT_CONFIG)
    check.set_defaults(run=_check_config)

    schema = sub.add_parser("config-schema", help="print the JSON Schema of the config file")
    schema.set_defaults(run=_config_schema)

    event_schema = sub.add_parser("event-schema", help="print the JSON Schema of an event")
    event_schema.set_defaults(run=_event_schema)

    mapper = sub.add_parser(
        "map", help="print the events a payload becomes, one JSON object per line (no Redis)"
    )
    mapper.add_argument("--source", required=True, help="the source's name in the config")
    mapper.add_argument(
        "--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)"
    )
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
    tester.add_argument(
        "--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)"
    )
    tester.set_defaults(run=_test)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _worker(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    import structlog

    from . import logs
    from .store import Store
    from .worker import NormalizeWorker

    try:
        logs.configure()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config = load_config(args.config)
    if not config.redis_url:
        print(
            "error: `worker` needs redis_url (REDIS_URL): with the in-memory store, run "
            "`serve`, which runs the workers in-process",
            file=sys.stderr,
        )
        return 2

    async def main() -> None:
        store = Store.connect(config.redis_url, config.key_prefix, float(config.redis_timeout))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        structlog.get_logger("gateway").info(
            "worker.starting", version=__version__, config=args.config
        )
        try:
            await NormalizeWorker(config, store, args.name).run(stop)
        finally:
            await store.close()

    asyncio.run(main())
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from .sources import build_sources

    config = load_config(args.path)
    build_sources(config.sources)
    sources = ", ".join(f"{n} ({c.__struct_config__.tag})" for n, c in config.sources.items())
    print(
        f"{args.path}: OK: {len(config.sources)} source(s){': ' + sources if sources else ''}; "
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
    import time

    import msgspec

    from normalizers import Delivery, NormalizeError, normalize

    from .errors import PayloadError
    from .sources import build_sources
    from .sources.base import body_hash

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
    from normalizers import Mapper

    source = build_sources({args.source: config.sources[args.source]})[args.source]
    mapper = Mapper(source.config.mappings, source.config.user_id)
    try:
        delivery_id, _ = source.identify(body, headers)
    except PayloadError as e:
        delivery_id = body_hash(body)
        print(f"note: {e.detail}; using {delivery_id} as the delivery id", file=sys.stderr)
    delivery = Delivery(
        source=args.source,
        source_type=source.config.__struct_config__.tag,
        delivery_id=delivery_id,
        received_at_ms=int(time.time() * 1000),
        headers=headers,
        body=body,
        config=source.config,
    )
    try:
        events = normalize(delivery, mapper)
    except NormalizeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = sys.stdout.buffer
    for event in events:
        out.write(msgspec.json.encode(event) + b"\n")
    if not events:
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
    import structlog
    import uvicorn

    from . import logs
    from .app import create_app

    try:
        logs.configure()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config = load_config(args.config)
    app = create_app(config, workers=not args.no_workers)
    log = structlog.get_logger("gateway")
    log.info(
        "gateway.starting",
        version=__version__,
        url=f"http://{args.host}:{args.port}",
        config=args.config,
        workers="off (--no-workers)" if args.no_workers else "normalize (in-process)",
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_config=None,
            access_log=False,  # one structured line per delivery is logged by the gateway
            server_header=False,
            # The gateway never looks at the client address: skip X-Forwarded-* parsing.
            proxy_headers=False,
            lifespan="on",
        )
    )
    server.run()
    return 0


def _store_label(config: Config) -> str:
    if not config.redis_url:
        return "embedded in-memory (development only: nothing survives a restart)"
    url = urlsplit(config.redis_url)
    return f"{url.scheme}://{url.hostname}:{url.port or 6379}{url.path or ''}"  # no password


if __name__ == "__main__":
    raise SystemExit(main())
