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

    check = sub.add_parser("check-config", help="validate a config file without starting")
    check.add_argument("path", nargs="?", default=DEFAULT_CONFIG)
    check.set_defaults(run=_check_config)

    schema = sub.add_parser("config-schema", help="print the JSON Schema of the config file")
    schema.set_defaults(run=_config_schema)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


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
    app = create_app(config)
    log = structlog.get_logger("gateway")
    log.info(
        "gateway.starting",
        version=__version__,
        url=f"http://{args.host}:{args.port}",
        config=args.config,
        workers="off (--no-workers)" if args.no_workers else "none in this release",
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
