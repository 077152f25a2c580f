"""Acquisition against a fake bus: block merging, one request in flight per bus, loss and recovery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tapline.edge.config import DeviceConfig, PollConfig
from tapline.edge.modbus_io import ExclusiveBus
from tapline.edge.poller import BusPoller, DeviceFound, DeviceLost, PollEvent, Sample
from tapline.registers.blocks import plan_blocks
from tapline.registers.layout import standard_layout
from tapline.registers.maps import RegisterMap, RegisterPoint, Table, WireType
from tests.helpers import eventually
from tests.unit.edge.fakes import FakeBus

FAST = PollConfig(fast_s=0.02, slow_s=0.1, offline_after_failures=2, offline_retry_max_s=0.05)


def standard_room(pumps: int = 3) -> list[tuple[DeviceConfig, RegisterMap]]:
    return [
        (DeviceConfig(name=slot.name, bus="lan", unit=slot.unit, map=slot.map_name), slot.register_map)
        for slot in standard_layout(pumps)
    ]


def big_plc(points: int = 80) -> RegisterMap:
    """A PLC exposing ``points`` values the way real ones do: runs of registers with small gaps."""
    rows: list[RegisterPoint] = []
    address = 0
    for index in range(points):
        if index % 10 == 0 and index:
            address += 3  # a few spare registers between groups
        wire = WireType.FLOAT32 if index % 4 == 0 else WireType.UINT16
        table = Table.INPUT if index < 60 else Table.HOLDING
        rows.append(RegisterPoint(name=f"P{index}", table=table, address=address, type=wire))
        address += wire.words
        if index == 59:
            address = 0
    return RegisterMap(model="big", points=tuple(rows))


class Collector:
    def __init__(self) -> None:
        self.events: list[PollEvent] = []

    async def __call__(self, event: PollEvent) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[PollEvent]:
        return [e for e in self.events if isinstance(e, kind)]


@contextlib.asynccontextmanager
async def polling(poller: BusPoller) -> AsyncIterator[BusPoller]:
    task = asyncio.create_task(poller.run())
    try:
        yield poller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def loaded_bus(devices: list[tuple[DeviceConfig, RegisterMap]], **kwargs: float) -> FakeBus:
    bus = FakeBus(**kwargs)  # type: ignore[arg-type]
    for config, register_map in devices:
        bus.load(config.unit, register_map, {})
    return bus


def test_an_80_point_plc_needs_two_block_reads_not_80() -> None:
    plan = plan_blocks(big_plc().points)
    assert len(big_plc().points) == 80
    assert [(b.table, b.count) for b in plan] == [(Table.HOLDING, 28), (Table.INPUT, 90)]
    assert all(b.count <= 125 for b in plan)


def test_block_reads_per_cycle_of_a_standard_room() -> None:
    room = standard_room(3)
    points = sum(len(m.points) for _, m in room)
    poller = BusPoller(FakeBus(), room, FAST, Collector())
    # 49 points in 7 devices: one request per device and table (the floor with one unit id per
    # device), instead of one per point as a per-tag gateway does
    assert points == 49
    assert poller.requests_per_cycle() == 2 + 3 * 3 + 0 + 1 + 2
    assert sum(len(plan.full) for plan in poller.devices) == 2 + 3 * 3 + 1 + 2 + 2
    assert poller.configured_rate() == pytest.approx(14 / 0.02 + 2 / 0.1)


def test_slow_points_next_to_fast_ones_cost_no_extra_request() -> None:
    plc = [(DeviceConfig(name="plc", bus="lan", unit=1, map="booster_plc"), standard_room()[0][1])]
    plan = BusPoller(FakeBus(), plc, FAST, Collector()).devices[0]
    assert len(plan.fast) == len(plan.full) == 2  # TotalFlow (slow) rides in the fast input block


async def test_one_request_in_flight_per_bus_with_commands_racing_the_poller() -> None:
    room = standard_room(3)
    fake = loaded_bus(room, delay_s=0.001)
    bus = ExclusiveBus(fake)
    sink = Collector()
    async with polling(BusPoller(bus, room, FAST, sink)):
        vfd = room[1][1].point("RunCommand")

        async def command() -> None:
            for _ in range(20):
                await bus.write(11, Table.COIL, vfd.address, [True])
                await bus.read(11, Table.COIL, vfd.address, 1)

        await asyncio.gather(command(), command(), command())
        await eventually(lambda: _true(len(sink.of(Sample)) > 40), timeout=5, what="samples")
    assert len(fake.requests) > 150
    assert fake.max_in_flight == 1
    assert bus.stats.requests == len(fake.requests)


async def test_without_the_exclusive_bus_the_fake_would_see_overlap() -> None:
    """The fake really detects concurrency: the exclusivity above is the wrapper's doing."""
    fake = loaded_bus(standard_room(2), delay_s=0.001)
    await asyncio.gather(*(fake.read(1, Table.INPUT, 0, 2) for _ in range(5)))
    assert fake.max_in_flight == 5


async def test_a_silent_device_is_lost_after_n_cycles_and_found_again() -> None:
    room = standard_room(2)
    fake = loaded_bus(room)
    bus = ExclusiveBus(fake)
    sink = Collector()
    async with polling(BusPoller(bus, room, FAST, sink, retries=1)) as poller:
        await eventually(lambda: _true(len(sink.of(DeviceFound)) == len(room)), timeout=5, what="found")
        fake.silent.add(12)  # vfd2 stops answering
        await eventually(lambda: _true(bool(sink.of(DeviceLost))), timeout=5, what="device lost")
        lost = sink.of(DeviceLost)
        assert [e.device for e in lost] == ["vfd2"]
        plan = next(p for p in poller.devices if p.config.name == "vfd2")
        assert plan.stats.retries >= 2  # each failed cycle retried its timeout once
        assert bus.unit_stats(12).timeouts >= 4
        found_before = len(sink.of(DeviceFound))
        fake.silent.clear()
        await eventually(lambda: _true(len(sink.of(DeviceFound)) > found_before), timeout=5, what="found")
        assert sink.of(DeviceFound)[-1].device == "vfd2"
    assert [e.device for e in sink.of(DeviceLost)] == ["vfd2"]


async def test_an_exception_response_drops_one_block_not_the_device() -> None:
    room = standard_room(2)
    fake = loaded_bus(room)
    fake.exceptions[(1, Table.HOLDING)] = 2  # the PLC's firmware no longer has the setpoint block
    sink = Collector()
    async with polling(BusPoller(ExclusiveBus(fake), room, FAST, sink)) as poller:
        await eventually(lambda: _true(len(_samples(sink, "plc")) >= 5), timeout=5, what="plc samples")
    values = _samples(sink, "plc")[-1].values
    assert "InletPressure" in values
    assert "OutletPressureSP" not in values
    plan = next(p for p in poller.devices if p.config.name == "plc")
    assert plan.online is True
    assert plan.stats.block_errors >= 5
    assert not sink.of(DeviceLost)


def _samples(sink: Collector, device: str) -> list[Sample]:
    return [e for e in sink.events if isinstance(e, Sample) and e.device == device]


async def _true(value: bool) -> bool:
    return value
