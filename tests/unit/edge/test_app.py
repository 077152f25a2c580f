"""The gateway's composition: supervised tasks survive the unforeseen; metrics describe the buses."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from tapline.edge.app import Gateway, GatewaySettings
from tapline.edge.config import DeviceConfig, PollConfig, RoomConfig, TcpBus
from tapline.mqtt import BrokerUrl
from tapline.registers.layout import standard_layout
from tapline.registers.maps import Table
from tests.helpers import eventually, free_port
from tests.unit.edge.fakes import FakeBus


class FlakyBus(FakeBus):
    """A bus whose driver hits a bug nobody foresaw, once."""

    crashed = False

    async def read(self, unit: int, table: Table, address: int, count: int) -> list[int] | list[bool]:
        if not self.crashed and len(self.requests) > 20:
            self.crashed = True
            raise RuntimeError("a bug in a driver")
        return await super().read(unit, table, address, count)


def room() -> RoomConfig:
    return RoomConfig(
        site="PR-0100",
        district="tunit",
        buses=(TcpBus(name="lan", host="127.0.0.1"),),
        devices=tuple(
            DeviceConfig(name=s.name, bus="lan", unit=s.unit, map=s.map_name) for s in standard_layout(2)
        ),
        poll=PollConfig(fast_s=0.02, slow_s=0.1),
    )


def gateway_on(bus: FakeBus, tmp_path: Path) -> Gateway:
    """A gateway for ``room()`` on ``bus`` (its units loaded with the standard maps), no primary host."""
    for slot in standard_layout(2):
        bus.load(slot.unit, slot.register_map, {})
    settings = GatewaySettings(
        broker=BrokerUrl("127.0.0.1", free_port()), data_dir=tmp_path, primary_host=None
    )
    maps = {s.name: s.register_map for s in standard_layout(2)}
    return Gateway(room(), maps, settings, buses={"lan": bus})


async def test_a_crashed_task_is_logged_counted_and_restarted(tmp_path: Path) -> None:
    bus = FlakyBus()
    gateway = gateway_on(bus, tmp_path)
    task = asyncio.create_task(gateway.run())
    try:

        async def restarted_and_polling() -> bool:
            return bus.crashed and gateway.counters.task_restarts == 1 and len(bus.requests) > 60

        await eventually(restarted_and_polling, timeout=10, what="the poller restarted after the crash")
        metrics = gateway.node.metrics.status()
        assert metrics["Gateway/TaskRestarts"] == 1
        assert metrics["Bus/lan/ConfiguredPerSecond"] == gateway.pollers[0].configured_rate()
        assert metrics["Device/plc/Online"] is True
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class StuckBus(FakeBus):
    """A driver that, once stuck, never answers a request and never finishes closing."""

    stuck = False

    async def read(self, unit: int, table: Table, address: int, count: int) -> list[int] | list[bool]:
        if len(self.requests) > 10:
            self.stuck = True
            await asyncio.Event().wait()
        return await super().read(unit, table, address, count)

    async def close(self) -> None:
        await asyncio.Event().wait()


async def test_a_stop_finishes_even_when_the_modbus_driver_hangs(tmp_path: Path) -> None:
    bus = StuckBus()
    gateway = gateway_on(bus, tmp_path)
    task = asyncio.create_task(gateway.run())

    async def stuck() -> bool:
        return bus.stuck

    await eventually(stuck, timeout=10, what="the driver stuck in a request")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 15)  # NDEATH and the bus close are each bounded
    assert task.done()
