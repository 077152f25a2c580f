"""Helpers shared by the simulator tests: a room with its district, run in simulated time."""

from __future__ import annotations

from dataclasses import dataclass

from tapline.sim.district import DistrictSupply
from tapline.sim.faults import Fault, FaultKind, ParamValue
from tapline.sim.physics import RoomSim, RoomSpec

SEED = 11
HOUR = 3600.0


@dataclass
class Room:
    """A simulated room and the district supply that feeds it."""

    sim: RoomSim
    supply: DistrictSupply

    def run(self, seconds: float, dt: float = 1.0) -> None:
        for _ in range(round(seconds / dt)):
            self.sim.step(dt, self.supply.pressure_mpa(self.sim.t_s))

    def fault(
        self, kind: FaultKind, device: str | None = None, fault_id: str = "F1", **params: ParamValue
    ) -> Fault:
        spec = self.sim.spec
        fault = Fault(fault_id, kind, spec.site_id, spec.district, device, params, self.sim.t_s)
        return self.sim.inject(fault)


def make_room(start_h: float = 7.0, seed: int = SEED, **spec: object) -> Room:
    """The default 3-pump tank room (or ``spec`` overrides) at ``start_h`` o'clock."""
    room_spec = RoomSpec("PR-0001", "jianghan", **spec)  # type: ignore[arg-type]
    return Room(RoomSim(room_spec, seed, start_s=start_h * HOUR), DistrictSupply("jianghan", seed))
