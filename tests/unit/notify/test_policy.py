"""The notification policy, driven directly: filters, escalation timing and stops, rate limit and
digest, clear notices, and what a notice says."""

from __future__ import annotations

from typing import Any

import pytest

from tapline.alarms.model import Event, Phase
from tapline.alarms.rules import Priority
from tapline.notify.policy import DIGEST_DETAIL, NoticeKind, NotifyPolicy

from .kit import MIN, T0, Room, S, alarm_event, config, critical_alarm, moved, webhook

# ---------------------------------------------------------------------------------------------- filters

FILTERS: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("no filter takes everything", {}, {"rule_id": "inlet_pressure_low"}, True),
    ("minimum priority passes critical", {"min_priority": "high"}, {"rule_id": "mains_lost"}, True),
    ("minimum priority stops medium", {"min_priority": "high"}, {"rule_id": "inlet_pressure_low"}, False),
    ("own district", {"districts": ["jianghan"]}, {"rule_id": "mains_lost"}, True),
    ("other district", {"districts": ["qiaokou"]}, {"rule_id": "mains_lost"}, False),
    ("own site", {"sites": ["PR-0001", "PR-0002"]}, {"rule_id": "mains_lost"}, True),
    ("other site", {"sites": ["PR-0002"]}, {"rule_id": "mains_lost"}, False),
    ("cause listed", {"causes": ["power", "inlet"]}, {"rule_id": "inlet_pressure_low"}, True),
    ("cause not listed", {"causes": ["power"]}, {"rule_id": "inlet_pressure_low"}, False),
    (
        "filters combine with AND",
        {"districts": ["jianghan"], "causes": ["inlet"]},
        {"rule_id": "mains_lost"},
        False,
    ),
    ("a suppressed activation is not announced", {}, {"rule_id": "mains_lost", "announced": False}, False),
    ("a clear is not an announcement", {}, {"rule_id": "mains_lost", "event": Event.CLEAR}, False),
]


@pytest.mark.parametrize(
    ("filters", "event", "notified"), [row[1:] for row in FILTERS], ids=[row[0] for row in FILTERS]
)
def test_recipient_filters(filters: dict[str, Any], event: dict[str, Any], notified: bool) -> None:
    policy = NotifyPolicy(config(webhook("ops", **filters), escalation={}))
    notices = policy.take(alarm_event(at=T0, **event))
    assert [n.recipient for n in notices] == (["ops"] if notified else [])
    assert all(n.kind is NoticeKind.ALARM for n in notices)


def test_each_matching_recipient_gets_its_own_notice_at_its_own_address() -> None:
    policy = NotifyPolicy(
        config(
            webhook("all"),
            webhook("critical-only", min_priority="critical"),
            {"name": "mail", "channel": "email", "address": "duty@water.test"},
            smtp={"host": "mail.test", "sender": "tapline@water.test"},
            escalation={},
        )
    )
    notices = policy.take(alarm_event("inlet_pressure_low", T0))
    assert [(n.recipient, n.channel, n.address) for n in notices] == [
        ("all", "webhook", "http://hooks.test/all"),
        ("mail", "email", "duty@water.test"),
    ]


# ---------------------------------------------------------------------------------------------- escalation

ESCALATE = {"critical": {"after_s": 300, "repeat_s": 600, "max": 2, "targets": ["supervisor"]}}


def _escalating() -> tuple[NotifyPolicy, Room, str]:
    policy = NotifyPolicy(
        config(webhook("ops"), webhook("supervisor", min_priority="critical"), escalation=ESCALATE)
    )
    room = Room()
    event = critical_alarm(room)
    assert [n.recipient for n in policy.take(event)] == ["ops", "supervisor"]
    return policy, room, event.alarm_id


def _escalations(policy: NotifyPolicy, at: int) -> list[tuple[str, str]]:
    return [
        (n.recipient, n.subject.split("]")[0]) for n in policy.tick(at) if n.kind is NoticeKind.ESCALATION
    ]


def test_an_unacknowledged_critical_alarm_escalates_on_time_then_repeats_up_to_max() -> None:
    policy, _, alarm_id = _escalating()
    assert _escalations(policy, T0 + 5 * MIN - 1) == []
    first = policy.tick(T0 + 5 * MIN)
    assert [(n.recipient, n.kind) for n in first] == [
        ("ops", NoticeKind.ESCALATION),
        ("supervisor", NoticeKind.ESCALATION),
    ]
    assert first[0].subject.startswith("[升级 escalation 1/2][紧急 critical] PR-0001 市电失电")
    assert first[0].alarm_ids == (alarm_id,)
    assert "未确认已 5 分钟" in first[0].body
    assert "Unacknowledged for 5 min" in first[0].body
    assert _escalations(policy, T0 + 5 * MIN + 1) == []
    assert _escalations(policy, T0 + 15 * MIN - 1) == []
    assert _escalations(policy, T0 + 15 * MIN) == [
        ("ops", "[升级 escalation 2/2"),
        ("supervisor", "[升级 escalation 2/2"),
    ]
    assert policy.escalating == frozenset()
    assert _escalations(policy, T0 + 60 * MIN) == []


def test_a_late_tick_sends_one_escalation_not_a_burst() -> None:
    policy = NotifyPolicy(config(webhook("ops"), escalation={"critical": {"after_s": 60, "max": 5}}))
    policy.take(critical_alarm(Room()))
    assert len(_escalations(policy, T0 + 10 * MIN)) == 1
    assert _escalations(policy, T0 + 10 * MIN + 59 * S) == []
    assert len(_escalations(policy, T0 + 11 * MIN)) == 1


STOPS: list[tuple[str, Event, Phase, bool, bool]] = [
    # (why, event, phase it leaves the alarm in, condition still active, escalation continues)
    ("acknowledged", Event.ACK, Phase.ACKED_ACTIVE, True, False),
    ("shelved one-shot", Event.SHELVE_ONE_SHOT, Phase.SHELVED_ONE_SHOT, True, False),
    ("shelved for a time", Event.SHELVE_TIMED, Phase.SHELVED_TIMED, True, False),
    ("suppressed by design", Event.SUPPRESS, Phase.SUPPRESSED, True, False),
    ("out of service", Event.REMOVE_FROM_SERVICE, Phase.OUT_OF_SERVICE, True, False),
    ("cleared but not acknowledged", Event.CLEAR, Phase.UNACKED_RETURNED, False, True),
    ("cleared into a latch", Event.CLEAR, Phase.LATCHED, False, True),
    ("back to normal", Event.ACK, Phase.NORMAL, False, False),
]


@pytest.mark.parametrize(
    ("event", "phase", "active", "continues"), [row[1:] for row in STOPS], ids=[row[0] for row in STOPS]
)
def test_what_stops_an_escalation(event: Event, phase: Phase, active: bool, continues: bool) -> None:
    policy = NotifyPolicy(config(webhook("ops"), escalation={"critical": {"after_s": 300}}))
    announced = critical_alarm(Room())
    policy.take(announced)
    policy.take(moved(announced, event, phase, T0 + MIN, active=active))
    assert bool(_escalations(policy, T0 + 5 * MIN)) is continues


def test_acknowledging_through_the_engine_stops_escalation() -> None:
    policy, room, alarm_id = _escalating()
    policy.take(room.engine.ack(alarm_id, "operator", T0 + 4 * MIN))
    assert _escalations(policy, T0 + 5 * MIN) == []


def test_shelving_through_the_engine_stops_escalation_and_unshelving_restarts_it() -> None:
    policy, room, alarm_id = _escalating()
    policy.take(room.engine.shelve(alarm_id, "operator", T0 + MIN, "crew on site", duration_s=600))
    assert _escalations(policy, T0 + 5 * MIN) == []
    back = room.engine.unshelve(alarm_id, "operator", T0 + 6 * MIN)
    assert back.announced
    assert [n.kind for n in policy.take(back)] == [NoticeKind.ALARM, NoticeKind.ALARM]
    assert _escalations(policy, T0 + 11 * MIN - 1) == []
    assert len(_escalations(policy, T0 + 11 * MIN)) == 2


def test_a_re_announcement_does_not_restart_the_escalation_clock() -> None:
    policy = NotifyPolicy(config(webhook("ops"), escalation={"critical": {"after_s": 300}}))
    announced = critical_alarm(Room())
    policy.take(announced)
    returned = moved(announced, Event.CLEAR, Phase.UNACKED_RETURNED, T0 + MIN, active=False)
    policy.take(returned)
    again = moved(returned, Event.ACTIVATE, Phase.UNACKED_ACTIVE, T0 + 2 * MIN)
    assert again.announced
    policy.take(again)
    assert len(_escalations(policy, T0 + 5 * MIN)) == 1


@pytest.mark.parametrize(
    ("escalation", "rule", "escalates"),
    [
        pytest.param(None, "mains_lost", True, id="critical escalates by default"),
        pytest.param(None, "drive_fault", False, id="high does not by default"),
        pytest.param({"high": {"after_s": 300}}, "drive_fault", True, id="configured for high"),
        pytest.param({"high": {"after_s": 300}}, "mains_lost", False, id="configuring replaces the default"),
    ],
)
def test_escalation_is_per_priority(escalation: dict[str, Any] | None, rule: str, escalates: bool) -> None:
    top = {} if escalation is None else {"escalation": escalation}
    policy = NotifyPolicy(config(webhook("ops"), **top))
    subject = "vfd1/Fault" if rule == "drive_fault" else None
    policy.take(alarm_event(rule, T0, subject=subject))
    assert bool(_escalations(policy, T0 + 10 * MIN)) is escalates


def test_escalation_reaches_targets_whatever_their_filters_and_can_skip_the_first_recipients() -> None:
    escalation = {"critical": {"after_s": 60, "targets": ["boss"], "renotify_recipients": False}}
    policy = NotifyPolicy(
        config(webhook("ops"), webhook("boss", districts=["qiaokou"]), escalation=escalation)
    )
    assert [n.recipient for n in policy.take(alarm_event("mains_lost", T0))] == ["ops"]
    assert [n.recipient for n in policy.tick(T0 + MIN)] == ["boss"]


def test_an_alarm_nobody_was_told_about_still_escalates_to_the_targets() -> None:
    escalation = {"critical": {"after_s": 60, "targets": ["boss"]}}
    policy = NotifyPolicy(
        config(webhook("ops", districts=["qiaokou"]), webhook("boss", sites=["X"]), escalation=escalation)
    )
    assert policy.take(alarm_event("mains_lost", T0)) == []
    assert [n.recipient for n in policy.tick(T0 + MIN)] == ["boss"]


# ---------------------------------------------------------------------------------------------- rate limit


def _storm(policy: NotifyPolicy, count: int, at: int = T0) -> list[str]:
    sent = []
    for n in range(count):
        event = alarm_event("inlet_pressure_low", at, site=f"PR-{n:04d}", alarm_id=f"AL-{n}")
        sent += [notice.alarm_ids[0] for notice in policy.take(event)]
    return sent


def test_the_rate_limit_holds_excess_notices_and_sends_one_digest_when_the_window_allows() -> None:
    policy = NotifyPolicy(config(webhook("ops", rate_limit={"max": 2, "window_s": 60}), escalation={}))
    assert _storm(policy, 5) == ["AL-0", "AL-1"]
    assert policy.held("ops") == 3
    assert policy.counts.held == {"webhook": 3}
    assert policy.tick(T0 + MIN - 1) == []
    (digest,) = policy.tick(T0 + MIN)
    assert digest.kind is NoticeKind.DIGEST
    assert digest.alarm_ids == ("AL-2", "AL-3", "AL-4")
    assert digest.sites == ("PR-0002", "PR-0003", "PR-0004")
    assert digest.priority is Priority.MEDIUM
    assert digest.subject.startswith("[tapline] 另有 3 条报警 / 3 more alarms: PR-0002")
    assert "3 more alarms" in digest.body
    assert "https://scada.test/#/alarms/AL-4" in digest.body
    assert policy.held("ops") == 0
    assert policy.tick(T0 + 2 * MIN) == []
    assert policy.counts.digests == {"webhook": 1}


def test_a_digest_counts_against_the_window_and_goes_before_anything_newer() -> None:
    policy = NotifyPolicy(config(webhook("ops", rate_limit={"max": 1, "window_s": 60}), escalation={}))
    assert _storm(policy, 2) == ["AL-0"]
    newer = alarm_event("mains_lost", T0 + MIN, alarm_id="AL-new")
    out = policy.take(newer)
    assert [(n.kind, n.alarm_ids) for n in out] == [(NoticeKind.DIGEST, ("AL-1",))]
    assert policy.held("ops") == 1
    (second,) = policy.tick(T0 + 2 * MIN)
    assert (second.kind, second.alarm_ids) == (NoticeKind.DIGEST, ("AL-new",))


def test_each_recipient_has_its_own_window() -> None:
    policy = NotifyPolicy(
        config(webhook("tight", rate_limit={"max": 1, "window_s": 600}), webhook("loose"), escalation={})
    )
    notices = [n.recipient for n in policy.take(alarm_event("mains_lost", T0, alarm_id="A"))]
    notices += [n.recipient for n in policy.take(alarm_event("mains_lost", T0, site="PR-0002", alarm_id="B"))]
    assert notices == ["tight", "loose", "loose"]
    assert policy.held("tight") == 1
    assert policy.held("loose") == 0


def test_a_large_digest_lists_the_first_alarms_and_counts_the_rest() -> None:
    policy = NotifyPolicy(config(webhook("ops", rate_limit={"max": 1, "window_s": 60}), escalation={}))
    _storm(policy, DIGEST_DETAIL + 6)
    (digest,) = policy.tick(T0 + MIN)
    assert f"{DIGEST_DETAIL + 5} more alarms" in digest.body
    assert digest.body.count("\n- ") == DIGEST_DETAIL + 1
    assert "and 5 more" in digest.body
    assert len(digest.alarm_ids) == DIGEST_DETAIL + 5


def test_escalations_are_rate_limited_like_any_notice() -> None:
    policy = NotifyPolicy(
        config(
            webhook("ops", rate_limit={"max": 1, "window_s": 600}), escalation={"critical": {"after_s": 60}}
        )
    )
    assert len(policy.take(alarm_event("mains_lost", T0))) == 1
    assert policy.tick(T0 + MIN) == []
    assert policy.held("ops") == 1
    (digest,) = policy.tick(T0 + 10 * MIN)
    assert digest.kind is NoticeKind.DIGEST
    assert "escalation" in digest.body


# ---------------------------------------------------------------------------------------------- clear


def test_clear_notices_go_to_recipients_that_got_the_alarm_and_asked_for_them() -> None:
    policy = NotifyPolicy(
        config(
            webhook("wants-clear", notify_clear=True),
            webhook("no-clear"),
            webhook("elsewhere", notify_clear=True, districts=["qiaokou"]),
            escalation={},
        )
    )
    room = Room()
    announced = critical_alarm(room)
    assert [n.recipient for n in policy.take(announced)] == ["wants-clear", "no-clear"]
    events = room.send(T0 + MIN, {"power/Mains": True}) + room.tick(T0 + 2 * MIN)
    (cleared,) = [e for e in events if e.event is Event.CLEAR]
    assert cleared.phase is Phase.UNACKED_RETURNED
    (notice,) = policy.take(cleared)
    assert (notice.recipient, notice.kind) == ("wants-clear", NoticeKind.CLEAR)
    assert notice.subject.startswith("[恢复 cleared][紧急 critical] PR-0001")
    assert notice.body.startswith("报警条件已恢复\nAlarm condition returned to normal")


def test_after_normal_the_policy_forgets_the_alarm() -> None:
    policy = NotifyPolicy(config(webhook("ops", notify_clear=True), escalation={}))
    announced = alarm_event("mains_lost", T0)
    policy.take(announced)
    acked = moved(announced, Event.ACK, Phase.ACKED_ACTIVE, T0 + S)
    assert policy.take(acked) == []
    normal = moved(acked, Event.CLEAR, Phase.NORMAL, T0 + 2 * S, active=False)
    assert [n.kind for n in policy.take(normal)] == [NoticeKind.CLEAR]
    assert policy.take(normal) == []


# ---------------------------------------------------------------------------------------------- text


def test_a_notice_says_what_where_how_bad_and_links_to_the_alarm_in_chinese_first() -> None:
    policy = NotifyPolicy(config(webhook("ops"), escalation={}, utc_offset_h=8))
    room = Room()
    room.healthy(T0 - 40 * S)
    room.send(T0 - 30 * S, {"plc/InletPressure": 0.08})
    (event,) = room.tick(T0)
    (notice,) = policy.take(event, now_ms=T0 + 5 * S)
    assert (
        notice.subject
        == "[中 medium] PR-0001 进水（市政）压力低 / Inlet (municipal) pressure low (< 0.10 MPa)"
    )
    lines = notice.body.splitlines()
    assert lines[:2] == ["进水（市政）压力低", "Inlet (municipal) pressure low (< 0.10 MPa)"]
    assert "站点 Site: PR-0001（jianghan）" in lines
    assert "规则 Rule: inlet_pressure_low（plc/InletPressure）" in lines
    assert "优先级 Priority: 中 medium" in lines
    assert "数值 Value: 0.08" in lines
    assert "时间 Time: 2025-06-02 10:00:00 UTC+08:00" in lines
    assert lines[-1] == f"报警 Alarm: https://scada.test/#/alarms/{event.alarm_id}"
    assert notice.link == f"https://scada.test/#/alarms/{event.alarm_id}"
    assert notice.created_ms == T0 + 5 * S
    assert notice.as_dict()["priority"] == "medium"


def test_policy_time_never_runs_backwards() -> None:
    policy = NotifyPolicy(config(webhook("ops", rate_limit={"max": 1, "window_s": 60}), escalation={}))
    policy.tick(T0 + 10 * MIN)
    (notice,) = policy.take(alarm_event("mains_lost", T0))
    assert notice.created_ms == T0 + 10 * MIN
