"""The faults in effect in one room, and what each does to its physics and instruments.

Rules:
- A fault injected with ``start_s`` in the future waits; it takes effect at the first sub-step whose
  time reaches ``start_s``. Ramps and drifts count from that moment.
- One-shot consequences happen when a fault takes effect: pump_trip latches the drive fault now;
  standby_fail arms, and trips the next drive the PLC starts (or the named one when it starts);
  sensor_stuck freezes the value the transmitter showed then (or ``value``).
- Clearing a fault removes its cause. For pump_trip and a triggered standby_fail it also resets the
  drive, as the technician who repairs the pump does; until then a Reset write cannot clear the latch
  (``cause_active``).
- The per-step questions the physics asks (``inlet``, ``sensor``, ``leak_m3h`` …) are answered from
  plain attributes recomputed only when the set of active faults changes, so a fault-free room pays
  almost nothing for them.
- power_outage: drives and the water-quality analyser lose power and stop answering; the PLC, the
  environment module and the power meter run on the UPS for ``RoomSpec.ups_runtime_s``, then the whole
  room goes silent until the mains return.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tapline.sim.controller import Drive
from tapline.sim.faults import Fault, FaultKind, check_fault
from tapline.sim.points import broken_wire_value, point_spec
from tapline.sim.spec import RoomSpec

if TYPE_CHECKING:
    from tapline.sim.physics import RoomSim

UNPOWERED_ON_OUTAGE = ("wq",)
"""Devices besides the drives that have no UPS."""


class RoomFaults:
    """Active and pending faults of one room, with their effects as plain attributes."""

    def __init__(self, spec: RoomSpec, room: RoomSim) -> None:
        self._spec = spec
        self._room = room
        self._t = 0.0
        self._pending: list[Fault] = []
        self._active: dict[str, Fault] = {}
        self._since: dict[str, float] = {}
        self._stuck: dict[str, float] = {}
        self._armed: dict[str, Fault] = {}
        self._tripped: dict[str, Drive] = {}
        self._recompute()

    # ------------------------------------------------------------------ lifecycle
    def inject(self, fault: Fault, t_s: float) -> Fault:
        fault = check_fault(fault)
        spec = self._spec
        if fault.site not in (None, spec.site_id) or fault.district not in (None, spec.district):
            raise ValueError(f"fault {fault.id} targets {fault.site or fault.district}, not {spec.site_id}")
        if fault.id in self._active or any(waiting.id == fault.id for waiting in self._pending):
            raise ValueError(f"fault {fault.id} is already injected")
        if fault.device is not None and fault.device not in self._room.devices():
            raise ValueError(f"{spec.site_id} has no device {fault.device!r}")
        self._pending.append(fault)
        self._pending.sort(key=lambda waiting: waiting.start_s)
        self.activate_due(t_s)
        return fault

    def clear(self, fault_id: str) -> None:
        for waiting in self._pending:
            if waiting.id == fault_id:
                self._pending.remove(waiting)
                return
        if fault_id not in self._active:
            raise KeyError(fault_id)
        del self._active[fault_id]
        self._since.pop(fault_id, None)
        self._stuck.pop(fault_id, None)
        self._armed.pop(fault_id, None)
        drive = self._tripped.pop(fault_id, None)
        if drive is not None and not self.cause_active(drive):
            drive.reset()
        self._recompute()

    def activate_due(self, t_s: float) -> None:
        """Bring pending faults whose start time has come into effect."""
        self._t = t_s
        if not self._pending or self._pending[0].start_s > t_s:
            return
        while self._pending and self._pending[0].start_s <= t_s:
            self._activate(self._pending.pop(0), t_s)
        self._recompute()

    def _activate(self, fault: Fault, t_s: float) -> None:
        self._active[fault.id] = fault
        self._since[fault.id] = t_s
        if fault.kind is FaultKind.PUMP_TRIP:
            drive = self._pump_to_trip(fault.device)
            drive.trip(int(fault.param("code")))
            self._tripped[fault.id] = drive
        elif fault.kind is FaultKind.STANDBY_FAIL:
            self._armed[fault.id] = fault
        elif fault.kind is FaultKind.SENSOR_STUCK:
            point = fault.point
            frozen = fault.param("value") if "value" in fault.params else self._room.true_reading(point)
            self._stuck[fault.id] = round(frozen, point_spec(point).digits)

    def _pump_to_trip(self, device: str | None) -> Drive:
        drives = self._room.drives
        if device is not None:
            return next(drive for drive in drives if drive.name == device)
        return next((drive for drive in drives if drive.running), drives[0])

    @property
    def active(self) -> list[Fault]:
        """Faults in effect now, in the order they took effect."""
        return list(self._active.values())

    def cause_active(self, drive: Drive) -> bool:
        """A pump_trip or triggered standby_fail still holds this drive's fault."""
        return any(tripped is drive for tripped in self._tripped.values())

    def start_fails(self, drive: Drive) -> int:
        """Called as ``drive`` is about to start: the fault code if an armed standby_fail hits it, else 0."""
        for fault_id, fault in self._armed.items():
            if fault.device is None or fault.device == drive.name:
                del self._armed[fault_id]
                self._tripped[fault_id] = drive
                return int(fault.param("code"))
        return 0

    # ------------------------------------------------------------------ effects
    def _recompute(self) -> None:
        faults = list(self._active.values())
        kinds = {fault.kind for fault in faults}
        self.power_since: float | None = None
        self._inlet_drop: Fault | None = None
        self.valve_opening: float | None = None
        self.feed_chlorine: float | None = None
        self.turbidity_ntu: float | None = None
        self.leak_m3h = 0.0
        self._sensors: dict[str, Fault] = {}
        self.offline: set[str] = set()
        self.network_loss = FaultKind.NETWORK_LOSS in kinds
        self.flood = FaultKind.FLOOD in kinds
        self.door = FaultKind.DOOR_OPEN in kinds
        design = self._room.design
        for fault in faults:
            kind = fault.kind
            if kind is FaultKind.POWER_OUTAGE and self.power_since is None:
                self.power_since = self._since[fault.id]
            elif kind is FaultKind.INLET_PRESSURE_DROP:
                self._inlet_drop = fault
            elif kind is FaultKind.TANK_VALVE_STUCK:
                self.valve_opening = fault.param("opening")
            elif kind is FaultKind.CHLORINE_LOW:
                self.feed_chlorine = fault.param("to_mg_l")
            elif kind is FaultKind.TURBIDITY_SPIKE:
                self.turbidity_ntu = fault.param("ntu")
            elif kind is FaultKind.PIPE_BURST:
                default = 1.3 * design.duty_pumps * design.rated_flow_m3h
                self.leak_m3h += fault.param("leak_m3h") if "leak_m3h" in fault.params else default
            elif kind is FaultKind.DEVICE_OFFLINE and fault.device is not None:
                self.offline.add(fault.device)
            elif kind in (FaultKind.SENSOR_STUCK, FaultKind.SENSOR_DRIFT, FaultKind.SENSOR_BROKEN_WIRE):
                self._sensors[fault.point] = fault

    def inlet(self, supply_mpa: float, t_s: float) -> float:
        """Inlet pressure at this room: the district's, unless a local inlet drop pulls it down."""
        fault = self._inlet_drop
        if fault is None:
            return supply_mpa
        ramp = fault.param("ramp_s")
        elapsed = t_s - self._since[fault.id]
        share = 1.0 if ramp <= 0 or elapsed >= ramp else elapsed / ramp
        return supply_mpa + (fault.param("to_mpa") - supply_mpa) * share

    def sensor(self, point: str, reading: float) -> float:
        """What transmitter ``point`` reports given its healthy ``reading``."""
        if not self._sensors:
            return reading
        fault = self._sensors.get(point)
        if fault is None:
            return reading
        if fault.kind is FaultKind.SENSOR_STUCK:
            return self._stuck[fault.id]
        spec = point_spec(point)
        if fault.kind is FaultKind.SENSOR_DRIFT:
            minutes = (self._t - self._since[fault.id]) / 60.0
            return round(reading + fault.param("rate_per_min") * minutes, spec.digits)
        return broken_wire_value(spec)

    def device_answers(self, device: str, t_s: float) -> bool:
        """Whether ``device`` answers Modbus at ``t_s``."""
        if self.network_loss or device in self.offline:
            return False
        if self.power_since is None:
            return True
        if t_s - self.power_since >= self._spec.ups_runtime_s:
            return False
        return not (device.startswith("vfd") or device in UNPOWERED_ON_OUTAGE)

    def on_ups(self, t_s: float) -> bool:
        """The controls run on the UPS battery now."""
        return self.power_since is not None and t_s - self.power_since < self._spec.ups_runtime_s
