"""The cross-checks that find faults process limits cannot: pump curve, mass balance, frozen readings,
a slow trend, and a room whose devices are lost together."""

from __future__ import annotations

import pytest

from tapline.alarms.engine import AlarmEngine
from tapline.alarms.room import M_PER_MPA, WATER_MPA_PER_M
from tapline.alarms.rules import RoomProfile, RuleError, load_template, parse_template
from tapline.domain.model import Value

from .kit import HEALTHY, SITE, STEADY, T0, Room, S, announced

CURVE = {"pump_shutoff_head_m": 82.2, "pump_curve_k": 0.05}
TANK = {"tank_area_m2": 20.0, "top_water_m": 3.7}


def room_with(values: dict[str, float], template: object = STEADY) -> Room:
    engine = AlarmEngine(template)  # type: ignore[arg-type]
    engine.configure(SITE, "jianghan", RoomProfile(values=values))
    return Room(engine)


def on_curve(hz: float = 41.0, flow: float = 31.5, pumps: int = 2, level: float = 3.2) -> float:
    """The outlet pressure the healthy room's pumps make (the rule's own formula, written out)."""
    scale, per_pump = hz / 50.0, flow / pumps
    head = CURVE["pump_shutoff_head_m"] * scale**2 - CURVE["pump_curve_k"] * per_pump**2
    return level * WATER_MPA_PER_M + head / M_PER_MPA


def test_a_reading_on_the_pump_curve_is_quiet_and_one_off_it_is_an_instrument_fault() -> None:
    room = room_with(CURVE)
    healthy = round(on_curve(), 3)
    assert abs(healthy - 0.452) < 0.01  # the kit's healthy room, consistent with this curve
    room.healthy(T0, {"plc/OutletPressure": healthy})
    room.tick(T0 + 300 * S)
    assert announced(room.events) == []
    room.send(T0 + 301 * S, {"plc/OutletPressure": healthy + 0.03})  # within tolerance + slack
    room.tick(T0 + 600 * S)
    assert announced(room.events) == []
    room.send(T0 + 601 * S, {"plc/OutletPressure": healthy + 0.1})
    assert announced(room.tick(T0 + 660 * S)) == []  # on-delay
    assert announced(room.tick(T0 + 662 * S)) == ["outlet_pressure_implausible:plc/OutletPressure"]
    [event] = [e for e in room.events if e.announced]
    assert event.cause.value == "instrument"


def test_pump_curve_is_not_judged_while_pumps_run_at_different_speeds_or_none_runs() -> None:
    room = room_with(CURVE)
    healthy = round(on_curve(), 3)
    room.healthy(T0, {"plc/OutletPressure": healthy + 0.1, "vfd2/Frequency": 30.0})  # staging
    room.tick(T0 + 300 * S)
    assert announced(room.events) == []
    stopped = {f"vfd{n}/Frequency": 0.0 for n in (1, 2, 3)}
    room.send(T0 + 301 * S, {**stopped, "plc/OutletPressure": 0.03})
    room.tick(T0 + 600 * S)
    assert "outlet_pressure_implausible" not in {e.rule for e in room.events}


def test_pump_curve_needs_the_rooms_curve() -> None:
    room = room_with({})
    room.healthy(T0, {"plc/OutletPressure": 0.46})
    room.send(T0 + S, {"plc/OutletPressure": 0.9 * 0.46})
    room.tick(T0 + 300 * S)
    assert "outlet_pressure_implausible" not in {e.rule for e in room.events}


def test_pump_curve_tolerance_widens_on_the_steep_end_of_a_small_pumps_curve() -> None:
    steep = {"pump_shutoff_head_m": 140.9, "pump_curve_k": 6.143}  # 3.9 m³/h pumps
    room = room_with(steep)
    hz, flow = 40.0, 2.2
    head = steep["pump_shutoff_head_m"] * (hz / 50) ** 2 - steep["pump_curve_k"] * flow**2
    reading = 3.2 * WATER_MPA_PER_M + head / M_PER_MPA
    one_pump: dict[str, Value] = {"vfd1/Frequency": hz, "vfd2/Frequency": 0.0, "vfd2/Running": False}
    room.healthy(T0, {**one_pump, "plc/Flow": flow, "plc/OutletPressure": round(reading + 0.1, 3)})
    room.tick(T0 + 300 * S)  # 0.6 m³/h of flow deadband is worth 0.16 MPa here
    assert "outlet_pressure_implausible" not in {e.rule for e in room.events}


def falling(room: Room, start: int, seconds: int, level: float, flow: float, rate_m_per_s: float) -> float:
    for second in range(0, seconds, 10):
        level -= rate_m_per_s * 10
        room.send(start + second * S, {"plc/TankLevel": round(level, 3), "plc/Flow": flow})
        room.tick(start + second * S)
    return level


def test_a_tank_that_falls_as_fast_as_the_pumps_draw_is_not_refilling() -> None:
    room = room_with(TANK)
    room.healthy(T0, {"plc/Flow": 30.0})
    level = falling(room, T0 + S, 300, 3.2, 30.0, 0.0)  # inflow = outflow: level steady
    assert announced(room.events) == []
    full_rate = 30.0 / 3600 / TANK["tank_area_m2"]  # m/s with nothing coming in
    falling(room, T0 + 301 * S, 200, level, 30.0, full_rate)
    assert announced(room.events) == ["tank_not_refilling:plc/TankLevel"]


def test_a_tank_at_its_top_water_level_may_stop_filling() -> None:
    room = room_with(TANK)
    room.healthy(T0, {"plc/Flow": 30.0, "plc/TankLevel": 3.69})
    falling(room, T0 + S, 60, 3.69, 30.0, 30.0 / 3600 / 20)  # the float valve is closing: normal
    assert announced(room.events) == []


def test_a_slow_draw_is_judged_over_a_longer_window() -> None:
    room = room_with(TANK)
    room.healthy(T0, {"plc/Flow": 2.0})
    falling(room, T0 + S, 1200, 3.2, 2.0, 2.0 / 3600 / 20)  # 0.8 m³ drawn only after 24 min
    assert announced(room.events) == []
    falling(room, T0 + 1201 * S, 600, 3.2 - 1200 * 2.0 / 3600 / 20, 2.0, 2.0 / 3600 / 20)
    assert announced(room.events) == ["tank_not_refilling:plc/TankLevel"]


def test_a_frozen_outlet_reading_is_a_stuck_transmitter_even_with_nothing_more_sent() -> None:
    room = room_with({}, load_template())
    room.healthy(T0)
    for second in range(10, 200, 10):  # a live transmitter flickers
        room.send(T0 + second * S, {"plc/OutletPressure": 0.452 + (second // 10 % 2) * 0.002})
        room.tick(T0 + second * S)
    assert announced(room.events) == []
    last = T0 + 190 * S
    assert announced(room.tick(last + 299 * S)) == []
    assert announced(room.tick(last + 300 * S)) == ["outlet_pressure_flatline:plc/OutletPressure"]
    room.send(last + 400 * S, {"plc/OutletPressure": 0.449})
    assert [e.event.value for e in room.events if e.rule == "outlet_pressure_flatline"][-1] == "clear"


def test_chlorine_falling_steadily_is_an_early_warning_that_noise_does_not_trigger() -> None:
    room = Room()
    room.healthy(T0)
    for minute in range(0, 180, 2):  # noisy but steady: ±0.01 mg/L
        room.healthy(T0 + minute * 60 * S, {"wq/Chlorine": 0.31 + (0.01 if minute % 4 else -0.01)})
        room.tick(T0 + minute * 60 * S)
    assert announced(room.events) == []
    start = T0 + 180 * 60 * S
    for minute in range(0, 90, 2):  # the feed lost: 0.06 mg/L per hour
        room.healthy(start + minute * 60 * S, {"wq/Chlorine": round(0.31 - 0.001 * minute, 2)})
        room.tick(start + minute * 60 * S)
    assert announced(room.events) == ["chlorine_falling:wq/Chlorine"]


@pytest.mark.parametrize(
    ("lost", "shown"),
    [
        (("wq",), ["device_comms_lost:wq"]),
        (("wq", "env"), ["device_comms_lost:env", "device_comms_lost:wq"]),
        (("wq", "env", "vfd3", "power"), ["room_comms_lost"]),
    ],
)
def test_devices_lost_together_are_the_rooms_link(lost: tuple[str, ...], shown: list[str]) -> None:
    room = Room()
    room.healthy(T0)
    for device in lost:
        room.link(T0 + S, device, False)
    room.tick(T0 + 60 * S)
    assert sorted(announced(room.events)) == shown


def test_room_values_leave_plans_shared() -> None:
    engine = AlarmEngine(STEADY)
    for n, area in enumerate((10.0, 20.0, 35.5)):
        engine.configure(f"PR-{n}", "jianghan", RoomProfile(values={**TANK, "tank_area_m2": area}))
        engine.evaluate(f"PR-{n}", "jianghan", [], T0)
    assert len(engine._plans) == 1


def test_new_rule_kinds_validate_their_fields() -> None:
    raw = load_template().model_dump(mode="json")
    rule = next(r for r in raw["rules"] if r["kind"] == "refill")
    rule["max_inflow_share"] = 1.5
    with pytest.raises(RuleError, match="max_inflow_share"):
        parse_template(raw)


def test_healthy_kit_room_matches_its_curve() -> None:
    assert HEALTHY["plc/OutletPressure"] == 0.452
