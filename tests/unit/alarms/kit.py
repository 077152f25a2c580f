"""Helpers for the alarm tests: a healthy room's readings, a room driven through the engine, and
alarm events made from the template's rules (synthetic streams for the correlator and the KPIs)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone

from tapline.alarms.engine import AlarmEngine
from tapline.alarms.events import AlarmEvent
from tapline.alarms.model import AlarmState, Event, Phase, Transition
from tapline.alarms.rules import Template, load_template, parse_template
from tapline.bench.flood import HEALTHY as HEALTHY  # one healthy room for the tests and the bench
from tapline.domain.model import Quality, Reading, Value

SITE, DISTRICT = "PR-0001", "jianghan"
T0 = int(datetime(2025, 6, 2, 10, 0, tzinfo=timezone(timedelta(hours=8))).timestamp() * 1000)
"""10:00 Beijing time: inside the pump room's working hours."""
S = 1000


def _steady() -> Template:
    raw = load_template().model_dump(mode="json")
    for rule in raw["rules"]:
        if rule["kind"] == "flatline":
            rule["enabled"] = False
    return parse_template(raw, "steady")


STEADY = _steady()
"""The standard template without its frozen-transmitter rule: these synthetic readings never flicker
(a live transmitter does; tests of the flatline rule use the standard template)."""


class Room:
    """One room fed through an engine, with the engine's events collected."""

    def __init__(self, engine: AlarmEngine | None = None, site: str = SITE, district: str = DISTRICT) -> None:
        self.engine = engine if engine is not None else AlarmEngine(STEADY)
        self.site, self.district = site, district
        self.events: list[AlarmEvent] = []

    def send(self, at: int, values: Mapping[str, Value], quality: Quality = Quality.GOOD) -> list[AlarmEvent]:
        readings = [Reading(point, at, value, quality) for point, value in values.items()]
        events = self.engine.evaluate(self.site, self.district, readings, at)
        self.events += events
        return events

    def healthy(self, at: int = T0, changes: Mapping[str, Value] | None = None) -> list[AlarmEvent]:
        """Every point of a healthy 3-pump room (two running), with ``changes``."""
        return self.send(at, {**HEALTHY, **(changes or {})})

    def tick(self, at: int) -> list[AlarmEvent]:
        events = self.engine.tick(at)
        self.events += events
        return events

    def link(self, at: int, device: str | None, online: bool) -> list[AlarmEvent]:
        events = self.engine.link(self.site, self.district, device, online, at)
        self.events += events
        return events


def announced(events: Iterable[AlarmEvent]) -> list[str]:
    """Rule ids (with subject) of the alarms these events put in front of the operator."""
    return [f"{e.rule}:{e.subject}" if e.subject else e.rule for e in events if e.announced]


def steps(events: Iterable[AlarmEvent]) -> list[tuple[str, str, str]]:
    return [(e.rule, e.event.value, e.phase.value) for e in events]


RULES = {rule.id: rule for rule in load_template().rules}


def alarm_event(
    rule_id: str,
    at: int,
    site: str = SITE,
    district: str = DISTRICT,
    subject: str | None = None,
    event: Event = Event.ACTIVATE,
    announced: bool = True,
    alarm_id: str | None = None,
) -> AlarmEvent:
    """A synthetic journal row for ``rule_id`` of the standard template."""
    rule = RULES[rule_id]
    point = subject if subject is not None else str(getattr(rule, "point", ""))
    if "*" in point:
        raise ValueError("pass the subject of a wildcard rule")
    device = point.partition("/")[0] if "/" in point else (subject or "")
    active = event is not Event.CLEAR
    if event is Event.ACTIVATE:
        source, target = Phase.NORMAL, Phase.UNACKED_ACTIVE if announced else Phase.SUPPRESSED
    else:
        source, target = Phase.UNACKED_ACTIVE, Phase.UNACKED_RETURNED
    return AlarmEvent(
        alarm_id or f"{site}:{rule_id}:{subject or ''}",
        site,
        district,
        rule_id,
        subject if subject is not None else point,
        device,
        point if "/" in point else "",
        rule.priority,
        rule.cause,
        rule.supply,
        Transition(event, source, target, at, "system"),
        AlarmState(target, active=active, suppressed=target is Phase.SUPPRESSED),
        None,
        rule.text,
    )
