"""Incidents from synthetic alarm streams: one root cause per fault, consequences grouped under it."""

from __future__ import annotations

import pytest

from tapline.alarms.correlate import ANCESTORS, Correlator
from tapline.alarms.engine import AlarmEngine
from tapline.alarms.model import Event
from tapline.alarms.rules import Cause

from .kit import DISTRICT, SITE, T0, Room, S, alarm_event


def test_district_inlet_drop_over_40_rooms_is_one_municipal_incident() -> None:
    correlator = Correlator()
    rooms = [f"PR-{n:04d}" for n in range(1, 41)]
    stream = [alarm_event("inlet_pressure_low", T0 + i * 2 * S, site=room) for i, room in enumerate(rooms)]
    stream += [alarm_event("tank_level_low", T0 + 300 * S, site=room) for room in rooms[:5]]  # consequences
    correlator.observe(stream, T0 + 300 * S)
    [incident] = correlator.incidents()
    assert incident.root_cause.kind == "municipal_supply"
    assert "jianghan" in incident.root_cause.description
    assert "40 rooms" in incident.root_cause.description
    assert "40 个泵房" in incident.root_cause.description_zh
    assert set(incident.sites) == set(rooms)
    assert len(incident.alarms) == 45
    assert incident.start == T0
    assert incident.end is None
    assert incident.as_dict()["root_cause"]["kind"] == "municipal_supply"


def test_two_rooms_with_low_inlet_are_two_local_incidents() -> None:
    correlator = Correlator()
    correlator.observe(
        [
            alarm_event("inlet_pressure_low", T0, site="PR-0001"),
            alarm_event("inlet_pressure_low", T0, site="PR-0002"),
        ],
        T0,
    )
    assert [i.root_cause.kind for i in correlator.incidents()] == ["inlet_pressure_low"] * 2


def test_rooms_outside_the_window_or_district_do_not_count() -> None:
    correlator = Correlator(district_window_s=600)
    correlator.observe([alarm_event("inlet_pressure_low", T0, site="PR-0001")], T0)
    correlator.observe([alarm_event("inlet_pressure_low", T0, site="PR-0002", district="qiaokou")], T0)
    correlator.observe([alarm_event("inlet_pressure_low", T0 + 700 * S, site="PR-0003")], T0 + 700 * S)
    correlator.observe([alarm_event("inlet_pressure_low", T0 + 701 * S, site="PR-0004")], T0 + 701 * S)
    assert len(correlator.incidents()) == 4
    changed = correlator.observe([alarm_event("inlet_pressure_low", T0 + 702 * S, site="PR-0005")], T0)
    assert [i.root_cause.kind for i in changed] == ["municipal_supply"]
    assert sorted(changed[0].sites) == ["PR-0003", "PR-0004", "PR-0005"]


def test_municipal_water_quality_groups_chlorine_alarms_of_a_district() -> None:
    correlator = Correlator()
    stream = [
        alarm_event("chlorine_low", T0 + i * S, site=f"PR-{i:04d}", subject="wq/Chlorine") for i in range(6)
    ]
    correlator.observe(stream, T0 + 10 * S)
    [incident] = correlator.incidents()
    assert incident.root_cause.kind == "municipal_water_quality"
    assert len(incident.sites) == 6


def test_power_outage_makes_pump_stop_and_low_pressure_its_consequences() -> None:
    correlator = Correlator()
    stream = [
        alarm_event("outlet_pressure_falling", T0 + 1 * S),  # the consequence is seen first
        alarm_event("mains_lost", T0 + 2 * S),
        alarm_event("pumps_all_stopped", T0 + 15 * S, subject="", announced=False),
        alarm_event("device_comms_lost", T0 + 10 * S, subject="vfd1", announced=False),
        alarm_event("outlet_pressure_low", T0 + 31 * S),
    ]
    correlator.observe(stream, T0 + 40 * S)
    [incident] = correlator.incidents()
    assert incident.root_cause.kind == "power_supply"
    assert "Mains power lost" in incident.root_cause.description
    assert incident.devices[0] == "power"
    assert incident.sites == (SITE,)
    assert len(incident.alarms) == 5
    assert incident.announced == 3
    assert incident.start == T0 + S


def test_pump_trip_is_a_drive_fault_with_its_pressure_dip() -> None:
    correlator = Correlator()
    stream = [
        alarm_event("drive_fault", T0, subject="vfd2/Fault"),
        alarm_event("outlet_pressure_falling", T0 + 3 * S),
    ]
    correlator.observe(stream, T0 + 5 * S)
    [incident] = correlator.incidents()
    assert incident.root_cause.kind == "drive_fault"
    assert incident.devices[0] == "vfd2"
    assert "vfd2" in incident.root_cause.description


def test_unrelated_alarms_in_one_room_stay_separate() -> None:
    correlator = Correlator()
    stream = [
        alarm_event("drive_fault", T0, subject="vfd1/Fault"),
        alarm_event("door_open_out_of_hours", T0 + S),
        alarm_event("turbidity_high", T0 + 2 * S),
    ]
    correlator.observe(stream, T0 + 5 * S)
    kinds = sorted(i.root_cause.kind for i in correlator.incidents())
    assert kinds == ["drive_fault", "intrusion", "water_quality"]


def test_a_late_root_absorbs_several_incidents_and_get_follows_the_merge() -> None:
    correlator = Correlator()
    first = correlator.observe([alarm_event("outlet_pressure_low", T0)], T0)[0]
    correlator.observe([alarm_event("pumps_all_stopped", T0 + S, subject="")], T0)
    [merged] = correlator.observe([alarm_event("flood", T0 + 2 * S)], T0)
    assert merged.root_cause.kind == "flood"
    assert len(merged.alarms) == 3
    assert correlator.get(first.id).id == merged.id
    assert [i.id for i in correlator.incidents(site=SITE)] == [merged.id]
    with pytest.raises(KeyError):
        correlator.get("INC-404")


def test_an_incident_ends_when_its_alarms_have_been_quiet() -> None:
    correlator = Correlator(quiet_s=300)
    on = alarm_event("drive_fault", T0, subject="vfd1/Fault", alarm_id="AL-1")
    off = alarm_event("drive_fault", T0 + 60 * S, subject="vfd1/Fault", event=Event.CLEAR, alarm_id="AL-1")
    again = alarm_event("drive_fault", T0 + 200 * S, subject="vfd1/Fault", alarm_id="AL-1")
    correlator.observe([on, off], T0 + 60 * S)
    assert correlator.tick(T0 + 300 * S) == []
    correlator.observe([again], T0 + 200 * S)  # back within the quiet time: the same incident
    assert correlator.tick(T0 + 1000 * S) == []
    off2 = alarm_event("drive_fault", T0 + 400 * S, subject="vfd1/Fault", event=Event.CLEAR, alarm_id="AL-1")
    correlator.observe([off2], T0 + 400 * S)
    [closed] = correlator.tick(T0 + 700 * S)
    assert closed.end == T0 + 400 * S
    assert correlator.incidents(open_only=True) == []
    assert correlator.incidents()[0].id == closed.id
    assert correlator.incident_of("AL-1") is None
    new = correlator.observe(
        [alarm_event("drive_fault", T0 + 800 * S, subject="vfd1/Fault", alarm_id="AL-2")], 0
    )
    assert new[0].id != closed.id


def test_events_of_unknown_alarms_other_than_activation_are_ignored() -> None:
    correlator = Correlator()
    assert correlator.observe([alarm_event("flood", T0, event=Event.CLEAR)], T0) == []


def test_broken_transmitter_is_an_instrument_incident_without_a_pressure_alarm() -> None:
    room = Room()
    room.healthy()
    room.send(T0 + S, {"plc/OutletPressure": 0.0})
    room.tick(T0 + 120 * S)
    correlator = Correlator()
    correlator.observe(room.events, T0 + 120 * S)
    [incident] = correlator.incidents()
    assert incident.root_cause.kind == "instrument_fault"
    assert incident.points == ("plc/OutletPressure",)
    assert incident.devices == ("plc",)
    assert not any(e.rule.startswith("outlet_pressure") for e in room.events)


def test_engine_and_correlator_together_for_a_district_drop() -> None:
    engine, correlator = AlarmEngine(), Correlator()
    rooms = [Room(engine, site=f"PR-{n:04d}") for n in range(1, 41)]
    for room in rooms:
        room.healthy()
    for i, room in enumerate(rooms):
        room.send(T0 + (60 + i) * S, {"plc/InletPressure": 0.05})
    correlator.observe(engine.tick(T0 + 200 * S), T0 + 200 * S)
    [incident] = correlator.incidents()
    assert incident.root_cause.kind == "municipal_supply"
    assert len(incident.sites) == 40
    assert DISTRICT in incident.root_cause.description


def test_causal_graph_has_no_cycles() -> None:
    assert all(cause not in ANCESTORS[cause] for cause in Cause)
    assert Cause.POWER in ANCESTORS[Cause.OUTLET]
    assert Cause.INLET in ANCESTORS[Cause.PUMPS]


def test_only_the_most_recent_closed_incidents_are_kept() -> None:
    correlator = Correlator(quiet_s=0, keep_closed=1)
    for n in (1, 2):
        on = alarm_event("flood", T0, site=f"PR-{n:04d}", alarm_id=f"W{n}")
        off = alarm_event("flood", T0 + S, site=f"PR-{n:04d}", event=Event.CLEAR, alarm_id=f"W{n}")
        correlator.observe([on, off], T0 + S)
    assert len(correlator.tick(T0 + 2 * S)) == 2
    assert [i.sites for i in correlator.incidents()] == [("PR-0002",)]


def test_a_closed_municipal_incident_is_not_joined_by_later_rooms() -> None:
    correlator = Correlator(quiet_s=60)
    rooms = [f"PR-{n:04d}" for n in range(1, 4)]
    correlator.observe([alarm_event("inlet_pressure_low", T0, site=r, alarm_id=r) for r in rooms], T0)
    clear = [alarm_event("inlet_pressure_low", T0 + S, site=r, event=Event.CLEAR, alarm_id=r) for r in rooms]
    correlator.observe(clear, T0 + S)
    [closed] = correlator.tick(T0 + 100 * S)
    assert closed.root_cause.kind == "municipal_supply"
    [later] = correlator.observe([alarm_event("inlet_pressure_low", T0 + 200 * S, site="PR-0009")], T0)
    assert later.root_cause.kind == "inlet_pressure_low"
