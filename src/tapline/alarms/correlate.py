"""Fault localisation: alarms grouped into incidents, each with one probable root cause.

Rules:
- Input is the engine's ``AlarmEvent`` stream (condition changes count, whether or not the alarm was
  announced: a suppressed consequence still belongs under its cause); time is passed in.
- The room's structure is a causal graph over the rules' ``cause`` (``PARENTS``): flood → power →
  drives → pumps → outlet pressure; inlet → tank → pumps; power → device comms; flood/fire → room
  environment. An alarm joins an open incident of its room whose root cause is its own cause or an
  ancestor of it (the nearest ancestor when several); an alarm that is an ancestor of open incidents'
  causes becomes the root and absorbs them (a consequence may be seen first, by up to
  ``absorb_window_s``; a supposed cause that shows minutes later starts its own incident). Instruments,
  water quality and security have no parents: they start their own incidents.
- The district: alarms whose rule says the municipal supply can cause them (``supply``) in at least
  ``district_min_rooms`` rooms of one district, first raised within ``district_window_s``, are one
  municipal incident (inlet pressure → municipal supply; water quality → municipal water quality);
  the rooms' own incidents merge into it, and later rooms (and their consequences) join it.
- Instruments: a process alarm on a point whose instrument has an open incident in the room (and no
  upstream cause there) joins that incident; an instrument alarm absorbs the room's open incidents
  rooted on its point (a drifting transmitter's late "pressure high" is the transmitter's fault).
- An incident ends when every alarm in it has been inactive for ``quiet_s``; ``end`` is then the last
  return to normal. Merged incidents disappear from the list (``get`` follows them).
- For the engine (``engine.Grouping``): ``take`` observes one event as it happens; ``hides`` says
  whether an open municipal incident already explains a room's new alarm: a supply alarm of the
  incident's cause in its district, or a consequence of that cause (its descendant in ``PARENTS``) in
  a room whose own supply alarm is still active in the incident. The engine raises those suppressed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from tapline.alarms.events import AlarmEvent
from tapline.alarms.model import Event
from tapline.alarms.rules import Cause, Text

C = Cause
PARENTS: Final[dict[Cause, frozenset[Cause]]] = {
    C.POWER: frozenset({C.FLOOD}),
    C.DRIVE: frozenset({C.POWER}),
    C.PUMPS: frozenset({C.DRIVE, C.TANK, C.INLET}),
    C.TANK: frozenset({C.INLET}),
    C.OUTLET: frozenset({C.PUMPS}),
    C.COMMS: frozenset({C.POWER}),
    C.ENVIRONMENT: frozenset({C.FLOOD, C.FIRE}),
}
"""Direct causes of each cause; the rest have none."""


def _closure(cause: Cause) -> frozenset[Cause]:
    found: set[Cause] = set()
    todo = list(PARENTS.get(cause, ()))
    while todo:
        parent = todo.pop()
        if parent not in found:
            found.add(parent)
            todo.extend(PARENTS.get(parent, ()))
    return frozenset(found)


ANCESTORS: Final = {cause: _closure(cause) for cause in Cause}
DEPTH: Final = {cause: len(ANCESTORS[cause]) for cause in Cause}

KINDS: Final[dict[Cause, tuple[str, str, str]]] = {
    C.POWER: ("power_supply", "Power supply problem at {site}: {text}", "{site} 供电异常：{text_zh}"),
    C.DRIVE: ("drive_fault", "Pump drive fault at {site} {device}", "{site} {device} 水泵变频器故障"),
    C.PUMPS: ("pumps_stopped", "Every pump stopped at {site}", "{site} 全部水泵停机"),
    C.INLET: (
        "inlet_pressure_low",
        "Inlet pressure low at {site} only (connection or valve)",
        "{site} 进水压力低（仅本泵房：进水管或阀门）",
    ),
    C.TANK: (
        "tank_supply",
        "Tank level low at {site}: refill (float valve, inlet) suspected",
        "{site} 水箱液位低：疑似进水（浮球阀）故障",
    ),
    C.OUTLET: (
        "outlet_pressure",
        "{text} at {site} with no equipment fault (leak or burst downstream?)",
        "{site} {text_zh}（设备无故障，疑似下游泄漏或爆管）",
    ),
    C.INSTRUMENT: ("instrument_fault", "Instrument fault: {point} at {site}", "{site} 仪表故障：{point}"),
    C.COMMS: ("communication_loss", "Communication lost: {site} {device}", "{site} {device} 通信中断"),
    C.WATER_QUALITY: ("water_quality", "{text} at {site}", "{site} {text_zh}"),
    C.FLOOD: ("flood", "Pump room flooded at {site}", "{site} 泵房水浸"),
    C.FIRE: ("fire", "Smoke in the pump room at {site}", "{site} 泵房烟感报警"),
    C.INTRUSION: ("intrusion", "Pump room door open out of hours at {site}", "{site} 非工作时间泵房门被打开"),
    C.ENVIRONMENT: ("environment", "{text} at {site}", "{site} {text_zh}"),
}
DISTRICT_KINDS: Final[dict[Cause, tuple[str, str, str]]] = {
    C.INLET: (
        "municipal_supply",
        "Municipal supply pressure low in district {district}: {rooms} rooms",
        "{district} 片区市政供水压力低，影响 {rooms} 个泵房",
    ),
    C.WATER_QUALITY: (
        "municipal_water_quality",
        "Municipal water quality in district {district}: {text} in {rooms} rooms",
        "{district} 片区市政水质异常：{rooms} 个泵房{text_zh}",
    ),
}


@dataclass(frozen=True, slots=True)
class RootCause:
    kind: str
    description: str
    description_zh: str


@dataclass(frozen=True, slots=True)
class Incident:
    """One fault as the operator should see it: a root cause and the alarms it explains."""

    id: str
    root_cause: RootCause
    district: str
    sites: tuple[str, ...]
    devices: tuple[str, ...]
    points: tuple[str, ...]
    alarms: tuple[str, ...]
    root_alarm: str
    start: int
    end: int | None
    announced: int

    def as_dict(self) -> dict[str, Any]:
        cause = self.root_cause
        return {
            "id": self.id,
            "root_cause": {
                "kind": cause.kind,
                "description": cause.description,
                "description_zh": cause.description_zh,
            },
            "district": self.district,
            "sites": list(self.sites),
            "devices": list(self.devices),
            "points": list(self.points),
            "alarms": list(self.alarms),
            "root_alarm": self.root_alarm,
            "start": self.start,
            "end": self.end,
            "announced": self.announced,
        }


@dataclass(slots=True, eq=False)
class _Member:
    event: AlarmEvent
    active: bool = True
    announced: bool = False
    cleared: int = 0


@dataclass(slots=True, eq=False)
class _Incident:
    id: str
    cause: Cause
    district: str
    root: _Member
    start: int
    municipal: bool = False
    members: dict[str, _Member] = field(default_factory=dict)
    end: int | None = None
    merged_into: _Incident | None = None

    @property
    def sites(self) -> list[str]:
        return list(dict.fromkeys([self.root.event.site, *(m.event.site for m in self.members.values())]))

    @property
    def points(self) -> set[str]:
        return {m.event.point for m in self.members.values() if m.event.point}


class Correlator:
    """Keeps incidents up to date from alarm events (see the module rules)."""

    def __init__(
        self,
        *,
        district_min_rooms: int = 3,
        district_window_s: float = 600.0,
        quiet_s: float = 300.0,
        id_prefix: str = "INC",
        keep_closed: int = 10_000,
        absorb_window_s: float = 120.0,
    ) -> None:
        self._min_rooms = district_min_rooms
        self._window = round(district_window_s * 1000)
        self._absorb_window = round(absorb_window_s * 1000)
        self._quiet = round(quiet_s * 1000)
        self._prefix = id_prefix
        self._keep = keep_closed
        self._next_id = 1
        self._open: dict[str, _Incident] = {}
        self._closed: dict[str, _Incident] = {}
        self._merged: dict[str, _Incident] = {}
        self._by_site: dict[str, list[_Incident]] = {}
        self._member_of: dict[str, _Incident] = {}
        self._municipal: dict[tuple[str, Cause], _Incident] = {}

    # ------------------------------------------------------------------ inputs
    def observe(self, events: Iterable[AlarmEvent], now_ms: int) -> list[Incident]:
        """Take alarm events in order; the incidents they opened or changed."""
        touched: dict[str, _Incident] = {}
        for event in events:
            incident = self._observe(event)
            if incident is not None:
                touched[incident.id] = incident
        final = {i.id: i for i in map(_final, touched.values()) if i.end is None}
        return [self._snapshot(i) for i in final.values()]

    def tick(self, now_ms: int) -> list[Incident]:
        """Close incidents whose alarms have all been inactive for the quiet time; the closed ones."""
        closed = []
        for incident in list(self._open.values()):
            members = incident.members.values()
            if any(m.active for m in members):
                continue
            last = max(m.cleared for m in members)
            if now_ms - last >= self._quiet:
                self._close(incident, last)
                closed.append(self._snapshot(incident))
        return closed

    def take(self, event: AlarmEvent) -> None:
        """Observe one event as it happens (the engine calls this; see ``engine.Grouping``)."""
        self._observe(event)

    def hides(self, site: str, district: str, cause: Cause, supply: bool) -> str | None:
        """Why a new alarm of ``cause`` in ``site`` needs no announcement, or None (module rules)."""
        if supply:
            municipal = self._municipal.get((district, cause))
            if municipal is not None:
                return f"part of {municipal.id}: {DISTRICT_KINDS.get(cause, KINDS[cause])[0]} in {district}"
        ancestors = ANCESTORS[cause]
        for incident in self._by_site.get(site, ()):
            if incident.municipal and incident.cause in ancestors and self._still_hit(incident, site):
                kind = DISTRICT_KINDS.get(incident.cause, KINDS[incident.cause])[0]
                return f"consequence of {incident.id}: {kind} in {incident.district}"
        return None

    @staticmethod
    def _still_hit(incident: _Incident, site: str) -> bool:
        """The room's own supply alarm of the incident's cause is still active in it."""
        return any(
            m.active and m.event.site == site and m.event.supply and m.event.cause is incident.cause
            for m in incident.members.values()
        )

    def _observe(self, event: AlarmEvent) -> _Incident | None:
        incident = self._member_of.get(event.alarm_id)
        kind = event.event
        if incident is None:
            return self._place(event) if kind is Event.ACTIVATE else None
        member = incident.members[event.alarm_id]
        member.announced = member.announced or event.announced
        if kind is Event.ACTIVATE:
            member.active, member.event = True, event
        elif kind is Event.CLEAR:
            member.active, member.cleared = False, event.at
        return incident

    def _place(self, event: AlarmEvent) -> _Incident:
        member = _Member(event, announced=event.announced)
        cause = event.cause
        if event.supply:
            municipal = self._municipal.get((event.district, cause))
            if municipal is not None:
                self._add(municipal, member)
                self._absorb(municipal, event.site)
                return municipal
        here = self._by_site.get(event.site, ())
        related = [i for i in here if i.cause is cause or i.cause in ANCESTORS[cause]]
        if related:
            best = max(related, key=lambda i: (DEPTH[i.cause], i.start))
            self._add(best, member)
            return best
        if event.point and cause is not C.INSTRUMENT:
            faulty = next((i for i in here if i.cause is C.INSTRUMENT and event.point in i.points), None)
            if faulty is not None:
                self._add(faulty, member)
                return faulty
        incident = self._new(cause, event.district, member, event.at)
        self._absorb(incident, event.site, since=event.at - self._absorb_window)
        if event.supply:
            self._gather_district(incident)
        return _final(incident)

    def _absorb(self, incident: _Incident, site: str, since: int | None = None) -> None:
        """Merge the room's open incidents that ``incident`` explains into it (by cause only those
        started from ``since``: a cause seen minutes after its supposed consequence is not its cause)."""
        instrument = incident.cause is C.INSTRUMENT
        point = incident.root.event.point
        for other in list(self._by_site.get(site, ())):
            if other is incident or other.municipal:
                continue
            explained = (
                incident.cause in ANCESTORS[other.cause] and (since is None or other.start >= since)
            ) or (incident.municipal and other.cause is incident.cause)
            if explained or (instrument and point and other.root.event.point == point):
                self._merge(other, incident)

    def _gather_district(self, incident: _Incident) -> None:
        """Enough rooms of a district show the same supply cause: make them one municipal incident."""
        root = incident.root.event
        peers = [
            i
            for i in self._open.values()
            if not i.municipal
            and i.district == root.district
            and i.cause is root.cause
            and i.root.event.supply
            and root.at - i.start <= self._window
        ]
        if len({i.root.event.site for i in peers}) < self._min_rooms:
            return
        first = min(peers, key=lambda i: i.start)
        municipal = self._new(root.cause, root.district, first.root, first.start, municipal=True)
        self._municipal[(root.district, root.cause)] = municipal
        for peer in peers:
            self._merge(peer, municipal)
        for site in {peer.root.event.site for peer in peers}:
            self._absorb(municipal, site)

    # ------------------------------------------------------------------ bookkeeping
    def _new(
        self, cause: Cause, district: str, root: _Member, start: int, municipal: bool = False
    ) -> _Incident:
        incident = _Incident(f"{self._prefix}-{self._next_id}", cause, district, root, start, municipal)
        self._next_id += 1
        self._open[incident.id] = incident
        self._add(incident, root)
        return incident

    def _add(self, incident: _Incident, member: _Member) -> None:
        event = member.event
        incident.members[event.alarm_id] = member
        self._member_of[event.alarm_id] = incident
        incident.start = min(incident.start, event.at)
        here = self._by_site.setdefault(event.site, [])
        if incident not in here:
            here.append(incident)

    def _merge(self, source: _Incident, target: _Incident) -> None:
        for member in source.members.values():
            if member.event.alarm_id not in target.members:
                self._add(target, member)
        target.start = min(target.start, source.start)
        source.merged_into = target
        self._merged[source.id] = target
        self._forget(source)

    def _close(self, incident: _Incident, end: int) -> None:
        incident.end = end
        self._forget(incident)
        for alarm_id in incident.members:
            if self._member_of.get(alarm_id) is incident:
                del self._member_of[alarm_id]
        if self._municipal.get((incident.district, incident.cause)) is incident:
            del self._municipal[(incident.district, incident.cause)]
        self._closed[incident.id] = incident
        while len(self._closed) > self._keep:
            del self._closed[next(iter(self._closed))]

    def _forget(self, incident: _Incident) -> None:
        self._open.pop(incident.id, None)
        for site in incident.sites:
            here = self._by_site.get(site)
            if here is not None and incident in here:
                here.remove(incident)
                if not here:
                    del self._by_site[site]

    # ------------------------------------------------------------------ queries
    def get(self, incident_id: str) -> Incident:
        """An incident by id (a merged one gives the incident it merged into); KeyError if unknown."""
        incident = (
            self._open.get(incident_id) or self._closed.get(incident_id) or self._merged.get(incident_id)
        )
        if incident is None:
            raise KeyError(incident_id)
        return self._snapshot(_final(incident))

    def incidents(self, site: str | None = None, open_only: bool = False) -> list[Incident]:
        """Open (and unless ``open_only`` recently closed) incidents, oldest first."""
        pool = list(self._open.values()) + ([] if open_only else list(self._closed.values()))
        found = [i for i in pool if site is None or site in i.sites]
        return [self._snapshot(i) for i in sorted(found, key=lambda i: (i.start, i.id))]

    def incident_of(self, alarm_id: str) -> Incident | None:
        incident = self._member_of.get(alarm_id)
        return None if incident is None else self._snapshot(incident)

    @staticmethod
    def _snapshot(incident: _Incident) -> Incident:
        root = incident.root.event
        members = list(incident.members.values())
        sites = incident.sites
        if incident.municipal:
            sites = sorted(sites)
        kind, en, zh = KINDS[incident.cause]
        if incident.municipal:
            kind, en, zh = DISTRICT_KINDS.get(
                incident.cause, (f"municipal_{kind}", "District {district}, {rooms} rooms: " + en, zh)
            )
        text: Text = root.text
        values = {
            "site": root.site,
            "device": root.device or "(whole room: gateway or network)",
            "point": root.point,
            "district": incident.district,
            "rooms": len(sites),
            "text": text.en,
            "text_zh": text.zh,
        }
        return Incident(
            id=incident.id,
            root_cause=RootCause(kind, en.format(**values), zh.format(**values)),
            district=incident.district,
            sites=tuple(sites),
            devices=tuple(dict.fromkeys(d for d in [root.device, *(m.event.device for m in members)] if d)),
            points=tuple(dict.fromkeys(m.event.point for m in members if m.event.point)),
            alarms=tuple(incident.members),
            root_alarm=root.alarm_id,
            start=incident.start,
            end=incident.end,
            announced=sum(1 for m in members if m.announced),
        )


def _final(incident: _Incident) -> _Incident:
    while incident.merged_into is not None:
        incident = incident.merged_into
    return incident
