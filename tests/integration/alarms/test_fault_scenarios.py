"""Every fault kind through the simulator: physics → gateway → alarm engine → correlator.

Each scenario injects one fault into simulated rooms (``AlarmCity``: the simulator's physics, a
gateway's polling and report by exception, the engine and the correlator the cloud runs) and checks
what an operator is shown against the simulator's ground truth, with the bench's own scoring: the
right root cause, in the right room, on the right device, within a bounded simulated time. All time
is simulated; nothing waits for the wall clock.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tapline.alarms.rules import load_template
from tapline.bench.city import AlarmCity
from tapline.bench.schedule import EXPECTED, Planned
from tapline.bench.score import FaultResult, score_faults
from tapline.sim.faults import Fault, FaultKind
from tapline.sim.spec import RoomSpec, make_room_spec

SEED = 3
K = FaultKind


def room(predicate: Callable[[RoomSpec], bool] = lambda spec: True, district: str = "jianghan") -> RoomSpec:
    """The first simulated room (seeded) that fits ``predicate``."""
    for number in range(1, 500):
        spec = make_room_spec(f"PR-{number:04d}", district, SEED)
        if predicate(spec):
            return spec
    raise LookupError("no such room")


def tank(spec: RoomSpec) -> bool:
    return spec.tank


def run(
    kind: FaultKind,
    spec: RoomSpec,
    *,
    hour: float = 10.0,
    minutes: float = 15.0,
    device: str | None = None,
    params: dict[str, float | int | str | bool] | None = None,
    act: Callable[[AlarmCity], None] | None = None,
) -> tuple[AlarmCity, FaultResult]:
    """Inject ``kind`` into ``spec``'s room at ``hour`` (after 3 minutes of normal running)."""
    start = hour * 3600.0
    city = AlarmCity([spec], seed=SEED, start_s=start - 180.0)
    fault = Fault("F1", kind, spec.site_id, spec.district, device, params or {}, start)
    planned = Planned(fault, None)
    city.inject(fault)
    city.run(180.0 + 60.0)
    if act is not None:
        act(city)
    city.run(minutes * 60.0 - 60.0)
    [result] = score_faults(city, [planned], load_template(), city.t_s)
    return city, result


def assert_found(result: FaultResult, within_s: float, device: str | None) -> None:
    assert result.detected, result
    assert result.root_cause == EXPECTED[K(result.kind)], result
    assert result.root_site == result.site
    assert result.root_device == device, result
    assert result.location_correct
    assert result.detect_s is not None
    assert result.detect_s <= within_s, result


def test_pump_trip_is_a_drive_fault_of_that_pump() -> None:
    city, result = run(K.PUMP_TRIP, room(tank))
    assert_found(result, 5, city.onsets["F1"].device)
    assert result.announced_in_incident <= 3  # the trip, and what residents feel while the PLC recovers


def test_standby_failure_shows_when_the_standby_is_asked_to_start() -> None:
    spec = room(lambda s: s.tank and s.pumps >= 3)

    def exercise(city: AlarmCity) -> None:
        """The weekly standby test run: manual mode, start a stopped pump."""
        sim = city.rooms[spec.site_id]
        sim.write("plc/Mode", 1)
        standby = next(drive for drive in sim.drives if not drive.running)
        sim.write(f"{standby.name}/RunCommand", True)

    city, result = run(K.STANDBY_FAIL, spec, act=exercise)
    onset = city.onsets["F1"]
    assert onset.t_s > 10 * 3600.0  # latent until the exercise
    assert_found(result, 5, onset.device)


def test_power_outage_is_one_power_incident() -> None:
    city, result = run(K.POWER_OUTAGE, room(tank))
    assert_found(result, 10, "power")
    assert result.incidents == 1
    shown = {e.rule for e in city.events if e.announced}
    assert "device_comms_lost" not in shown  # the drives and the analyser die with the mains
    assert "room_comms_lost" not in shown
    assert "pumps_all_stopped" not in shown


def test_tank_valve_stuck_shut_is_found_by_mass_balance_long_before_the_tank_is_low() -> None:
    city, result = run(K.TANK_VALVE_STUCK, room(tank), minutes=30)
    assert_found(result, 20 * 60, "plc")
    assert city.rooms[result.site or ""].state().tank_level_m > 1.5  # far from the 0.8 m low alarm


def test_stuck_outlet_transmitter_is_an_instrument_fault() -> None:
    _, result = run(K.SENSOR_STUCK, room(tank), minutes=10)
    assert_found(result, 330, "plc")


def test_stuck_transmitter_away_from_the_setpoint_shows_against_the_pump_curve() -> None:
    spec = room(tank)
    _, result = run(K.SENSOR_STUCK, spec, params={"value": spec.setpoint_mpa + 0.01}, minutes=5)
    assert_found(result, 120, "plc")


def test_drifting_outlet_transmitter_is_an_instrument_fault_not_a_pressure_alarm() -> None:
    city, result = run(K.SENSOR_DRIFT, room(tank), minutes=50)
    # 0.01 MPa/min: the reading parts from the pump curve by the tolerance plus what the reported
    # flow's deadband allows on this pump's curve (0.05 + 0.055 MPa here) after ~11 minutes
    assert_found(result, 15 * 60, "plc")
    assert result.incidents == 1  # the later "pressure high" on the same reading joins it
    rules = {e.rule for e in city.events}
    assert "outlet_pressure_high" in rules


@pytest.mark.parametrize("point", ["plc/OutletPressure", "wq/Chlorine", "plc/Flow", "env/Humidity"])
def test_broken_wire_is_an_instrument_fault(point: str) -> None:
    _, result = run(K.SENSOR_BROKEN_WIRE, room(tank), params={"point": point}, minutes=8)
    assert_found(result, 200, point.partition("/")[0])  # water quality is polled once a minute


def test_chlorine_loss_shows_as_a_falling_residual_within_the_hour_in_a_tank_room() -> None:
    _, result = run(K.CHLORINE_LOW, room(tank), minutes=100)
    assert_found(result, 90 * 60, "wq")


def test_chlorine_loss_in_a_tankless_room_shows_within_minutes() -> None:
    _, result = run(K.CHLORINE_LOW, room(lambda s: not s.tank), minutes=15)
    assert_found(result, 10 * 60, "wq")


def test_turbidity_spike_is_water_quality() -> None:
    _, result = run(K.TURBIDITY_SPIKE, room(tank))
    assert_found(result, 5 * 60, "wq")


def test_flood_is_found_in_seconds() -> None:
    _, result = run(K.FLOOD, room(tank), minutes=5)
    assert_found(result, 10, "env")


def test_door_opened_at_night_is_an_intrusion() -> None:
    _, result = run(K.DOOR_OPEN, room(tank), hour=23.0, minutes=5)
    assert_found(result, 15, "env")


def test_door_opened_by_day_is_a_technician() -> None:
    city, result = run(K.DOOR_OPEN, room(tank), hour=10.0, minutes=5)
    assert not result.detected
    assert [e for e in city.events if e.announced] == []


@pytest.mark.parametrize(("device", "within_s"), [("vfd1", 20), ("plc", 20), ("wq", 240)])
def test_device_offline_is_that_device(device: str, within_s: float) -> None:
    _, result = run(K.DEVICE_OFFLINE, room(tank), device=device, minutes=8)
    assert_found(result, within_s, device)


def test_network_loss_is_the_whole_room_not_each_device() -> None:
    city, result = run(K.NETWORK_LOSS, room(tank), minutes=8)
    assert_found(result, 10, "")
    assert [e.rule for e in city.events if e.announced] == ["room_comms_lost"]


def test_pipe_burst_is_an_outlet_pressure_incident() -> None:
    _, result = run(K.PIPE_BURST, room(tank), minutes=5)
    assert_found(result, 15, "plc")


def test_district_inlet_drop_is_one_municipal_incident_with_few_alarms() -> None:
    specs = [make_room_spec(f"PR-{n:04d}", "qiaokou", SEED) for n in range(1, 13)]
    assert any(not s.tank for s in specs)  # tank-less sets stop on low inlet: consequences too
    start = 10 * 3600.0
    city = AlarmCity(specs, seed=SEED, start_s=start - 180.0)
    fault = Fault("F1", K.INLET_PRESSURE_DROP, None, "qiaokou", None, {}, start)
    city.inject(fault)
    city.run(180.0 + 15 * 60.0)
    [result] = score_faults(city, [Planned(fault, None)], load_template(), city.t_s)
    assert result.root_cause == "municipal_supply"
    assert result.location_correct
    assert result.detect_s is not None
    assert result.detect_s <= 120
    assert result.alarms_10min <= 4  # the first rooms, before the district pattern is clear
    assert result.rooms_in_incident == len(specs)
    [incident] = [i for i in city.correlator.incidents() if i.root_cause.kind == "municipal_supply"]
    assert "12 rooms" in incident.root_cause.description


def test_normal_operation_for_ten_room_days_announces_nothing() -> None:
    """Ten rooms (tank and tank-less, 2–4 pumps) for a whole day, gateway polling every 5 s."""
    specs = [make_room_spec(f"PR-{n:04d}", ("jianghan", "qiaokou")[n % 2], SEED) for n in range(1, 11)]
    assert {s.tank for s in specs} == {True, False}
    city = AlarmCity(specs, seed=SEED, start_s=0.0, step_s=5.0)
    city.run(86_400.0)
    assert [(e.site, e.rule, e.at) for e in city.events if e.announced] == []
    assert city.correlator.incidents() == []
