"""Local interlocks against the simulated room's PLC, with no broker reachable.

The simulated PLC honours what a typical Chinese booster controller does (sim/commands.py): per-pump
RunCommand coils only in remote mode (Mode 2); switching back to auto hands the running pumps to the
PLC. So the stop action is "Mode = 2, every RunCommand = false" and the release writes back what it
overwrote. The simulator runs at 120× so a falling tank takes seconds, not minutes; the dry-run
thresholds sit just under the room's starting level for the same reason (the example room file uses
0.5 m / 1.0 m).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tapline.edge.config import InterlockConfig, InterlockRule, Threshold, WriteStep
from tapline.mqtt import BrokerUrl
from tests.helpers import eventually, free_port
from tests.integration.edge.kit import (
    LinkProxy,
    Observer,
    RunningGateway,
    SimRoom,
    mosquitto,
    observing,
    sim_room,
    start_gateway,
)

pytestmark = pytest.mark.timeout(60)

Check = Callable[[], Awaitable[bool]]


def interlocks(sim: SimRoom, *rules: InterlockRule) -> InterlockConfig:
    pumps = [slot.name for slot in sim.room.layout if slot.name.startswith("vfd")]
    stop = (
        WriteStep(point="plc/Mode", value=2),
        *(WriteStep(point=f"{pump}/RunCommand", value=False) for pump in pumps),
    )
    return InterlockConfig(stop=stop, rules=rules, reassert_s=1.0)


def pumps_running(sim: SimRoom) -> int:
    return sum(1 for drive in sim.room.physics.drives if drive.running)


async def stopped_by_gateway(sim: SimRoom) -> None:
    async def check() -> bool:
        return sim.room.physics.plc.mode == 2 and pumps_running(sim) == 0

    await eventually(check, timeout=15, what="every pump stopped by the gateway")


async def handed_back(sim: SimRoom) -> None:
    async def check() -> bool:
        return sim.room.physics.plc.mode == 0 and pumps_running(sim) >= 1

    await eventually(check, timeout=15, what="pumps running again under the PLC")


async def test_dry_run_protection_stops_pumps_and_restarts_them_after_refill(
    tmp_path: Path, unique_group: str
) -> None:
    async with sim_room(unique_group, speed=120.0) as sim:
        level = sim.room.physics.level_m
        rule = InterlockRule(
            name="DryRun",
            point="plc/TankLevel",
            trip=Threshold(below=round(level - 0.03, 3)),
            release=Threshold(above=round(level + 0.01, 3)),
            on_delay_s=0.2,
            off_delay_s=0.5,
        )
        config = sim.config(interlocks=interlocks(sim, rule))
        gateway = start_gateway(config, sim, no_broker(), tmp_path, host_id=None)
        try:
            assert pumps_running(sim) >= 1
            fault = sim.city.inject("tank_valve_stuck", site=config.site)  # the tank drains
            await stopped_by_gateway(sim)
            assert sim.room.physics.level_m > 0.3  # before the PLC's own dry-run stop would act
            assert not sim.room.physics.plc.dry_run
            node = gateway.gateway.node
            assert node.interlocks is not None
            assert node.interlocks.active() == ("DryRun",)
            sim.city.clear(fault.id)  # the float valve works again: the tank refills
            await handed_back(sim)
            assert not node.interlocks.inhibited
            events = await node.history.after_id(0, 100_000)
            active = [r.reading.value for r in events if r.reading.point == "Interlock/DryRun/Active"]
            assert active[-2:] == [1, 0]  # recorded as it happened, for the cloud to get later
            assert node.counters.interlock_writes >= 4
        finally:
            await gateway.stop()


async def test_over_pressure_stops_pumps_until_the_pressure_is_back(
    tmp_path: Path, unique_group: str
) -> None:
    async with sim_room(unique_group, speed=20.0) as sim:
        rule = InterlockRule(
            name="OverPressure",
            point="plc/OutletPressure",
            trip=Threshold(above=0.75),
            release=Threshold(below=0.65),
            on_delay_s=0.2,
            off_delay_s=0.3,
        )
        config = sim.config(interlocks=interlocks(sim, rule))
        gateway = start_gateway(config, sim, no_broker(), tmp_path, host_id=None)
        try:
            await eventually(_has_samples(gateway), timeout=10, what="first samples")
            # the outlet transmitter reads 0.9 MPa (the PLC's hard-wired switch is not involved)
            fault = sim.city.inject(
                "sensor_stuck", site=config.site, params={"point": "plc/OutletPressure", "value": 0.9}
            )
            await stopped_by_gateway(sim)
            sim.city.clear(fault.id)
            await handed_back(sim)
        finally:
            await gateway.stop()


async def test_flood_stops_pumps_with_the_broker_down_and_the_cloud_learns_it_later(
    tmp_path: Path, unique_group: str
) -> None:
    async with (
        mosquitto(tmp_path) as broker,
        observing(broker.url, unique_group) as observer,
        sim_room(unique_group, speed=20.0) as sim,
    ):
        link = LinkProxy(broker.url, port=free_port())  # the gateway's only way out, down for now
        rule = InterlockRule(name="Flood", point="env/Flood", trip=Threshold(equals=True), off_delay_s=0.3)
        config = sim.config(interlocks=interlocks(sim, rule))
        gateway = start_gateway(config, sim, link.url, tmp_path, host_id=None)
        try:
            fault = sim.city.inject("flood", site=config.site)
            await stopped_by_gateway(sim)
            assert not gateway.gateway.node.live

            await link.start()  # the uplink comes back: the interlock action is backfilled
            await eventually(
                _historical(observer, "Interlock/Flood/Active", True), timeout=15, what="backfilled trip"
            )

            sim.city.clear(fault.id)
            await handed_back(sim)
            await eventually(
                _live(observer, "Interlock/PumpsInhibited", False), timeout=10, what="release reported live"
            )
        finally:
            await gateway.stop()
            await link.stop()


def no_broker() -> BrokerUrl:
    """A broker URL nothing listens on: the gateway's uplink stays down for the whole test."""
    return BrokerUrl("127.0.0.1", free_port())


def _has_samples(gateway: RunningGateway) -> Check:
    async def check() -> bool:
        return bool(gateway.gateway.history.last_id)

    return check


def _ndata(observer: Observer, name: str, historical: bool) -> list[object]:
    """Values of node metric ``name`` in the NDATA seen (resolving aliases from the NBIRTHs)."""
    aliases: dict[int | None, str] = {}
    for seen in observer.of("NBIRTH"):
        assert seen.payload is not None
        aliases.update({m.alias: str(m.name) for m in seen.payload.metrics if m.alias is not None})
    out: list[object] = []
    for seen in observer.of("NDATA"):
        assert seen.payload is not None
        out += [
            m.value
            for m in seen.payload.metrics
            if (m.name or aliases.get(m.alias)) == name and m.is_historical == historical
        ]
    return out


def _historical(observer: Observer, name: str, value: object) -> Check:
    async def check() -> bool:
        return value in _ndata(observer, name, historical=True)

    return check


def _live(observer: Observer, name: str, value: object) -> Check:
    async def check() -> bool:
        return value in _ndata(observer, name, historical=False)

    return check
