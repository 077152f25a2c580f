"""Commands written to a simulated room: validation, modes, fault reset."""

from __future__ import annotations

import pytest

from tapline.sim.faults import FaultKind

from .simkit import make_room


@pytest.mark.parametrize(
    ("point", "value", "message"),
    [
        ("plc/OutletPressure", 0.5, "read-only"),
        ("plc/Flow", 1.0, "read-only"),
        ("vfd1/Running", True, "read-only"),
        ("plc/Nonsense", 1, "unknown point"),
        ("vfd9/RunCommand", True, "no device"),
        ("pump/RunCommand", True, "no device"),
        ("OutletPressureSP", 0.5, "device/Name"),
        ("plc/OutletPressureSP", 0.19, "0.20..0.80"),
        ("plc/OutletPressureSP", 0.81, "0.20..0.80"),
        ("plc/OutletPressureSP", True, "takes a number"),
        ("plc/OutletPressureSP", float("nan"), "takes a number"),
        ("plc/Mode", 3, "0 \\(auto\\)"),
        ("plc/Mode", 1.5, "0 \\(auto\\)"),
        ("plc/Mode", -1, "0 \\(auto\\)"),
        ("vfd1/RunCommand", 2, "boolean"),
        ("vfd1/Reset", 0.5, "boolean"),
    ],
)
def test_write_refuses_what_a_room_would_refuse(point: str, value: float, message: str) -> None:
    sim = make_room().sim
    before = sim.values()
    with pytest.raises(ValueError, match=message):
        sim.write(point, value)
    assert sim.values() == before


def test_setpoint_write_moves_the_outlet_pressure() -> None:
    room = make_room(start_h=10.0)
    room.sim.write("plc/OutletPressureSP", 0.50)
    assert room.sim.values()["plc/OutletPressureSP"] == 0.5
    room.run(300)
    assert room.sim.values()["plc/OutletPressure"] == pytest.approx(0.50, abs=0.02)


def test_run_commands_are_ignored_in_auto_and_obeyed_in_remote() -> None:
    room = make_room(start_h=10.0)
    sim = room.sim
    idle = next(drive.name for drive in sim.drives if not drive.running)
    sim.write(f"{idle}/RunCommand", True)
    room.run(30)
    assert sim.values()[f"{idle}/Running"] is False
    assert sim.values()[f"{idle}/RunCommand"] is False
    sim.write("plc/Mode", 2)
    sim.write(f"{idle}/RunCommand", 1)
    room.run(30)
    values = sim.values()
    assert values["plc/Mode"] == 2
    assert values[f"{idle}/Running"] is True
    assert values[f"{idle}/RunCommand"] is True
    busy = next(drive.name for drive in sim.drives if drive.running and drive.name != idle)
    sim.write(f"{busy}/RunCommand", False)
    room.run(120)
    assert sim.values()[f"{busy}/Running"] is False
    assert sim.values()["plc/OutletPressure"] == pytest.approx(0.45, abs=0.02)  # the PI still sets the speed
    sim.write("plc/Mode", 0.0)
    room.run(600)
    assert sim.values()["plc/Mode"] == 0
    assert sim.values()["plc/OutletPressure"] == pytest.approx(0.45, abs=0.02)


def test_manual_mode_keeps_the_last_pump_stopped_when_told() -> None:
    room = make_room(start_h=3.0)
    sim = room.sim
    sim.write("plc/Mode", 1)
    for drive in sim.drives:
        sim.write(f"{drive.name}/RunCommand", False)
    room.run(60)
    assert not any(drive.running for drive in sim.drives)
    assert sim.state().outlet_mpa < 0.1


def test_reset_clears_a_drive_fault_once_its_cause_is_gone() -> None:
    room = make_room(start_h=10.0)
    sim = room.sim
    fault = room.fault(FaultKind.PUMP_TRIP, device="vfd3")
    sim.write("vfd3/Reset", True)
    assert sim.values()["vfd3/Fault"] is True
    sim.write("vfd3/Reset", False)  # momentary coil released: nothing happens
    sim.faults.clear(fault.id)  # the physics-level clear resets the drive as the technician does
    assert sim.values()["vfd3/Fault"] is False
    drive = next(drive for drive in sim.drives if drive.name == "vfd3")
    drive.trip(0x3220)  # a transient undervoltage trip with no lasting cause
    sim.write("vfd3/Reset", True)
    assert sim.values()["vfd3/Fault"] is False
    assert sim.values()["vfd3/Reset"] is False
