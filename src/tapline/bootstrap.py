"""Composition root: builds every process (demo, serve, edge) from its typed settings.

Nothing else constructs long-lived objects or wires them together; entry points call these functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from tapline.accounts import Accounts
from tapline.alarms.correlate import Correlator
from tapline.alarms.engine import AlarmEngine
from tapline.alarms.hub import AlarmHub
from tapline.alarms.journal import JournalWriter
from tapline.alarms.profiles import profile_for
from tapline.alarms.service import AlarmService
from tapline.api.app import create_app
from tapline.auth import Role, UserDirectory
from tapline.broker import EmbeddedBroker, pick_port
from tapline.config import DemoSettings, ServeSettings
from tapline.edge.app import Gateway, GatewaySettings
from tapline.edge.config import DeviceConfig, PollConfig, RoomConfig, TcpBus
from tapline.ingest.alarm_feed import AlarmFeed
from tapline.ingest.host import IngestService, IngestSettings, wall_ms
from tapline.ingest.live import LiveState
from tapline.ingest.maintenance import Maintenance
from tapline.logs import get_logger
from tapline.mqtt import BrokerUrl
from tapline.mqtt_wire import run_wire_session
from tapline.notify import NotifyDispatcher, build_dispatcher, load_notify_config
from tapline.runtime import tune_gc
from tapline.services import Services
from tapline.sim.fleet_publish import FleetSettings
from tapline.sim.fleet_report import FleetReport
from tapline.sim.runner import SimRoom, SimulatedCity
from tapline.store.alarm_journal import AlarmJournalStore
from tapline.store.errors import StoreError
from tapline.store.relational import RelationalStore, SiteRow
from tapline.store.telemetry import TelemetryStore, open_telemetry_store
from tapline.store.users import UserStore

log = get_logger(__name__)


@dataclass
class Cloud:
    """The cloud side in one process: ingest (host application), store, services, HTTP API."""

    store: TelemetryStore
    live: LiveState
    ingest: IngestService
    services: Services
    broker: BrokerUrl
    host_id: str = "tapline"
    relational: RelationalStore | None = None
    maintenance: Maintenance | None = None
    journal: JournalWriter | None = None
    notifier: NotifyDispatcher | None = None

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.ingest.run_writer(), name="ingest-writer")
            if self.journal is not None:
                tasks.create_task(self.journal.run(), name="alarm-journal")
            if self.notifier is not None:
                tasks.create_task(self.notifier.run(), name="alarm-notify")
            if self.maintenance is not None:
                tasks.create_task(self.maintenance.run(), name="store-maintenance")
            tasks.create_task(
                ingest_session(self.ingest, self.broker, f"tapline-host-{self.host_id}"),
                name="ingest-mqtt",
            )

    async def close(self) -> None:
        """Write what is pending (if the database lets us), then close the stores."""
        try:
            await self.ingest.flush()
        except StoreError as exc:
            log.warning("final_flush_failed", error=str(exc), pending=self.ingest.writer.pending_values)
        if self.journal is not None:
            try:
                await self.journal.flush()
            except StoreError as exc:
                log.warning("final_journal_flush_failed", error=str(exc), pending=self.journal.pending)
        if self.relational is not None:
            await self.relational.close()
        await self.store.close()


async def ingest_session(
    ingest: IngestService,
    broker: BrokerUrl,
    client_id: str,
    *,
    keepalive_s: int = 15,
    backoff_initial_s: float = 0.2,
    backoff_max_s: float = 10.0,
) -> None:
    """The ingest's MQTT session until cancelled, on the lean receive path (``mqtt_wire``: no
    per-message client objects). Tests shorten the keepalive and the reconnect backoff."""
    await run_wire_session(
        broker,
        client_id,
        on_connect=ingest.on_connect,
        on_message=ingest.on_message,
        on_disconnect=ingest.on_disconnect,
        will_factory=ingest.will,
        on_close=ingest.on_close,
        keepalive_s=keepalive_s,
        backoff_initial_s=backoff_initial_s,
        backoff_max_s=backoff_max_s,
    )


async def build_cloud(
    store_url: str,
    broker: BrokerUrl,
    host_id: str = "tapline",
    settings: IngestSettings | None = None,
    notify: Path | None = None,
) -> Cloud:
    """Open the stores (running migrations), warm the cache from them, and wire the cloud together.
    ``notify``: the alarm notification config (a bad file fails here, before anything runs)."""
    notifier = build_dispatcher(load_notify_config(notify)) if notify is not None else None
    store = open_telemetry_store(store_url)
    await store.open()
    relational = RelationalStore(store_url)
    try:
        await relational.open()
        live = LiveState()
        chosen = settings or IngestSettings(host_id=host_id)
        correlator = Correlator()
        # Alarm ids must stay unique across restarts (the journal keeps them): prefix the boot time.
        prefix = f"AL{_base36(wall_ms() // 1000)}"
        engine = AlarmEngine(grouping=correlator, id_prefix=prefix)
        hub = AlarmHub()
        journal_store = AlarmJournalStore(relational)
        # The last process's live alarms died with its engine: close them in the journal (ours only).
        orphans = await journal_store.close_orphans(
            wall_ms(), "cloud restarted: re-raised if still present", chosen.groups, prefix + "-"
        )
        if orphans:
            log.info("alarms_closed_after_restart", count=len(orphans))
        alarm_service = AlarmService(engine, correlator, hub=hub, journal=journal_store)
        await alarm_service.restore_maintenance()
        journal = JournalWriter(journal_store)
        hub.add_sink(journal.take)
        if notifier is not None:
            hub.add_sink(notifier.take)
        ingest = IngestService(store, live, chosen, relational=relational, alarms=AlarmFeed(engine, hub))
        await ingest.start()
    except BaseException:
        await relational.close()
        await store.close()
        raise
    maintenance = Maintenance(store, wall_ms)
    services = Services(live, store)
    services.extras["alarms"] = engine
    services.extras["incidents"] = correlator
    services.extras["alarm_hub"] = hub
    services.extras["relational"] = relational
    services.extras["alarm_service"] = alarm_service
    services.metrics += [ingest, maintenance, journal]
    if notifier is not None:
        services.metrics.append(notifier)
    services.rolled_up_to = lambda: maintenance.rolled_up_to
    return Cloud(
        store, live, ingest, services, broker, chosen.host_id, relational, maintenance, journal, notifier
    )


def _base36(number: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


def room_config(
    room: SimRoom, port: int, fast_s: float, slow_s: float, host: str = "127.0.0.1"
) -> RoomConfig:
    """The gateway config of a simulated room: one TCP bus to its Modbus server, every device on it."""
    return RoomConfig(
        site=room.spec.site_id,
        district=room.spec.district,
        name=room.name,
        buses=(TcpBus(name="lan", host=host, port=port, timeout_s=0.5, retries=0),),
        devices=tuple(DeviceConfig(name=s.name, bus="lan", unit=s.unit, map=s.map_name) for s in room.layout),
        poll=PollConfig(fast_s=fast_s, slow_s=slow_s, full_refresh_s=300.0),
    )


def demo_users(password: str) -> UserDirectory:
    """The demo's users: admin, operator and viewer, all with ``password``; a fresh secret per run."""
    users = UserDirectory(secrets.token_bytes(32))
    users.add("admin", password, Role.ADMIN)
    users.add("operator", password, Role.OPERATOR)
    users.add("viewer", password, Role.VIEWER)
    return users


async def attach_accounts(
    cloud: Cloud, users: UserDirectory, ensure: dict[str, tuple[str | None, Role]] | None = None
) -> Accounts:
    """Back the user directory with the relational store: load the stored users, then create or reset
    the ``ensure`` ones (the start-up admin, the demo users) so their given passwords hold."""
    accounts = Accounts(users, UserStore(cloud.relational) if cloud.relational is not None else None)
    try:
        await accounts.load()
        for name, (password, role) in (ensure or {}).items():
            if password:
                await accounts.ensure(name, password, role)
    except BaseException:
        await cloud.close()
        raise
    if not users.all():
        log.warning("no_users", hint="pass --admin-password (TAPLINE_ADMIN_PASSWORD) to create the admin")
    cloud.services.extras["accounts"] = accounts
    return accounts


def serve_users(secret: str, admin_password: str | None) -> UserDirectory:
    """Users of ``tapline serve``: refuses to run without a real secret (no default signs tokens)."""
    if len(secret) < 16:
        raise ValueError("set TAPLINE_SECRET (at least 16 characters) to sign API tokens")
    users = UserDirectory(secret.encode("utf-8"))
    if admin_password:
        users.add("admin", admin_password, Role.ADMIN)
    return users


async def serve_http(
    app_services: Services, users: UserDirectory, host: str, port: int, *, public_read: bool = False
) -> None:
    app = create_app(app_services, users, public_read=public_read)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    # Ctrl-C belongs to asyncio.run (it cancels the whole task tree); uvicorn must not take SIGINT.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    try:
        await server.serve()
    finally:
        server.should_exit = True


@dataclass
class Stack:
    """Simulated rooms + their gateways + the cloud, wired to one broker (the demo and e2e tests)."""

    city: SimulatedCity
    cloud: Cloud
    gateways: list[Gateway]

    async def run(self) -> None:
        """Run until cancelled; always stops the Modbus servers and closes the store."""
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.city.run(), name="sim")
                tasks.create_task(self.cloud.run(), name="cloud")
                for gateway in self.gateways:
                    tasks.create_task(gateway.run(), name=f"gateway-{gateway.room.site}")
        finally:
            await self.cloud.close()
            await self.city.stop()


async def build_stack(
    *,
    broker: BrokerUrl,
    store_url: str,
    data_dir: Path,
    sites: int,
    districts: int = 2,
    district_names: list[str] | None = None,
    seed: int = 1,
    speed: float = 1.0,
    fast_poll_s: float = 1.0,
    slow_poll_s: float = 10.0,
    host: str = "127.0.0.1",
    notify: Path | None = None,
) -> Stack:
    city = SimulatedCity.build(sites, districts, seed=seed, host=host, district_names=district_names)
    city.speed = speed
    await city.start()
    # The stack's host owns the city's districts only: other runs on a shared broker are not its business.
    cloud = await build_cloud(
        store_url, broker, settings=IngestSettings(groups=tuple(city.districts)), notify=notify
    )
    cloud.services.extras["sim"] = city
    engine: AlarmEngine = cloud.services.extras["alarms"]
    for room in city.rooms.values():
        cloud.live.register(room.spec.site_id, room.spec.district, room.name)
        engine.configure(room.spec.site_id, room.spec.district, profile_for(room.spec, engine.template))
    if cloud.relational is not None:
        await cloud.relational.register_sites(
            [SiteRow(r.spec.site_id, r.spec.district, r.name) for r in city.rooms.values()]
        )
    gateways = [
        Gateway(
            room_config(room, room.server.port, fast_poll_s, slow_poll_s, host),
            {slot.name: slot.register_map for slot in room.layout},
            GatewaySettings(broker=broker, data_dir=data_dir / "edge"),
        )
        for room in city.rooms.values()
    ]
    return Stack(city, cloud, gateways)


async def run_demo(settings: DemoSettings) -> None:
    """Everything on one machine: embedded broker, simulated rooms, gateways, cloud, console."""
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    http_port, http_moved = pick_port(settings.host, settings.port)
    broker_port, broker_moved = pick_port(settings.host, settings.broker_port)
    if http_moved:
        print(f"port {settings.port} is in use; the console uses port {http_port} instead", file=sys.stderr)
    if broker_moved:
        print(
            f"MQTT port {settings.broker_port} is in use; the broker uses port {broker_port} instead",
            file=sys.stderr,
        )
    users = demo_users(settings.demo_password)
    broker = EmbeddedBroker(settings.host, broker_port)
    await broker.start()
    try:
        stack = await build_stack(
            broker=BrokerUrl.parse(broker.url),
            store_url=f"sqlite:///{data_dir / 'telemetry.db'}",
            data_dir=data_dir,
            sites=settings.sites,
            districts=settings.districts,
            seed=settings.seed,
            speed=settings.speed,
            fast_poll_s=settings.fast_poll_s,
            slow_poll_s=settings.slow_poll_s,
            host=settings.host,
            notify=settings.notify,
        )
        demo_roles = {"admin": Role.ADMIN, "operator": Role.OPERATOR, "viewer": Role.VIEWER}
        await attach_accounts(
            stack.cloud, users, {name: (settings.demo_password, role) for name, role in demo_roles.items()}
        )
        tune_gc()
        print(f"tapline demo: {len(stack.city.rooms)} pump rooms in {len(stack.city.districts)} districts")
        print(f"  console  http://{settings.host}:{http_port}/")
        print(f"  API      http://{settings.host}:{http_port}/api/v1/sites")
        print(f"  broker   {broker.url}")
        print(f"  data     {data_dir}")
        print(f"  login    admin / operator / viewer, password {settings.demo_password!r}")
        print("  Ctrl-C stops everything.", flush=True)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(stack.run(), name="stack")
            tasks.create_task(
                serve_http(stack.cloud.services, users, settings.host, http_port, public_read=True),
                name="http",
            )
    finally:
        await broker.stop()


async def run_serve(settings: ServeSettings) -> None:
    users = serve_users(settings.secret, settings.admin_password)
    ingest = IngestSettings(host_id=settings.host_id, groups=settings.groups)
    cloud = await build_cloud(
        settings.db, BrokerUrl.parse(settings.broker), settings=ingest, notify=settings.notify
    )
    await attach_accounts(cloud, users, {"admin": (settings.admin_password, Role.ADMIN)})
    tune_gc()  # after the warm start: a long-running process with a hot allocation path (runtime.py)
    owned = ",".join(settings.groups) or "all"
    print(
        f"tapline serve: http://{settings.host}:{settings.port}/ (broker {settings.broker},"
        f" host id {settings.host_id}, districts {owned})",
        flush=True,
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(cloud.run(), name="cloud")
            tasks.create_task(
                serve_http(
                    cloud.services, users, settings.host, settings.port, public_read=settings.public_read
                ),
                name="http",
            )
    finally:
        await cloud.close()


# --- simulator commands (`tapline sim …`) --------------------------------------------------------


async def run_sim_fleet(settings: FleetSettings, json_out: Path | None = None) -> FleetReport:
    """``tapline sim fleet``: publish the Sparkplug fleet until the duration ends or Ctrl-C, then print
    (and optionally write as JSON) what it published and what it cost."""
    import json

    from tapline.sim.fleet_publish import run_fleet

    spec = settings.spec
    print(
        f"tapline sim fleet: {spec.sites} rooms × {spec.points} points every {spec.interval_s:g} s "
        f"→ {settings.broker} (groups {spec.group_prefix or ''}<district>, {settings.processes} process(es), "
        f"{settings.mode} connections)",
        flush=True,
    )
    report = await run_fleet(settings)
    print(report.text(), flush=True)
    if settings.record is not None:
        print(f"  record   {settings.record}", flush=True)
    if json_out is not None:
        _write_text(json_out, json.dumps(report.as_dict(), indent=2) + "\n")
    return report


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def write_room_configs(city: SimulatedCity, directory: Path, host: str = "127.0.0.1") -> list[Path]:
    """One ``tapline edge`` config per simulated room (PR-0001.yaml …), pointing at its Modbus server."""
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for room in city.rooms.values():
        document = room_config(room, room.server.port, 1.0, 10.0, host).model_dump(
            mode="json", exclude_none=True
        )
        path = directory / f"{room.spec.site_id}.yaml"
        _write_text(path, yaml.safe_dump(document, allow_unicode=True, sort_keys=False))
        paths.append(path)
    return paths


async def run_sim_rooms(
    *,
    sites: int,
    base_port: int,
    districts: int = 2,
    seed: int = 1,
    host: str = "127.0.0.1",
    speed: float = 1.0,
    write_configs: Path | None = None,
    api_port: int = 0,
    demo_password: str = "demo",  # noqa: S107 - the documented demo login of the fault API
    layout: str = "standard",
    pumps: int | None = None,
) -> None:
    """``tapline sim rooms``: serve simulated rooms over Modbus TCP (room N on ``base_port + N - 1``),
    optionally write a gateway config per room for ``tapline edge`` and serve the fault API.
    ``layout`` and ``pumps`` as in ``SimulatedCity.build``."""
    from tapline.ingest.live import LiveState
    from tapline.store.telemetry import open_telemetry_store

    city = SimulatedCity.build(
        sites, districts, seed=seed, host=host, base_port=base_port, layout=layout, pumps=pumps
    )
    city.speed = speed
    await city.start()
    try:
        print(f"tapline sim rooms: {sites} simulated pump rooms on {host}", flush=True)
        for room in city.rooms.values():
            print(f"  {room.spec.site_id}  {room.spec.district:<9} modbus tcp://{host}:{room.server.port}")
        if write_configs is not None:
            first = write_room_configs(city, write_configs, host)[0]
            print(f"  gateway configs in {write_configs} (e.g. tapline edge --config {first})")
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(city.run(), name="sim")
            if api_port:
                store = open_telemetry_store("sqlite:///:memory:")
                await store.open()
                services = Services(LiveState(), store)
                services.extras["sim"] = city
                print(f"  faults   http://{host}:{api_port}/api/v1/sim/faults (operator / {demo_password!r})")
                tasks.create_task(
                    serve_http(services, demo_users(demo_password), host, api_port), name="sim-api"
                )
            print("  Ctrl-C stops the rooms.", flush=True)
    finally:
        await city.stop()
