"""One room's evaluation state, and the pure verdicts the engine asks of it.

Rules:
- ``RoomState`` holds what the engine must remember per room: its facts (``values`` from its profile:
  tank area, pump curve; see ``profiles``), the latest value of every point with its quality, one
  ``CheckState`` per compiled check (indexed by the check's slot), the live alarm of each check, the
  devices' liveness, and whether the room is in maintenance or cut off.
- ``condition`` answers "is this check's condition true at ``ts``?": True, False, or None when an input
  is missing, STALE, BAD or out of span (the engine then freezes the check). It touches only the
  check's own memory (a rate's reference sample and smoothing, a tank's mass balance, a frozen
  reading's anchor). A check whose room lacks the facts it needs (no pump curve, no tank) is False.
- ``suppressed`` answers "does design suppression hold for this check now?". Conditions read GOOD or
  STALE values (the last thing known) and never BAD or UNCERTAIN ones; unknown never suppresses, so a
  doubtful input shows an alarm rather than hiding one. Device comms alarms are also suppressed while
  the whole room is lost: one room alarm says it. The engine uses it two ways: as a gate, an alarm not
  raised yet is not raised while suppression holds (no instance, no journal row: 15,000 standby pumps
  at 0 A would otherwise each keep a suppressed alarm, and a pump starting would announce its low
  current before the motor draws any); an alarm already raised moves to and from ``suppressed``
  through the state table, recorded.
- ``recheck_at`` says when time alone could change a verdict that no new reading will revisit (a door
  open at 17:59; a fall that stopped, so RBE sends nothing more).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from tapline.alarms.events import Alarm, AlarmEvent
from tapline.alarms.model import AlarmState, Transition
from tapline.alarms.plan import Check, Kind, Plan
from tapline.domain.model import Quality, Value

M_PER_MPA = 101.97
"""Metres of water column per MPa."""
WATER_MPA_PER_M = 1.0 / M_PER_MPA


@dataclass(slots=True)
class PointValue:
    value: Value
    ts: int
    quality: Quality
    ok: bool  # GOOD, numeric and inside the span: process checks may read it


@dataclass(slots=True)
class CheckState:
    raw: bool = False  # the condition as last evaluated
    cond: bool = False  # the condition as committed, after delays
    since: int = 0  # when ``raw`` last changed
    due: int = -1  # the commit timer in force (-1: none)
    recheck: int = -1  # the re-evaluation timer in force (-1: none)
    ref_value: float = 0.0  # rate of change, refill: the reference sample
    ref_ts: int = -1
    volume: float = 0.0  # refill: m³ drawn since the reference sample
    flow: float = 0.0  # refill: the flow in force since ``flow_ts`` (m³/h)
    flow_ts: int = -1
    smooth: float = 0.0  # rate with smoothing: the smoothed value, and the reading held since held_ts
    held: float = 0.0
    held_ts: int = -1


@dataclass(slots=True, eq=False)
class LiveAlarm:
    """An alarm instance between its activation and its return to normal."""

    id: str
    room: RoomState
    check: Check
    state: AlarmState
    value: Value | None
    since: int
    changed: int
    grouped: bool = False  # hidden because an incident explains it (see ``engine``)

    def event(self, record: Transition) -> AlarmEvent:
        """The journal row of ``record`` (just applied to this alarm)."""
        check, rule, room = self.check, self.check.rule, self.room
        point = check.point if check.kind is not Kind.AGGREGATE else ""
        return AlarmEvent(
            self.id,
            room.site,
            room.district,
            rule.id,
            check.subject,
            check.device,
            point,
            rule.priority,
            rule.cause,
            rule.supply,
            record,
            self.state,
            self.value,
            rule.text,
        )

    def view(self) -> Alarm:
        check, rule, state = self.check, self.check.rule, self.state
        return Alarm(
            self.id,
            self.room.site,
            self.room.district,
            rule.id,
            check.subject,
            check.device,
            check.point if check.kind is not Kind.AGGREGATE else "",
            rule.priority,
            rule.cause,
            state.phase,
            state.active,
            self.since,
            self.changed,
            self.value,
            rule.text,
            state.shelf.until if state.shelf is not None else None,
        )


@dataclass(slots=True, eq=False)
class DeviceLink:
    check: Check | None
    seen: int = 0
    lost: bool = False


class RoomState:
    """Everything the engine remembers about one room."""

    __slots__ = (
        "alarms",
        "devices",
        "district",
        "node_lost",
        "out_of_service",
        "plan",
        "points",
        "site",
        "states",
        "values",
    )

    def __init__(
        self, site: str, district: str, plan: Plan, values: Mapping[str, float] | None = None
    ) -> None:
        self.site, self.district, self.plan = site, district, plan
        self.values: dict[str, float] = dict(values or {})
        self.points: dict[str, PointValue] = {}
        self.states: list[CheckState | None] = []
        self.alarms: dict[int, LiveAlarm] = {}
        self.devices: dict[str, DeviceLink] = {}
        self.out_of_service = False
        self.node_lost = False

    def state(self, slot: int) -> CheckState:
        states = self.states
        if slot >= len(states):
            states.extend([None] * (slot + 1 - len(states)))
        st = states[slot]
        if st is None:
            st = states[slot] = CheckState()
        return st

    def device(self, name: str, now_ms: int) -> DeviceLink:
        link = self.devices.get(name)
        if link is None:
            link = self.devices[name] = DeviceLink(self.plan.device(name), now_ms)
        return link

    def mark_stale(self, device: str | None) -> list[str]:
        """Mark the points of ``device`` (None: of every device) STALE; their paths."""
        prefix = "" if device is None else device + "/"
        paths = [path for path in self.points if path.startswith(prefix)]
        for path in paths:
            point = self.points[path]
            point.ok, point.quality = False, Quality.STALE
        return paths

    @property
    def cut_off(self) -> bool:
        """The node is dead, or its devices are lost together (the room comms rule says how many)."""
        if self.node_lost:
            return True
        devices = self.devices
        lost = sum(1 for d in devices.values() if d.lost)
        if lost == 0:
            return False
        check = self.plan.room_check
        rule = check.rule if check is not None else None
        if rule is None or rule.kind != "comms":
            return lost == len(devices)
        return lost >= rule.lost_min and lost >= rule.lost_share * len(devices)


def condition(room: RoomState, check: Check, st: CheckState, ts: int) -> bool | None:
    """The check's condition at ``ts`` from the room's latest values (None: cannot tell)."""
    kind = check.kind
    points = room.points
    if kind is Kind.AGGREGATE:
        return _aggregate(room, check, ts)
    if kind is Kind.COMMS_ROOM:
        return room.cut_off
    if kind is Kind.COMMS_DEVICE:
        link = room.devices.get(check.device)
        return link is not None and link.lost
    if kind is Kind.PUMP_CURVE:
        return _pump_curve(room, check, st)
    if kind is Kind.REFILL:
        return _refill(room, check, st, ts)
    point = points.get(check.point)
    if point is None:
        return None
    if kind is Kind.INSTRUMENT:
        return None if point.quality is Quality.STALE else not point.ok
    if not point.ok:
        return None
    value = float(point.value)  # ok implies a number
    if kind is Kind.LIMIT:
        limit = check.off if st.raw else check.on
        return value > limit if check.high else value < limit
    if kind is Kind.DEVIATION:
        reference = points.get(check.reference)
        if reference is None or not reference.ok:
            return None
        distance = value - float(reference.value) if check.high else float(reference.value) - value
        return distance > (check.off if st.raw else check.on)
    if kind is Kind.FLATLINE:
        if st.ref_ts < 0 or ts < st.ref_ts or abs(value - st.ref_value) > check.on:
            st.ref_value, st.ref_ts = value, ts
            return False
        return ts - st.ref_ts >= check.window_ms
    if kind is Kind.RATE:
        if check.smoothing_ms:
            value = _smooth(st, value, ts, check.smoothing_ms)
        if st.ref_ts < 0 or ts < st.ref_ts:
            st.ref_value, st.ref_ts = value, ts
            return st.raw
        elapsed = ts - st.ref_ts
        if elapsed < check.window_ms:
            return st.raw
        rate = (value - st.ref_value) / elapsed
        st.ref_value, st.ref_ts = value, ts
        return rate > check.on if check.high else -rate > check.on
    return (bool(value) is check.high) and not (check.hours is not None and check.hours.contains(ts))


def _aggregate(room: RoomState, check: Check, ts: int) -> bool | None:
    if not check.members:
        return None
    matches = 0
    for path in check.members:
        point = room.points.get(path)
        if point is None:
            continue  # a pump that never reported (another room's vfd4) takes no part
        if not point.ok:
            return None
        matches += bool(point.value) is check.high
    seen = sum(1 for path in check.members if path in room.points)
    if seen == 0:
        return None
    hit = matches == seen if check.all_members else matches > 0
    return hit and not (check.hours is not None and check.hours.contains(ts))


def _smooth(st: CheckState, value: float, ts: int, tau_ms: int) -> float:
    """First-order smoothing of a value held between readings (a report by exception holds it)."""
    if st.held_ts < 0:
        st.smooth = st.held = value
        st.held_ts = ts
        return value
    if ts > st.held_ts:
        st.smooth = st.held + (st.smooth - st.held) * math.exp(-(ts - st.held_ts) / tau_ms)
        st.held_ts = ts
    st.held = value
    return st.smooth


def _good(room: RoomState, path: str) -> float | None:
    point = room.points.get(path)
    return float(point.value) if point is not None and point.ok else None


def _pump_curve(room: RoomState, check: Check, st: CheckState) -> bool | None:
    """Whether the pressure reading is further from the pumps' curve than the tolerance (module rules
    of ``rules.PumpCurveRule``); None while the pumps are not in steady running or an input is bad."""
    rule = check.rule
    assert rule.kind == "pump_curve"
    shutoff, curve_k = room.values.get(rule.shutoff_head_value), room.values.get(rule.curve_k_value)
    if shutoff is None or curve_k is None:
        return False  # this room's profile gives no pump curve
    reading, flow, suction = (
        _good(room, check.point),
        _good(room, check.reference),
        _good(room, check.suction),
    )
    if reading is None or flow is None or suction is None:
        return None
    speeds = []
    for path in check.members:
        point = room.points.get(path)
        if point is None:
            continue
        if not point.ok:
            return None
        if float(point.value) > 0.5:
            speeds.append(float(point.value))
    if not speeds:
        return False  # no pump turns: nothing to compare with
    if min(speeds) < rule.min_hz or max(speeds) - min(speeds) > rule.speed_spread_hz:
        return None  # starting, stopping or staging: the curve does not describe the moment
    pumps = len(speeds)
    scale = sum(speeds) / pumps / 50.0
    per_pump = flow / pumps
    head = shutoff * scale * scale - curve_k * per_pump * per_pump
    if head <= 0.0:
        return None  # past the end of the curve: the check valves decide, not the curve
    inlet = suction * WATER_MPA_PER_M if rule.suction_is_level else suction
    expected = inlet + head / M_PER_MPA
    slack = (
        2.0 * curve_k * per_pump / pumps * rule.flow_uncertainty_m3h
        + 2.0 * shutoff * scale / 50.0 * rule.speed_uncertainty_hz
    ) / M_PER_MPA  # how far the reported flow and speed may be from the true ones, in MPa
    return abs(reading - expected) > (check.off if st.raw else check.on) + slack


def _refill(room: RoomState, check: Check, st: CheckState, ts: int) -> bool | None:
    """Whether the tank's inflow fell below its share of what the pumps drew over the last window
    (module rules of ``rules.RefillRule``); the verdict changes only when a window completes."""
    rule = check.rule
    assert rule.kind == "refill"
    area, top = room.values.get(rule.area_value), room.values.get(rule.top_value)
    if area is None or top is None or area <= 0:
        return False  # this room's profile gives no tank
    level, flow = _good(room, check.point), _good(room, check.reference)
    if level is None or flow is None:
        return None
    if st.flow_ts >= 0 and ts > st.flow_ts:
        st.volume += st.flow * (ts - st.flow_ts) / 3_600_000
    if ts >= st.flow_ts:
        st.flow, st.flow_ts = flow, ts
    if st.ref_ts < 0 or ts < st.ref_ts or level >= top - rule.margin_m:
        st.ref_value, st.ref_ts, st.volume = level, ts, 0.0
        return False if level >= top - rule.margin_m else st.raw
    drawn = st.volume
    if drawn < area * rule.window_level_m:
        if ts - st.ref_ts > check.window_ms:
            st.ref_value, st.ref_ts, st.volume = level, ts, 0.0  # too little drawn to judge: start again
        return st.raw
    share = (drawn + area * (level - st.ref_value)) / drawn
    st.ref_value, st.ref_ts, st.volume = level, ts, 0.0
    return share < (check.off if st.raw else check.on)


def suppressed(room: RoomState, check: Check) -> bool:
    """Whether design suppression hides the check's alarm now."""
    if check.kind is Kind.COMMS_DEVICE and room.cut_off:
        return True
    points = room.points
    for path, rule in check.suppress:
        point = points.get(path)
        if point is None or point.quality in (Quality.BAD, Quality.UNCERTAIN) or isinstance(point.value, str):
            continue
        if rule.holds(point.value):
            return True
    return False


def verdict(room: RoomState, check: Check, st: CheckState, ts: int) -> bool | None:
    """The condition, gated by design suppression for an alarm not raised yet."""
    raw = condition(room, check, st, ts)
    if raw and check.slot not in room.alarms and suppressed(room, check):
        return False
    return raw


def value_of(room: RoomState, check: Check) -> Value | None:
    """The value an alarm reports: its point's latest (none for room-level alarms)."""
    point = room.points.get(check.point) if check.point and check.kind is not Kind.AGGREGATE else None
    return None if point is None else point.value


def recheck_at(room: RoomState, check: Check, st: CheckState, ts: int) -> int | None:
    """When to evaluate the check again with no new reading, if time alone may change its verdict."""
    if check.kind is Kind.RATE:
        if st.raw:
            return ts + check.window_ms  # to see the rate fall back to zero when readings stop
        point = room.points.get(check.point)
        if point is not None and point.ok and st.ref_ts >= 0 and point.value != st.ref_value:
            return st.ref_ts + check.window_ms  # a change not judged yet: judge it when the window is full
        return None
    if check.kind is Kind.FLATLINE:
        return None if st.raw or st.ref_ts < 0 else st.ref_ts + check.window_ms  # RBE sends nothing more
    if check.hours is not None and check.kind in (Kind.DISCRETE, Kind.AGGREGATE):
        return check.hours.next_change(ts)
    return None
