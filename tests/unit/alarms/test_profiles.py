"""Room profiles from a room's facts, and from the simulator's ``RoomSpec``."""

from __future__ import annotations

from typing import Any

import pytest

from tapline.alarms.engine import AlarmEngine
from tapline.alarms.profiles import profile_for, room_profile
from tapline.alarms.rules import load_template
from tapline.sim.spec import RoomSpec, design_room, make_room_spec

from .kit import HEALTHY, T0, Room, S, announced


def test_a_tank_room_gets_its_tank_and_pump_curve_as_values() -> None:
    spec = RoomSpec("PR-0001", "jianghan", pumps=3, tank=True, tank_area_m2=25.0, tank_height_m=4.0)
    design = design_room(spec)
    profile = profile_for(spec)
    assert profile.values == {
        "tank_height_m": 4.0,
        "tank_area_m2": 25.0,
        "top_water_m": design.valve_top_m,
        "pump_shutoff_head_m": design.shutoff_head_m,
        "pump_curve_k": design.curve_k,
    }
    assert profile.absent_points == ()


def test_a_tankless_set_starts_from_the_tankless_profile() -> None:
    spec = RoomSpec("PR-0002", "jianghan", pumps=2, tank=False)
    profile = profile_for(spec)
    assert profile.absent_points == ("plc/TankLevel",)
    assert "tank_area_m2" not in profile.values
    rules = {r.id: r for r in load_template().for_room(profile).rules}
    assert "chlorine_falling" not in rules
    curve = rules["outlet_pressure_implausible"]
    assert curve.kind == "pump_curve"
    assert curve.suction == "plc/InletPressure"
    assert not curve.suction_is_level


def test_rooms_of_different_sizes_share_two_plans() -> None:
    engine = AlarmEngine()
    specs = [make_room_spec(f"PR-{n:04d}", "jianghan", 1) for n in range(1, 41)]
    assert {s.tank for s in specs} == {True, False}
    for spec in specs:
        engine.configure(spec.site_id, spec.district, profile_for(spec))
    assert len(engine._plans) == 2


def test_the_tankless_interlock_stopping_the_pumps_is_no_news() -> None:
    template = load_template()
    engine = AlarmEngine(template, profiles={"PR-0001": room_profile(tank=False, template=template)})
    room = Room(engine)
    room.healthy(T0, {"plc/TankLevel": 0.0})
    stopped = {
        f"vfd{n}/{name}": value for n in (1, 2, 3) for name, value in (("Running", False), ("Frequency", 0.0))
    }
    room.send(T0 + 10 * S, {**stopped, "plc/InletPressure": 0.04, "plc/OutletPressure": 0.04})
    room.tick(T0 + 120 * S)
    shown = announced(room.events)
    assert "pumps_all_stopped" not in shown
    assert "outlet_pressure_falling:plc/OutletPressure" not in shown
    assert "inlet_pressure_low:plc/InletPressure" in shown


@pytest.mark.parametrize(
    "facts",
    [
        {"tank_height_m": 0.2, "tank_area_m2": 10.0},
        {"tank_height_m": 3.0, "tank_area_m2": -1.0},
        {"pump_shutoff_head_m": 0.0, "pump_curve_k": 1.0},
    ],
)
def test_nonsense_facts_are_refused(facts: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        room_profile(tank=True, **facts)


def test_missing_facts_switch_off_only_the_rules_that_need_them() -> None:
    assert room_profile(tank=True).values == {}
    assert room_profile(tank=True, tank_height_m=3.0).values == {"tank_height_m": 3.0}
    partial = room_profile(tank=True, tank_area_m2=20.0, top_water_m=2.7, pump_curve_k=0.1)
    assert partial.values == {"tank_area_m2": 20.0, "top_water_m": 2.7}
    assert HEALTHY["plc/TankLevel"] == 3.2
