"""The alarm engine: rules on readings, delays and deadbands, quality, suppression, one instance."""

from __future__ import annotations

import pytest

from tapline.alarms.engine import AlarmEngine
from tapline.alarms.model import IllegalTransition, Phase, UnknownAlarm
from tapline.alarms.room import condition
from tapline.alarms.rules import RoomProfile
from tapline.domain.model import Quality, Reading

from .kit import DISTRICT, HEALTHY, SITE, STEADY, T0, Room, S, announced, steps


def test_a_healthy_room_raises_nothing_for_a_day() -> None:
    room = Room()
    for minute in range(0, 24 * 60, 5):
        room.healthy(T0 + minute * 60 * S)
        room.tick(T0 + minute * 60 * S + S)
    assert room.events == []
    assert room.engine.active_counts(SITE) == {"critical": 0, "high": 0, "medium": 0, "low": 0}


def test_limit_waits_for_its_on_delay_then_commits_at_the_delay() -> None:
    room = Room()
    room.healthy()
    assert room.send(T0 + S, {"plc/InletPressure": 0.08}) == []
    assert room.tick(T0 + 30 * S) == []
    events = room.tick(T0 + 31 * S)
    assert steps(events) == [("inlet_pressure_low", "activate", "unacked_active")]
    assert events[0].at == T0 + 31 * S
    assert events[0].value == 0.08
    assert room.engine.active_counts(SITE)["medium"] == 1


def test_a_later_reading_commits_a_due_delay_without_a_tick() -> None:
    room = Room()
    room.send(T0, {"plc/InletPressure": 0.08})
    events = room.send(T0 + 40 * S, {"plc/InletPressure": 0.07})
    assert [e.at for e in events] == [T0 + 30 * S]


def test_a_blip_shorter_than_the_on_delay_is_not_an_alarm() -> None:
    room = Room()
    room.send(T0, {"plc/InletPressure": 0.08})
    room.send(T0 + 10 * S, {"plc/InletPressure": 0.15})
    assert room.tick(T0 + 120 * S) == []


def test_deadband_keeps_a_noisy_value_at_the_limit_from_chattering() -> None:
    room = Room()
    room.send(T0, {"plc/InletPressure": 0.09})
    room.tick(T0 + 30 * S)
    for i, value in enumerate([0.101, 0.099, 0.105, 0.098, 0.115, 0.095]):
        room.send(T0 + (31 + 40 * i) * S, {"plc/InletPressure": value})
        room.tick(T0 + (32 + 40 * i) * S)
    assert steps(room.events) == [("inlet_pressure_low", "activate", "unacked_active")]
    room.send(T0 + 400 * S, {"plc/InletPressure": 0.13})  # beyond limit + deadband
    events = room.tick(T0 + 431 * S)  # after the 30 s off-delay
    assert steps(events) == [("inlet_pressure_low", "clear", "unacked_returned")]


def test_outlet_pressure_follows_the_setpoint() -> None:
    room = Room()
    room.healthy()
    for step, value in enumerate((0.44, 0.43, 0.42, 0.41, 0.40)):  # slowly to 0.05 below 0.45: fine
        room.send(T0 + (step + 1) * 10 * S, {"plc/OutletPressure": value})
    assert room.tick(T0 + 100 * S) == []
    room.send(T0 + 101 * S, {"plc/OutletPressureSP": 0.50})  # now 0.10 below: low
    events = room.tick(T0 + 132 * S)
    assert announced(events) == ["outlet_pressure_low:plc/OutletPressure"]


def test_rate_of_change_detects_a_fast_fall_and_clears_when_it_stops() -> None:
    room = Room()
    room.healthy()
    room.send(T0 + 10 * S, {"plc/OutletPressure": 0.35})  # −0.6 MPa/min over 10 s
    events = room.send(T0 + 12 * S, {"plc/OutletPressure": 0.33})
    assert "outlet_pressure_falling:plc/OutletPressure" in announced(room.events)
    assert events == [] or all(e.rule == "outlet_pressure_falling" for e in events)
    # no more readings (report by exception: the value is steady) → the rate is zero → clears after 60 s
    room.tick(T0 + 40 * S)
    cleared = room.tick(T0 + 120 * S)
    assert ("outlet_pressure_falling", "clear", "unacked_returned") in steps(cleared)


def test_every_pump_gets_its_own_drive_fault_alarm() -> None:
    room = Room()
    room.healthy()
    events = room.send(T0 + S, {"vfd1/Fault": True, "vfd3/Fault": True})
    assert announced(events) == ["drive_fault:vfd1/Fault", "drive_fault:vfd3/Fault"]
    assert len({e.alarm_id for e in events}) == 2


def test_two_batches_milliseconds_apart_make_one_alarm_instance() -> None:
    room = Room()
    room.healthy()
    first = room.send(T0 + S, {"vfd1/Fault": True})
    second = room.send(T0 + S + 3, {"vfd1/Fault": True, "vfd1/FaultCode": 0x2310})
    third = room.send(T0 + S + 5, {"vfd1/Fault": True})
    assert len(first) == 1
    assert second == []
    assert third == []
    assert [a.id for a in room.engine.active(SITE)] == [first[0].alarm_id]


def test_an_older_reading_than_the_last_evaluated_is_ignored() -> None:
    room = Room()
    room.send(T0 + 10 * S, {"vfd1/Fault": False})
    assert room.send(T0 + 5 * S, {"vfd1/Fault": True}) == []


def test_a_new_instance_after_the_old_one_returned_to_normal() -> None:
    room = Room()
    room.healthy()
    first = room.send(T0 + S, {"vfd1/Fault": True})[0]
    room.send(T0 + 2 * S, {"vfd1/Fault": False})
    room.engine.ack(first.alarm_id, "op", T0 + 3 * S)
    with pytest.raises(UnknownAlarm):
        room.engine.get(first.alarm_id)  # retired
    second = room.send(T0 + 4 * S, {"vfd1/Fault": True})[0]
    assert second.alarm_id != first.alarm_id
    assert second.key == first.key


def test_low_current_on_a_stopped_pump_is_suppressed_by_design() -> None:
    room = Room()
    room.healthy()
    room.tick(T0 + 60 * S)
    assert announced(room.events) == []  # vfd3 stopped at 0 A: never even created
    room.send(T0 + 61 * S, {"vfd1/Current": 0.1})  # running pump, no current
    assert announced(room.tick(T0 + 82 * S)) == ["pump_current_low:vfd1/Current"]
    events = room.send(T0 + 83 * S, {"vfd1/Running": False, "vfd1/Frequency": 0.0})
    assert steps(events) == [("pump_current_low", "suppress", "suppressed")]


def test_mains_loss_suppresses_the_consequences_that_carry_no_news() -> None:
    room = Room()
    room.healthy()
    at = T0 + S
    room.link(at, "vfd1", False)
    room.link(at, "vfd2", False)
    room.link(at, "vfd3", False)
    room.link(at, "wq", False)
    room.send(at + 500, {"power/Mains": False, "power/UPS": True, "power/Voltage": 0.0})
    room.send(at + 3 * S, {"plc/OutletPressure": 0.03})
    room.tick(at + 60 * S)
    # shown: the root cause and what residents feel; not the silent drives, the analyser, the voltage
    assert sorted(announced(room.events)) == [
        "mains_lost:power/Mains",
        "outlet_pressure_falling:plc/OutletPressure",
        "outlet_pressure_low:plc/OutletPressure",
    ]
    assert {e.rule for e in room.events} == {"mains_lost", "outlet_pressure_falling", "outlet_pressure_low"}
    # mains back, the drives answer again: nothing was hidden, nothing pops up
    room.send(at + 100 * S, {"power/Mains": True, "power/Voltage": 380.0})
    for device in ("vfd1", "vfd2", "vfd3", "wq"):
        room.link(at + 101 * S, device, True)
    room.tick(at + 200 * S)
    assert not any(e.rule == "device_comms_lost" for e in room.events)


def test_an_alarm_raised_before_its_suppression_moves_through_the_table() -> None:
    room = Room()
    room.healthy()
    room.link(T0 + S, "vfd2", False)
    assert announced(room.tick(T0 + 12 * S)) == ["device_comms_lost:vfd2"]
    events = room.send(T0 + 13 * S, {"power/Mains": False})
    assert ("device_comms_lost", "suppress", "suppressed") in steps(events)
    assert [a.subject for a in room.engine.alarms(SITE, "suppressed")] == ["vfd2"]
    events = room.send(T0 + 14 * S, {"power/Mains": True})
    assert ("device_comms_lost", "unsuppress", "unacked_active") in steps(events)


def test_all_pumps_stopped_is_one_room_alarm_and_the_tank_interlock_suppresses_it() -> None:
    room = Room()
    room.healthy()
    room.send(T0 + S, {"vfd1/Running": False, "vfd2/Running": False})
    assert announced(room.tick(T0 + 17 * S)) == ["pumps_all_stopped"]
    other = Room(site="PR-0002")
    other.healthy()
    other.send(T0 + S, {"plc/TankLevel": 0.25, "vfd1/Running": False, "vfd2/Running": False})
    other.tick(T0 + 60 * S)
    assert "pumps_all_stopped" not in announced(other.events)
    assert "tank_level_low_low:plc/TankLevel" in announced(other.events)


def test_a_stale_reading_raises_one_device_alarm_and_no_process_alarm() -> None:
    room = Room()
    room.healthy()
    room.send(T0 + S, {"plc/InletPressure": 0.02, "plc/OutletPressure": 0.1}, Quality.STALE)
    room.tick(T0 + 120 * S)
    assert announced(room.events) == ["device_comms_lost:plc"]
    assert steps(room.healthy(T0 + 121 * S)) == [("device_comms_lost", "clear", "unacked_returned")]


def test_a_broken_transmitter_is_an_instrument_alarm_not_a_pressure_alarm() -> None:
    room = Room()
    room.healthy()
    room.send(T0 + S, {"plc/OutletPressure": 0.0})  # open 4–20 mA loop on a uint16 register
    room.tick(T0 + 120 * S)
    assert announced(room.events) == ["instrument_fault:plc/OutletPressure"]
    room.send(T0 + 121 * S, {"wq/Chlorine": -1.25}, Quality.UNCERTAIN)  # signed register: below span
    room.send(T0 + 122 * S, {"wq/PH": 7.1}, Quality.BAD)
    room.tick(T0 + 400 * S)
    assert sorted(announced(room.events))[1:] == ["instrument_fault:wq/Chlorine", "instrument_fault:wq/PH"]
    assert not any(e.rule.startswith(("chlorine", "outlet")) for e in room.events)


def test_a_transmitter_failing_during_an_on_delay_cancels_the_pending_alarm() -> None:
    room = Room()
    room.healthy()
    room.send(T0 + S, {"plc/InletPressure": 0.08})
    room.send(T0 + 10 * S, {"plc/InletPressure": 0.08}, Quality.BAD)
    room.tick(T0 + 60 * S)
    assert announced(room.events) == ["instrument_fault:plc/InletPressure"]


def test_node_death_is_one_room_alarm() -> None:
    room = Room()
    room.healthy()
    room.send(T0 + S, {"plc/InletPressure": 0.08})  # pending when the node dies: dropped
    room.link(T0 + 2 * S, None, False)
    room.tick(T0 + 300 * S)
    assert announced(room.events) == ["room_comms_lost"]
    room.link(T0 + 301 * S, None, True)
    assert steps(room.events[-1:]) == [("room_comms_lost", "clear", "unacked_returned")]


def test_every_device_lost_is_one_room_alarm_not_one_per_device() -> None:
    room = Room()
    room.healthy()
    for device in ("plc", "vfd1", "vfd2", "vfd3", "wq", "env", "power"):
        room.link(T0 + S, device, False)
    room.tick(T0 + 60 * S)
    assert announced(room.events) == ["room_comms_lost"]
    assert all(e.phase is Phase.SUPPRESSED for e in room.events if e.rule == "device_comms_lost")


def test_a_device_silent_too_long_is_lost() -> None:
    engine = AlarmEngine(STEADY, silence_scan_ms=1000)
    room = Room(engine)
    room.healthy()
    room.send(T0 + 1700 * S, {"plc/Flow": 30.0})  # only the PLC keeps talking
    room.tick(T0 + 1799 * S)
    assert announced(room.events) == []
    room.tick(T0 + 1802 * S)
    room.tick(T0 + 1815 * S)
    # six of seven devices silent together: the room's link, one alarm, not six
    assert announced(room.events) == ["room_comms_lost"]


def test_one_device_silent_too_long_is_that_device() -> None:
    engine = AlarmEngine(STEADY, silence_scan_ms=1000)
    room = Room(engine)
    room.healthy()
    others = {k: v for k, v in HEALTHY.items() if not k.startswith("wq/")}
    room.send(T0 + 1700 * S, others)
    room.tick(T0 + 1802 * S)
    room.tick(T0 + 1815 * S)
    assert announced(room.events) == ["device_comms_lost:wq"]


def test_door_alarms_only_out_of_hours_including_when_the_hours_end() -> None:
    room = Room()
    room.healthy()
    room.healthy(T0 + S, {"env/Door": True})  # 10:00: a technician
    for minute in range(10, 8 * 60, 10):  # the gateway refreshes every point every 10 minutes
        room.healthy(T0 + minute * 60 * S, {"env/Door": True})
        room.tick(T0 + minute * 60 * S)
    assert announced(room.events) == []
    evening = T0 + 8 * 3600 * S  # 18:00, no new reading: the hours alone change the verdict
    room.tick(evening + 9 * S)
    assert announced(room.tick(evening + 11 * S)) == ["door_open_out_of_hours:env/Door"]


def test_water_quality_limits_and_early_warning() -> None:
    room = Room()
    room.healthy()
    room.send(T0 + S, {"wq/Chlorine": 0.04, "wq/Turbidity": 1.3, "wq/PH": 8.7})
    room.tick(T0 + 400 * S)
    expected = ["chlorine_low", "chlorine_low_warning", "ph_high", "turbidity_high", "turbidity_warning"]
    assert sorted(e.rule for e in room.events if e.announced) == expected
    assert all(e.supply for e in room.events)


def test_tankless_rooms_ignore_their_unconnected_level_input() -> None:
    engine = AlarmEngine(STEADY, profiles={SITE: STEADY.profile("tankless")})
    room = Room(engine)
    room.healthy(T0, {"plc/TankLevel": 0.0})
    room.tick(T0 + 300 * S)
    assert room.events == []


def test_operator_actions_go_through_the_table() -> None:
    room = Room()
    room.healthy()
    alarm_id = room.send(T0 + S, {"vfd2/Fault": True})[0].alarm_id
    engine = room.engine
    assert engine.ack(alarm_id, "li", T0 + 2 * S, "seen").phase is Phase.ACKED_ACTIVE
    with pytest.raises(IllegalTransition):
        engine.ack(alarm_id, "li", T0 + 3 * S)
    assert engine.get(alarm_id).phase is Phase.ACKED_ACTIVE  # refused: unchanged
    shelved = engine.shelve(alarm_id, "li", T0 + 4 * S, "crew on site", duration_s=600)
    assert shelved.phase is Phase.SHELVED_TIMED
    assert engine.get(alarm_id).shelved_until == T0 + 604 * S
    assert engine.active(SITE) == []
    assert [a.id for a in engine.alarms(SITE, "shelved")] == [alarm_id]
    assert room.tick(T0 + 603 * S) == []
    expired = room.tick(T0 + 604 * S)
    assert steps(expired) == [("drive_fault", "shelve_expired", "unacked_active")]
    assert expired[0].transition.by == "system"
    engine.shelve(alarm_id, "li", T0 + 605 * S, "nuisance")  # one-shot
    assert engine.unshelve(alarm_id, "li", T0 + 606 * S).phase is Phase.UNACKED_ACTIVE
    with pytest.raises(IllegalTransition):
        engine.shelve(alarm_id, "li", T0 + 607 * S, "too long", duration_s=9 * 3600)
    with pytest.raises(UnknownAlarm):
        engine.ack("AL-999", "li", T0)


def test_latching_alarm_stays_until_reset() -> None:
    engine = AlarmEngine(profiles={SITE: RoomProfile(rules={"flood": {"latching": True}})})
    room = Room(engine)
    room.healthy()
    room.send(T0 + S, {"env/Flood": True})
    alarm_id = room.tick(T0 + 6 * S)[0].alarm_id
    room.send(T0 + 60 * S, {"env/Flood": False})
    assert engine.get(alarm_id).phase is Phase.LATCHED
    assert [a.id for a in engine.alarms(SITE, "unacked")] == [alarm_id]
    assert engine.reset(alarm_id, "wang", T0 + 70 * S, "pump room dry").phase is Phase.NORMAL


def test_a_room_in_maintenance_keeps_its_alarms_out_of_service() -> None:
    room = Room()
    room.healthy()
    engine = room.engine
    room.send(T0 + S, {"vfd1/Fault": True})
    events = engine.remove_from_service(SITE, "wang", T0 + 2 * S, "work order WO-17")
    assert steps(events) == [("drive_fault", "remove_from_service", "out_of_service")]
    room.send(T0 + 3 * S, {"env/Door": True, "vfd2/Fault": True})
    assert announced(room.events) == ["drive_fault:vfd1/Fault"]
    room.send(T0 + 4 * S, {"vfd2/Fault": False})
    back = engine.return_to_service(SITE, "wang", T0 + 5 * S, "done")
    assert steps(back) == [
        ("drive_fault", "return_to_service", "unacked_active"),  # vfd1 still faulted: shown again
        ("drive_fault", "return_to_service", "normal"),  # vfd2 came and went during the maintenance
    ]
    assert not engine.in_maintenance(SITE)


def test_a_room_put_in_maintenance_before_it_reports_starts_out_of_service() -> None:
    """Maintenance is restored at start-up, before any room has reported to the new engine."""
    engine = AlarmEngine(STEADY)
    assert engine.remove_from_service("PR-0009", "wang", T0, "tank cleaning") == []
    assert engine.in_maintenance("PR-0009")
    room = Room(engine, site="PR-0009")
    room.healthy()
    room.send(T0 + S, {"vfd1/Fault": True})
    assert announced(room.events) == []
    [alarm] = engine.alarms("PR-0009", "suppressed")
    assert alarm.phase is Phase.OUT_OF_SERVICE
    back = engine.return_to_service("PR-0009", "wang", T0 + 2 * S, "cleaned")
    assert steps(back) == [("drive_fault", "return_to_service", "unacked_active")]


def test_listing_filters_and_counts() -> None:
    engine = AlarmEngine()
    for site in ("PR-0001", "PR-0002"):
        engine.evaluate(site, DISTRICT, [Reading("vfd1/Fault", T0, True), Reading("env/Flood", T0, True)], T0)
    engine.tick(T0 + 10 * S)
    assert len(engine.active()) == 4
    assert len(engine.active("PR-0002")) == 2
    assert engine.active_counts("PR-0001") == {"critical": 1, "high": 1, "medium": 0, "low": 0}
    assert engine.active_counts("PR-4040") == {"critical": 0, "high": 0, "medium": 0, "low": 0}
    assert engine.get(engine.active()[0].id).as_dict()["state"] == "unacked_active"
    with pytest.raises(ValueError, match="state must be"):
        engine.alarms(state="loud")


def test_configure_replans_a_room_without_alarms() -> None:
    engine = AlarmEngine()
    engine.configure(SITE, DISTRICT, RoomProfile(rules={"inlet_pressure_low": {"limit": 0.15}}))
    engine.evaluate(SITE, DISTRICT, [Reading("plc/InletPressure", T0, 0.12)], T0)
    assert [e.rule for e in engine.tick(T0 + 31 * S)] == ["inlet_pressure_low"]


def test_configure_refuses_a_room_with_live_alarms_and_drops_its_pending_timers() -> None:
    engine = AlarmEngine()
    room = Room(engine)
    room.send(T0, {"plc/InletPressure": 0.08})  # pending on-delay
    engine.configure(SITE, DISTRICT)
    assert room.tick(T0 + 60 * S) == []  # the old room's timer is void
    room.send(T0 + 61 * S, {"vfd1/Fault": True})
    with pytest.raises(ValueError, match="live alarms"):
        engine.configure(SITE, DISTRICT)


def test_a_bad_suppressing_value_never_hides_an_alarm() -> None:
    room = Room()
    room.healthy()
    room.send(T0 + S, {"power/Mains": False}, Quality.BAD)
    room.link(T0 + 2 * S, "vfd1", False)
    assert "device_comms_lost:vfd1" in announced(room.tick(T0 + 20 * S))


def test_condition_of_instrument_and_room_checks() -> None:
    engine = AlarmEngine()
    room = Room(engine)
    room.healthy()
    state = engine._rooms[SITE]  # white-box: the pure verdicts the engine relies on
    instrument = state.plan.point("plc/OutletPressure").instrument
    room_check = state.plan.room_check
    assert instrument is not None
    assert room_check is not None
    assert condition(state, instrument, state.state(instrument.slot), T0) is False
    assert condition(state, room_check, state.state(room_check.slot), T0) is False
    room.send(T0 + S, {"plc/OutletPressure": 0.45}, Quality.STALE)
    assert condition(state, instrument, state.state(instrument.slot), T0) is None
    room.link(T0 + 2 * S, None, False)
    assert condition(state, room_check, state.state(room_check.slot), T0) is True
