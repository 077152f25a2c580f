"""The gateway's Modbus side against real servers: RTU framing over TCP, garbage, exclusivity, rates.

The simulator's ``RoomModbusServer`` speaks Modbus TCP only; pymodbus's TCP server takes an RTU framer,
so the RTU test serves the same room image with RTU frames (as a serial-to-Ethernet converter in
transparent mode does), through the simulator's own datastore seam.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from pymodbus import FramerType
from pymodbus.server import ModbusTcpServer

from tapline.edge.app import Gateway, GatewaySettings
from tapline.edge.config import DeviceConfig, PollConfig, RoomConfig, TcpBus
from tapline.edge.modbus_io import BusClient, DeviceException, DeviceTimeout, PymodbusBus
from tapline.edge.poller import BusPoller, DeviceLost, PollEvent
from tapline.mqtt import BrokerUrl
from tapline.registers.maps import Table, builtin_map
from tapline.sim.modbus_server import _Context  # the simulator's datastore seam (no public framer option)
from tests.helpers import eventually, free_port
from tests.integration.edge.kit import SimRoom, sim_room

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")


@dataclass
class Counting:
    """A ``BusClient`` wrapper recording how many requests were on the wire at once."""

    inner: BusClient
    name: str = "rtu"
    in_flight: int = 0
    max_in_flight: int = 0
    calls: list[str] = field(default_factory=list)

    async def _track(self, what: str, call: Awaitable[T]) -> T:
        self.calls.append(what)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await call
        finally:
            self.in_flight -= 1

    async def read(self, unit: int, table: Table, address: int, count: int) -> list[int] | list[bool]:
        return await self._track("read", self.inner.read(unit, table, address, count))

    async def write(
        self, unit: int, table: Table, address: int, values: Sequence[int] | Sequence[bool]
    ) -> None:
        await self._track("write", self.inner.write(unit, table, address, values))

    async def close(self) -> None:
        await self.inner.close()


@contextlib.asynccontextmanager
async def rtu_server(sim: SimRoom) -> AsyncIterator[int]:
    server = ModbusTcpServer(
        _Context(sim.room.image), framer=FramerType.RTU, address=("127.0.0.1", 0), ignore_missing_devices=True
    )
    await server.serve_forever(background=True)
    try:
        sockets: list[socket.socket] = getattr(server.transport, "sockets", None) or []  # asyncio.Server
        yield int(sockets[0].getsockname()[1])
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


def rtu_room(sim: SimRoom, port: int) -> RoomConfig:
    bus = TcpBus(name="rtu", kind="rtu_over_tcp", host="127.0.0.1", port=port, timeout_s=0.3, retries=1)
    devices = tuple(
        DeviceConfig(name=s.name, bus="rtu", unit=s.unit, map=s.map_name) for s in sim.room.layout
    )
    return RoomConfig(
        site=sim.room.spec.site_id,
        district=sim.room.spec.district,
        buses=(bus,),
        devices=devices,
        poll=PollConfig(fast_s=0.2, slow_s=1.0),
    )


async def test_rtu_over_tcp_one_request_in_flight_while_commands_race_the_poller(
    tmp_path: Path, unique_group: str
) -> None:
    async with sim_room(unique_group) as sim, rtu_server(sim) as port:
        config = rtu_room(sim, port)
        wire = Counting(PymodbusBus(config.buses[0]))
        settings = GatewaySettings(
            broker=BrokerUrl("127.0.0.1", free_port()), data_dir=tmp_path, primary_host=None
        )
        gateway = Gateway(config, sim.maps(), settings, buses={"rtu": wire})
        task = asyncio.create_task(gateway.run())
        try:
            poller = gateway.pollers[0]

            async def all_found() -> bool:
                return all(plan.online for plan in poller.devices)

            await eventually(all_found, timeout=10, what="every device answering over RTU framing")
            bus = gateway.buses["rtu"]
            plc = sim.maps()["plc"].point("OutletPressureSP")

            async def command(value: int) -> None:  # what DCMD and interlock writes do, concurrently
                for _ in range(5):
                    await bus.write(1, Table.HOLDING, plc.address, [value])
                    await bus.read(1, Table.HOLDING, plc.address, 1)

            await asyncio.gather(command(450), command(460), command(470))
            cycles = sum(plan.stats.cycles for plan in poller.devices)

            async def polled_on() -> bool:  # a few poll cycles after the commands
                return sum(plan.stats.cycles for plan in poller.devices) > cycles + 3 * len(poller.devices)

            await eventually(polled_on, timeout=10, what="more poll cycles")
            assert wire.max_in_flight == 1
            assert wire.calls.count("write") == 15
            assert sim.room.physics.plc.setpoint_mpa in (0.45, 0.46, 0.47)
            rows = await gateway.history.after_id(0, 10_000)
            assert {r.reading.point.split("/")[0] for r in rows} == {s.name for s in sim.room.layout}
            assert bus.stats.timeouts == 0
            assert bus.stats.errors == 0
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_requests_per_second_achieved_against_configured(tmp_path: Path, unique_group: str) -> None:
    async with sim_room(unique_group) as sim:
        config = sim.config(fast_s=0.1, slow_s=0.5)
        settings = GatewaySettings(
            broker=BrokerUrl("127.0.0.1", free_port()), data_dir=tmp_path, primary_host=None
        )
        gateway = Gateway(config, sim.maps(), settings)
        task = asyncio.create_task(gateway.run())
        try:
            await asyncio.sleep(0.5)
            bus = gateway.buses["lan"]
            before, started = bus.stats.requests, asyncio.get_running_loop().time()
            await asyncio.sleep(2.0)
            achieved = (bus.stats.requests - before) / (asyncio.get_running_loop().time() - started)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        configured = gateway.pollers[0].configured_rate()
        assert achieved == pytest.approx(configured, rel=0.15)
        assert gateway.pollers[0].overruns == 0


async def garbage_server(reply: bytes) -> asyncio.Server:
    """A TCP server that answers every request with ``reply`` (a broken device or converter)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(256):
                writer.write(reply)
                await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize(
    "reply",
    [
        b"\x00\x01\x00\x00\x00\x03\x01\x83",  # truncated exception frame
        b"\xff" * 40,  # noise
        b"\x00\x00\x00\x00\x00\x06\x01\x04\x08",  # a header promising more than it carries
        b"\x00\x01\x00\x00\x00\x05\x07\x04\x02\x00\x01",  # another unit's answer
    ],
)
async def test_garbage_frames_are_timeouts_or_errors_never_crashes(reply: bytes) -> None:
    server = await garbage_server(reply)
    port = server.sockets[0].getsockname()[1]
    bus = PymodbusBus(TcpBus(name="junk", host="127.0.0.1", port=port, timeout_s=0.2))
    events: list[PollEvent] = []

    async def sink(event: PollEvent) -> None:
        events.append(event)

    device = DeviceConfig(name="plc", bus="junk", unit=1, map="booster_plc")
    poller = BusPoller(bus, [(device, builtin_map("booster_plc"))], PollConfig(fast_s=0.05, slow_s=0.1), sink)
    try:
        for _ in range(3):
            with pytest.raises((DeviceTimeout, DeviceException)):
                await bus.read(1, Table.INPUT, 0, 8)
        task = asyncio.create_task(poller.run())

        async def lost() -> bool:
            return any(isinstance(e, DeviceLost) for e in events)

        await eventually(lost, timeout=10, what="the device reported lost")
        assert not task.done()  # still polling
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await bus.close()
        server.close()
