"""Rules compiled for evaluation: for each point path, the checks a reading of that path must run.

Rules:
- A ``Check`` is one alarm's evaluation: a rule bound to its subject (a point, a device, or the room)
  with its thresholds pre-computed, and a ``slot`` that indexes every room's per-check state list.
- One ``Plan`` per distinct ``RoomRules``: rooms with equal rules share it, so 5,000 rooms cost one
  index. It compiles lazily, one path at a time, the first time any room reports the path; wildcards
  bind then (``vfd3/Fault`` appears → vfd3's drive-fault check), and room-level aggregates
  (``vfd*/Running`` all false) gain the new path as a member.
- ``PointPlan.checks`` lists every check that reads the path (its own rules, deviations that use it as
  reference, aggregates it belongs to); ``suppressors`` the checks whose design suppression reads it.
- Instrument span: from the register maps (``tapline/registers/maps``) unless the caller passes spans.
- No per-room state and no time here: that is ``engine``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from fnmatch import fnmatchcase
from functools import cache

from tapline.alarms.rules import Condition, Hours, RoomRules, Rule
from tapline.registers.layout import layout_points, standard_layout

Span = tuple[float | None, float | None]


class Kind(IntEnum):
    LIMIT = 0
    DEVIATION = 1
    RATE = 2
    DISCRETE = 3
    AGGREGATE = 4
    INSTRUMENT = 5
    COMMS_DEVICE = 6
    COMMS_ROOM = 7
    PUMP_CURVE = 8
    REFILL = 9
    FLATLINE = 10


_STEADY = frozenset({Kind.DEVIATION, Kind.DISCRETE, Kind.AGGREGATE, Kind.PUMP_CURVE})
"""Kinds whose verdict is a function of the room's latest values, its facts and the hysteresis alone:
no clock (unless working hours), no memory of past samples. Re-evaluating one on a reading that changed
nothing gives the verdict it already has, so the engine skips it (``AlarmEngine``, ``skip_unchanged``).
RATE, FLATLINE and REFILL remember samples and time; LIMIT and INSTRUMENT have their own fast paths."""


@dataclass(slots=True, eq=False)
class Check:
    """One alarm's evaluation, shared by every room of a plan. Fields by kind:

    LIMIT/DEVIATION: ``high``, raise beyond ``on``, clear back inside ``off`` (deviation: distance from
    ``reference``). RATE: ``high`` = rising, ``on`` = units per ms, ``window_ms``, ``smoothing_ms``.
    DISCRETE/AGGREGATE: ``high`` = the alarm value, ``hours`` = working hours (no alarm then),
    ``members`` = aggregated paths.
    PUMP_CURVE: raise beyond ``on`` MPa from the pumps' pressure, clear inside ``off``; ``reference`` =
    the flow, ``suction`` = the suction point, ``members`` = the pumps' frequencies. REFILL: raise
    below ``on`` inflow share, clear above ``off``; ``reference`` = the flow. FLATLINE: unchanged within
    ``on`` for ``window_ms``.
    """

    slot: int
    rule: Rule
    kind: Kind
    subject: str
    device: str = ""
    point: str = ""
    high: bool = True
    on: float = 0.0
    off: float = 0.0
    reference: str = ""
    suction: str = ""
    window_ms: int = 0
    smoothing_ms: int = 0
    hours: Hours | None = None
    on_delay: int = 0
    off_delay: int = 0
    suppress: tuple[tuple[str, Condition], ...] = ()
    members: list[str] = field(default_factory=list)
    all_members: bool = True
    steady: bool = False  # the verdict depends only on the room's latest values (see ``_STEADY``)


@dataclass(slots=True, eq=False)
class PointPlan:
    """What a reading of one path means: its device, span, instrument check and process checks."""

    path: str
    device: str
    absent: bool = False
    above: float = -math.inf  # a GOOD reading must be above this (the span's low end, just below it
    upto: float = math.inf  # unless the span has a live zero) and at most this (the span's high end)
    instrument: Check | None = None
    checks: list[Check] = field(default_factory=list)
    suppressors: list[Check] = field(default_factory=list)


@cache
def standard_spans() -> dict[str, Span]:
    """Engineering spans of the standard room's points (eight pumps' worth of drives)."""
    return {p.path: (p.low, p.high) for p in layout_points(standard_layout(8))}


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class Plan:
    """The compiled index of one ``RoomRules``."""

    def __init__(self, rules: RoomRules, spans: Mapping[str, Span] | None = None) -> None:
        self.rules = rules
        self.spans = standard_spans() if spans is None else spans
        self.checks: list[Check] = []
        self.paths: dict[str, PointPlan] = {}
        self.devices: dict[str, Check | None] = {}
        self._watchers: dict[str, list[Check]] = {}
        self._suppressors: dict[str, list[Check]] = {}
        self._aggregates: list[Check] = []
        self._multi: list[tuple[Check, tuple[str, ...]]] = []
        self.room_check: Check | None = None
        for rule in rules.rules:
            if rule.kind == "comms" and rule.scope == "room":
                self.room_check = self._new(rule, Kind.COMMS_ROOM, "")
            elif rule.kind == "pump_curve":
                device = rule.point.partition("/")[0]
                check = self._new(
                    rule,
                    Kind.PUMP_CURVE,
                    rule.point,
                    device,
                    point=rule.point,
                    on=rule.tolerance,
                    off=rule.tolerance * 0.75,
                    reference=rule.flow,
                    suction=rule.suction,
                )
                self._multi.append((check, (rule.point, rule.flow, rule.suction, rule.frequency)))
            elif rule.kind == "refill":
                device = rule.point.partition("/")[0]
                check = self._new(
                    rule,
                    Kind.REFILL,
                    rule.point,
                    device,
                    point=rule.point,
                    on=rule.max_inflow_share,
                    off=min(rule.max_inflow_share + 0.2, 1.0),
                    reference=rule.flow,
                    window_ms=_ms(rule.max_window_s),
                )
                self._multi.append((check, (rule.point, rule.flow)))
            elif rule.kind == "discrete" and rule.aggregate != "each":
                check = self._new(
                    rule, Kind.AGGREGATE, "", point=rule.point, high=rule.alarm_when, hours=rule.working_hours
                )
                check.all_members = rule.aggregate == "all"
                self._aggregates.append(check)

    def _new(self, rule: Rule, kind: Kind, subject: str, device: str = "", **values: object) -> Check:
        check = Check(len(self.checks), rule, kind, subject, device, **values)  # type: ignore[arg-type]
        check.on_delay, check.off_delay = _ms(rule.on_delay_s), _ms(rule.off_delay_s)
        check.steady = kind in _STEADY and check.hours is None
        check.suppress = tuple((c.point.replace("{device}", device), c) for c in rule.suppressed_when)
        for path, _ in check.suppress:
            self._suppressors.setdefault(path, []).append(check)  # the list PointPlan.suppressors shares
        self.checks.append(check)
        return check

    def _watch(self, path: str, check: Check) -> None:
        self._watchers.setdefault(path, []).append(check)  # the list PointPlan.checks shares

    def device(self, name: str) -> Check | None:
        """The device's communication check (compiled on first sight of the device)."""
        if name not in self.devices:
            rule = next(
                (
                    r
                    for r in self.rules.rules
                    if r.kind == "comms" and r.scope == "device" and fnmatchcase(name, r.devices)
                ),
                None,
            )
            self.devices[name] = None if rule is None else self._new(rule, Kind.COMMS_DEVICE, name, name)
        return self.devices[name]

    def point(self, path: str) -> PointPlan:
        """The plan for ``path``, compiling it on first use."""
        plan = self.paths.get(path)
        return plan if plan is not None else self._compile(path)

    def _compile(self, path: str) -> PointPlan:
        device = path.partition("/")[0]
        self.device(device)
        plan = PointPlan(path, device, absent=path in self.rules.absent_points)
        self.paths[path] = plan
        if plan.absent:
            return plan
        model = path if not device.startswith("vfd") else "vfd1/" + path.partition("/")[2]
        low, high = self.spans.get(path, self.spans.get(model, (None, None)))
        if low is not None:
            plan.above = math.nextafter(low, -math.inf)
        if high is not None:
            plan.upto = high
        for rule in self.rules.rules:
            self._bind(rule, path, device, plan)
        for check in self._aggregates:
            if fnmatchcase(path, check.point):
                check.members.append(path)
                self._watch(path, check)
        for check, patterns in self._multi:
            if any(fnmatchcase(path, pattern) for pattern in patterns):
                if check.kind is Kind.PUMP_CURVE and fnmatchcase(path, patterns[-1]):
                    check.members.append(path)
                self._watch(path, check)
        plan.checks = self._watchers.setdefault(path, [])
        plan.suppressors = self._suppressors.setdefault(path, [])
        return plan

    def _bind(self, rule: Rule, path: str, device: str, plan: PointPlan) -> None:
        if rule.kind == "instrument":
            if any(fnmatchcase(path, pattern) for pattern in rule.points):
                plan.instrument = self._new(rule, Kind.INSTRUMENT, path, device, point=path)
                if path in rule.live_zero and plan.above > -math.inf:
                    plan.above = math.nextafter(plan.above, math.inf)  # the low end itself is a broken loop
            return
        if (
            rule.kind == "comms"
            or rule.kind == "pump_curve"
            or rule.kind == "refill"
            or (rule.kind == "discrete" and rule.aggregate != "each")
        ):
            return
        if not fnmatchcase(path, rule.point):
            return
        if rule.kind == "limit":
            sign = -1.0 if rule.direction == "high" else 1.0
            check = self._new(
                rule,
                Kind.LIMIT,
                path,
                device,
                point=path,
                high=rule.direction == "high",
                on=rule.limit,
                off=rule.limit + sign * rule.deadband,
            )
        elif rule.kind == "deviation":
            reference = rule.reference.replace("{device}", device)
            check = self._new(
                rule,
                Kind.DEVIATION,
                path,
                device,
                point=path,
                high=rule.direction == "high",
                on=rule.offset,
                off=rule.offset - rule.deadband,
                reference=reference,
            )
            self._watch(reference, check)
        elif rule.kind == "flatline":
            check = self._new(
                rule, Kind.FLATLINE, path, device, point=path, on=rule.band, window_ms=_ms(rule.window_s)
            )
        elif rule.kind == "rate":
            check = self._new(
                rule,
                Kind.RATE,
                path,
                device,
                point=path,
                high=rule.direction == "rise",
                on=rule.per_minute / 60_000.0,
                window_ms=_ms(rule.window_s),
                smoothing_ms=_ms(rule.smoothing_s),
            )
        else:
            check = self._new(
                rule, Kind.DISCRETE, path, device, point=path, high=rule.alarm_when, hours=rule.working_hours
            )
        self._watch(path, check)
