"""A gateway polling a room through its PLC as concentrator: the real Modbus server, the real gateway,
the shared Mosquitto. The whole room is read in at most 4 block reads a cycle (issue 7: one, here), and
the cloud sees the same devices and point names as when the gateway polls every device directly."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapline.mqtt import BrokerUrl
from tapline.registers.layout import CONCENTRATOR_UNIT, standard_layout
from tapline.sparkplug.host_session import write_command
from tests.helpers import eventually
from tests.integration.edge.kit import Observer, observing, sim_room, start_gateway

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(60)]


def birth_names(observer: Observer, device: str) -> set[str]:
    births = observer.of("DBIRTH", device)
    assert births
    assert births[-1].payload is not None
    return {str(m.name) for m in births[-1].payload.metrics if not str(m.name).startswith("Device Control/")}


async def test_gateway_reads_the_concentrated_room_in_one_block_with_the_same_names(
    tmp_path: Path, mqtt_url: str, unique_group: str
) -> None:
    broker = BrokerUrl.parse(mqtt_url)
    async with (
        sim_room(unique_group, layout="concentrator", pumps=4) as sim,
        observing(broker, unique_group) as observer,
    ):
        config = sim.config(fast_s=0.2, slow_s=0.6, offline_after_failures=2, offline_retry_max_s=0.3)
        assert {device.unit for device in config.devices} == {CONCENTRATOR_UNIT}
        assert sum(len(register_map.points) for register_map in sim.maps().values()) == 80
        running = start_gateway(config, sim, broker, tmp_path, host_id=None)
        gateway = running.gateway
        poller = gateway.pollers[0]
        bus = gateway.buses["lan"]
        try:
            await observer.wait_for("DBIRTH", len(config.devices))
            (plan,) = poller.devices  # one unit: one plan for the eight devices
            assert len(plan.fast) <= 4
            assert len(plan.full) <= 4
            # Same device names and point names as the standard room; the concentrator only adds points.
            for slot in standard_layout(4):
                direct = {point.name for point in slot.register_map.points}
                assert direct <= birth_names(observer, slot.name), slot.name

            # Every request on the wire, counted by the gateway's bus (nothing else uses it yet).
            cycles, requests = plan.stats.cycles, bus.stats.requests
            await eventually(
                lambda: _true(plan.stats.cycles >= cycles + 7), timeout=10, what="seven more cycles"
            )
            done, sent = plan.stats.cycles - cycles, bus.stats.requests - requests
            assert set(bus.units) == {CONCENTRATOR_UNIT}
            assert sent <= 4 * (done + 1)  # ≤ 4 block reads a full cycle (one, in fact: 94 registers)
            assert (plan.stats.block_errors, bus.stats.timeouts, bus.stats.errors) == (0, 0, 0)

            # commands still go to the right register of the right device
            plc = sim.room.physics.plc
            await observer.publish(
                *write_command(unique_group, config.site, "plc", "OutletPressureSP", 0.5, 0)
            )
            await eventually(lambda: _true(plc.setpoint_mpa == 0.5), timeout=10, what="setpoint written")

            # a device the PLC loses dies on its own; the PLC's other devices stay alive
            fault = sim.city.inject("device_offline", site=config.site, device="wq")
            await observer.wait_for("DDEATH", device="wq")
            births = len(observer.of("DBIRTH", "wq"))
            sim.city.clear(fault.id)
            await observer.wait_for("DBIRTH", births + 1, device="wq")
            assert not observer.of("DDEATH", "plc")
            assert not observer.of("DDEATH", "vfd1")

            # the PLC itself stops answering: every device it concentrates is lost with it
            fault = sim.city.inject("device_offline", site=config.site, device="plc")
            for device in ("plc", "vfd4", "power"):
                await observer.wait_for("DDEATH", device=device)
            sim.city.clear(fault.id)
            await observer.wait_for("DBIRTH", 2, device="vfd4")
            assert gateway.counters.task_restarts == 0
        finally:
            await running.stop()


async def _true(value: bool) -> bool:
    return value
