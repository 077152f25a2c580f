"""Composition of one gateway: buses → pollers → queue → edge node → MQTT uplink.

``Gateway.run`` is what ``tapline edge`` and the demo run; every task is named and supervised by one
TaskGroup, so a crash in any part stops the gateway loudly instead of leaving a half-dead process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tapline.edge.config import RoomConfig
from tapline.edge.history import History
from tapline.edge.modbus_io import BusClient, PymodbusBus
from tapline.edge.node import DevicePoints, EdgeNode
from tapline.edge.poller import BusPoller, PollEvent, wall_ms
from tapline.logs import get_logger
from tapline.mqtt import BrokerUrl, run_session
from tapline.registers.maps import RegisterMap

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    broker: BrokerUrl
    data_dir: Path
    primary_host: str | None = "tapline"
    keepalive_s: int = 15
    counters_period_s: float = 30.0
    prune_period_s: float = 300.0


class Gateway:
    """One pump room's edge gateway."""

    def __init__(
        self,
        room: RoomConfig,
        maps: Mapping[str, RegisterMap],
        settings: GatewaySettings,
        *,
        buses: Mapping[str, BusClient] | None = None,
    ) -> None:
        self.room = room
        self.settings = settings
        self.buses: dict[str, BusClient] = (
            dict(buses) if buses else {b.name: PymodbusBus(b) for b in room.buses}
        )
        history_path = (
            Path(room.history.path) if room.history.path else settings.data_dir / f"{room.site}.history.db"
        )
        self.history = History(
            history_path, max_rows=room.history.max_rows, max_age_ms=int(room.history.max_age_h * 3600_000)
        )
        devices = [DevicePoints(d.name, d.unit, self.buses[d.bus], maps[d.name]) for d in room.devices]
        self.node = EdgeNode(
            group=room.district,
            node=room.site,
            devices=devices,
            history=self.history,
            full_refresh_ms=int(room.poll.full_refresh_s * 1000),
            primary_host=settings.primary_host,
            keepalive_s=settings.keepalive_s,
        )
        self.queue: asyncio.Queue[PollEvent] = asyncio.Queue(maxsize=10_000)
        self.pollers = [
            BusPoller(
                self.buses[bus.name],
                [(d, maps[d.name]) for d in room.devices if d.bus == bus.name],
                room.poll,
                self.queue.put,
            )
            for bus in room.buses
        ]

    async def _process(self) -> None:
        while True:
            event = await self.queue.get()
            await self.node.handle(event)

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time() + self.settings.prune_period_s
        while True:
            await asyncio.sleep(self.settings.counters_period_s)
            await self.node.publish_counters()
            if loop.time() >= next_prune:
                next_prune = loop.time() + self.settings.prune_period_s
                removed = await self.history.prune(wall_ms())
                if removed:
                    log.warning("history_pruned", rows=removed, dropped_total=self.history.dropped)

    async def run(self) -> None:
        log.info(
            "gateway_start", site=self.room.site, district=self.room.district, devices=len(self.node.devices)
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                for poller in self.pollers:
                    tasks.create_task(poller.run(), name=f"poll-{self.room.site}-{poller.bus.name}")
                tasks.create_task(self._process(), name=f"process-{self.room.site}")
                tasks.create_task(self._housekeeping(), name=f"housekeeping-{self.room.site}")
                tasks.create_task(
                    run_session(
                        self.settings.broker,
                        f"tapline-edge-{self.room.district}-{self.room.site}",
                        on_connect=self.node.on_connect,
                        on_message=self.node.on_message,
                        on_disconnect=self.node.on_disconnect,
                        will_factory=self.node.will,
                        keepalive_s=self.settings.keepalive_s,
                    ),
                    name=f"uplink-{self.room.site}",
                )
        finally:
            for bus in self.buses.values():
                await bus.close()
            self.history.close()
