"""What the gateway's integration tests run against: a simulated room, real brokers, a real host.

- ``Mosquitto``: our own broker process on a free port (so it can be killed with SIGKILL and restarted
  on the same port; the shared system broker is never touched).
- ``LinkProxy`` (``tests.link_proxy``, shared with the ingest and simulator tests): a TCP forwarder whose
  existing connections can be black-holed (half-open: bytes vanish, no FIN/RST, as when a 4G link dies)
  or cut.
- ``SimRoom``: one simulated pump room served over Modbus TCP (or RTU framing over TCP).
- ``running_gateway`` / ``running_host``: the gateway and the real ingest host as tasks.
- ``Observer``: a plain subscriber that records every Sparkplug message it sees, per connection.
- ``history_rows`` / ``store_rows``: the ground truth the gateway recorded and what the cloud stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tapline.bootstrap import ingest_session, room_config
from tapline.edge.app import Gateway, GatewaySettings
from tapline.edge.config import InterlockConfig, PollConfig, RoomConfig
from tapline.ingest.host import IngestService, IngestSettings
from tapline.ingest.live import LiveState
from tapline.mqtt import BrokerUrl, Connection, Message, run_session
from tapline.registers.maps import RegisterMap
from tapline.sim.runner import SimRoom as CitySimRoom
from tapline.sim.runner import SimulatedCity
from tapline.sparkplug.codec import Payload, decode_payload
from tapline.sparkplug.errors import SparkplugError
from tapline.store.telemetry import open_telemetry_store
from tests.helpers import eventually, free_port, service_missing
from tests.link_proxy import LinkProxy as LinkProxy  # re-exported: the edge tests' one proxy

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


# --- brokers and links ---------------------------------------------------------------------------


class Mosquitto:
    """A Mosquitto process of our own on a fixed free port, killable and restartable."""

    def __init__(self, tmp: Path) -> None:
        if not Path(MOSQUITTO).exists():
            service_missing(f"the mosquitto binary is not installed ({MOSQUITTO})")
        self.port = free_port()
        self.config = tmp / f"mosquitto-{self.port}.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\n"
        )
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> BrokerUrl:
        return BrokerUrl("127.0.0.1", self.port)

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            MOSQUITTO,
            "-c",
            str(self.config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)

    async def kill(self) -> None:
        """SIGKILL: no will is sent, no session survives, in-flight messages are gone."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.process = None


@contextlib.asynccontextmanager
async def mosquitto(tmp: Path) -> AsyncIterator[Mosquitto]:
    broker = Mosquitto(tmp)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.kill()


# --- the simulated room --------------------------------------------------------------------------


@dataclass
class SimRoom:
    """One simulated room on its own Modbus TCP server, stepped in (scaled) real time."""

    city: SimulatedCity
    task: asyncio.Task[None] | None = None

    @property
    def room(self) -> CitySimRoom:
        return next(iter(self.city.rooms.values()))

    def config(
        self,
        *,
        fast_s: float = 0.1,
        slow_s: float = 0.3,
        port: int | None = None,
        interlocks: InterlockConfig | None = None,
        **poll: float,
    ) -> RoomConfig:
        base = room_config(self.room, port or self.room.server.port, fast_s, slow_s)
        settings = PollConfig(fast_s=fast_s, slow_s=slow_s, full_refresh_s=300.0, **poll)  # type: ignore[arg-type]
        return base.model_copy(update={"poll": settings, "interlocks": interlocks})

    def maps(self) -> dict[str, RegisterMap]:
        return {slot.name: slot.register_map for slot in self.room.layout}


@contextlib.asynccontextmanager
async def sim_room(
    group: str, *, speed: float = 1.0, seed: int = 1, layout: str = "standard", pumps: int | None = None
) -> AsyncIterator[SimRoom]:
    city = SimulatedCity.build(1, district_names=[group], seed=seed, layout=layout, pumps=pumps)
    city.speed = speed
    await city.start()
    sim = SimRoom(city)
    sim.task = asyncio.create_task(city.run(), name="sim")
    try:
        yield sim
    finally:
        sim.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sim.task
        await city.stop()


# --- gateway and host ------------------------------------------------------------------------------


@dataclass
class RunningGateway:
    gateway: Gateway
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def start_gateway(
    config: RoomConfig,
    sim: SimRoom,
    broker: BrokerUrl,
    data_dir: Path,
    *,
    host_id: str | None,
    keepalive_s: int = 2,
    maps: Mapping[str, RegisterMap] | None = None,
) -> RunningGateway:
    settings = GatewaySettings(
        broker=broker,
        data_dir=data_dir,
        primary_host=host_id,
        keepalive_s=keepalive_s,
        counters_period_s=1.0,
        mark_period_s=0.5,
        reconnect_max_s=0.5,
        backfill_rate_msgs=200.0,
    )
    gateway = Gateway(config, maps or sim.maps(), settings)
    return RunningGateway(gateway, asyncio.create_task(gateway.run(), name=f"gateway-{config.site}"))


@dataclass
class RunningHost:
    service: IngestService
    store_path: Path
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def start_host(store_path: Path, broker: BrokerUrl, host_id: str) -> RunningHost:
    """The real ingest host (IngestService + SQLite telemetry store), reconnecting quickly."""
    store = open_telemetry_store(f"sqlite:///{store_path}")
    await store.open()
    settings = IngestSettings(host_id=host_id, replay_margin_ms=2_000, replay_confirm_timeout_ms=5_000)
    service = IngestService(store, LiveState(), settings)

    async def run() -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(service.run_writer())
                tasks.create_task(
                    ingest_session(  # as bootstrap.Cloud runs the ingest
                        service,
                        broker,
                        f"host-{host_id}",
                        keepalive_s=2,
                        backoff_initial_s=0.05,
                        backoff_max_s=0.3,
                    )
                )
        finally:
            with contextlib.suppress(Exception):
                await service.flush()
            await store.close()

    host = RunningHost(service, store_path, asyncio.create_task(run(), name="host"))
    await asyncio.wait_for(service.connected.wait(), 10)
    return host


# --- observing the wire ----------------------------------------------------------------------------


@dataclass
class Seen:
    epoch: int  # which of the observer's connections saw it
    topic: str
    payload: Payload | None

    @property
    def kind(self) -> str:
        return self.topic.split("/")[2] if self.topic.count("/") >= 3 else "STATE"


@dataclass
class Observer:
    """Records every message of a Sparkplug group; can publish commands and STATE."""

    broker: BrokerUrl
    group: str
    seen: list[Seen] = field(default_factory=list)
    epoch: int = 0
    conn: Connection | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def _on_connect(self, conn: Connection) -> None:
        self.epoch += 1
        self.conn = conn
        await conn.subscribe(f"spBv1.0/{self.group}/#", qos=0)
        self.connected.set()

    async def _on_message(self, message: Message) -> None:
        try:
            payload: Payload | None = decode_payload(message.payload)
        except SparkplugError:
            payload = None
        self.seen.append(Seen(self.epoch, message.topic, payload))

    async def _on_disconnect(self, reason: str) -> None:
        self.conn = None
        self.connected.clear()

    async def start(self) -> None:
        self.task = asyncio.create_task(
            run_session(
                self.broker,
                f"observer-{uuid.uuid4().hex[:8]}",
                on_connect=self._on_connect,
                on_message=self._on_message,
                on_disconnect=self._on_disconnect,
                backoff_initial_s=0.05,
                backoff_max_s=0.2,
            ),
            name="observer",
        )
        await asyncio.wait_for(self.connected.wait(), 10)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        await asyncio.wait_for(self.connected.wait(), 10)
        assert self.conn is not None
        await self.conn.publish(topic, payload, qos=qos, retain=retain)

    def of(self, kind: str, device: str | None = None) -> list[Seen]:
        return [s for s in self.seen if s.kind == kind and (device is None or s.topic.endswith(f"/{device}"))]

    async def wait_for(
        self, kind: str, count: int = 1, *, device: str | None = None, timeout: float = 10
    ) -> None:
        async def enough() -> bool:
            return len(self.of(kind, device)) >= count

        await eventually(enough, timeout=timeout, what=f"{count} × {kind} {device or ''}")

    def assert_seq_continuous(self) -> int:
        """Within one observer connection, every message after an NBIRTH is the previous seq + 1
        (mod 256), NDEATH aside. Returns how many messages were checked."""
        checked = 0
        previous: dict[int, int | None] = {}
        for seen in self.seen:
            if seen.payload is None or seen.kind in ("STATE", "NCMD", "DCMD", "NDEATH"):
                continue
            seq = seen.payload.seq
            assert seq is not None, seen.topic
            if seen.kind == "NBIRTH":
                previous[seen.epoch] = seq
                continue
            last = previous.get(seen.epoch)
            if last is not None:
                assert seq == (last + 1) % 256, f"{seen.topic}: seq {seq} after {last}"
                checked += 1
            previous[seen.epoch] = seq
        return checked

    def bd_seq(self, seen: Seen) -> int:
        assert seen.payload is not None
        values = [m.value for m in seen.payload.metrics if m.name == "bdSeq"]
        assert len(values) == 1, seen.topic
        assert isinstance(values[0], int)
        return values[0]


@contextlib.asynccontextmanager
async def observing(broker: BrokerUrl, group: str) -> AsyncIterator[Observer]:
    observer = Observer(broker, group)
    await observer.start()
    try:
        yield observer
    finally:
        await observer.stop()


# --- ground truth and what arrived -----------------------------------------------------------------


def history_rows(path: Path, *, devices_only: bool = True) -> dict[tuple[str, int], float]:
    """Every (point, ts) → value the gateway recorded (read-only, while it may still be running)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT point, ts, value FROM history").fetchall()
    finally:
        db.close()
    prefixes = ("Gateway/", "Device/", "Bus/", "Interlock/")
    return {
        (point, int(ts)): float(value)
        for point, ts, value in rows
        if not (devices_only and point.startswith(prefixes))
    }


def store_rows(path: Path, site: str) -> tuple[dict[tuple[str, int], float], int]:
    """(point, ts) → value of the site's device points in the telemetry store, and the raw row count."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT r.point, s.ts, s.value FROM samples s JOIN series r ON r.id = s.series_id "
            "WHERE r.site = ? AND r.point NOT LIKE 'Gateway/%' AND r.point NOT LIKE 'Device/%' "
            "AND r.point NOT LIKE 'Bus/%' AND r.point NOT LIKE 'Interlock/%'",
            (site,),
        ).fetchall()
    finally:
        db.close()
    return {(point, int(ts)): float(value) for point, ts, value in rows}, len(rows)
