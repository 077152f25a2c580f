"""The alarm service every entry point calls: alarm lists, operator actions, incidents.

Rules:
- It wraps the engine and the correlator the cloud runs and adds what they leave out on purpose:
  the time (``clock``, ms since the epoch) and JSON-ready shapes (DESIGN §4). It holds no state.
- Errors stay the alarm area's own (``model.AlarmError`` tree, ``UnknownIncident``); the HTTP router
  maps them onto statuses. A refused action changes nothing.
- An action answers with the transition it made and the alarm after it (``null`` once an
  acknowledgement retired it: an alarm back to normal and acknowledged is no longer live). The
  transition goes to the ``AlarmHub`` like every engine event (journal, live push, notifier).
- History (alarm instances, the journal) and the alarm-system KPIs read the persisted journal when a
  relational store runs (they survive restarts and cover any period), else the hub's recent events.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tapline.alarms.correlate import Correlator
from tapline.alarms.engine import AlarmEngine
from tapline.alarms.events import STATE_FILTERS, AlarmEvent
from tapline.alarms.hub import AlarmHub
from tapline.alarms.journal import event_from_row, instance_dict
from tapline.alarms.kpis import alarm_health
from tapline.alarms.model import AlarmError, UnknownAlarm
from tapline.store.alarm_journal import AlarmJournalStore

DAY_MS = 86_400_000


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
        *,
        hub: AlarmHub | None = None,
        journal: AlarmJournalStore | None = None,
    ) -> None:
        self.engine = engine
        self.correlator = correlator
        self.clock = clock
        self.hub = hub if hub is not None else AlarmHub()
        self.journal = journal

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
        self.hub.publish((event,))
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

    # ------------------------------------------------------------------ history and health
    async def _journal(
        self, start: int, end: int, site: str | None = None, district: str | None = None
    ) -> list[AlarmEvent]:
        if self.journal is not None:
            rows = await self.journal.events(start, end, site=site, district=district)
            return [event_from_row(row) for row in rows]
        return [
            e
            for e in self.hub.recent
            if start <= e.at < end
            and (site is None or e.site == site)
            and (district is None or e.district == district)
        ]

    async def history(
        self,
        start: int,
        end: int,
        *,
        site: str | None = None,
        district: str | None = None,
        priority: str | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """Alarm instances raised in ``[start, end)``, newest first: live and finished ones, with
        when they were raised, cleared and acknowledged (by whom). Empty without a store."""
        if self.journal is None:
            return []
        rows = await self.journal.instances(
            start, end, site=site, district=district, priority=priority, limit=limit
        )
        return [instance_dict(row) for row in rows]

    async def transitions(self, alarm_id: str) -> list[dict[str, Any]]:
        """Every recorded transition of one alarm instance, oldest first (``UnknownAlarm`` if none)."""
        if self.journal is not None:
            rows = await self.journal.events(0, 2**62, alarm_id=alarm_id)
            events = [event_from_row(row) for row in rows]
        else:
            events = [e for e in self.hub.recent if e.alarm_id == alarm_id]
        if not events:
            raise UnknownAlarm(alarm_id)
        return [e.as_dict() for e in events]

    async def health(
        self, start: int, end: int, *, district: str | None = None, operators: int = 1
    ) -> dict[str, Any]:
        """Alarm-system health (EEMUA 191 / ISA-18.2) over ``[start, end)``; the journal is read from
        a day earlier so alarms standing since before ``start`` count. ValueError for a bad period."""
        if end <= start or operators < 1:
            raise ValueError("need end > start and at least one operator")
        events = await self._journal(start - DAY_MS, end, district=district)
        report = alarm_health(events, start, end, operators=operators).as_dict()
        report["district"] = district
        return report

    # ------------------------------------------------------------------ maintenance
    async def set_maintenance(self, site: str, active: bool, user: str, reason: str) -> dict[str, Any]:
        """Put a room in maintenance (its alarms, current and future, out of service) or end it.
        Persisted first, so a refused write changes nothing; idempotent."""
        now = self.clock()
        if self.journal is not None:
            if active:
                await self.journal.set_maintenance(site, now, user, reason)
            else:
                await self.journal.clear_maintenance(site)
        if active:
            events = self.engine.remove_from_service(site, user, now, reason)
        else:
            events = self.engine.return_to_service(site, user, now, reason)
        self.hub.publish(events)
        return {
            "site": site,
            "maintenance": self.engine.in_maintenance(site),
            "transitions": [e.as_dict() for e in events],
        }

    async def restore_maintenance(self) -> int:
        """At start-up: the rooms the store says are in maintenance go out of service again."""
        if self.journal is None:
            return 0
        rows = await self.journal.maintenance()
        for row in rows:
            self.engine.remove_from_service(row["site"], row["by"], row["since_ms"], row["reason"])
        return len(rows)
