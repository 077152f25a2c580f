"""What the alarm engine hands out: one ``AlarmEvent`` per transition, and ``Alarm`` snapshots.

Rules:
- An ``AlarmEvent`` is the journal row of one transition: the model's ``Transition`` (event, from, to,
  when, who, why) plus everything a consumer needs without asking the engine again: the room and
  district, rule, subject (point, device or room), priority, cause, the value that triggered it and
  the state after it. The store, the live push, the notifier, the correlator and the KPIs read these.
- ``Alarm`` is a read-only snapshot for the API; ``as_dict`` is its JSON shape.
- The list filters (``alarm_filter``) are defined here once for the API and the engine:
  ``active`` = condition active and announced (unacked- or acked-active: the site badge counts these);
  ``unacked`` = awaiting the operator (unacked-active, unacked-returned, latched);
  ``shelved``; ``suppressed`` = suppressed by design or out of service; ``all`` = every live alarm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tapline.alarms.model import AlarmState, Event, Phase, Transition
from tapline.alarms.rules import Cause, Priority, Text
from tapline.domain.model import Value

_FILTERS: dict[str, frozenset[Phase]] = {
    "active": frozenset({Phase.UNACKED_ACTIVE, Phase.ACKED_ACTIVE}),
    "unacked": frozenset({Phase.UNACKED_ACTIVE, Phase.UNACKED_RETURNED, Phase.LATCHED}),
    "shelved": frozenset({Phase.SHELVED_ONE_SHOT, Phase.SHELVED_TIMED}),
    "suppressed": frozenset({Phase.SUPPRESSED, Phase.OUT_OF_SERVICE}),
    "all": frozenset(Phase),
}
STATE_FILTERS = tuple(_FILTERS)


def alarm_filter(state: str) -> Callable[[Phase], bool]:
    """A predicate on phases for a list filter name; ValueError for an unknown name."""
    phases = _FILTERS.get(state)
    if phases is None:
        raise ValueError(f"state must be one of {', '.join(STATE_FILTERS)}, got {state!r}")
    return phases.__contains__


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One transition of one alarm instance, with its context."""

    alarm_id: str
    site: str
    district: str
    rule: str
    subject: str
    device: str
    point: str
    priority: Priority
    cause: Cause
    supply: bool
    transition: Transition
    state: AlarmState
    value: Value | None
    text: Text

    @property
    def event(self) -> Event:
        return self.transition.event

    @property
    def at(self) -> int:
        return self.transition.at

    @property
    def phase(self) -> Phase:
        return self.state.phase

    @property
    def key(self) -> tuple[str, str, str]:
        """(room, rule, subject): the same alarm across its successive instances."""
        return (self.site, self.rule, self.subject)

    @property
    def announced(self) -> bool:
        """This transition put the alarm in front of the operator (new, re-alarmed or re-announced)."""
        return (
            self.transition.target is Phase.UNACKED_ACTIVE
            and self.transition.source is not Phase.UNACKED_ACTIVE
        )

    def as_dict(self) -> dict[str, Any]:
        t = self.transition
        return {
            "alarm_id": self.alarm_id,
            "site": self.site,
            "district": self.district,
            "rule": self.rule,
            "subject": self.subject,
            "priority": self.priority.value,
            "event": t.event.value,
            "from": t.source.value,
            "to": t.target.value,
            "at": t.at,
            "by": t.by,
            "reason": t.reason,
            "value": self.value,
        }


@dataclass(frozen=True, slots=True)
class Alarm:
    """A live alarm as the API shows it."""

    id: str
    site: str
    district: str
    rule: str
    subject: str
    device: str
    point: str
    priority: Priority
    cause: Cause
    phase: Phase
    active: bool
    since: int
    changed: int
    value: Value | None
    text: Text
    shelved_until: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "site": self.site,
            "district": self.district,
            "rule": self.rule,
            "subject": self.subject,
            "device": self.device,
            "point": self.point,
            "priority": self.priority.value,
            "cause": self.cause.value,
            "state": self.phase.value,
            "active": self.active,
            "since": self.since,
            "changed": self.changed,
            "value": self.value,
            "message": {"zh": self.text.zh, "en": self.text.en},
            "shelved_until": self.shelved_until,
        }
