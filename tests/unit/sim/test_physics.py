"""Normal operation of a simulated room: mass balance, pressure control, staging, determinism."""

from __future__ import annotations

import pytest

from tapline.sim.demand import EVENING_PEAK_S, MORNING_PEAK_S, diurnal_factor
from tapline.sim.physics import RoomSim, RoomSpec, make_room_spec
from tapline.sim.points import room_points

from .simkit import HOUR, SEED, make_room


def test_tank_mass_balance_holds_over_six_hours() -> None:
    room = make_room(start_h=5.0)
    sim = room.sim
    start_level = sim.state().tank_level_m
    net_m3 = 0.0
    for _ in range(6 * 3600):
        room.run(1.0)
        state = sim.state()
        net_m3 += (state.tank_inflow_m3h - state.pump_flow_m3h) / 3600.0
    state = sim.state()
    stored = (state.tank_level_m - start_level) * sim.spec.tank_area_m2 + state.overflow_m3
    assert stored == pytest.approx(net_m3, abs=1e-6)
    assert abs(net_m3) > 1.0  # the morning peak really moved water in and out of the tank


def test_outlet_pressure_holds_setpoint_for_a_whole_day() -> None:
    room = make_room(start_h=0.0)
    sim = room.sim
    room.run(300)
    deviations = []
    for _ in range(24 * 3600 - 300):
        room.run(1.0)
        deviations.append(abs(sim.values()["plc/OutletPressure"] - sim.spec.setpoint_mpa))
    outside = sum(deviation > 0.02 for deviation in deviations)
    # Only the seconds in which a pump joins or leaves may graze the band; nothing strays far.
    assert outside <= len(deviations) * 0.0005
    assert max(deviations) < 0.03


def test_demand_profile_has_morning_and_evening_peaks() -> None:
    night = diurnal_factor(3 * HOUR)
    assert diurnal_factor(MORNING_PEAK_S) > 1.5 * 1.0 > night * 3
    assert diurnal_factor(EVENING_PEAK_S) > diurnal_factor(MORNING_PEAK_S)
    mean = sum(diurnal_factor(s * 60.0) for s in range(24 * 60)) / (24 * 60)
    assert mean == pytest.approx(1.0, abs=1e-9)


def test_staging_adds_a_pump_for_the_morning_peak_and_drops_it_at_night() -> None:
    room = make_room(start_h=4.0)
    sim = room.sim
    assert sim.state().running_pumps == 1
    room.run(4 * HOUR)  # 08:00, after the morning peak began
    assert sim.state().running_pumps == 2
    room.run(18 * HOUR)  # 02:00 next night
    assert sim.state().running_pumps == 1


def test_staging_waits_for_the_delay_above_the_stage_up_frequency() -> None:
    room = make_room(start_h=4.0)
    sim = room.sim
    seconds_at_high_speed = 0.0
    while sim.state().running_pumps < 2:
        room.run(1.0)
        seconds_at_high_speed = seconds_at_high_speed + 1 if sim.plc.command_hz >= 48.0 else 0.0
    assert seconds_at_high_speed >= sim.spec.stage_delay_s - 1


def test_duty_rotates_to_the_rested_pump_and_counts_starts() -> None:
    room = make_room(start_h=4.0)
    sim = room.sim
    starts_before = {drive.name: drive.starts for drive in sim.drives}
    first = next(drive.name for drive in sim.drives if drive.running)
    room.run(26 * HOUR)
    started = {drive.name for drive in sim.drives if drive.starts > starts_before[drive.name]}
    assert started - {first}  # another pump took a turn
    hours = sim.values()
    assert all(hours[f"{drive.name}/RunHours"] == round(drive.run_hours, 1) for drive in sim.drives)


def test_same_seed_same_trace_and_a_different_seed_differs() -> None:
    def trace(seed: int) -> list[dict[str, bool | int | float]]:
        room = make_room(start_h=7.0, seed=seed)
        out = []
        for _ in range(120):
            room.run(5.0)
            out.append(room.sim.values())
        return out

    assert trace(SEED) == trace(SEED)
    assert trace(SEED) != trace(SEED + 1)


def test_values_do_not_depend_on_how_often_they_are_read() -> None:
    polled, quiet = make_room(), make_room()
    for _ in range(60):
        polled.run(1.0)
        polled.sim.values()
        polled.sim.values()
        quiet.run(1.0)
    assert polled.sim.values() == quiet.sim.values()


def test_values_cover_every_point_of_every_device() -> None:
    for pumps in (2, 3, 4):
        sim = RoomSim(RoomSpec("PR-0009", "qiaokou", pumps=pumps), SEED)
        values = sim.values()
        assert list(values) == room_points(pumps)
        assert sim.devices() == ["plc", *(f"vfd{i}" for i in range(1, pumps + 1)), "wq", "env", "power"]


def test_typical_values_are_in_the_ranges_of_a_real_room() -> None:
    room = make_room(start_h=19.5)
    room.run(600)
    values = room.sim.values()
    assert 0.15 <= values["plc/InletPressure"] <= 0.30
    assert values["plc/OutletPressure"] == pytest.approx(0.45, abs=0.02)
    assert 1.0 <= values["plc/TankLevel"] <= 4.0
    assert 10.0 < values["plc/Flow"] < 60.0
    assert 0.05 <= values["wq/Chlorine"] <= 2.0
    assert values["wq/Turbidity"] < 1.0
    assert 6.5 <= values["wq/PH"] <= 8.5
    assert values["power/Voltage"] == pytest.approx(380.0, rel=0.05)
    running = [name for name in room.sim.devices() if values.get(f"{name}/Running")]
    for name in running:
        assert 30.0 <= values[f"{name}/Frequency"] <= 50.0
        assert 0.5 < values[f"{name}/Power"] < 15.0
        assert values[f"{name}/Current"] > 1.0


def test_counters_integrate_flow_and_energy() -> None:
    room = make_room(start_h=9.0)
    sim = room.sim
    before = sim.values()
    flow_m3 = energy_kwh = 0.0
    for _ in range(3600):
        room.run(1.0)
        state = sim.state()
        flow_m3 += state.outlet_flow_m3h / 3600.0
        energy_kwh += (state.electrical_kw + 0.4) / 3600.0
    after = sim.values()
    assert float(after["plc/TotalFlow"]) - float(before["plc/TotalFlow"]) == pytest.approx(flow_m3, abs=0.02)
    assert float(after["power/Energy"]) - float(before["power/Energy"]) == pytest.approx(energy_kwh, abs=0.02)
    specific = energy_kwh / flow_m3
    assert 0.1 < specific < 0.6  # kWh/m³ of a booster room


def test_long_steps_are_sub_stepped_and_stay_stable() -> None:
    room = make_room(start_h=7.0)
    room.run(2 * HOUR, dt=5.0)
    sim = room.sim
    assert sim.t_s == pytest.approx(9 * HOUR)
    assert sim.state().outlet_mpa == pytest.approx(sim.spec.setpoint_mpa, abs=0.03)


def test_step_rejects_negative_time() -> None:
    sim = make_room().sim
    with pytest.raises(ValueError, match="dt_s"):
        sim.step(-1.0, 0.2)
    sim.step(0.0, 0.2)
    assert sim.t_s == 7 * HOUR


def test_tankless_set_boosts_from_the_mains() -> None:
    room = make_room(start_h=19.5, tank=False, setpoint_mpa=0.40)
    room.run(900)
    sim = room.sim
    values = sim.values()
    assert values["plc/TankLevel"] == 0.0
    assert values["plc/OutletPressure"] == pytest.approx(0.40, abs=0.02)
    assert sim.state().tank_inflow_m3h == 0.0
    room.run(7 * HOUR)  # 03:00: the mains nearly suffice, the set idles slowly but holds the setpoint
    assert sim.values()["plc/OutletPressure"] == pytest.approx(0.40, abs=0.02)


def test_make_room_spec_is_varied_but_deterministic() -> None:
    specs = [make_room_spec(f"PR-{i:04d}", "jianghan", SEED) for i in range(400)]
    assert specs == [make_room_spec(f"PR-{i:04d}", "jianghan", SEED) for i in range(400)]
    assert {spec.pumps for spec in specs} == {2, 3, 4}
    assert all(0.35 <= spec.setpoint_mpa <= 0.60 for spec in specs)
    tankless = sum(not spec.tank for spec in specs) / len(specs)
    assert 0.05 < tankless < 0.16
    assert len({spec.households for spec in specs}) > 200
    assert make_room_spec("PR-0001", "jianghan", SEED) != make_room_spec("PR-0001", "jianghan", SEED + 1)


@pytest.mark.parametrize("site", [f"PR-{i:04d}" for i in range(0, 40, 3)])
def test_generated_rooms_hold_their_setpoint(site: str) -> None:
    spec = make_room_spec(site, "hanyang", SEED)
    sim = RoomSim(spec, SEED, start_s=19 * HOUR)
    from tapline.sim.district import DistrictSupply

    supply = DistrictSupply("hanyang", SEED)
    for _ in range(1200):
        sim.step(1.0, supply.pressure_mpa(sim.t_s))
    assert sim.state().outlet_mpa == pytest.approx(spec.setpoint_mpa, abs=0.02)


def test_room_spec_validates() -> None:
    with pytest.raises(ValueError, match="pumps"):
        RoomSpec("PR-1", "x", pumps=5)
    with pytest.raises(ValueError, match="setpoint"):
        RoomSpec("PR-1", "x", setpoint_mpa=0.9)
