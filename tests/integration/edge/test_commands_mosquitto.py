"""Commands, device loss and bad input through the shared Mosquitto and the simulated room.

A plain observer plays the host: it sends DCMD/NCMD the way ``host_session`` builds them and reads the
gateway's answers off the wire (read-back values in DDATA, counters in NDATA, DDEATH/DBIRTH).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tapline.mqtt import BrokerUrl
from tapline.registers.maps import RegisterPoint, Table, WireType
from tapline.sparkplug.codec import Metric, Payload, encode_payload
from tapline.sparkplug.host_session import write_command
from tests.helpers import eventually
from tests.integration.edge.kit import Observer, observing, sim_room, start_gateway

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(60)]

Check = Callable[[], Awaitable[bool]]


def aliases(observer: Observer) -> dict[tuple[str | None, int | None], str]:
    """(device or None, alias) → metric name, from every birth seen."""
    out: dict[tuple[str | None, int | None], str] = {}
    for seen in observer.of("NBIRTH") + observer.of("DBIRTH"):
        device = seen.topic.split("/")[-1] if seen.kind == "DBIRTH" else None
        assert seen.payload is not None
        out.update({(device, m.alias): str(m.name) for m in seen.payload.metrics})
    return out


def values(observer: Observer, kind: str, name: str, device: str | None = None) -> list[object]:
    """Every value of metric ``name`` seen in ``kind`` messages (births included for data kinds)."""
    names = aliases(observer)
    kinds = (kind, kind.replace("DATA", "BIRTH"))
    out: list[object] = []
    for seen in observer.seen:
        if seen.kind not in kinds or seen.payload is None:
            continue
        if device is not None and not seen.topic.endswith(f"/{device}"):
            continue
        for metric in seen.payload.metrics:
            if (metric.name or names.get((device, metric.alias))) == name:
                out.append(metric.value)
    return out


async def wait_counter(observer: Observer, name: str, value: int) -> None:
    async def check() -> bool:
        seen = values(observer, "NDATA", f"Gateway/{name}")
        return bool(seen) and seen[-1] == value

    await eventually(check, timeout=10, what=f"Gateway/{name} = {value}")


async def test_dcmd_whitelisted_write_is_read_back_and_reported_refusals_are_counted(
    tmp_path: Path, mqtt_url: str, unique_group: str
) -> None:
    broker = BrokerUrl.parse(mqtt_url)
    async with sim_room(unique_group) as sim, observing(broker, unique_group) as observer:
        config = sim.config()
        site = config.site
        gateway = start_gateway(config, sim, broker, tmp_path, host_id=None)
        try:
            await observer.wait_for("DBIRTH", len(config.devices))
            plc = sim.room.physics.plc
            assert plc.setpoint_mpa != 0.5

            await observer.publish(*write_command(unique_group, site, "plc", "OutletPressureSP", 0.5, 0))
            await eventually(
                _value_seen(observer, "plc", "OutletPressureSP", 0.5), timeout=10, what="read-back"
            )
            assert plc.setpoint_mpa == 0.5  # the PLC really has it
            await wait_counter(observer, "CommandsOk", 1)

            # refused: read-only point, out of the engineering range, not a number
            for point, value in (("InletPressure", 0.3), ("OutletPressureSP", 5.0), ("Mode", 9)):
                await observer.publish(*write_command(unique_group, site, "plc", point, value, 0))
            await wait_counter(observer, "CommandsRefused", 3)
            assert plc.setpoint_mpa == 0.5
            assert plc.mode == 0

            # malformed: garbage bytes, two metrics, an unknown metric, an unknown device
            dcmd = f"spBv1.0/{unique_group}/DCMD/{site}"
            unknown = encode_payload(Payload(0, 0, (Metric(name="NoSuchPoint", value=1.0),)))
            two = encode_payload(Payload(0, 0, (Metric(name="Mode", value=1), Metric(name="Mode", value=2))))
            await observer.publish(f"{dcmd}/plc", b"\x08\xff\xff garbage")
            await observer.publish(f"{dcmd}/plc", two)
            await observer.publish(f"{dcmd}/plc", unknown)
            await observer.publish(f"{dcmd}/pump9", unknown)
            await observer.publish(f"spBv1.0/{unique_group}/NCMD/{site}", unknown)
            await wait_counter(observer, "CommandsMalformed", 5)

            # still polling and publishing
            count = len(observer.of("DDATA"))
            await observer.wait_for("DDATA", count + 5)
            assert gateway.gateway.counters.task_restarts == 0
        finally:
            await gateway.stop()


async def test_a_device_that_stops_answering_dies_and_is_born_again(
    tmp_path: Path, mqtt_url: str, unique_group: str
) -> None:
    broker = BrokerUrl.parse(mqtt_url)
    async with sim_room(unique_group) as sim, observing(broker, unique_group) as observer:
        config = sim.config(offline_after_failures=2, offline_retry_max_s=0.3)
        # the PLC's firmware "lost" a register block: every poll of it gets an exception response
        maps = sim.maps()
        extra = RegisterPoint(name="Missing", table=Table.HOLDING, address=60, type=WireType.UINT16)
        maps["plc"] = maps["plc"].model_copy(update={"points": (*maps["plc"].points, extra)})
        gateway = start_gateway(config, sim, broker, tmp_path, host_id=None, maps=maps)
        try:
            await observer.wait_for("DBIRTH", len(config.devices))
            fault = sim.city.inject("device_offline", site=config.site, device="vfd1")
            await observer.wait_for("DDEATH", device="vfd1")
            births = len(observer.of("DBIRTH", "vfd1"))
            sim.city.clear(fault.id)
            await observer.wait_for("DBIRTH", births + 1, device="vfd1")
            assert not observer.of("DDEATH", "plc")  # exception responses do not kill a device

            stats = gateway.gateway.pollers[0].devices
            plc = next(plan for plan in stats if plan.config.name == "plc")
            assert plc.stats.block_errors > 0
            await eventually(_counter_positive(observer, "Device/plc/BlockErrors"), timeout=10, what="metric")
            await eventually(_counter_positive(observer, "Device/vfd1/Timeouts"), timeout=10, what="metric")
        finally:
            await gateway.stop()


def _value_seen(observer: Observer, device: str, name: str, value: object) -> Check:
    async def check() -> bool:
        return value in values(observer, "DDATA", name, device)

    return check


def _counter_positive(observer: Observer, name: str) -> Check:
    async def check() -> bool:
        seen = values(observer, "NDATA", name)
        return bool(seen) and isinstance(seen[-1], int) and seen[-1] > 0

    return check
