"""The engine and the correlator together: alarms an open incident already explains are raised
suppressed (recorded, grouped, not announced) and announced again once nothing explains them."""

from __future__ import annotations

from tapline.alarms.correlate import Correlator
from tapline.alarms.engine import AlarmEngine
from tapline.alarms.model import Event, Phase

from .kit import DISTRICT, STEADY, T0, Room, S, alarm_event, announced


def district(rooms: int, quiet_s: float = 300.0) -> tuple[AlarmEngine, Correlator, list[Room]]:
    correlator = Correlator(quiet_s=quiet_s)
    engine = AlarmEngine(STEADY, grouping=correlator, silence_scan_ms=1000)
    members = [Room(engine, site=f"PR-{n:04d}") for n in range(1, rooms + 1)]
    for room in members:
        room.healthy()
    return engine, correlator, members


def test_a_district_drop_announces_the_first_rooms_and_groups_the_rest() -> None:
    engine, correlator, rooms = district(10)
    for room in rooms:
        room.send(T0 + 60 * S, {"plc/InletPressure": 0.05})
    events = engine.tick(T0 + 100 * S)
    assert len(announced(events)) == 3  # three rooms make it a district pattern
    hidden = [e for e in events if e.event is Event.SUPPRESS]
    assert len(hidden) == 7
    assert all("municipal_supply" in e.transition.reason for e in hidden)
    [incident] = correlator.incidents()
    assert incident.root_cause.kind == "municipal_supply"
    assert len(incident.sites) == 10
    assert len(engine.alarms(None, "suppressed")) == 7


def test_consequences_in_a_hit_room_are_grouped_while_its_supply_is_low() -> None:
    engine, correlator, rooms = district(5)
    for room in rooms:
        room.send(T0 + 60 * S, {"plc/InletPressure": 0.05})
    engine.tick(T0 + 100 * S)
    last = rooms[-1]
    last.send(T0 + 120 * S, {"plc/TankLevel": 0.7})
    assert announced(engine.tick(T0 + 200 * S)) == []  # tank low: the supply's consequence
    assert {a.rule for a in engine.alarms(last.site, "suppressed")} == {
        "inlet_pressure_low",
        "tank_level_low",
    }
    [incident] = correlator.incidents()
    assert len(incident.alarms) == 6
    # the room's supply comes back but its tank is still low: that is news now
    last.send(T0 + 300 * S, {"plc/InletPressure": 0.22})
    engine.tick(T0 + 400 * S)
    assert [a.rule for a in engine.active(last.site)] == ["tank_level_low"]
    assert [a.phase for a in engine.active(last.site)] == [Phase.UNACKED_ACTIVE]


def test_grouped_alarms_retire_when_the_municipal_incident_closes() -> None:
    engine, correlator, rooms = district(5, quiet_s=60)
    for room in rooms:
        room.send(T0 + 60 * S, {"plc/InletPressure": 0.05})
    engine.tick(T0 + 100 * S)
    for room in rooms:
        room.send(T0 + 200 * S, {"plc/InletPressure": 0.22})
    engine.tick(T0 + 240 * S)
    assert len(engine.alarms(None, "suppressed")) == 2  # cleared, still held by the open incident
    events = engine.tick(T0 + 320 * S)
    assert announced(events) == []  # nothing is re-announced: the conditions are gone
    assert engine.alarms(None, "all") == [
        a for a in engine.alarms(None, "all") if a.phase is not Phase.SUPPRESSED
    ]
    assert correlator.incidents(open_only=True) == []


def test_a_room_with_its_own_trouble_in_a_hit_district_is_still_announced() -> None:
    engine, _, rooms = district(5)
    for room in rooms[:4]:
        room.send(T0 + 60 * S, {"plc/InletPressure": 0.05})
    engine.tick(T0 + 100 * S)
    spared = rooms[4]
    shown = announced(spared.send(T0 + 120 * S, {"vfd1/Fault": True, "plc/TankLevel": 0.7}))
    shown += announced(engine.tick(T0 + 200 * S))
    assert shown == ["drive_fault:vfd1/Fault", "tank_level_low:plc/TankLevel"]


def test_without_grouping_every_room_is_announced() -> None:
    engine = AlarmEngine(STEADY)
    rooms = [Room(engine, site=f"PR-{n:04d}") for n in range(1, 6)]
    for room in rooms:
        room.healthy()
        room.send(T0 + 60 * S, {"plc/InletPressure": 0.05})
    assert len(announced(engine.tick(T0 + 100 * S))) == 5


def test_a_supply_alarm_joining_a_municipal_incident_brings_its_rooms_consequences() -> None:
    correlator = Correlator()
    first = [alarm_event("inlet_pressure_low", T0, site=f"PR-{n:04d}") for n in range(1, 4)]
    correlator.observe(first, T0)
    falling = alarm_event("outlet_pressure_falling", T0 + 5 * S, site="PR-0008")
    correlator.observe([falling], T0 + 5 * S)
    assert len(correlator.incidents()) == 2
    correlator.observe([alarm_event("inlet_pressure_low", T0 + 10 * S, site="PR-0008")], T0 + 10 * S)
    [incident] = correlator.incidents()
    assert incident.root_cause.kind == "municipal_supply"
    assert "PR-0008" in incident.sites
    assert len(incident.alarms) == 5


def test_a_process_alarm_on_a_suspect_reading_joins_the_instrument_incident() -> None:
    correlator = Correlator()
    suspect = alarm_event("outlet_pressure_implausible", T0)
    correlator.observe([suspect, alarm_event("outlet_pressure_high", T0 + 600 * S)], T0 + 600 * S)
    [incident] = correlator.incidents()
    assert incident.root_cause.kind == "instrument_fault"
    assert len(incident.alarms) == 2


def test_an_instrument_alarm_absorbs_the_incident_rooted_on_its_reading() -> None:
    correlator = Correlator()
    correlator.observe([alarm_event("outlet_pressure_high", T0)], T0)
    correlator.observe([alarm_event("outlet_pressure_flatline", T0 + 60 * S)], T0 + 60 * S)
    [incident] = correlator.incidents()
    assert incident.root_cause.kind == "instrument_fault"
    assert incident.start == T0


def test_an_upstream_cause_wins_over_a_suspect_reading() -> None:
    correlator = Correlator()
    correlator.observe([alarm_event("drive_fault", T0, subject="vfd1/Fault")], T0)
    correlator.observe([alarm_event("outlet_pressure_implausible", T0 + S)], T0 + S)
    correlator.observe([alarm_event("outlet_pressure_low", T0 + 30 * S)], T0 + 30 * S)
    kinds = sorted((i.root_cause.kind, len(i.alarms)) for i in correlator.incidents())
    assert kinds == [("drive_fault", 2), ("instrument_fault", 1)]


def test_a_cause_seen_minutes_after_its_supposed_consequence_starts_its_own_incident() -> None:
    correlator = Correlator(absorb_window_s=120)
    correlator.observe([alarm_event("outlet_pressure_falling", T0)], T0)  # a burst
    correlator.observe([alarm_event("tank_level_low", T0 + 300 * S)], T0 + 300 * S)  # the tank drains
    kinds = [i.root_cause.kind for i in correlator.incidents()]
    assert kinds == ["outlet_pressure", "tank_supply"]
    correlator.observe([alarm_event("outlet_pressure_falling", T0, site="PR-0002")], T0)
    correlator.observe([alarm_event("tank_level_low", T0 + 60 * S, site="PR-0002")], T0 + 60 * S)
    assert [i.root_cause.kind for i in correlator.incidents("PR-0002")] == ["tank_supply"]


def test_hides_nothing_without_an_incident() -> None:
    correlator = Correlator()
    assert correlator.hides("PR-0001", DISTRICT, alarm_event("tank_level_low", T0).cause, False) is None


def test_observing_the_engines_events_again_changes_nothing() -> None:
    """A caller that also passes the engine's events to ``observe`` (as a journal feed may) is safe."""
    engine, correlator, rooms = district(4)
    events = []
    for room in rooms:
        events += room.send(T0 + 60 * S, {"plc/InletPressure": 0.05, "vfd1/Fault": True})
    events += engine.tick(T0 + 100 * S)
    before = [i.as_dict() for i in correlator.incidents()]
    correlator.observe(events, T0 + 100 * S)
    assert [i.as_dict() for i in correlator.incidents()] == before
