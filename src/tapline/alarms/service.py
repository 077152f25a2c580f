"""The alarm service every entry point calls: alarm lists, operator actions, incidents.

Rules:
- It wraps the engine and the correlator the cloud runs and adds what they leave out on purpose:
  the time (``clock``, ms since the epoch) and JSON-ready shapes (DESIGN §4). It holds no state.
- Errors stay the alarm area's own (``model.AlarmError`` tree, ``UnknownIncident``); the HTTP router
  maps them onto statuses. A refused action changes nothing.
- An action answers with the transition it made and the alarm after it (``null`` once an
  acknowledgement retired it: an alarm back to normal and acknowledged is no longer live).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tapline.alarms.correlate import Correlator
from tapline.alarms.engine import AlarmEngine
from tapline.alarms.events import STATE_FILTERS, AlarmEvent
from tapline.alarms.model import AlarmError, UnknownAlarm


class UnknownIncident(AlarmError, KeyError):
    """No incident has this id."""


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class AlarmService:
    """Queries and operator actions on live alarms and incidents (see the module rules)."""

    def __init__(
        self,
        engine: AlarmEngine,
        correlator: Correlator | None = None,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.engine = engine
        self.correlator = correlator
        self.clock = clock

    # ------------------------------------------------------------------ alarms
    def alarms(self, state: str = "active", site: str | None = None) -> list[dict[str, Any]]:
        """Live alarms by state filter (``events.STATE_FILTERS``); ValueError for an unknown filter."""
        if state not in STATE_FILTERS:
            raise ValueError(f"state must be one of {', '.join(STATE_FILTERS)}, got {state!r}")
        return [alarm.as_dict() for alarm in self.engine.alarms(site, state)]

    def alarm(self, alarm_id: str) -> dict[str, Any]:
        """One live alarm; ``UnknownAlarm`` if there is none with this id."""
        return self.engine.get(alarm_id).as_dict()

    def ack(self, alarm_id: str, user: str, reason: str = "") -> dict[str, Any]:
        return self._result(self.engine.ack(alarm_id, user, self.clock(), reason))

    def shelve(
        self, alarm_id: str, user: str, reason: str, duration_s: float | None = None
    ) -> dict[str, Any]:
        """Shelve until the condition clears (no duration) or for ``duration_s`` seconds."""
        return self._result(self.engine.shelve(alarm_id, user, self.clock(), reason, duration_s))

    def unshelve(self, alarm_id: str, user: str, reason: str) -> dict[str, Any]:
        return self._result(self.engine.unshelve(alarm_id, user, self.clock(), reason))

    def reset(self, alarm_id: str, user: str, reason: str = "") -> dict[str, Any]:
        """Reset a latched alarm whose condition has returned to normal."""
        return self._result(self.engine.reset(alarm_id, user, self.clock(), reason))

    def _result(self, event: AlarmEvent) -> dict[str, Any]:
        try:
            alarm: dict[str, Any] | None = self.engine.get(event.alarm_id).as_dict()
        except UnknownAlarm:
            alarm = None
        return {
            "id": event.alarm_id,
            "state": event.phase.value,
            "transition": event.as_dict(),
            "alarm": alarm,
        }

    # ------------------------------------------------------------------ incidents
    def incidents(self, site: str | None = None, open_only: bool = False) -> list[dict[str, Any]]:
        """Incidents (open, and recently closed unless ``open_only``), oldest first."""
        if self.correlator is None:
            return []
        return [incident.as_dict() for incident in self.correlator.incidents(site, open_only)]

    def incident(self, incident_id: str) -> dict[str, Any]:
        """One incident (a merged one answers with the incident it joined); ``UnknownIncident``."""
        if self.correlator is None:
            raise UnknownIncident(incident_id)
        try:
            return self.correlator.get(incident_id).as_dict()
        except KeyError:
            raise UnknownIncident(incident_id) from None
