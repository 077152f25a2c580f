"""Every fault kind shows the signature a real room would show, and clearing it restores normal running."""

from __future__ import annotations

import pytest

from tapline.sim.faults import DriveFaultCode, Fault, FaultKind, GroundTruth, check_fault
from tapline.sim.points import SENSOR_POINTS, broken_wire_value, point_spec

from .simkit import HOUR, Room, make_room


def _running(room: Room) -> list[str]:
    return [drive.name for drive in room.sim.drives if drive.running]


def test_pump_trip_latches_the_drive_and_the_plc_starts_another_pump() -> None:
    room = make_room(start_h=19.5)
    room.run(300)
    before = _running(room)
    assert len(before) == 2
    fault = room.fault(FaultKind.PUMP_TRIP)
    tripped = before[0]
    values = room.sim.values()
    assert values[f"{tripped}/Fault"] is True
    assert values[f"{tripped}/FaultCode"] == DriveFaultCode.OVERCURRENT
    assert int(DriveFaultCode.OVERCURRENT) == 0x2310  # DRIVECOM "overcurrent", as ABB drives show it
    assert values[f"{tripped}/Running"] is False
    assert values[f"{tripped}/Frequency"] == 0.0
    room.run(300)
    after = _running(room)
    assert len(after) == 2
    assert tripped not in after
    assert room.sim.values()["plc/OutletPressure"] == pytest.approx(0.45, abs=0.02)
    room.sim.write(f"{tripped}/Reset", True)  # the cause is still there: the latch holds
    assert room.sim.values()[f"{tripped}/Fault"] is True
    room.sim.clear(fault.id)
    assert room.sim.values()[f"{tripped}/Fault"] is False
    assert room.sim.values()[f"{tripped}/FaultCode"] == 0


def test_pump_trip_of_a_named_standby_drive() -> None:
    room = make_room(start_h=3.0)
    idle = next(drive.name for drive in room.sim.drives if not drive.running)
    room.fault(FaultKind.PUMP_TRIP, device=idle, code=int(DriveFaultCode.DRIVE_OVERTEMPERATURE))
    values = room.sim.values()
    assert values[f"{idle}/Fault"] is True
    assert values[f"{idle}/FaultCode"] == 0x4310


def test_standby_fail_trips_the_next_pump_started_and_the_plc_tries_another() -> None:
    room = make_room(start_h=5.5)
    assert len(_running(room)) == 1
    fault = room.fault(FaultKind.STANDBY_FAIL)
    starts = {drive.name: drive.starts for drive in room.sim.drives}
    for _ in range(3 * 3600):
        room.run(1.0)
        if any(drive.fault for drive in room.sim.drives):
            break
    failed = next(drive for drive in room.sim.drives if drive.fault)
    assert failed.fault_code == DriveFaultCode.MOTOR_STALL
    assert not failed.running
    assert failed.starts == starts[failed.name]
    room.run(120)
    assert len(_running(room)) == 2
    assert failed.name not in _running(room)
    room.sim.clear(fault.id)
    assert not failed.fault


@pytest.mark.parametrize("tank", [True, False])
def test_power_outage_stops_pumps_and_silences_unpowered_devices(tank: bool) -> None:
    room = make_room(start_h=10.0, tank=tank)
    room.run(300)
    starts = sum(drive.starts for drive in room.sim.drives)
    fault = room.fault(FaultKind.POWER_OUTAGE)
    room.run(60)
    sim, values = room.sim, room.sim.values()
    assert values["power/Mains"] is False
    assert values["power/UPS"] is True
    assert values["power/Voltage"] == 0.0
    assert not _running(room)
    assert all(values[f"{drive.name}/Frequency"] == 0.0 for drive in sim.drives)
    state = sim.state()
    if tank:
        assert state.outlet_mpa == pytest.approx(0.03, abs=0.01)  # the riser's residual head
    else:
        assert state.outlet_mpa == pytest.approx(state.inlet_mpa, abs=0.02)  # through the bypass
    assert [sim.device_online(device) for device in sim.devices()] == [
        device in ("plc", "env", "power") for device in sim.devices()
    ]
    room.run(sim.spec.ups_runtime_s)
    assert not any(sim.device_online(device) for device in sim.devices())  # the UPS is flat
    sim.clear(fault.id)
    room.run(600)
    values = sim.values()
    assert values["power/Mains"] is True
    assert values["power/UPS"] is False
    assert all(sim.device_online(device) for device in sim.devices())
    assert sum(drive.starts for drive in sim.drives) > starts
    assert values["plc/OutletPressure"] == pytest.approx(sim.spec.setpoint_mpa, abs=0.02)


def test_inlet_pressure_drop_slows_the_tank_refill() -> None:
    room = make_room(start_h=19.0)
    room.run(300)
    level_before = room.sim.state().tank_level_m
    room.fault(FaultKind.INLET_PRESSURE_DROP, to_mpa=0.02, ramp_s=60.0)
    room.run(1200)
    state = room.sim.state()
    assert room.sim.values()["plc/InletPressure"] == pytest.approx(0.02, abs=0.003)
    assert state.tank_inflow_m3h < 0.7 * state.pump_flow_m3h
    assert state.tank_level_m < level_before - 0.05
    assert state.outlet_mpa == pytest.approx(0.45, abs=0.02)  # the tank still feeds the pumps


def test_inlet_pressure_drop_stops_a_tankless_set_on_low_inlet() -> None:
    room = make_room(start_h=19.0, tank=False)
    room.run(300)
    room.fault(FaultKind.INLET_PRESSURE_DROP, to_mpa=0.03, ramp_s=30.0)
    room.run(120)
    state = room.sim.state()
    assert room.sim.plc.low_inlet
    assert not _running(room)
    assert state.outlet_mpa < 0.1


def test_tank_valve_stuck_closed_empties_the_tank() -> None:
    room = make_room(start_h=19.0)
    room.run(60)
    level = room.sim.state().tank_level_m
    fault = room.fault(FaultKind.TANK_VALVE_STUCK)
    room.run(1800)
    state = room.sim.state()
    assert state.tank_inflow_m3h == 0.0
    drawn = state.pump_flow_m3h * 0.5 / room.sim.spec.tank_area_m2
    assert state.tank_level_m < level - 0.8 * drawn
    room.sim.clear(fault.id)
    room.run(60)
    assert room.sim.state().tank_inflow_m3h > state.pump_flow_m3h


def test_sensor_stuck_freezes_the_reading_while_the_pressure_wanders() -> None:
    room = make_room(start_h=6.0)
    room.run(120)
    room.fault(FaultKind.SENSOR_STUCK)
    readings, truth = set(), []
    for _ in range(1800):
        room.run(1.0)
        readings.add(room.sim.values()["plc/OutletPressure"])
        truth.append(room.sim.state().outlet_mpa)
    assert len(readings) == 1
    assert max(truth) - min(truth) > 0.04  # the PLC controls on a frozen value: the real pressure drifts


def test_sensor_drift_makes_the_plc_hold_the_wrong_pressure() -> None:
    room = make_room(start_h=10.0)
    fault = room.fault(FaultKind.SENSOR_DRIFT, rate_per_min=0.01)
    room.run(600)
    assert room.sim.values()["plc/OutletPressure"] == pytest.approx(0.45, abs=0.02)
    assert room.sim.state().outlet_mpa == pytest.approx(0.35, abs=0.02)
    room.sim.clear(fault.id)
    room.run(120)
    assert room.sim.state().outlet_mpa == pytest.approx(0.45, abs=0.02)


def test_broken_outlet_transmitter_reads_zero_and_the_plc_holds_its_speed() -> None:
    room = make_room(start_h=10.0)
    room.run(60)
    room.fault(FaultKind.SENSOR_BROKEN_WIRE)
    room.run(5)
    command = room.sim.plc.command_hz
    room.run(300)
    assert room.sim.values()["plc/OutletPressure"] == 0.0
    assert room.sim.plc.outlet_fault
    assert room.sim.plc.command_hz == command  # no wind-up to 50 Hz on a zero reading
    assert room.sim.state().outlet_mpa == pytest.approx(0.45, abs=0.1)  # fixed speed: demand moves it


@pytest.mark.parametrize("point", sorted(SENSOR_POINTS))
def test_sensor_faults_on_every_transmitter(point: str) -> None:
    room = make_room(start_h=9.0)
    room.fault(FaultKind.SENSOR_BROKEN_WIRE, point=point, fault_id="broken")
    broken = broken_wire_value(point_spec(point))
    assert room.sim.values()[point] == broken  # at once, as a gateway polling right after would see
    room.run(2)
    assert room.sim.values()[point] == broken
    low = point_spec(point).low
    assert low is not None
    assert broken <= low
    room.sim.clear("broken")
    room.run(2)
    assert room.sim.values()[point] != broken
    room.fault(FaultKind.SENSOR_STUCK, point=point, fault_id="stuck", value=2.0)
    room.run(30)
    assert room.sim.values()[point] == 2.0


def test_broken_level_transmitter_does_not_stop_the_pumps() -> None:
    room = make_room(start_h=10.0)
    room.fault(FaultKind.SENSOR_BROKEN_WIRE, point="plc/TankLevel")
    room.run(120)
    assert room.sim.values()["plc/TankLevel"] == 0.0
    assert _running(room)  # the PLC ignores a reading below span; the low-low float switch still guards


@pytest.mark.parametrize("tank", [True, False])
def test_chlorine_low_drives_the_residual_below_the_standard(tank: bool) -> None:
    room = make_room(start_h=6.0, tank=tank)
    assert room.sim.values()["wq/Chlorine"] > 0.2
    room.fault(FaultKind.CHLORINE_LOW)
    room.run(9 * HOUR if tank else 0.25 * HOUR, dt=5.0)
    assert room.sim.values()["wq/Chlorine"] < 0.05


def test_turbidity_spike_exceeds_one_ntu_then_settles() -> None:
    room = make_room()
    fault = room.fault(FaultKind.TURBIDITY_SPIKE)
    room.run(600)
    assert room.sim.values()["wq/Turbidity"] > 1.0
    room.sim.clear(fault.id)
    room.run(900)
    assert room.sim.values()["wq/Turbidity"] < 0.5


@pytest.mark.parametrize(
    ("kind", "point"), [(FaultKind.FLOOD, "env/Flood"), (FaultKind.DOOR_OPEN, "env/Door")]
)
def test_flood_and_door_contacts(kind: FaultKind, point: str) -> None:
    room = make_room()
    assert room.sim.values()[point] is False
    fault = room.fault(kind)
    room.run(1200)
    assert room.sim.values()[point] is True
    if kind is FaultKind.FLOOD:
        assert float(room.sim.values()["env/Humidity"]) > 80.0
    room.sim.clear(fault.id)
    assert room.sim.values()[point] is False


def test_device_offline_silences_one_device() -> None:
    room = make_room()
    fault = room.fault(FaultKind.DEVICE_OFFLINE, device="vfd2")
    sim = room.sim
    assert [sim.device_online(device) for device in sim.devices()] == [
        device != "vfd2" for device in sim.devices()
    ]
    sim.clear(fault.id)
    assert sim.device_online("vfd2")


def test_network_loss_silences_every_device_but_the_physics_carries_on() -> None:
    room = make_room()
    room.fault(FaultKind.NETWORK_LOSS)
    before = room.sim.values()
    room.run(60)
    assert not any(room.sim.device_online(device) for device in room.sim.devices())
    assert room.sim.values()["plc/TotalFlow"] > before["plc/TotalFlow"]


def test_pipe_burst_surges_flow_drops_pressure_and_runs_the_pumps_flat_out() -> None:
    room = make_room(start_h=10.0)
    room.run(120)
    flow = room.sim.state().outlet_flow_m3h
    fault = room.fault(FaultKind.PIPE_BURST)
    room.run(300)
    state, values = room.sim.state(), room.sim.values()
    assert state.outlet_flow_m3h > 2 * flow
    assert values["plc/Flow"] > 2 * flow
    assert state.outlet_mpa < 0.45 - 0.1
    duty = room.sim.design.duty_pumps
    assert len(_running(room)) == duty
    assert all(values[f"{name}/Frequency"] >= 49.5 for name in _running(room))
    room.sim.clear(fault.id)
    room.run(900)
    assert room.sim.values()["plc/OutletPressure"] == pytest.approx(0.45, abs=0.02)


RECOVERABLE = [kind for kind in FaultKind if kind not in (FaultKind.STANDBY_FAIL, FaultKind.DEVICE_OFFLINE)]
"""standby_fail and device_offline have their own clear tests above (they need a start or a device)."""


@pytest.mark.parametrize("kind", RECOVERABLE, ids=[kind.value for kind in RECOVERABLE])
def test_clearing_a_fault_restores_normal_running(kind: FaultKind) -> None:
    room = make_room(start_h=10.0)
    room.run(60)
    fault = room.fault(kind)
    room.run(600)
    room.sim.clear(fault.id)
    room.run(1200)
    sim, values = room.sim, room.sim.values()
    assert values["plc/OutletPressure"] == pytest.approx(0.45, abs=0.02)
    assert sim.state().outlet_mpa == pytest.approx(0.45, abs=0.02)
    assert not any(drive.fault for drive in sim.drives)
    assert all(sim.device_online(device) for device in sim.devices())
    assert values["power/Mains"] is True
    assert values["env/Flood"] is False
    assert values["env/Door"] is False
    assert float(values["wq/Turbidity"]) < 1.0
    assert float(values["wq/Chlorine"]) > 0.05
    assert sim.faults.active == []


def test_a_fault_waits_for_its_start_time() -> None:
    room = make_room()
    start = room.sim.t_s + 100
    room.sim.inject(Fault("later", FaultKind.DOOR_OPEN, "PR-0001", start_s=start))
    room.run(99)
    assert room.sim.values()["env/Door"] is False
    room.run(2)
    assert room.sim.values()["env/Door"] is True


def test_inject_refuses_bad_faults() -> None:
    room = make_room()
    sim = room.sim
    with pytest.raises(ValueError, match="not PR-0001"):
        sim.inject(Fault("x", FaultKind.FLOOD, "PR-0002"))
    with pytest.raises(ValueError, match="no device"):
        sim.inject(Fault("x", FaultKind.DEVICE_OFFLINE, "PR-0001", device="vfd4"))
    with pytest.raises(ValueError, match="needs a device"):
        sim.inject(Fault("x", FaultKind.DEVICE_OFFLINE, "PR-0001"))
    with pytest.raises(ValueError, match="pump drive"):
        sim.inject(Fault("x", FaultKind.PUMP_TRIP, "PR-0001", device="plc"))
    with pytest.raises(ValueError, match="point must be"):
        sim.inject(Fault("x", FaultKind.SENSOR_DRIFT, "PR-0001", params={"point": "vfd1/Running"}))
    with pytest.raises(ValueError, match="within"):
        sim.inject(Fault("x", FaultKind.INLET_PRESSURE_DROP, "PR-0001", params={"to_mpa": -1}))
    with pytest.raises(ValueError, match="takes no parameter"):
        sim.inject(Fault("x", FaultKind.FLOOD, "PR-0001", params={"depth": 1}))
    sim.inject(Fault("x", FaultKind.FLOOD, "PR-0001"))
    with pytest.raises(ValueError, match="already"):
        sim.inject(Fault("x", FaultKind.FLOOD, "PR-0001"))
    with pytest.raises(KeyError):
        sim.clear("nope")


def test_check_fault_fills_in_defaults() -> None:
    fault = check_fault(Fault("x", FaultKind("sensor_drift"), "PR-0001"))
    assert fault.params == {"point": "plc/OutletPressure", "rate_per_min": 0.01}
    assert {kind.value for kind in FaultKind} == {
        "pump_trip", "standby_fail", "power_outage", "inlet_pressure_drop", "tank_valve_stuck",
        "sensor_stuck", "sensor_drift", "sensor_broken_wire", "chlorine_low", "turbidity_spike",
        "flood", "door_open", "device_offline", "network_loss", "pipe_burst",
    }  # fmt: skip
    with pytest.raises(ValueError, match="site or a district"):
        check_fault(Fault("x", FaultKind.FLOOD))


def test_ground_truth_is_an_append_only_log() -> None:
    truth = GroundTruth()
    first = Fault("F1", FaultKind.PUMP_TRIP, "PR-0001", "jianghan", "vfd1", start_s=10.0)
    second = Fault("F2", FaultKind.INLET_PRESSURE_DROP, None, "jianghan", start_s=20.0)
    truth.started(first)
    truth.started(second)
    truth.ended("F1", 50.0)
    assert truth.rows() == [
        ("pump_trip", "PR-0001", "jianghan", "vfd1", 10.0, 50.0),
        ("inlet_pressure_drop", None, "jianghan", None, 20.0, None),
    ]
    assert [entry.fault_id for entry in truth.active_at(30.0)] == ["F1", "F2"]
    assert [entry.fault_id for entry in truth.active_at(60.0)] == ["F2"]
    with pytest.raises(ValueError, match="already ended"):
        truth.ended("F1", 70.0)
    with pytest.raises(ValueError, match="already recorded"):
        truth.started(first)
    with pytest.raises(ValueError, match="before it started"):
        truth.ended("F2", 5.0)
    with pytest.raises(KeyError):
        truth.ended("F3", 70.0)
