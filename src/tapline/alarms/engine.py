"""The alarm engine: rules evaluated on batches of readings, alarms moved only through the state table.

Rules:
- Pure-ish: no clock, no IO, no logging. Readings carry their timestamps, the caller passes ``now_ms``
  and calls ``tick(now_ms)`` (about once a second) for what time alone decides: on/off delays, timed
  shelves, devices silent too long, working-hours boundaries, rates that went quiet. Every state
  change comes back as an ``AlarmEvent`` (one per transition) for the journal, push, notifier and
  correlator.
- One alarm instance per (room, rule, subject) at a time: it lives from activation until it is back
  to normal, in the room's slot for its check, so a second batch milliseconds later finds it.
- Quality first: a STALE reading marks its device lost (one comms alarm per device; one per room when
  the node or every device is lost, which suppresses the device ones). A BAD/UNCERTAIN reading, or
  one outside its span or at the bottom of a live-zero span, raises one instrument alarm for the
  point. Process checks that read such a point freeze: they keep their state and drop a pending delay.
- A reading older than the last one evaluated for its point is ignored. Historical (backfilled) data
  must not be fed here: alarms are about now.
- A reading equal to the point's last one (value and quality) skips the checks whose verdict depends on
  the room's latest values alone (``plan._STEADY``: deviations, discretes and aggregates without working
  hours, pump curves) when nothing is pending on them: a full-refresh stream (every point every
  second) would otherwise re-run each of them per input per second for the same answer. Every change
  of an input, of a suppressor (``_resuppress``) or of the check's own state still evaluates it.
  ``skip_unchanged=False`` evaluates everything every time: the reference the differential test
  compares with.
- Delays run on reading timestamps (edge and cloud clocks are NTP-synchronised); a commit is dated
  when its delay ran out. Design suppression is decided when an alarm activates and again whenever a
  point it reads changes; it reads GOOD or STALE values (the last thing known), never BAD ones.
- Grouping (optional, normally the ``Correlator``): it sees every event the moment it happens
  (``take``), so its incidents are current within a batch or a tick; and when an alarm is first
  raised, the engine asks it whether an open incident already explains that alarm (``hides``: e.g.
  the 40th room's low inlet pressure during a municipal supply event). Such an alarm is raised
  suppressed, with the incident named as the reason: recorded and grouped, not announced. Every
  ``silence_scan_ms`` the engine asks again and announces the ones no incident explains any more.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping
from typing import Protocol

from tapline.alarms import model
from tapline.alarms.events import Alarm, AlarmEvent, alarm_filter
from tapline.alarms.model import AlarmState, Event, Phase, UnknownAlarm
from tapline.alarms.plan import Check, Kind, Plan, PointPlan, Span
from tapline.alarms.room import (
    CheckState,
    DeviceLink,
    LiveAlarm,
    PointValue,
    RoomState,
    recheck_at,
    suppressed,
    value_of,
    verdict,
)
from tapline.alarms.rules import Cause, Priority, RoomProfile, RoomRules, Template, load_template
from tapline.domain.model import Quality, Reading, rows_of

SYSTEM = "system"
_COMMIT, _RECHECK, _SHELF = 0, 1, 2
_GOOD, _STALE = Quality.GOOD, Quality.STALE


class Grouping(Protocol):
    """What the engine needs from incident correlation (see the module rules)."""

    def take(self, event: AlarmEvent) -> None:
        """One event, the moment it happens."""

    def hides(self, site: str, district: str, cause: Cause, supply: bool) -> str | None:
        """Why a room's new alarm of ``cause`` needs no announcement (an open incident explains it)."""

    def tick(self, now_ms: int) -> object:
        """Time passes (incidents may close)."""


class AlarmEngine:
    """Evaluates every room's readings against its rules and keeps its alarms (see module rules)."""

    def __init__(
        self,
        template: Template | None = None,
        *,
        profiles: Mapping[str, RoomProfile] | None = None,
        spans: Mapping[str, Span] | None = None,
        id_prefix: str = "AL",
        silence_scan_ms: int = 10_000,
        grouping: Grouping | None = None,
        skip_unchanged: bool = True,
    ) -> None:
        self.template = template if template is not None else load_template()
        self._profiles = dict(profiles or {})
        self._spans = spans
        self._prefix = id_prefix
        self._plans: dict[RoomRules, Plan] = {}
        self._rooms: dict[str, RoomState] = {}
        self._by_id: dict[str, LiveAlarm] = {}
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        self._timers: list[tuple[int, int, RoomState, int, int]] = []
        self._scan_every = silence_scan_ms
        self._next_scan = 0
        self.grouping = grouping
        self._grouped: dict[str, LiveAlarm] = {}
        self._maintenance: set[str] = set()  # rooms out of service, also before the engine met them
        self._skip_unchanged = skip_unchanged

    # ------------------------------------------------------------------ rooms
    def configure(self, site: str, district: str, profile: RoomProfile | None = None) -> None:
        """Give a room its profile (rule overrides and its facts, ``RoomProfile.values``); it starts
        afresh (ValueError while it has live alarms)."""
        room = self._rooms.get(site)
        if room is not None and room.alarms:
            raise ValueError(f"{site} has live alarms: re-configure it once they are gone")
        self._profiles[site] = profile if profile is not None else RoomProfile()
        self._rooms.pop(site, None)
        self._room(site, district)

    def _room(self, site: str, district: str) -> RoomState:
        room = self._rooms.get(site)
        if room is None:
            profile = self._profiles.get(site)
            rules = self.template.for_room(profile)
            plan = self._plans.get(rules)
            if plan is None:
                plan = self._plans[rules] = Plan(rules, self._spans)
            values = profile.values if profile is not None else None
            room = self._rooms[site] = RoomState(site, district, plan, values)
            room.out_of_service = site in self._maintenance
        return room

    # ------------------------------------------------------------------ inputs
    def evaluate(
        self, site: str, district: str, readings: Iterable[Reading], now_ms: int
    ) -> list[AlarmEvent]:
        """Evaluate one batch of a room's live readings; the alarm events it caused, in order."""
        out: list[AlarmEvent] = []
        room = self._room(site, district)
        plan, points, devices = room.plan, room.points, room.devices
        paths, states, skip = plan.paths, room.states, self._skip_unchanged
        for path, ts, value, quality in rows_of(readings):
            pp = paths.get(path)
            if pp is None:
                pp = plan.point(path)
            if pp.absent:
                continue
            point = points.get(path)
            if point is None:
                point = points[path] = PointValue(value, ts, quality, False)
                changed = True
            elif ts < point.ts:
                continue
            else:
                changed = value != point.value or quality is not point.quality
            device = devices.get(pp.device) or room.device(pp.device, now_ms)
            device.seen = now_ms
            if quality is _STALE:
                point.value, point.ts, point.quality, point.ok = value, ts, quality, False
                if not device.lost:
                    self._device_link(room, device, False, ts, out)
                self._freeze(room, pp, ts, out)
                continue
            if device.lost:
                self._device_link(room, device, True, ts, out)
            ok = quality is _GOOD and not isinstance(value, str) and pp.above < value <= pp.upto
            point.value, point.ts, point.quality, point.ok = value, ts, quality, ok
            instrument = pp.instrument
            if instrument is not None:
                ist = states[instrument.slot] if instrument.slot < len(states) else None
                if ist is None or ok is ist.raw or ist.raw is not ist.cond:  # else: healthy, unchanged
                    self._step(room, instrument, room.state(instrument.slot), not ok, ts, out)
            for check in pp.checks:
                slot = check.slot
                st = states[slot] if slot < len(states) else None
                if st is None:
                    st = room.state(slot)
                if check.kind is Kind.LIMIT and ok:
                    limit = check.off if st.raw else check.on
                    raw: bool | None = value > limit if check.high else value < limit  # type: ignore[operator]
                    if raw is st.raw and raw is st.cond:
                        continue
                    if raw and check.suppress and slot not in room.alarms and suppressed(room, check):
                        raw = False
                elif not changed and check.steady and st.raw is st.cond and skip:
                    continue  # nothing it reads has changed since its last verdict, and nothing pends
                else:
                    raw = verdict(room, check, st, ts)
                self._step(room, check, st, raw, ts, out)
            if changed and pp.suppressors:
                self._resuppress(room, pp.suppressors, ts, out)
        return out

    def link(
        self, site: str, district: str, device: str | None, online: bool, now_ms: int
    ) -> list[AlarmEvent]:
        """A Sparkplug birth (``online``) or death of the room's node (``device`` None) or of a device."""
        out: list[AlarmEvent] = []
        room = self._room(site, district)
        if not online:  # its values are now the last known ones: STALE, and nothing pending on them
            for path in room.mark_stale(device):
                self._freeze(room, room.plan.point(path), now_ms, out)
        if device is None:
            room.node_lost = not online
            self._room_link(room, now_ms, out)
            return out
        entry = room.device(device, now_ms)
        entry.seen = now_ms
        if entry.lost is online:
            self._device_link(room, entry, online, now_ms, out)
        return out

    def tick(self, now_ms: int) -> list[AlarmEvent]:
        """Commit what time alone decides, up to ``now_ms``."""
        out: list[AlarmEvent] = []
        timers = self._timers
        while timers and timers[0][0] <= now_ms:
            due, _, room, slot, what = heapq.heappop(timers)
            if self._rooms.get(room.site) is not room:
                continue  # re-configured since
            check = room.plan.checks[slot]
            st = room.state(slot)
            if what == _COMMIT and st.due == due:
                st.due = -1
                if st.raw is not st.cond:
                    self._commit(room, check, st, st.raw, due, out)
            elif what == _RECHECK and st.recheck == due:
                st.recheck = -1
                self._step(room, check, st, verdict(room, check, st, due), due, out)
            elif what == _SHELF:
                alarm = room.alarms.get(slot)
                shelf = alarm.state.shelf if alarm is not None else None
                if alarm is not None and shelf is not None and shelf.until == due:
                    self._apply(alarm, Event.SHELVE_EXPIRED, due, SYSTEM, "shelving time ran out", out)
        if now_ms >= self._next_scan:
            self._next_scan = now_ms + self._scan_every
            self._scan_silence(now_ms, out)
            if self.grouping is not None:
                self.grouping.tick(now_ms)
                self._regroup(now_ms, out)
        return out

    def _regroup(self, now_ms: int, out: list[AlarmEvent]) -> None:
        """Announce grouped alarms that no incident explains any more."""
        grouping = self.grouping
        assert grouping is not None
        for alarm in list(self._grouped.values()):
            room, rule = alarm.room, alarm.check.rule
            if grouping.hides(room.site, room.district, rule.cause, rule.supply) is not None:
                continue
            alarm.grouped = False
            del self._grouped[alarm.id]
            if alarm.state.suppressed and not suppressed(room, alarm.check):
                self._apply(alarm, Event.UNSUPPRESS, now_ms, SYSTEM, "no open incident explains it", out)

    def _scan_silence(self, now_ms: int, out: list[AlarmEvent]) -> None:
        for room in self._rooms.values():
            if room.node_lost:
                continue
            for device in room.devices.values():
                check = device.check
                if check is None or device.lost or check.rule.kind != "comms":
                    continue
                silent = check.rule.silent_after_s
                if silent is not None and now_ms - device.seen > silent * 1000:
                    self._device_link(room, device, False, now_ms, out)

    # ------------------------------------------------------------------ operator actions
    def ack(self, alarm_id: str, user: str, now_ms: int, reason: str = "") -> AlarmEvent:
        """Acknowledge; IllegalTransition if the alarm is not awaiting an acknowledgement."""
        return self._act(alarm_id, Event.ACK, user, now_ms, reason)

    def reset(self, alarm_id: str, user: str, now_ms: int, reason: str = "") -> AlarmEvent:
        """Reset a latched alarm whose condition has returned to normal."""
        return self._act(alarm_id, Event.RESET, user, now_ms, reason)

    def shelve(
        self, alarm_id: str, user: str, now_ms: int, reason: str, duration_s: float | None = None
    ) -> AlarmEvent:
        """Shelve until the condition clears (``duration_s`` None) or for ``duration_s`` (≤ rule's max)."""
        if duration_s is None:
            return self._act(alarm_id, Event.SHELVE_ONE_SHOT, user, now_ms, reason)
        return self._act(alarm_id, Event.SHELVE_TIMED, user, now_ms, reason, round(duration_s * 1000))

    def unshelve(self, alarm_id: str, user: str, now_ms: int, reason: str = "") -> AlarmEvent:
        return self._act(alarm_id, Event.UNSHELVE, user, now_ms, reason)

    def remove_from_service(self, site: str, user: str, now_ms: int, reason: str) -> list[AlarmEvent]:
        """Put a room in maintenance: its alarms, current and future, are out of service."""
        return self._service(site, True, user, now_ms, reason)

    def return_to_service(self, site: str, user: str, now_ms: int, reason: str) -> list[AlarmEvent]:
        """End a room's maintenance: its alarms settle (active ones are announced again)."""
        return self._service(site, False, user, now_ms, reason)

    def in_maintenance(self, site: str) -> bool:
        return site in self._maintenance

    def _service(self, site: str, remove: bool, user: str, now_ms: int, reason: str) -> list[AlarmEvent]:
        if remove:
            self._maintenance.add(site)
        else:
            self._maintenance.discard(site)
        room = self._rooms.get(site)
        if room is None:  # not met yet (e.g. restored at start-up): it starts out of service
            return []
        out: list[AlarmEvent] = []
        room.out_of_service = remove
        event = Event.REMOVE_FROM_SERVICE if remove else Event.RETURN_TO_SERVICE
        for alarm in list(room.alarms.values()):
            if alarm.state.out_of_service is not remove:
                self._apply(alarm, event, now_ms, user, reason, out)
        return out

    def _act(
        self, alarm_id: str, event: Event, user: str, now_ms: int, reason: str, duration_ms: int | None = None
    ) -> AlarmEvent:
        out: list[AlarmEvent] = []
        self._apply(self._alarm(alarm_id), event, now_ms, user, reason, out, duration_ms)
        return out[0]

    def _alarm(self, alarm_id: str) -> LiveAlarm:
        alarm = self._by_id.get(alarm_id)
        if alarm is None:
            raise UnknownAlarm(alarm_id)
        return alarm

    # ------------------------------------------------------------------ queries
    def get(self, alarm_id: str) -> Alarm:
        return self._alarm(alarm_id).view()

    def alarms(self, site: str | None = None, state: str = "active") -> list[Alarm]:
        """Live alarms by ``state``: active | unacked | shelved | suppressed | all (see ``events``)."""
        keep = alarm_filter(state)
        pool = self._by_id.values() if site is None else self._site_alarms(site)
        return sorted((a.view() for a in pool if keep(a.state.phase)), key=lambda a: (a.since, a.id))

    def active(self, site: str | None = None) -> list[Alarm]:
        """Alarms whose condition is active and announced (unacked- or acked-active)."""
        return self.alarms(site, "active")

    def active_counts(self, site: str) -> dict[str, int]:
        """Active alarms of a room by priority (every priority present, zero if none)."""
        counts = dict.fromkeys((p.value for p in Priority), 0)
        keep = alarm_filter("active")
        for alarm in self._site_alarms(site):
            if keep(alarm.state.phase):
                counts[alarm.check.rule.priority.value] += 1
        return counts

    def _site_alarms(self, site: str) -> Iterable[LiveAlarm]:
        room = self._rooms.get(site)
        return () if room is None else room.alarms.values()

    # ------------------------------------------------------------------ mechanics
    def _step(
        self, room: RoomState, check: Check, st: CheckState, raw: bool | None, ts: int, out: list[AlarmEvent]
    ) -> None:
        """Feed one verdict through the check's delays; commit when the delay has run out."""
        if raw is None:  # cannot tell: keep the committed state, forget a pending change
            if st.raw is not st.cond:
                st.raw, st.since, st.due = st.cond, ts, -1
            return
        if raw is not st.raw:
            st.raw, st.since = raw, ts
        again = recheck_at(room, check, st, ts)
        if again is not None and (st.recheck < 0 or again < st.recheck):
            st.recheck = again
            heapq.heappush(self._timers, (again, next(self._seq), room, check.slot, _RECHECK))
        if raw is st.cond:
            return
        due = st.since + (check.on_delay if raw else check.off_delay)
        if ts >= due:
            self._commit(room, check, st, raw, due, out)
        elif st.due != due:
            st.due = due
            heapq.heappush(self._timers, (due, next(self._seq), room, check.slot, _COMMIT))

    def _freeze(self, room: RoomState, pp: PointPlan, ts: int, out: list[AlarmEvent]) -> None:
        if pp.instrument is not None:
            self._step(room, pp.instrument, room.state(pp.instrument.slot), None, ts, out)
        for check in pp.checks:
            self._step(room, check, room.state(check.slot), None, ts, out)

    def _commit(
        self, room: RoomState, check: Check, st: CheckState, active: bool, at: int, out: list[AlarmEvent]
    ) -> None:
        st.cond, st.due = active, -1
        alarm = room.alarms.get(check.slot)
        value = value_of(room, check)
        if not active:
            if alarm is not None:
                alarm.value = value
                self._apply(alarm, Event.CLEAR, at, SYSTEM, "condition returned to normal", out)
            return
        if alarm is None:
            state, alarm_id = AlarmState(latching=check.rule.latching), f"{self._prefix}-{next(self._ids)}"
            alarm = room.alarms[check.slot] = LiveAlarm(alarm_id, room, check, state, value, at, at)
            self._by_id[alarm.id] = alarm
            if room.out_of_service:
                self._apply(alarm, Event.REMOVE_FROM_SERVICE, at, SYSTEM, "room out of service", out)
            elif self.grouping is not None:
                rule = check.rule
                why = self.grouping.hides(room.site, room.district, rule.cause, rule.supply)
                if why is not None:
                    alarm.grouped = True
                    self._grouped[alarm.id] = alarm
                    self._apply(alarm, Event.SUPPRESS, at, SYSTEM, why, out)
        alarm.value = value
        self._apply(alarm, Event.ACTIVATE, at, SYSTEM, "condition active", out)

    def _device_link(
        self, room: RoomState, link: DeviceLink, online: bool, ts: int, out: list[AlarmEvent]
    ) -> None:
        was_cut_off = room.cut_off
        link.lost = not online
        if link.check is not None:
            st = room.state(link.check.slot)
            self._step(room, link.check, st, verdict(room, link.check, st, ts), ts, out)
        if room.cut_off is not was_cut_off:
            self._room_link(room, ts, out)

    def _room_link(self, room: RoomState, ts: int, out: list[AlarmEvent]) -> None:
        check = room.plan.room_check
        if check is not None:
            st = room.state(check.slot)
            self._step(room, check, st, verdict(room, check, st, ts), ts, out)
        comms = [link.check for link in room.devices.values() if link.check is not None]
        self._resuppress(room, comms, ts, out)

    def _resuppress(self, room: RoomState, checks: Iterable[Check], ts: int, out: list[AlarmEvent]) -> None:
        for check in checks:
            alarm = room.alarms.get(check.slot)
            if alarm is None:  # not raised: let the gate decide again (a released one starts its delay)
                st = room.state(check.slot)
                self._step(room, check, st, verdict(room, check, st, ts), ts, out)
                continue
            hide = alarm.grouped or suppressed(room, check)
            if hide is not alarm.state.suppressed:
                event, why = (
                    (Event.SUPPRESS, "by design") if hide else (Event.UNSUPPRESS, "suppression ended")
                )
                self._apply(alarm, event, ts, SYSTEM, why, out)

    def _apply(
        self,
        alarm: LiveAlarm,
        event: Event,
        at: int,
        by: str,
        reason: str,
        out: list[AlarmEvent],
        duration_ms: int | None = None,
    ) -> None:
        """The one place an alarm changes state: through the model's table, with a record."""
        max_ms = round(alarm.check.rule.max_shelve_s * 1000)
        new, record = model.apply(
            alarm.state, event, at=at, by=by, reason=reason, duration_ms=duration_ms, max_shelve_ms=max_ms
        )
        alarm.state, alarm.changed = new, at
        event_record = alarm.event(record)
        out.append(event_record)
        if self.grouping is not None:
            self.grouping.take(event_record)
        check, room = alarm.check, alarm.room
        if event is Event.SHELVE_TIMED and new.shelf is not None and new.shelf.until is not None:
            heapq.heappush(self._timers, (new.shelf.until, next(self._seq), room, check.slot, _SHELF))
        if new.phase is Phase.NORMAL:
            del room.alarms[check.slot]
            del self._by_id[alarm.id]
            self._grouped.pop(alarm.id, None)
