"""Scoring a bench run against the simulator's ground truth: one ``FaultResult`` per injected fault.

Rules:
- What counts is what the operator is shown: *announced* alarms (a transition into unacked-active)
  and the incident each belongs to at the end of the run (merges followed).
- A fault is detected by the first alarm announced in its room (its district, for a district-wide
  event) from its onset (``Onset``; a standby failure's is the failed start) until it ends. Its
  incident is the verdict: root cause right when its kind is ``schedule.EXPECTED[kind]``; location
  right when its root alarm is in the fault's room on the expected device (a district event: a
  municipal incident of that district).
- ``detect_s`` runs from the onset to that first announcement; ``net_s`` subtracts the announcing
  rule's configured on-delay (what the target "within N s after the on-delay" means). Windows of
  trend rules (rate, refill, pump curve) are not subtracted: they are detection time.
- ``alarms_10min``: alarms announced in the room (district) in the first 10 minutes from the onset.
- Normal operation: alarms announced in rooms no fault touched, after the warm-up, per room-day.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tapline.alarms.correlate import Incident
from tapline.alarms.events import AlarmEvent
from tapline.alarms.rules import Template
from tapline.bench.city import AlarmCity, epoch_ms
from tapline.bench.schedule import EXPECTED, Planned, expected_device
from tapline.sim.faults import FaultKind

TEN_MINUTES_MS = 600_000


@dataclass(frozen=True, slots=True)
class FaultResult:
    fault_id: str
    kind: str
    site: str | None
    district: str | None
    expected: str
    expected_device: str | None
    onset_s: float | None  # None: never became observable (a standby that was never asked to start)
    detected: bool
    root_cause: str | None
    root_site: str | None
    root_device: str | None
    root_correct: bool
    location_correct: bool
    detect_s: float | None
    net_s: float | None
    alarms_10min: int
    incidents: int
    announced_in_incident: int
    rooms_in_incident: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_faults(
    city: AlarmCity, faults: Sequence[Planned], template: Template, end_s: float
) -> list[FaultResult]:
    """Score every planned fault of the shard ``city`` ran (see the module rules)."""
    incidents = city.correlator.incidents()
    incident_of = {alarm: incident for incident in incidents for alarm in incident.alarms}
    first: dict[str, AlarmEvent] = {}
    for event in city.events:
        first.setdefault(event.alarm_id, event)
    shown = [e for e in city.events if e.announced]
    delays = {rule.id: rule.on_delay_s for rule in template.rules}
    return [_score(planned, city, shown, incident_of, first, delays, end_s) for planned in faults]


def _score(
    planned: Planned,
    city: AlarmCity,
    shown: list[AlarmEvent],
    incident_of: dict[str, Incident],
    first: dict[str, AlarmEvent],
    delays: dict[str, float],
    end_s: float,
) -> FaultResult:
    fault = planned.fault
    onset = city.onsets.get(fault.id)
    district_wide = fault.site is None
    device = expected_device(fault, onset.device if onset else None)
    base: dict[str, Any] = {
        "fault_id": fault.id,
        "kind": str(fault.kind),
        "site": fault.site,
        "district": fault.district,
        "expected": EXPECTED[fault.kind],
        "expected_device": device,
    }
    if onset is None:
        return _missed(base, None)
    start_ms = epoch_ms(onset.t_s)
    until = fault.start_s + planned.duration_s if planned.duration_s else end_s
    until_ms = epoch_ms(max(until, onset.t_s)) + 60_000

    def here(event: AlarmEvent) -> bool:
        return event.district == fault.district if district_wide else event.site == fault.site

    mine = [e for e in shown if here(e) and start_ms - 2000 <= e.at <= until_ms]
    ten = sum(1 for e in mine if e.at < start_ms + TEN_MINUTES_MS)
    if not mine:
        return _missed(base, onset.t_s, ten)
    detector = mine[0]
    incident = incident_of.get(detector.alarm_id)
    if incident is None:
        return _missed(base, onset.t_s, ten)
    root = first.get(incident.root_alarm)
    kind = incident.root_cause.kind
    if district_wide:
        located = incident.district == fault.district and kind.startswith("municipal_")
    else:
        located = root is not None and root.site == fault.site and (device is None or root.device == device)
    detect = max(0.0, (detector.at - start_ms) / 1000)
    members = set(incident.alarms)
    return FaultResult(
        **base,
        onset_s=onset.t_s,
        detected=True,
        root_cause=kind,
        root_site=root.site if root else None,
        root_device=root.device if root else None,
        root_correct=kind == EXPECTED[fault.kind],
        location_correct=located,
        detect_s=detect,
        net_s=max(0.0, detect - delays.get(detector.rule, 0.0)),
        alarms_10min=ten,
        incidents=len({incident_of[e.alarm_id].id for e in mine if e.alarm_id in incident_of}),
        announced_in_incident=sum(1 for e in mine if e.alarm_id in members),
        rooms_in_incident=len(incident.sites),
    )


def _missed(base: dict[str, Any], onset_s: float | None, ten: int = 0) -> FaultResult:
    return FaultResult(
        **base,
        onset_s=onset_s,
        detected=False,
        root_cause=None,
        root_site=None,
        root_device=None,
        root_correct=False,
        location_correct=False,
        detect_s=None,
        net_s=None,
        alarms_10min=ten,
        incidents=0,
        announced_in_incident=0,
        rooms_in_incident=0,
    )


def normal_alarms(city: AlarmCity, clean: Iterable[str], after_s: float) -> list[AlarmEvent]:
    """Alarms announced in rooms no fault touched, after ``after_s`` (the false alarms)."""
    rooms = set(clean)
    since = epoch_ms(after_s)
    return [e for e in city.events if e.announced and e.site in rooms and e.at >= since]


def is_district(kind: str) -> bool:
    return kind == FaultKind.INLET_PRESSURE_DROP.value
