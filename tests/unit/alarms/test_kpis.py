"""Alarm-system health (EEMUA 191 / ISA-18.2) from synthetic journals."""

from __future__ import annotations

import pytest

from tapline.alarms.kpis import alarm_health
from tapline.alarms.model import Event, Phase

from .kit import T0, S, alarm_event

HOUR = 3600 * S
MIN = 60 * S


def test_a_quiet_day_meets_every_target() -> None:
    journal = [
        alarm_event("drive_fault", T0 + h * HOUR, subject="vfd1/Fault", alarm_id=f"A{h}")
        for h in range(0, 24, 3)
    ]
    health = alarm_health(journal, T0, T0 + 24 * HOUR)
    assert health.announced == 8
    assert health.per_10min == pytest.approx(8 / 144)
    assert health.peak_10min == 1
    assert health.flood_fraction == 0.0
    assert all(health.targets.values())
    assert health.priorities == {"high": 1.0}


def test_a_burst_is_a_flood_until_the_trailing_count_falls_below_five() -> None:
    burst = [alarm_event("flood", T0 + i * 10 * S, site=f"PR-{i:04d}") for i in range(20)]  # 20 in 200 s
    health = alarm_health(burst, T0, T0 + 2 * HOUR)
    assert health.peak_10min == 20
    assert health.over_10_periods == pytest.approx(1 / 12)
    [(begin, end)] = health.floods
    assert begin == T0 + 100 * S  # the 11th alarm
    assert end == T0 + 150 * S + 10 * MIN  # the 16th (at 150 s) leaves the window: 4 remain
    assert health.flood_fraction == pytest.approx((end - begin) / (2 * HOUR))
    assert not health.targets["no_10min_over_10"]
    assert not health.targets["flood_under_1_percent"]


def test_a_flood_still_running_at_the_end_is_cut_there() -> None:
    burst = [alarm_event("flood", T0 + i * S, site=f"PR-{i:04d}") for i in range(12)]
    health = alarm_health(burst, T0, T0 + 60 * S)
    assert health.floods == ((T0 + 10 * S, T0 + 60 * S),)  # from the 11th alarm


def test_chattering_and_bad_actors() -> None:
    chatter = [alarm_event("door_open_out_of_hours", T0 + i * 15 * S, alarm_id=f"D{i}") for i in range(4)]
    steady = [
        alarm_event("drive_fault", T0 + i * 10 * MIN, subject="vfd1/Fault", alarm_id=f"F{i}")
        for i in range(3)
    ]
    health = alarm_health(chatter + steady, T0, T0 + HOUR)
    assert health.chattering == ((("PR-0001", "door_open_out_of_hours", "env/Door"), 4),)
    assert [b.count for b in health.bad_actors] == [4, 3]
    assert health.bad_actors[0].share == pytest.approx(4 / 7)
    assert not health.targets["no_chattering"]
    assert health.as_dict()["chattering"][0]["count"] == 4


def test_suppressed_activations_do_not_count() -> None:
    journal = [alarm_event("device_comms_lost", T0, subject="vfd1", announced=False)]
    assert alarm_health(journal, T0, T0 + HOUR).announced == 0


def test_standing_alarms_are_active_for_more_than_a_day_at_the_end() -> None:
    old = alarm_event("humidity_high", T0, alarm_id="H1")
    recent = alarm_event("flood", T0 + 20 * HOUR, alarm_id="W1")
    gone = alarm_event("drive_fault", T0, subject="vfd2/Fault", alarm_id="V1")
    cleared = alarm_event("drive_fault", T0 + HOUR, subject="vfd2/Fault", event=Event.CLEAR, alarm_id="V1")
    later = alarm_event("turbidity_high", T0 + 30 * HOUR)  # after the period: ignored
    health = alarm_health([later, cleared, recent, gone, old], T0, T0 + 25 * HOUR)
    assert health.standing == ((("PR-0001", "humidity_high", "env/Humidity"), T0),)
    assert health.announced == 3


def test_operators_share_the_load_and_bad_periods_are_refused() -> None:
    journal = [alarm_event("flood", T0 + i * MIN, site=f"PR-{i:04d}") for i in range(6)]
    assert alarm_health(journal, T0, T0 + 10 * MIN, operators=3).per_10min == pytest.approx(2.0)
    with pytest.raises(ValueError, match="end > start"):
        alarm_health(journal, T0, T0)
    with pytest.raises(ValueError, match="operator"):
        alarm_health(journal, T0, T0 + MIN, operators=0)
    empty = alarm_health([], T0, T0 + MIN)
    assert empty.announced == 0
    assert empty.priorities == {}
    assert empty.bad_actors == ()


def test_journal_rows_and_phases_serialise() -> None:
    row = alarm_event("flood", T0).as_dict()
    assert row["event"] == "activate"
    assert (row["from"], row["to"], row["at"], row["by"]) == ("normal", "unacked_active", T0, "system")
    assert Phase.LATCHED.annunciated
    assert not Phase.SUPPRESSED.annunciated
    assert Phase.SHELVED_TIMED.shelved
    assert not Phase.ACKED_ACTIVE.shelved
