"""Faults the simulator can inject, their parameters, drive fault codes, and the ground-truth log.

Rules:
- A ``Fault`` is a frozen record: what (``kind``), where (``site`` and/or ``district``, ``device``),
  how (``params``) and from when (``start_s``, simulated seconds on the simulation clock). It becomes
  active once the simulation clock reaches ``start_s``; it ends when it is cleared.
- ``check_fault`` is the one place that validates a fault and fills in parameter defaults; the room
  (``RoomSim.inject``) and the district (``DistrictSupply.inject``) only ever see checked faults.
- Observable signature of each kind (what a real room shows; details in ``physics``):

  =====================  ===============================================================================
  pump_trip              that drive: Fault, FaultCode (default 0x2310 overcurrent), not Running;
                         the PLC starts another pump to keep the duty count
  standby_fail           the next pump to be started (or ``device``) trips on start, 0x7121 motor stall
  power_outage           power/Mains false, UPS true, Voltage 0, all pumps stop, drives and analyser
                         stop answering; outlet falls to the inlet (tank-less) or ~0.03 MPa riser head
  inlet_pressure_drop    inlet pressure ramps to ``to_mpa`` (default 0.05) over ``ramp_s`` (60 s): tank
                         refill slows; tank-less sets stop on low inlet (< 0.05 MPa) or lose pressure
  tank_valve_stuck       the float valve sticks at ``opening`` (default 0 = closed): the level falls
  sensor_stuck           ``point`` (default plc/OutletPressure) freezes (at ``value`` if given)
  sensor_drift           ``point`` reads ``rate_per_min`` (default +0.01 units/min) more each minute
  sensor_broken_wire     ``point`` reads below its span (points.broken_wire_value)
  chlorine_low           municipal feed chlorine falls to ``to_mg_l`` (default 0): residual < 0.05 mg/L
  turbidity_spike        turbidity rises to ``ntu`` (default 3 NTU) within a few minutes
  flood                  env/Flood true, humidity rises
  door_open              env/Door true
  device_offline         ``device`` stops answering Modbus
  network_loss           no device answers the gateway; the physics carries on
  pipe_burst             a downstream leak of ``leak_m3h`` (default 1.3 × the duty pumps' capacity):
                         flow surges, outlet pressure drops, the PLC ramps every duty pump to 50 Hz
  =====================  ===============================================================================
- ``GroundTruth`` is the append-only record of what was injected and when it ended, which evaluations
  compare incidents and alarms against. It never forgets an entry; ending one fills in its ``end_s``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum

from tapline.sim.points import SENSOR_POINTS


class FaultKind(StrEnum):
    """Kinds of fault (the ``kind`` of ``POST /sim/faults``)."""

    PUMP_TRIP = "pump_trip"
    STANDBY_FAIL = "standby_fail"
    POWER_OUTAGE = "power_outage"
    INLET_PRESSURE_DROP = "inlet_pressure_drop"
    TANK_VALVE_STUCK = "tank_valve_stuck"
    SENSOR_STUCK = "sensor_stuck"
    SENSOR_DRIFT = "sensor_drift"
    SENSOR_BROKEN_WIRE = "sensor_broken_wire"
    CHLORINE_LOW = "chlorine_low"
    TURBIDITY_SPIKE = "turbidity_spike"
    FLOOD = "flood"
    DOOR_OPEN = "door_open"
    DEVICE_OFFLINE = "device_offline"
    NETWORK_LOSS = "network_loss"
    PIPE_BURST = "pipe_burst"


class DriveFaultCode(IntEnum):
    """Drive fault codes (vfdN/FaultCode), in the DRIVECOM / CiA 402 numbering ABB drives display."""

    NONE = 0
    OVERCURRENT = 0x2310
    SHORT_CIRCUIT = 0x2340
    INPUT_PHASE_LOSS = 0x3130
    DC_UNDERVOLTAGE = 0x3220
    DRIVE_OVERTEMPERATURE = 0x4310
    MOTOR_STALL = 0x7121
    EXTERNAL_FAULT = 0x9081


ParamValue = float | int | str | bool

_DEVICE = re.compile(r"^(plc|wq|env|power|vfd[1-9])$")
_DEFAULTS: dict[FaultKind, dict[str, ParamValue]] = {
    FaultKind.PUMP_TRIP: {"code": int(DriveFaultCode.OVERCURRENT)},
    FaultKind.STANDBY_FAIL: {"code": int(DriveFaultCode.MOTOR_STALL)},
    FaultKind.INLET_PRESSURE_DROP: {"to_mpa": 0.05, "ramp_s": 60.0},
    FaultKind.TANK_VALVE_STUCK: {"opening": 0.0},
    FaultKind.SENSOR_STUCK: {"point": "plc/OutletPressure"},
    FaultKind.SENSOR_DRIFT: {"point": "plc/OutletPressure", "rate_per_min": 0.01},
    FaultKind.SENSOR_BROKEN_WIRE: {"point": "plc/OutletPressure"},
    FaultKind.CHLORINE_LOW: {"to_mg_l": 0.0},
    FaultKind.TURBIDITY_SPIKE: {"ntu": 3.0},
}
_OPTIONAL: dict[FaultKind, frozenset[str]] = {
    FaultKind.SENSOR_STUCK: frozenset({"value"}),
    FaultKind.PIPE_BURST: frozenset({"leak_m3h"}),
}
_RANGES: dict[str, tuple[float, float]] = {
    "to_mpa": (0.0, 1.0),
    "ramp_s": (0.0, 86_400.0),
    "opening": (0.0, 1.0),
    "rate_per_min": (-10.0, 10.0),
    "to_mg_l": (0.0, 5.0),
    "ntu": (0.0, 100.0),
    "leak_m3h": (0.0, 10_000.0),
    "value": (-1e6, 1e6),
    "code": (1, 65_535),
}
DEVICE_KINDS = frozenset({FaultKind.PUMP_TRIP, FaultKind.STANDBY_FAIL, FaultKind.DEVICE_OFFLINE})
"""Kinds whose ``device`` field means something (required for device_offline)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault. ``params`` are per kind (see the module docstring)."""

    id: str
    kind: FaultKind
    site: str | None = None
    district: str | None = None
    device: str | None = None
    params: Mapping[str, ParamValue] = field(default_factory=dict, hash=False)
    start_s: float = 0.0

    def param(self, name: str) -> float:
        """A numeric parameter (defaults filled in by ``check_fault``)."""
        value = self.params[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"fault {self.id}: parameter {name} is not a number")
        return float(value)

    @property
    def point(self) -> str:
        """The point a sensor fault targets."""
        return str(self.params.get("point", "plc/OutletPressure"))


def check_fault(fault: Fault) -> Fault:
    """Validate ``fault`` and return it with parameter defaults filled in; ValueError if it is wrong."""
    kind = FaultKind(fault.kind)
    allowed = set(_DEFAULTS.get(kind, {})) | _OPTIONAL.get(kind, frozenset())
    unknown = set(fault.params) - allowed
    if unknown:
        raise ValueError(f"{kind} takes no parameter(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    params: dict[str, ParamValue] = {**_DEFAULTS.get(kind, {}), **fault.params}
    for name, value in params.items():
        if name == "point":
            if value not in SENSOR_POINTS:
                raise ValueError(f"{kind}: point must be one of {sorted(SENSOR_POINTS)}, got {value!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{kind}: parameter {name} must be a number, got {value!r}")
        low, high = _RANGES[name]
        if not low <= value <= high:
            raise ValueError(f"{kind}: parameter {name} must be within {low}..{high}, got {value}")
    if fault.device is not None:
        if kind not in DEVICE_KINDS:
            raise ValueError(f"{kind} does not take a device")
        if not _DEVICE.match(fault.device):
            raise ValueError(f"unknown device {fault.device!r}")
        if kind in {FaultKind.PUMP_TRIP, FaultKind.STANDBY_FAIL} and not fault.device.startswith("vfd"):
            raise ValueError(f"{kind} targets a pump drive (vfdN), got {fault.device!r}")
    elif kind is FaultKind.DEVICE_OFFLINE:
        raise ValueError("device_offline needs a device")
    if fault.site is None and fault.district is None:
        raise ValueError(f"fault {fault.id} needs a site or a district")
    return replace(fault, kind=kind, params=params)


@dataclass(frozen=True, slots=True)
class TruthEntry:
    """One injected fault as it really happened."""

    fault_id: str
    kind: FaultKind
    site: str | None
    district: str | None
    device: str | None
    start_s: float
    end_s: float | None = None

    def active_at(self, t_s: float) -> bool:
        return self.start_s <= t_s and (self.end_s is None or t_s < self.end_s)


class GroundTruth:
    """Append-only log of injected faults: (kind, site, district, device, start_s, end_s)."""

    def __init__(self) -> None:
        self._entries: list[TruthEntry] = []
        self._index: dict[str, int] = {}

    def started(self, fault: Fault) -> TruthEntry:
        """Record that ``fault`` was injected (from its ``start_s``)."""
        if fault.id in self._index:
            raise ValueError(f"fault {fault.id} is already recorded")
        entry = TruthEntry(fault.id, fault.kind, fault.site, fault.district, fault.device, fault.start_s)
        self._index[fault.id] = len(self._entries)
        self._entries.append(entry)
        return entry

    def ended(self, fault_id: str, end_s: float) -> TruthEntry:
        """Record that the fault was cleared at ``end_s``; KeyError for an unknown id."""
        position = self._index[fault_id]
        entry = self._entries[position]
        if entry.end_s is not None:
            raise ValueError(f"fault {fault_id} already ended at {entry.end_s}")
        if end_s < entry.start_s:
            raise ValueError(f"fault {fault_id} cannot end before it started")
        self._entries[position] = replace(entry, end_s=end_s)
        return self._entries[position]

    @property
    def entries(self) -> tuple[TruthEntry, ...]:
        return tuple(self._entries)

    def active_at(self, t_s: float) -> list[TruthEntry]:
        """Faults in effect at ``t_s``."""
        return [entry for entry in self._entries if entry.active_at(t_s)]

    def rows(self) -> list[tuple[str, str | None, str | None, str | None, float, float | None]]:
        """Plain tuples (kind, site, district, device, start_s, end_s), e.g. for a report."""
        return [(str(e.kind), e.site, e.district, e.device, e.start_s, e.end_s) for e in self._entries]
