"""Alarms: ISA-18.2 / IEC 62682 lifecycle, rules as data, quality-aware evaluation, incidents, KPIs.

Pure cores, no IO: ``model`` (the state table), ``rules`` (templates as data), ``plan`` and ``room``
(compiled rules and per-room state), ``engine`` (``AlarmEngine``), ``correlate`` (incidents with one
probable root cause), ``kpis`` (EEMUA 191 alarm-system health). The ingest feeds the engine; the API
and the notifier read its events and snapshots.
"""

from tapline.alarms.correlate import Correlator, Incident, RootCause
from tapline.alarms.engine import AlarmEngine
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

__all__ = [
    "Alarm",
    "AlarmEngine",
    "AlarmError",
    "AlarmEvent",
    "AlarmHealth",
    "AlarmState",
    "Cause",
    "Correlator",
    "Event",
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
    "alarm_health",
    "load_template",
]
