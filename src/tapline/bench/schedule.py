"""Which fault hits which room when, in ``tapline bench faults``: a seeded plan, and what to expect.

Rules:
- Rooms are the simulator's own (``make_room_spec``), ``PR-0001``… dealt round-robin over districts.
  The last ``district_events`` districts each get one district-wide ``inlet_pressure_drop``; every
  other kind hits ``per_kind`` rooms of the remaining districts, one fault per room, so an alarm in a
  room can only be about its fault. Rooms without a fault are the normal-operation sample.
- Times are drawn uniformly where the fault kind allows (``KIND_WINDOWS``): a standby failure early
  (it waits for the next pump start, which a rotation brings within 24 h); a door opened out of
  working hours (by day it is a technician, not an alarm); every other fault anywhere after warm-up,
  ending before the run does.
- Two supply-side water-quality faults never overlap in one district: three would be a municipal
  water-quality event by design, which the simulator's per-room fault is not.
- ``EXPECTED`` is the root cause an operator should be shown for each kind, and ``expected_device``
  the device it should name (none for a district event or a room's whole network).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from tapline.sim.faults import Fault, FaultKind
from tapline.sim.names import DISTRICTS, site_id
from tapline.sim.points import device_names
from tapline.sim.spec import RoomSpec, make_room_spec

K = FaultKind
EXPECTED: Final[dict[FaultKind, str]] = {
    K.PUMP_TRIP: "drive_fault",
    K.STANDBY_FAIL: "drive_fault",
    K.POWER_OUTAGE: "power_supply",
    K.INLET_PRESSURE_DROP: "municipal_supply",
    K.TANK_VALVE_STUCK: "tank_supply",
    K.SENSOR_STUCK: "instrument_fault",
    K.SENSOR_DRIFT: "instrument_fault",
    K.SENSOR_BROKEN_WIRE: "instrument_fault",
    K.CHLORINE_LOW: "water_quality",
    K.TURBIDITY_SPIKE: "water_quality",
    K.FLOOD: "flood",
    K.DOOR_OPEN: "intrusion",
    K.DEVICE_OFFLINE: "communication_loss",
    K.NETWORK_LOSS: "communication_loss",
    K.PIPE_BURST: "outlet_pressure",
}
"""Fault kind → the root cause kind (``Incident.root_cause.kind``) that is the right answer."""

DURATION_S: Final[dict[FaultKind, float]] = {
    K.CHLORINE_LOW: 4 * 3600.0,  # a tank dilutes it: the residual falls for hours
    K.TANK_VALVE_STUCK: 2 * 3600.0,
    K.SENSOR_DRIFT: 3600.0,
    K.STANDBY_FAIL: 0.0,  # stays until the end of the run: it waits for a start
}
DEFAULT_DURATION_S = 1800.0
WARM_UP_S = 600.0
WORKING_HOURS = (8 * 3600.0, 18 * 3600.0)
BROKEN_WIRE_POINTS = (
    "plc/InletPressure",
    "plc/OutletPressure",
    "plc/TankLevel",
    "plc/Flow",
    "wq/Chlorine",
    "wq/Turbidity",
    "wq/PH",
    "env/Temperature",
    "env/Humidity",
)
_WATER_QUALITY = frozenset({K.CHLORINE_LOW, K.TURBIDITY_SPIKE})


@dataclass(frozen=True, slots=True)
class Planned:
    """One fault of the plan: the fault (``start_s`` on the simulation clock) and how long it lasts."""

    fault: Fault
    duration_s: float | None


@dataclass(frozen=True, slots=True)
class Plan:
    specs: tuple[RoomSpec, ...]
    faults: tuple[Planned, ...]
    event_districts: tuple[str, ...]
    start_s: float
    end_s: float

    def clean_rooms(self) -> list[str]:
        """Rooms no fault touches: the normal-operation sample."""
        hit = {p.fault.site for p in self.faults}
        return [
            s.site_id for s in self.specs if s.site_id not in hit and s.district not in self.event_districts
        ]


def expected_device(fault: Fault, onset_device: str | None) -> str | None:
    """The device the root cause should name ("" for the room as a whole; None: no device to name)."""
    kind = fault.kind
    if kind in (K.PUMP_TRIP, K.STANDBY_FAIL):
        return onset_device
    if kind is K.DEVICE_OFFLINE:
        return fault.device
    if kind in (K.SENSOR_STUCK, K.SENSOR_DRIFT, K.SENSOR_BROKEN_WIRE):
        return fault.point.partition("/")[0]
    return {
        K.POWER_OUTAGE: "power",
        K.TANK_VALVE_STUCK: "plc",
        K.PIPE_BURST: "plc",
        K.CHLORINE_LOW: "wq",
        K.TURBIDITY_SPIKE: "wq",
        K.FLOOD: "env",
        K.DOOR_OPEN: "env",
        K.NETWORK_LOSS: "",
    }.get(kind)


def rooms(count: int, districts: int, seed: int) -> tuple[RoomSpec, ...]:
    names = DISTRICTS[:districts]
    return tuple(make_room_spec(site_id(i), names[i % districts], seed) for i in range(count))


def make_plan(
    *,
    room_count: int,
    districts: int,
    seed: int,
    start_s: float,
    hours: float,
    per_kind: int,
    district_events: int,
) -> Plan:
    """The seeded fault plan of one bench run (see the module rules); ValueError if it cannot fit."""
    if not 1 <= district_events < districts <= len(DISTRICTS):
        raise ValueError(f"need 1 <= district events < districts <= {len(DISTRICTS)}")
    specs = rooms(room_count, districts, seed)
    end_s = start_s + hours * 3600.0
    rng = random.Random(seed)  # noqa: S311 - a reproducible plan, not a secret
    events = tuple(DISTRICTS[:districts][-district_events:])
    planned: list[Planned] = []
    number = 1
    for district in events:
        start = _uniform(rng, start_s + WARM_UP_S, end_s - DEFAULT_DURATION_S - 1800.0, end_s)
        fault = Fault(f"F{number:04d}", K.INLET_PRESSURE_DROP, None, district, None, {}, start)
        planned.append(Planned(fault, DEFAULT_DURATION_S))
        number += 1
    pool = [s for s in specs if s.district not in events]
    rng.shuffle(pool)
    busy: dict[str, list[tuple[float, float]]] = {}
    kinds = [k for k in FaultKind if k is not K.INLET_PRESSURE_DROP]
    for kind in kinds * per_kind:
        spec, start, duration = _place(rng, kind, pool, busy, start_s, end_s)
        pool.remove(spec)
        planned.append(Planned(_fault(rng, f"F{number:04d}", kind, spec, start), duration or None))
        number += 1
    planned.sort(key=lambda p: (p.fault.start_s, p.fault.id))
    return Plan(specs, tuple(planned), events, start_s, end_s)


def _uniform(rng: random.Random, low: float, high: float, end_s: float) -> float:
    if high <= low:
        raise ValueError(f"the run is too short: faults need until {low + (end_s - high):.0f} s")
    return round(rng.uniform(low, high))


def _place(
    rng: random.Random,
    kind: FaultKind,
    pool: list[RoomSpec],
    busy: dict[str, list[tuple[float, float]]],
    start_s: float,
    end_s: float,
) -> tuple[RoomSpec, float, float]:
    duration = DURATION_S.get(kind, DEFAULT_DURATION_S)
    for spec in pool:
        if kind is K.TANK_VALVE_STUCK and not spec.tank:
            continue
        if kind is K.STANDBY_FAIL:
            start = _uniform(rng, start_s + WARM_UP_S, start_s + (end_s - start_s) * 0.25, end_s)
        elif kind is K.DOOR_OPEN:
            start = _night(rng, start_s + WARM_UP_S, end_s - duration - 600.0)
        else:
            start = _uniform(rng, start_s + WARM_UP_S, end_s - duration - 600.0, end_s)
        if kind in _WATER_QUALITY:
            spans = busy.setdefault(spec.district, [])
            if any(start < end + 3600.0 and begin < start + duration + 3600.0 for begin, end in spans):
                continue
            spans.append((start, start + duration))
        return spec, start, duration
    raise ValueError(f"no room left for a {kind} fault: use more rooms or fewer faults per kind")


def _night(rng: random.Random, low: float, high: float) -> float:
    """A time in [low, high] outside working hours."""
    opening, closing = WORKING_HOURS
    for _ in range(1000):
        t = rng.uniform(low, high)
        if not opening <= t % 86_400.0 < closing:
            return round(t)
    raise ValueError("the run has no night: door faults need hours outside 08:00-18:00")


def _fault(rng: random.Random, fault_id: str, kind: FaultKind, spec: RoomSpec, start: float) -> Fault:
    params: dict[str, float | int | str | bool] = {}
    device: str | None = None
    if kind is K.DEVICE_OFFLINE:
        device = rng.choice(device_names(spec.pumps))
    elif kind is K.SENSOR_BROKEN_WIRE:
        points: Sequence[str] = [p for p in BROKEN_WIRE_POINTS if spec.tank or p != "plc/TankLevel"]
        params["point"] = rng.choice(points)
    return Fault(fault_id, kind, spec.site_id, spec.district, device, params, start)
