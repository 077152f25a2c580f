"""The simulated room served through its PLC as concentrator: same physics, one unit id, one table."""

from __future__ import annotations

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException

from tapline.domain.model import Value
from tapline.registers.blocks import plan_blocks
from tapline.registers.codec import decode_registers, encode_registers
from tapline.registers.layout import CONCENTRATOR_UNIT, concentrator_layout
from tapline.registers.maps import RegisterPoint
from tapline.sim.faults import FaultKind
from tapline.sim.modbus_server import RoomImage
from tests.unit.sim.simkit import make_room

READ_HOLDING = 3
WRITE_REGISTER = 6


def read_all(image: RoomImage, pumps: int) -> dict[str, Value]:
    """Every point of the concentrated room, read in block requests as the gateway does."""
    points: list[RegisterPoint] = [
        point.model_copy(update={"name": f"{slot.name}/{point.name}"})
        for slot in concentrator_layout(pumps)
        for point in slot.register_map.points
    ]
    values: dict[str, Value] = {}
    for block in plan_blocks(points):
        data = image.read(CONCENTRATOR_UNIT, READ_HOLDING, block.address, block.count)
        assert isinstance(data, list)
        values.update(block.decode(data))
    return values


def test_the_table_mirrors_the_physics_of_every_device() -> None:
    room = make_room(pumps=4)
    room.run(120)
    image = RoomImage(room.sim, concentrator_layout(4))
    served = read_all(image, 4)
    assert len(served) == 80
    physics = room.sim.values()
    maps = {slot.name: slot.register_map for slot in concentrator_layout(4)}
    for path, value in physics.items():
        device, _, name = path.partition("/")
        point = maps[device].point(name)
        assert served[path] == decode_registers(point, encode_registers(point, value)), path
    running = [n for n in range(1, 5) if physics[f"vfd{n}/Running"]]
    assert running
    assert served["plc/RunningPumps"] == len(running)
    frequency = float(physics[f"vfd{running[0]}/Frequency"])
    assert served[f"vfd{running[0]}/Speed"] == round(frequency * 2940 / 50)
    active_power = served["power/ActivePower"]
    assert isinstance(active_power, float)
    assert active_power > 0
    assert served["plc/TankVolume"] == pytest.approx(float(physics["plc/TankLevel"]) * 20.0, abs=0.1)
    assert all(served[f"{device}/Online"] is True for device in ("vfd1", "vfd4", "wq", "env", "power"))


def test_a_lost_device_keeps_its_last_values_and_reads_offline() -> None:
    room = make_room(pumps=4)
    image = RoomImage(room.sim, concentrator_layout(4))
    before = read_all(image, 4)
    room.fault(FaultKind.DEVICE_OFFLINE, device="wq")
    room.run(600)
    image.refresh()
    after = read_all(image, 4)
    assert after["wq/Online"] is False
    assert [after[f"wq/{name}"] for name in ("Chlorine", "Turbidity", "PH")] == [
        before[f"wq/{name}"] for name in ("Chlorine", "Turbidity", "PH")
    ]
    assert after["env/Online"] is True  # only that device: the PLC answers for the others


def test_writes_reach_the_physics_and_the_plc_answers_for_the_unit() -> None:
    room = make_room(pumps=3)
    image = RoomImage(room.sim, concentrator_layout(3))
    setpoint = concentrator_layout(3)[0].register_map.point("OutletPressureSP")
    assert image.write(CONCENTRATOR_UNIT, WRITE_REGISTER, setpoint.address, [520]) is None
    assert room.sim.plc.setpoint_mpa == pytest.approx(0.52)
    speed = concentrator_layout(3)[1].register_map.point("Speed")
    assert image.write(CONCENTRATOR_UNIT, WRITE_REGISTER, speed.address, [1]) == ExcCodes.ILLEGAL_ADDRESS
    assert image.write(CONCENTRATOR_UNIT, WRITE_REGISTER, setpoint.address, [900]) == ExcCodes.ILLEGAL_VALUE
    room.fault(FaultKind.DEVICE_OFFLINE, device="plc")
    with pytest.raises(NoSuchIdException):
        image.read(CONCENTRATOR_UNIT, READ_HOLDING, 0, 10)
