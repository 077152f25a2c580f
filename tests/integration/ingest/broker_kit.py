"""Running the host application and edge doubles against the real Mosquitto.

- (``tests.link_proxy.LinkProxy`` cuts a link without an MQTT DISCONNECT, so the broker publishes the
  client's will, as when a 4G link dies.)
- ``BrokerEdge``: the sans-IO ``EdgeDouble`` on a real MQTT connection (a new bdSeq and will per
  connection), answering NCMD Rebirth/Replay; ``drop_next`` loses outgoing DDATA like QoS 0 does.
- ``running_host``: an ``IngestService`` on real stores with its MQTT session and writer tasks;
  leaving the block cancels them without a final flush (a killed process).
- ``publish``: one message from a fresh client (what crosses the broker is seen by ``tests.observer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiomqtt

from tapline.bootstrap import ingest_session
from tapline.ingest.host import IngestService, IngestSettings
from tapline.ingest.live import LiveState
from tapline.mqtt import BrokerUrl, Connection, Message, WillMessage, run_session
from tapline.sparkplug.errors import SparkplugError
from tapline.store.relational import RelationalStore
from tapline.store.telemetry import TelemetryStore, open_telemetry_store
from tests.unit.ingest.kit import EdgeDouble


@dataclass
class BrokerEdge:
    """An ``EdgeDouble`` publishing through ``url`` (see the module docstring)."""

    double: EdgeDouble
    url: BrokerUrl
    drop_next: int = 0
    conn: Connection | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    commands: list[str] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _will(self) -> WillMessage:
        topic, payload = self.double.reconnect()
        return WillMessage(topic, payload, qos=1, retain=False)

    async def _on_connect(self, conn: Connection) -> None:
        await conn.subscribe(f"spBv1.0/{self.double.group}/NCMD/{self.double.node}", qos=1)
        self.conn = conn
        await self._send(self.double.births(_now()))
        self.connected.set()

    async def _on_disconnect(self, reason: str) -> None:
        self.conn = None
        self.connected.clear()
        if self.double.session.born:
            self.double.session.rebirth()  # publishes nothing until the next birth

    async def _on_message(self, message: Message) -> None:
        try:
            answer = self.double.command(message.topic, message.payload, _now(), chunk=50)
        except SparkplugError:
            return
        self.commands.append(type(self.double.session.parse_command(message.topic, message.payload)).__name__)
        await self._send(answer)

    async def _send(self, wires: list[tuple[str, bytes]]) -> None:
        async with self._lock:
            for topic, payload in wires:
                if self.drop_next and "/DDATA/" in topic:
                    self.drop_next -= 1
                    continue
                if self.conn is not None:
                    with contextlib.suppress(Exception):
                        await self.conn.publish(topic, payload, qos=0)

    async def record(self, ts: int | None = None) -> None:
        """Record one value of every point (into the history first) and publish it if connected."""
        await self._send(self.double.record(_now() if ts is None else ts))

    def start(self) -> None:
        self._task = asyncio.create_task(
            run_session(
                self.url,
                f"edge-{self.double.group}-{self.double.node}-{uuid.uuid4().hex[:6]}",
                on_connect=self._on_connect,
                on_message=self._on_message,
                on_disconnect=self._on_disconnect,
                will_factory=self._will,
                backoff_initial_s=0.05,
                backoff_max_s=0.2,
            )
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _now() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class RunningHost:
    service: IngestService
    store: TelemetryStore
    relational: RelationalStore


@contextlib.asynccontextmanager
async def running_host(
    store_url: str, broker: BrokerUrl, settings: IngestSettings
) -> AsyncIterator[RunningHost]:
    store = open_telemetry_store(store_url)
    await store.open()
    relational = RelationalStore(store_url)
    await relational.open()
    service = IngestService(store, LiveState(), settings, relational=relational)
    await service.start()
    tasks = [
        asyncio.create_task(
            ingest_session(  # as bootstrap.Cloud runs the ingest
                service,
                broker,
                f"host-{settings.host_id}-{uuid.uuid4().hex[:6]}",
                backoff_initial_s=0.05,
                backoff_max_s=0.2,
            )
        ),
        asyncio.create_task(service.run_writer()),
    ]
    try:
        await asyncio.wait_for(service.connected.wait(), 10)
        yield RunningHost(service, store, relational)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await relational.close()
        await store.close()


async def publish(url: BrokerUrl, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
    async with aiomqtt.Client(url.host, url.port, identifier=f"pub-{uuid.uuid4().hex[:8]}") as client:
        await client.publish(topic, payload, qos=qos, retain=retain)
