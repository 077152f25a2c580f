"""One room's evaluation state, and the pure verdicts the engine asks of it.

Rules:
- ``RoomState`` holds what the engine must remember per room: the latest value of every point with its
  quality, one ``CheckState`` per compiled check (indexed by the check's slot), the live alarm of each
  check, the devices' liveness, and whether the room is in maintenance or cut off.
- ``condition`` answers "is this check's condition true at ``ts``?": True, False, or None when an input
  is missing, STALE, BAD or out of span (the engine then freezes the check). It touches only the
  check's own memory (a rate's reference sample).
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

from dataclasses import dataclass

from tapline.alarms.events import Alarm, AlarmEvent
from tapline.alarms.model import AlarmState, Transition
from tapline.alarms.plan import Check, Kind, Plan
from tapline.domain.model import Quality, Value


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
    ref_value: float = 0.0  # rate of change: the reference sample
    ref_ts: int = -1


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
    )

    def __init__(self, site: str, district: str, plan: Plan) -> None:
        self.site, self.district, self.plan = site, district, plan
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
        """The node is dead, or every device it knows has stopped answering."""
        return self.node_lost or (bool(self.devices) and all(d.lost for d in self.devices.values()))


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
    if kind is Kind.RATE:
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
    if check.hours is not None and check.kind in (Kind.DISCRETE, Kind.AGGREGATE):
        return check.hours.next_change(ts)
    return None
