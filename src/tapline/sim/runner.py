"""Device-level simulation of many rooms: physics stepping, one Modbus TCP server per room, faults.

``SimulatedCity`` is what the demo, ``tapline sim rooms`` and the end-to-end tests run: it owns every
room's physics and its Modbus server, advances simulated time in real time (or faster, with
``speed``), and injects and clears faults by kind and target, keeping the ground-truth log that
evaluations compare against.

Rules:
- ``inject``/``clear`` are the fault service every entry point uses (REST ``/sim/faults``, the CLI
  through it, tests). A refused request raises ``FaultError`` whose ``code`` says why, for the API to
  map onto a status: ``unknown_fault_kind`` and ``invalid_fault`` (422), ``unknown_site``,
  ``unknown_district``, ``unknown_device`` and ``unknown_fault`` (404). Nothing is changed or logged
  for a refused request, and no fault id is used up.
- Fault ids are ``F00001``… in injection order. A fault starts now (the simulation clock); its wall
  time (ms since the epoch, from ``clock_ms``) is kept beside it, because alarms and incidents are
  stamped with wall time and evaluations compare the two.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tapline.logs import get_logger
from tapline.registers.layout import DeviceSlot, room_layout
from tapline.sim.district import DistrictSupply
from tapline.sim.faults import DEVICE_KINDS, Fault, FaultKind, GroundTruth, TruthEntry
from tapline.sim.modbus_server import RoomImage, RoomModbusServer
from tapline.sim.names import COMPOUNDS, DISTRICT_NAMES, DISTRICTS, site_id
from tapline.sim.physics import RoomSim
from tapline.sim.spec import RoomSpec, make_room_spec

log = get_logger(__name__)

__all__ = ["COMPOUNDS", "DISTRICTS", "DISTRICT_NAMES", "FaultError", "SimRoom", "SimulatedCity"]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class FaultError(ValueError):
    """A fault request the city refuses; ``code`` says why (see the module rules)."""

    def __init__(self, message: str, code: str = "invalid_fault") -> None:
        super().__init__(message)
        self.code = code

    @property
    def not_found(self) -> bool:
        """True when the request names something that does not exist (a 404, not a 422)."""
        return self.code in ("unknown_site", "unknown_district", "unknown_device", "unknown_fault")


@dataclass
class SimRoom:
    spec: RoomSpec
    name: str
    physics: RoomSim
    layout: list[DeviceSlot]
    image: RoomImage
    server: RoomModbusServer


@dataclass
class SimulatedCity:
    """Rooms spread over districts, stepped together."""

    rooms: dict[str, SimRoom]
    districts: dict[str, DistrictSupply]
    dt_s: float = 1.0
    speed: float = 1.0
    truth: GroundTruth = field(default_factory=GroundTruth)
    faults: dict[str, Fault] = field(default_factory=dict)
    clock_ms: Callable[[], int] = _wall_ms
    wall: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    """Wall time (ms since the epoch) each fault started and ended, by fault id."""
    _next_id: int = 1

    @classmethod
    def build(
        cls,
        sites: int,
        districts: int = 2,
        seed: int = 1,
        host: str = "127.0.0.1",
        district_names: Sequence[str] | None = None,
        base_port: int = 0,
        layout: str = "standard",
        pumps: int | None = None,
    ) -> SimulatedCity:
        """``sites`` rooms numbered PR-0001…, dealt round-robin over the first ``districts`` districts.

        ``district_names`` overrides the district (Sparkplug group) ids, e.g. so tests sharing one broker
        never see each other's rooms. Room N's Modbus server listens on ``base_port + N - 1``, or on
        a free port when ``base_port`` is 0. ``layout`` is how each room's devices face Modbus
        (``standard``: a unit id per device; ``concentrator``: the PLC mirrors them all on one unit id,
        see ``registers.layout``); ``pumps`` gives every room that many pumps instead of the number its
        spec draws (e.g. 4, to fill the concentrator's 80-point table), the rest sized from it as usual.
        """
        if base_port and not 1 <= base_port <= 65536 - sites:
            raise ValueError(f"base port {base_port} leaves no room for {sites} consecutive ports")
        names = tuple(district_names) if district_names else DISTRICTS[:districts]
        if not names or (district_names is None and not 1 <= districts <= len(DISTRICTS)):
            raise ValueError(f"districts must be 1..{len(DISTRICTS)}")
        districts = len(names)
        supplies = {name: DistrictSupply(name, seed) for name in names}
        rooms: dict[str, SimRoom] = {}
        for index in range(sites):
            site = site_id(index)
            district = names[index % districts]
            spec = make_room_spec(site, district, seed)
            if pumps is not None:
                spec = replace(spec, pumps=pumps)
            physics = RoomSim(spec, seed, start_s=8 * 3600.0)
            devices = room_layout(layout, spec.pumps)
            image = RoomImage(physics, devices)
            compound = COMPOUNDS[index % len(COMPOUNDS)]
            label = f"{DISTRICT_NAMES.get(district, district)}{compound}{index // districts + 1}号泵房"
            port = base_port + index if base_port else 0
            rooms[site] = SimRoom(spec, label, physics, devices, image, RoomModbusServer(image, host, port))
        return cls(rooms=rooms, districts=supplies)

    async def start(self) -> None:
        for room in self.rooms.values():
            await room.server.start()
        log.info("sim_started", rooms=len(self.rooms), districts=len(self.districts))

    async def stop(self) -> None:
        for room in self.rooms.values():
            await room.server.stop()

    def step(self) -> None:
        """Advance every room by ``dt_s`` simulated seconds and refresh its registers."""
        for room in self.rooms.values():
            supply = self.districts[room.spec.district]
            room.physics.step(self.dt_s, supply.pressure_mpa(room.physics.t_s))
            room.image.refresh()

    async def run(self) -> None:
        """Step in (scaled) real time until cancelled."""
        loop = asyncio.get_running_loop()
        period = self.dt_s / self.speed
        next_time = loop.time()
        while True:
            self.step()
            next_time += period
            await asyncio.sleep(max(0.0, next_time - loop.time()))

    # --- faults --------------------------------------------------------------------------------
    @property
    def t_s(self) -> float:
        """The simulation clock (every room is stepped together)."""
        return next(iter(self.rooms.values())).physics.t_s if self.rooms else 0.0

    def inject(
        self,
        kind: str,
        *,
        site: str | None = None,
        district: str | None = None,
        device: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Fault:
        """Inject a fault starting now; returns it with its id and parameter defaults filled in.

        ``inlet_pressure_drop`` hits a whole district (``district``, or the district of ``site``); every
        other kind one room (``site``; a ``district`` given too must be that room's).
        """
        try:
            fault_kind = FaultKind(kind)
        except ValueError:
            known = ", ".join(k.value for k in FaultKind)
            raise FaultError(f"unknown fault kind {kind!r} (known: {known})", "unknown_fault_kind") from None
        fault_id = f"F{self._next_id:05d}"
        if fault_kind is FaultKind.INLET_PRESSURE_DROP:
            fault = self._inject_district(fault_id, fault_kind, site, district, device, params)
        else:
            fault = self._inject_room(fault_id, fault_kind, site, district, device, params)
        self._next_id += 1
        self.faults[fault_id] = fault
        self.truth.started(fault)
        self.wall[fault_id] = (self.clock_ms(), None)
        log.info(
            "fault_injected",
            fault=fault_id,
            kind=kind,
            site=fault.site,
            district=fault.district,
            device=fault.device,
        )
        return fault

    def _inject_district(
        self,
        fault_id: str,
        kind: FaultKind,
        site: str | None,
        district: str | None,
        device: str | None,
        params: Mapping[str, Any] | None,
    ) -> Fault:
        if device is not None:
            raise FaultError(f"{kind} hits a whole district and takes no device")
        if site is not None:
            if site not in self.rooms:
                raise FaultError(f"unknown pump room {site!r}", "unknown_site")
            room_district = self.rooms[site].spec.district
            if district is not None and district != room_district:
                raise FaultError(f"pump room {site} is in district {room_district}, not {district}")
            district = room_district
        if district is None:
            raise FaultError(f"{kind} needs a district (or a site in it)")
        if district not in self.districts:
            known = ", ".join(sorted(self.districts))
            raise FaultError(f"unknown district {district!r} (known: {known})", "unknown_district")
        fault = Fault(fault_id, kind, None, district, None, dict(params or {}), self.t_s)
        try:
            return self.districts[district].inject(fault)
        except ValueError as exc:
            raise FaultError(str(exc)) from exc

    def _inject_room(
        self,
        fault_id: str,
        kind: FaultKind,
        site: str | None,
        district: str | None,
        device: str | None,
        params: Mapping[str, Any] | None,
    ) -> Fault:
        if site is None:
            raise FaultError(f"{kind} needs a site (a pump room id such as PR-0001)")
        room = self.rooms.get(site)
        if room is None:
            raise FaultError(f"unknown pump room {site!r}", "unknown_site")
        if district is not None and district != room.spec.district:
            raise FaultError(f"pump room {site} is in district {room.spec.district}, not {district}")
        if device is not None:
            if kind not in DEVICE_KINDS:
                raise FaultError(f"{kind} does not take a device")
            if device not in room.physics.devices():
                known = ", ".join(room.physics.devices())
                raise FaultError(
                    f"pump room {site} has no device {device!r} (it has {known})", "unknown_device"
                )
        fault = Fault(fault_id, kind, site, room.spec.district, device, dict(params or {}), room.physics.t_s)
        try:
            checked = room.physics.inject(fault)
        except ValueError as exc:
            raise FaultError(str(exc)) from exc
        room.image.refresh()
        return checked

    def clear(self, fault_id: str) -> Fault:
        """End an active fault now; ``FaultError`` (``unknown_fault``) if there is none with this id."""
        fault = self.faults.pop(fault_id, None)
        if fault is None:
            raise FaultError(f"no active fault {fault_id!r}", "unknown_fault")
        if fault.kind is FaultKind.INLET_PRESSURE_DROP and fault.district:
            self.districts[fault.district].clear(fault_id)
        else:
            room = self.rooms[fault.site or ""]
            room.physics.clear(fault_id)
            room.image.refresh()
        self.truth.ended(fault_id, self.t_s)
        start, _ = self.wall.get(fault_id, (self.clock_ms(), None))
        self.wall[fault_id] = (start, self.clock_ms())
        log.info("fault_cleared", fault=fault_id)
        return fault

    def active_faults(self) -> Sequence[Fault]:
        return list(self.faults.values())

    def fault_view(self, fault: Fault) -> dict[str, Any]:
        """An active fault as the API shows it (``start``/``end`` in ms since the epoch)."""
        start, end = self.wall.get(fault.id, (None, None))
        return {
            "id": fault.id,
            "kind": str(fault.kind),
            "site": fault.site,
            "district": fault.district,
            "device": fault.device,
            "params": dict(fault.params),
            "start": start,
            "end": end,
            "start_s": fault.start_s,
        }

    def truth_view(self, entry: TruthEntry) -> dict[str, Any]:
        """One ground-truth entry as the API shows it."""
        start, end = self.wall.get(entry.fault_id, (None, None))
        return {
            "id": entry.fault_id,
            "kind": str(entry.kind),
            "site": entry.site,
            "district": entry.district,
            "device": entry.device,
            "start": start,
            "end": end,
            "start_s": entry.start_s,
            "end_s": entry.end_s,
            "active": entry.end_s is None,
        }
