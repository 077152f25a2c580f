"""The ``tapline`` command line. Parses arguments into typed settings and hands them to bootstrap.

Subcommands: ``demo``, ``serve``, ``edge``, ``sim`` (``fleet``, ``rooms``, ``inject``, ``clear``,
``faults``). Every long-running command takes ``--broker`` (and, where it stores, ``--db``);
``TAPLINE_BROKER`` / ``TAPLINE_DB`` do the same. Errors in arguments or config files exit with status 2
and a message that says what to fix; a fault request the API refuses exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tapline import __version__, logs
from tapline.edge.config import ConfigError
from tapline.sim.api_client import SimApiError
from tapline.store.errors import StoreConfigurationError, StoreError

NOTIFY_HELP = "alarm notification config: webhook/email recipients, escalation (docs/notify.example.yaml)"


def _notify_default() -> Path | None:
    value = os.environ.get("TAPLINE_NOTIFY")
    return Path(value) if value else None


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
    demo.add_argument("--notify", type=Path, default=_notify_default(), help=NOTIFY_HELP)

    serve = sub.add_parser("serve", help="run the cloud platform (ingest, store, API, console)")
    serve.add_argument("--broker", default=os.environ.get("TAPLINE_BROKER", "mqtt://127.0.0.1:1883"))
    serve.add_argument("--db", default=os.environ.get("TAPLINE_DB", "sqlite:///./tapline.db"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--public-read", action="store_true", help="read-only routes answer without a token")
    serve.add_argument(
        "--host-id",
        default=os.environ.get("TAPLINE_HOST_ID", "tapline"),
        help="Sparkplug host id (STATE topic); each worker its own (docs/scaling.md)",
    )
    serve.add_argument(
        "--groups",
        default=os.environ.get("TAPLINE_GROUPS", ""),
        help="districts (Sparkplug groups) this worker owns, comma-separated (default: all)",
    )
    serve.add_argument("--notify", type=Path, default=_notify_default(), help=NOTIFY_HELP)

    edge = sub.add_parser("edge", help="run the edge gateway of one pump room")
    edge.add_argument("--config", type=Path, required=True, help="the room's YAML file")
    edge.add_argument("--broker", default=os.environ.get("TAPLINE_BROKER", "mqtt://127.0.0.1:1883"))
    edge.add_argument("--data-dir", type=Path, default=Path(".tapline-edge"))
    edge.add_argument("--primary-host", default="tapline", help="Sparkplug host id to wait for ('' for none)")

    _sim_parser(sub.add_parser("sim", help="simulated pump rooms: a Sparkplug fleet, Modbus rooms, faults"))
    _bench_parser(sub.add_parser("bench", help="benchmarks: ingest, query, edge, faults"))
    return parser


def _bench_parser(bench: argparse.ArgumentParser) -> None:
    commands = bench.add_subparsers(dest="bench_command", required=True)
    ingest = commands.add_parser("ingest", help="fleet generator -> broker -> cloud ingest -> store")
    ingest.add_argument("--sites", type=int, default=1000)
    ingest.add_argument("--points", type=int, default=80)
    ingest.add_argument("--interval", type=float, default=1.0)
    ingest.add_argument("--duration", type=float, default=30.0)
    ingest.add_argument("--broker", default=os.environ.get("TAPLINE_BROKER", "mqtt://127.0.0.1:1883"))
    ingest.add_argument("--db", required=True, help="a fresh store, e.g. sqlite:////tmp/bench.db")
    ingest.add_argument("--processes", type=int, default=1, help="fleet generator processes")
    ingest.add_argument("--cycle", type=int, default=10, help="the generator's --cycle (0: live physics)")
    ingest.add_argument("--no-references", action="store_true", help="skip the reference measurements")
    ingest.add_argument(
        "--workers", type=int, default=1, help="ingest workers, each owning some districts (default 1)"
    )
    ingest.add_argument(
        "--gc-default", action="store_true", help="keep CPython's GC thresholds (serve tunes them)"
    )
    ingest.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    _bench_query_edge_parsers(commands)
    births = commands.add_parser("births", help="CPU per room birth through the cloud ingest (no broker)")
    births.add_argument("--db", required=True, help="a fresh store, e.g. sqlite:////tmp/bench-births.db")
    births.add_argument("--rooms", type=int, default=1000)
    births.add_argument("--points", type=int, default=80)
    births.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    flood = commands.add_parser("flood", help="the alarm path while every room raises alarms at once")
    flood.add_argument("--db", required=True, help="a store, e.g. sqlite:////tmp/bench-flood.db")
    flood.add_argument("--rooms", type=int, default=5000)
    flood.add_argument("--districts", type=int, default=8)
    flood.add_argument("--window", type=float, default=10.0, help="every room's faults start within (s)")
    flood.add_argument("--hold", type=float, default=40.0, help="seconds from the flood to the recovery")
    flood.add_argument("--consoles", type=int, default=2, help="live-push clients (SSE)")
    flood.add_argument("--notify", type=Path, default=None, help="a notification config to run as well")
    flood.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    faults = commands.add_parser(
        "faults",
        help="fault localisation score against the simulator's ground truth (options: --help after faults)",
        add_help=False,
    )
    faults.add_argument("rest", nargs=argparse.REMAINDER, help="options of tapline bench faults")


def _bench_query_edge_parsers(commands: Any) -> None:
    """``bench query`` (history latency over loaded days) and ``bench edge`` (one gateway, one room)."""
    query = commands.add_parser("query", help="history query latency over days of 5 s data in the store")
    query.add_argument("--db", required=True, help="a fresh store, e.g. sqlite:////tmp/bench-query.db")
    query.add_argument("--rooms", type=int, default=100)
    query.add_argument("--days", type=float, default=7.0)
    query.add_argument("--interval", type=float, default=5.0, help="sampling period in seconds")
    query.add_argument("--points", type=int, default=2, help="trended points per room (default 2)")
    query.add_argument("--queries", type=int, default=200, help="queries per window (default 200)")
    query.add_argument("--via", choices=("service", "http"), default="service")
    query.add_argument("--no-analyze", action="store_true", help="PostgreSQL: no ANALYZE after the load")
    query.add_argument(
        "--no-compact", action="store_true", help="keep every value a row (no compaction job after each hour)"
    )
    query.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    edge = commands.add_parser("edge", help="one tapline edge gateway polling one simulated room")
    edge.add_argument("--duration", type=float, default=60.0, help="measured seconds after the warm-up")
    edge.add_argument("--warmup", type=float, default=15.0, help="seconds before measuring")
    edge.add_argument("--broker", default=None, help="MQTT broker URL (default: an embedded amqtt broker)")
    edge.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    edge.add_argument(
        "--layout",
        choices=("standard", "concentrator"),
        default="standard",
        help="the room's Modbus layout (concentrator: a 4-pump room, 80 points on one unit id)",
    )


async def _bench_query_edge(args: argparse.Namespace) -> None:
    if args.bench_command == "query":
        from tapline.bench.query import QueryBench, run_query_bench

        bench = QueryBench(
            db=args.db, rooms=args.rooms, days=args.days, interval_s=args.interval, points=args.points,
            queries=args.queries, via=args.via, analyze=not args.no_analyze, compact=not args.no_compact,
        )  # fmt: skip
        result = await run_query_bench(bench)
    else:
        from tapline.bench.edge import EdgeBench, run_edge_bench

        result = await run_edge_bench(
            EdgeBench(duration_s=args.duration, warmup_s=args.warmup, broker=args.broker, layout=args.layout)
        )
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


async def _bench_births(args: argparse.Namespace) -> None:
    from tapline.bench.births import BirthsBench, run_births_bench

    result = await run_births_bench(BirthsBench(db=args.db, rooms=args.rooms, points=args.points))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


async def _bench_flood(args: argparse.Namespace) -> None:
    from tapline.bench.flood import FloodBench, run_flood_bench

    result = await run_flood_bench(
        FloodBench(
            db=args.db,
            rooms=args.rooms,
            districts=args.districts,
            window_s=args.window,
            hold_s=args.hold,
            consoles=args.consoles,
            notify=args.notify,
        )
    )
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


def _sim_parser(sim: argparse.ArgumentParser) -> None:
    commands = sim.add_subparsers(dest="sim_command", required=True)

    fleet = commands.add_parser("fleet", help="publish Sparkplug B for many rooms, as their gateways would")
    fleet.add_argument("--sites", type=int, default=100, help="pump rooms (default 100)")
    fleet.add_argument(
        "--points", type=int, default=60, help="points per room (default 60; extra are aux/AI..)"
    )
    fleet.add_argument("--interval", type=float, default=5.0, help="sampling period in seconds (default 5)")
    fleet.add_argument("--broker", default=os.environ.get("TAPLINE_BROKER", "mqtt://127.0.0.1:1883"))
    fleet.add_argument(
        "--districts", type=int, default=8, help="districts = Sparkplug groups (1..8, default 8)"
    )
    fleet.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    fleet.add_argument("--record", type=Path, default=None, help="write every published value to this file")
    fleet.add_argument("--processes", type=int, default=1, help="worker processes sharing the rooms")
    fleet.add_argument("--group-prefix", default="", help="prefix of every group id, e.g. a run id")
    fleet.add_argument(
        "--connections",
        choices=("node", "shared"),
        default=None,
        help="one MQTT connection per room (own NDEATH will) or one per process (default: node up to "
        "200 rooms a process)",
    )
    fleet.add_argument(
        "--report",
        choices=("exception", "all"),
        default="exception",
        help="report by exception with deadbands (default) or every point every period",
    )
    fleet.add_argument(
        "--full-refresh", type=float, default=300.0, help="re-send every point at least this often"
    )
    fleet.add_argument("--history", type=float, default=0.0, help="seconds of samples kept to answer Replay")
    fleet.add_argument("--primary-host", default="", help="Sparkplug host id whose STATE to wait for")
    fleet.add_argument(
        "--cycle",
        type=int,
        default=0,
        help="compute K periods of physics up front, then replay them (a cheap generator for load tests)",
    )
    fleet.add_argument(
        "--birth-rate", type=int, default=1000, help="rooms born per second per process at most (0: no limit)"
    )
    fleet.add_argument(
        "--ignore-commands",
        action="store_true",
        help="subscribe to no NCMD: no rebirth or replay (other hosts on a shared broker cannot steer it)",
    )
    fleet.add_argument("--seed", type=int, default=1, help="simulation seed")
    fleet.add_argument("--json", type=Path, default=None, help="write the run's figures to this JSON file")

    rooms = commands.add_parser("rooms", help="serve simulated rooms over Modbus TCP (for tapline edge)")
    rooms.add_argument("--sites", type=int, default=1, help="pump rooms (default 1)")
    rooms.add_argument("--base-port", type=int, default=5020, help="room N listens on base-port + N - 1")
    rooms.add_argument("--districts", type=int, default=2)
    rooms.add_argument("--seed", type=int, default=1)
    rooms.add_argument("--host", default="127.0.0.1")
    rooms.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    rooms.add_argument("--write-configs", type=Path, default=None, help="write a gateway YAML per room here")
    rooms.add_argument("--api-port", type=int, default=0, help="also serve /api/v1/sim/faults on this port")
    rooms.add_argument("--demo-password", default="demo", help="password of the fault API's demo users")
    rooms.add_argument(
        "--layout",
        choices=("standard", "concentrator"),
        default="standard",
        help="standard: a unit id per device; concentrator: the PLC mirrors every device on one unit id",
    )
    rooms.add_argument(
        "--pumps", type=int, choices=(2, 3, 4), default=None, help="pumps in every room (default: varied)"
    )

    for name, text in (
        ("inject", "inject a fault into a running simulator (tapline demo)"),
        ("clear", "clear an injected fault by its id"),
        ("faults", "list active faults and the ground-truth log"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--api", default=os.environ.get("TAPLINE_API", "http://127.0.0.1:8000"))
        command.add_argument("--user", default="operator")
        command.add_argument("--password", default=os.environ.get("TAPLINE_PASSWORD", "demo"))
        if name == "inject":
            command.add_argument("--kind", required=True, help="pump_trip, flood, inlet_pressure_drop, …")
            command.add_argument("--site", default=None, help="pump room id, e.g. PR-0001")
            command.add_argument("--district", default=None, help="district (for inlet_pressure_drop)")
            command.add_argument("--device", default=None, help="device, e.g. vfd1")
            command.add_argument(
                "--param", action="append", default=[], metavar="NAME=VALUE", help="fault parameter (repeat)"
            )
        elif name == "clear":
            command.add_argument("fault_id", metavar="ID", help="the id inject printed, e.g. F00001")


def _sim(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    from tapline import bootstrap

    if args.sim_command == "fleet":
        from tapline.sim.fleet import FleetSpec
        from tapline.sim.fleet_publish import FleetSettings

        spec = FleetSpec(
            sites=args.sites,
            points=args.points,
            interval_s=args.interval,
            districts=args.districts,
            seed=args.seed,
            group_prefix=args.group_prefix,
            report=args.report,
            full_refresh_s=args.full_refresh,
            history_s=args.history,
            cycle=args.cycle,
        )
        settings = FleetSettings(
            spec=spec,
            broker=args.broker,
            processes=args.processes,
            connections=args.connections,
            duration_s=args.duration,
            record=args.record,
            primary_host=args.primary_host or None,
            obey_commands=not args.ignore_commands,
            birth_rate=args.birth_rate,
            log_level=args.log_level,
        )

        async def fleet() -> None:
            await bootstrap.run_sim_fleet(settings, args.json)

        return fleet()
    if args.sim_command == "rooms":
        return bootstrap.run_sim_rooms(
            sites=args.sites,
            base_port=args.base_port,
            districts=args.districts,
            seed=args.seed,
            host=args.host,
            speed=args.speed,
            write_configs=args.write_configs,
            api_port=args.api_port,
            demo_password=args.demo_password,
            layout=args.layout,
            pumps=args.pumps,
        )
    return _fault_command(args)


async def _fault_command(args: argparse.Namespace) -> None:
    """``sim inject|clear|faults``: one call to the fault API, its JSON answer on stdout."""
    from tapline.sim.api_client import FaultApi, parse_params

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise in a CLI
    api = FaultApi(args.api, args.user, args.password)
    if args.sim_command == "inject":
        params = parse_params(args.param)
        result = await api.inject(
            args.kind, site=args.site, district=args.district, device=args.device, params=params
        )
    elif args.sim_command == "clear":
        result = await api.clear(args.fault_id)
    else:
        result = await api.faults()
    print(json.dumps(result, ensure_ascii=False, indent=2))


async def _bench_ingest(args: argparse.Namespace) -> None:
    from tapline.bench.ingest import IngestBench, run_ingest_bench

    bench = IngestBench(
        sites=args.sites,
        points=args.points,
        interval=args.interval,
        duration=args.duration,
        broker=args.broker,
        db=args.db,
        processes=args.processes,
        cycle=args.cycle,
        references=not args.no_references,
        workers=args.workers,
        gc_tuned=not args.gc_default,
    )
    result = await run_ingest_bench(bench)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


def _settings(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    from tapline.config import DemoSettings, EdgeSettings, ServeSettings

    if args.command == "bench" and args.bench_command == "ingest":
        return _bench_ingest(args)
    if args.command == "bench" and args.bench_command in ("query", "edge"):
        return _bench_query_edge(args)
    if args.command == "bench" and args.bench_command == "flood":
        return _bench_flood(args)
    if args.command == "bench" and args.bench_command == "births":
        return _bench_births(args)
    if args.command == "edge":  # a gateway imports nothing of the cloud side (memory budget)
        from tapline.edge.entry import run_edge

        return run_edge(
            EdgeSettings(
                config=args.config,
                broker=args.broker,
                data_dir=args.data_dir,
                primary_host=args.primary_host or None,
                log_level=args.log_level,
            )
        )
    from tapline import bootstrap

    if args.command == "sim":
        return _sim(args)
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
                notify=args.notify,
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
                host_id=args.host_id,
                groups=args.groups,
                notify=args.notify,
                log_level=args.log_level,
            )
        )
    raise ValueError(f"unknown command {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:2] == ["bench", "faults"]:  # its own parser, worker processes and event loop
        from tapline.bench import faults

        logs.configure("warning")
        return faults.main(raw[2:])
    args = _parser().parse_args(raw)
    logs.configure(args.log_level)
    try:
        coroutine = _settings(args)
    except (ValidationError, ValueError) as exc:
        print(f"{_name(args)}: invalid arguments:\n{exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_supervised(coroutine))
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0
    except (ConfigError, OSError, ValueError, StoreConfigurationError) as exc:  # can never work as given
        print(f"{_name(args)}: {exc}", file=sys.stderr)
        return 2
    except (SimApiError, StoreError) as exc:  # e.g. the database is down: a supervisor restarts us
        print(f"{_name(args)}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _supervised(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run the command as the main task: SIGTERM (systemd, docker stop) cancels it like Ctrl-C, so
    gateways publish their NDEATH and stores close; an error raised inside a task group reaches the
    caller as itself, not wrapped in an ExceptionGroup, so ``main`` can print it plainly."""
    task = asyncio.ensure_future(coroutine)
    loop = asyncio.get_running_loop()
    terminated: list[bool] = []

    def terminate() -> None:
        terminated.append(True)
        task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals off the main thread
        loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        await task
    except asyncio.CancelledError:
        if not terminated:
            raise
        print("stopped (SIGTERM)", file=sys.stderr)
    except BaseExceptionGroup as group:
        raise _first_leaf(group) from group
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _name(args: argparse.Namespace) -> str:
    command = getattr(args, "sim_command", None)
    return f"tapline {args.command}" + (f" {command}" if command else "")


if __name__ == "__main__":
    sys.exit(main())
