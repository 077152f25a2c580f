"""A simulated city wired to the alarm engine the way gateways and the ingest wire a real one.

``AlarmCity`` is what the fault scenario tests and ``tapline bench faults`` run: rooms' physics
(``RoomSim``) fed by their districts' supply (``DistrictSupply``), one ``Gateway`` per room, and the
alarm engine with its correlator attached, as the cloud runs them.

Rules:
- The path measured is physics → gateway behaviour → alarm engine → correlator, in one process and on
  the simulation clock. The Modbus and MQTT/Sparkplug transport is left out; what the gateway does to
  the data is kept: fast points polled every ``fast_s``, slow ones (water quality, temperature,
  counters) every ``slow_s``; report by exception with the register maps' deadbands and a full refresh
  every ``full_refresh_s``; the edge's quality (UNCERTAIN outside the engineering range); a device
  that fails ``offline_after`` polls in a row reported lost (DDEATH) and, when it answers again,
  reborn with every value (DBIRTH).
- Time: simulated seconds since local midnight of day 0 (``RoomSim.t_s``) ↔ ms since the epoch,
  with day 0 = ``DAY0_MS`` (2025-06-02 00:00, UTC+8), so working hours and the day's demand agree.
- Faults are the simulator's own (``Fault`` with ``start_s`` in the future waits until then), logged
  in its ``GroundTruth``; nothing here decides what a fault looks like.
- Pure: no IO, no wall clock, no global random.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from tapline.alarms.correlate import Correlator
from tapline.alarms.engine import AlarmEngine
from tapline.alarms.events import AlarmEvent
from tapline.alarms.profiles import profile_for
from tapline.domain.model import Quality, Reading, Value
from tapline.registers.layout import standard_layout
from tapline.sim.district import DistrictSupply
from tapline.sim.faults import Fault, FaultKind, GroundTruth, check_fault
from tapline.sim.physics import RoomSim
from tapline.sim.spec import RoomSpec

_DRIVE_KINDS = frozenset({FaultKind.PUMP_TRIP, FaultKind.STANDBY_FAIL})
DAY0_MS = int(datetime(2025, 6, 2, tzinfo=timezone(timedelta(hours=8))).timestamp() * 1000)
"""Local midnight (Beijing time) of simulated day 0, in ms since the epoch."""


def epoch_ms(t_s: float) -> int:
    """Simulated seconds since day 0's midnight → ms since the epoch."""
    return DAY0_MS + round(t_s * 1000)


@dataclass(slots=True)
class _Point:
    path: str
    deadband: float
    low: float | None
    high: float | None
    last: Value | None = None
    sent_ms: int = -1


@dataclass(slots=True)
class _Device:
    name: str
    fast: tuple[_Point, ...]
    every: tuple[_Point, ...]
    period_s: float
    failures: int = 0
    lost: bool = False
    next_poll_s: float = 0.0


@dataclass
class GatewayOutput:
    """What one poll cycle sends: device deaths/births, then readings."""

    links: list[tuple[str, bool]] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)


class Gateway:
    """The edge gateway of one room, minus Modbus and MQTT (see the module rules).

    Report by exception is the edge's rule (``edge.rbe``), inlined for speed: a number is sent when
    it moved more than its deadband from the last value sent, anything else when it changed, and
    every point at least once per full refresh."""

    def __init__(
        self,
        room: RoomSim,
        *,
        fast_s: float = 1.0,
        slow_s: float = 60.0,
        full_refresh_s: float = 600.0,
        offline_after: int = 3,
    ) -> None:
        self.room = room
        self.fast_s, self.slow_s = fast_s, slow_s
        self.offline_after = offline_after
        self.refresh_ms = round(full_refresh_s * 1000)
        self.devices: list[_Device] = []
        for slot in standard_layout(room.spec.pumps):
            fast: list[_Point] = []
            slow: list[_Point] = []
            for point in slot.register_map.points:
                entry = _Point(f"{slot.name}/{point.name}", point.deadband, point.low, point.high)
                (fast if point.poll == "fast" else slow).append(entry)
            period = fast_s if fast else slow_s
            self.devices.append(_Device(slot.name, tuple(fast), tuple(fast + slow), period))
        self._next_slow_s = 0.0

    def poll(self, t_s: float) -> GatewayOutput:
        """One poll cycle at ``t_s``: every device whose poll is due is read (or fails)."""
        out = GatewayOutput()
        room = self.room
        answers = room.faults.device_answers
        values: dict[str, bool | int | float] | None = None
        slow_due = t_s >= self._next_slow_s
        if slow_due:
            self._next_slow_s = t_s + self.slow_s
        now = epoch_ms(t_s)
        readings = out.readings
        for device in self.devices:
            if t_s < device.next_poll_s:
                continue
            device.next_poll_s = t_s + device.period_s
            if not answers(device.name, t_s):
                device.failures += 1
                if not device.lost and device.failures >= self.offline_after:
                    device.lost = True
                    out.links.append((device.name, False))
                continue
            device.failures = 0
            reborn = device.lost
            if reborn:
                device.lost = False
                out.links.append((device.name, True))
            if values is None:
                values = room.values()
            for point in device.every if (slow_due or reborn) else device.fast:
                value = values[point.path]
                last = point.last
                if not (
                    reborn
                    or last is None
                    or now - point.sent_ms >= self.refresh_ms
                    or (
                        value != last
                        if point.deadband <= 0.0 or isinstance(value, bool)
                        else abs(value - last) > point.deadband  # type: ignore[operator]
                    )
                ):
                    continue
                point.last, point.sent_ms = value, now
                readings.append(Reading(point.path, now, value, _quality(value, point.low, point.high)))
        return out


def _quality(value: Value, low: float | None, high: float | None) -> Quality:
    """The edge's quality rule: BAD when not finite, UNCERTAIN outside the engineering range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Quality.GOOD
    if not math.isfinite(value):
        return Quality.BAD
    if (low is not None and value < low) or (high is not None and value > high):
        return Quality.UNCERTAIN
    return Quality.GOOD


@dataclass(frozen=True, slots=True)
class Onset:
    """When a fault became observable in the physics (a standby failure only when a start trips it)."""

    fault_id: str
    t_s: float
    device: str | None


class AlarmCity:
    """Rooms, their districts and gateways, and the alarm engine and correlator, stepped together."""

    def __init__(
        self,
        specs: Sequence[RoomSpec],
        *,
        seed: int = 1,
        start_s: float = 0.0,
        step_s: float = 1.0,
        slow_s: float = 60.0,
        engine: AlarmEngine | None = None,
    ) -> None:
        self.step_s = step_s
        self.t_s = start_s
        self.rooms: dict[str, RoomSim] = {}
        self.gateways: dict[str, Gateway] = {}
        self.supplies: dict[str, DistrictSupply] = {}
        self.correlator = Correlator()
        self.engine = engine if engine is not None else AlarmEngine(grouping=self.correlator)
        if isinstance(self.engine.grouping, Correlator):
            self.correlator = self.engine.grouping
        self.truth = GroundTruth()
        self.events: list[AlarmEvent] = []
        self.onsets: dict[str, Onset] = {}
        self._watch: dict[str, Fault] = {}
        self._clear_at: list[tuple[float, str]] = []
        self._faults: dict[str, Fault] = {}
        for spec in specs:
            room = RoomSim(spec, seed, start_s=start_s)
            self.rooms[spec.site_id] = room
            self.gateways[spec.site_id] = Gateway(room, fast_s=step_s, slow_s=slow_s)
            if spec.district not in self.supplies:
                self.supplies[spec.district] = DistrictSupply(spec.district, seed)
            self.engine.configure(spec.site_id, spec.district, profile_for(spec))

    @property
    def now_ms(self) -> int:
        return epoch_ms(self.t_s)

    # ------------------------------------------------------------------ faults
    def inject(self, fault: Fault, duration_s: float | None = None) -> Fault:
        """Schedule ``fault`` (from its ``start_s``; cleared ``duration_s`` later if given)."""
        fault = check_fault(fault)
        if fault.kind is FaultKind.INLET_PRESSURE_DROP and fault.site is None:
            if fault.district not in self.supplies:
                raise ValueError(f"unknown district {fault.district!r}")
            fault = self.supplies[fault.district].inject(fault)
        else:
            room = self.rooms.get(fault.site or "")
            if room is None:
                raise ValueError(f"unknown pump room {fault.site!r}")
            fault = room.inject(replace(fault, district=room.spec.district))
        self._faults[fault.id] = fault
        self.truth.started(fault)
        if fault.kind in _DRIVE_KINDS:
            self._watch[fault.id] = fault  # its onset is the drive that trips, when it trips
        else:
            self.onsets[fault.id] = Onset(fault.id, fault.start_s, fault.device)
        if duration_s is not None:
            self._clear_at.append((fault.start_s + duration_s, fault.id))
            self._clear_at.sort()
        return fault

    def clear(self, fault_id: str) -> None:
        fault = self._faults.pop(fault_id)
        if fault.kind is FaultKind.INLET_PRESSURE_DROP and fault.site is None:
            self.supplies[fault.district or ""].clear(fault_id)
        else:
            self.rooms[fault.site or ""].clear(fault_id)
        self._watch.pop(fault_id, None)
        self.truth.ended(fault_id, self.t_s)

    def _drive_onsets(self) -> None:
        for fault_id, fault in list(self._watch.items()):
            if self.t_s < fault.start_s:
                continue
            room = self.rooms[fault.site or ""]
            tripped = next((d for d in room.drives if d.fault and room.faults.cause_active(d)), None)
            if tripped is not None:
                self.onsets[fault_id] = Onset(fault_id, self.t_s, tripped.name)
                del self._watch[fault_id]

    # ------------------------------------------------------------------ time
    def step(self) -> list[AlarmEvent]:
        """Advance one step: physics, gateways, engine, correlator; the alarm events it caused."""
        dt = self.step_s
        self.t_s += dt
        while self._clear_at and self._clear_at[0][0] <= self.t_s:
            _, fault_id = self._clear_at.pop(0)
            if fault_id in self._faults:
                self.clear(fault_id)
        out: list[AlarmEvent] = []
        engine = self.engine
        for room in self.rooms.values():
            supply = self.supplies[room.spec.district]
            room.step(dt, supply.pressure_mpa(room.t_s))
        if self._watch:
            self._drive_onsets()
        now = self.now_ms
        for site, gateway in self.gateways.items():
            district = gateway.room.spec.district
            sent = gateway.poll(self.t_s)
            for device, online in sent.links:
                out += engine.link(site, district, device, online, now)
            if sent.readings:
                out += engine.evaluate(site, district, sent.readings, now)
        out += engine.tick(now)
        self.events += out
        return out

    def run(self, seconds: float) -> list[AlarmEvent]:
        """Step for ``seconds`` of simulated time."""
        out: list[AlarmEvent] = []
        for _ in range(max(0, round(seconds / self.step_s))):
            out += self.step()
        return out
