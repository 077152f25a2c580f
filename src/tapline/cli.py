"""The ``tapline`` command line. Parses arguments into typed settings and hands them to bootstrap.

Subcommands: ``demo``, ``serve``, ``edge``. Every long-running command takes ``--broker`` (and, where it
stores, ``--db``); ``TAPLINE_BROKER`` / ``TAPLINE_DB`` do the same. Errors in arguments or config files
exit with status 2 and a message that says what to fix.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tapline import __version__, logs
from tapline.edge.config import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tapline", description="Secondary water supply pump-room platform.")
    parser.add_argument("--version", action="version", version=f"tapline {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("TAPLINE_LOG_LEVEL", "info"))
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run everything on one machine with simulated pump rooms")
    demo.add_argument("--sites", type=int, default=20, help="simulated pump rooms (default 20)")
    demo.add_argument(
        "--districts", type=int, default=2, help="districts the rooms are spread over (default 2)"
    )
    demo.add_argument(
        "--port", type=int, default=8000, help="HTTP port of the console and API (default 8000)"
    )
    demo.add_argument("--broker-port", type=int, default=1883, help="port of the embedded MQTT broker")
    demo.add_argument(
        "--data-dir", type=Path, default=Path(".tapline-demo"), help="where the demo keeps its files"
    )
    demo.add_argument("--demo-password", default="demo", help="password of the demo users")
    demo.add_argument("--seed", type=int, default=1, help="simulation seed")
    demo.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")

    serve = sub.add_parser("serve", help="run the cloud platform (ingest, store, API, console)")
    serve.add_argument("--broker", default=os.environ.get("TAPLINE_BROKER", "mqtt://127.0.0.1:1883"))
    serve.add_argument("--db", default=os.environ.get("TAPLINE_DB", "sqlite:///./tapline.db"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--public-read", action="store_true", help="read-only routes answer without a token")

    edge = sub.add_parser("edge", help="run the edge gateway of one pump room")
    edge.add_argument("--config", type=Path, required=True, help="the room's YAML file")
    edge.add_argument("--broker", default=os.environ.get("TAPLINE_BROKER", "mqtt://127.0.0.1:1883"))
    edge.add_argument("--data-dir", type=Path, default=Path(".tapline-edge"))
    edge.add_argument("--primary-host", default="tapline", help="Sparkplug host id to wait for ('' for none)")
    return parser


def _settings(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    from tapline import bootstrap
    from tapline.config import DemoSettings, EdgeSettings, ServeSettings

    if args.command == "demo":
        return bootstrap.run_demo(
            DemoSettings(
                sites=args.sites,
                districts=args.districts,
                port=args.port,
                broker_port=args.broker_port,
                data_dir=args.data_dir,
                demo_password=args.demo_password,
                seed=args.seed,
                speed=args.speed,
                log_level=args.log_level,
            )
        )
    if args.command == "serve":
        return bootstrap.run_serve(
            ServeSettings(
                broker=args.broker,
                db=args.db,
                host=args.host,
                port=args.port,
                secret=os.environ.get("TAPLINE_SECRET", ""),
                admin_password=os.environ.get("TAPLINE_ADMIN_PASSWORD"),
                public_read=args.public_read,
                log_level=args.log_level,
            )
        )
    return bootstrap.run_edge(
        EdgeSettings(
            config=args.config,
            broker=args.broker,
            data_dir=args.data_dir,
            primary_host=args.primary_host or None,
            log_level=args.log_level,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_level)
    try:
        coroutine = _settings(args)
    except ValidationError as exc:
        print(f"tapline {args.command}: invalid arguments:\n{exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(coroutine)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0
    except (ConfigError, OSError, ValueError) as exc:
        print(f"tapline {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
