"""Device-level simulation of many rooms: physics stepping, one Modbus TCP server per room, faults.

``SimulatedCity`` is what the demo and the end-to-end tests run: it owns every room's physics and its
Modbus server, advances simulated time in real time (or faster, with ``speed``), and injects and clears
faults by kind and target, keeping the ground-truth log that evaluations compare against.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tapline.logs import get_logger
from tapline.registers.layout import DeviceSlot, standard_layout
from tapline.sim.district import DistrictSupply
from tapline.sim.faults import Fault, FaultKind, GroundTruth
from tapline.sim.modbus_server import RoomImage, RoomModbusServer
from tapline.sim.physics import RoomSim
from tapline.sim.spec import RoomSpec, make_room_spec

log = get_logger(__name__)

DISTRICTS = ("jianghan", "qiaokou", "wuchang", "hanyang", "hongshan", "qingshan", "dongxihu", "jiangxia")
COMPOUNDS = ("花园", "小区", "新村", "家园", "苑", "公寓", "城", "里")
DISTRICT_NAMES = {
    "jianghan": "江汉",
    "qiaokou": "硚口",
    "wuchang": "武昌",
    "hanyang": "汉阳",
    "hongshan": "洪山",
    "qingshan": "青山",
    "dongxihu": "东西湖",
    "jiangxia": "江夏",
}


class FaultError(ValueError):
    """A fault request that names an unknown kind, room, district or device."""


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
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def build(
        cls,
        sites: int,
        districts: int = 2,
        seed: int = 1,
        host: str = "127.0.0.1",
        district_names: Sequence[str] | None = None,
    ) -> SimulatedCity:
        """``sites`` rooms numbered PR-0001…, dealt round-robin over the first ``districts`` districts.

        ``district_names`` overrides the district (Sparkplug group) ids, e.g. so tests sharing one broker
        never see each other's rooms.
        """
        names = tuple(district_names) if district_names else DISTRICTS[:districts]
        if not names or (district_names is None and not 1 <= districts <= len(DISTRICTS)):
            raise ValueError(f"districts must be 1..{len(DISTRICTS)}")
        districts = len(names)
        supplies = {name: DistrictSupply(name, seed) for name in names}
        rooms: dict[str, SimRoom] = {}
        for index in range(sites):
            site = f"PR-{index + 1:04d}"
            district = names[index % districts]
            spec = make_room_spec(site, district, seed)
            physics = RoomSim(spec, seed, start_s=8 * 3600.0)
            layout = standard_layout(spec.pumps)
            image = RoomImage(physics, layout)
            compound = COMPOUNDS[index % len(COMPOUNDS)]
            label = f"{DISTRICT_NAMES.get(district, district)}{compound}{index // districts + 1}号泵房"
            rooms[site] = SimRoom(spec, label, physics, layout, image, RoomModbusServer(image, host, 0))
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
    def inject(
        self,
        kind: str,
        *,
        site: str | None = None,
        district: str | None = None,
        device: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Fault:
        try:
            fault_kind = FaultKind(kind)
        except ValueError:
            known = ", ".join(k.value for k in FaultKind)
            raise FaultError(f"unknown fault kind {kind!r} (known: {known})") from None
        fault_id = f"F{next(self._ids):05d}"
        if fault_kind is FaultKind.INLET_PRESSURE_DROP:
            if district is None and site is not None and site in self.rooms:
                district = self.rooms[site].spec.district
            if district not in self.districts:
                raise FaultError(f"inlet_pressure_drop needs a known district, got {district!r}")
            supply = self.districts[district]
            t_s = next(iter(self.rooms.values())).physics.t_s
            fault = Fault(fault_id, fault_kind, None, district, None, dict(params or {}), t_s)
            try:
                supply.inject(fault)
            except ValueError as exc:
                raise FaultError(str(exc)) from exc
        else:
            if site not in self.rooms:
                raise FaultError(f"unknown pump room {site!r}")
            room = self.rooms[site]
            if device is not None and device not in room.physics.devices():
                raise FaultError(f"pump room {site} has no device {device!r}")
            fault = Fault(
                fault_id, fault_kind, site, room.spec.district, device, dict(params or {}), room.physics.t_s
            )
            try:
                room.physics.inject(fault)
            except ValueError as exc:
                raise FaultError(str(exc)) from exc
            room.image.refresh()
        self.faults[fault_id] = fault
        self.truth.started(fault)
        log.info(
            "fault_injected", fault=fault_id, kind=kind, site=site, district=fault.district, device=device
        )
        return fault

    def clear(self, fault_id: str) -> Fault:
        fault = self.faults.pop(fault_id, None)
        if fault is None:
            raise FaultError(f"no active fault {fault_id!r}")
        if fault.kind is FaultKind.INLET_PRESSURE_DROP and fault.district:
            self.districts[fault.district].clear(fault_id)
            t_s = next(iter(self.rooms.values())).physics.t_s
        else:
            room = self.rooms[fault.site or ""]
            room.physics.clear(fault_id)
            room.image.refresh()
            t_s = room.physics.t_s
        self.truth.ended(fault_id, t_s)
        log.info("fault_cleared", fault=fault_id)
        return fault

    def active_faults(self) -> Sequence[Fault]:
        return list(self.faults.values())
