"""Alarms: ISA-18.2 / IEC 62682 lifecycle, rules as data, quality-aware evaluation, incidents, KPIs.

Pure cores, no IO: ``model`` (the state table), ``rules`` (templates as data), ``plan`` and ``room``
(compiled rules and per-room state), ``engine`` (``AlarmEngine``), ``correlate`` (incidents with one
probable root cause), ``kpis`` (EEMUA 191 alarm-system health). ``service`` (``AlarmService``) adds
the clock and JSON shapes for the API; ``profiles`` builds a room's profile from its facts (and from
the simulator's ``RoomSpec``; import it from there, so the core never loads the simulator).

Wiring: ``correlator = Correlator(); engine = AlarmEngine(grouping=correlator)``; configure each room
(``engine.configure(site, district, room_profile(...))``), feed live readings (``evaluate``), births
and deaths (``link``) and call ``tick`` about once a second. The correlator then sees every event as
it happens; ``services.extras["alarms"]`` holds the engine and ``["incidents"]`` the correlator.
"""

from tapline.alarms.correlate import Correlator, Incident, RootCause
from tapline.alarms.engine import AlarmEngine, Grouping
from tapline.alarms.events import Alarm, AlarmEvent
from tapline.alarms.kpis import AlarmHealth, alarm_health
from tapline.alarms.model import (
    AlarmError,
    AlarmState,
    Event,
    IllegalTransition,
    Phase,
    ShelveRefused,
    Transition,
    UnknownAlarm,
)
from tapline.alarms.rules import Cause, Priority, RoomProfile, RuleError, Template, load_template
from tapline.alarms.service import AlarmService, UnknownIncident

__all__ = [
    "Alarm",
    "AlarmEngine",
    "AlarmError",
    "AlarmEvent",
    "AlarmHealth",
    "AlarmService",
    "AlarmState",
    "Cause",
    "Correlator",
    "Event",
    "Grouping",
    "IllegalTransition",
    "Incident",
    "Phase",
    "Priority",
    "RoomProfile",
    "RootCause",
    "RuleError",
    "ShelveRefused",
    "Template",
    "Transition",
    "UnknownAlarm",
    "UnknownIncident",
    "alarm_health",
    "load_template",
]
