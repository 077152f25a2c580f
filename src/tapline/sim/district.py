"""Municipal supply pressure of a district, shared by the pump rooms it feeds: ``DistrictSupply``.

Model:
- p(t) = base − swing · relative_load(t + shift) + ripple(t), clamped to 0.10–0.35 MPa. base is
  0.26–0.30 MPa and swing 0.07–0.11 MPa per district, so the inlet sits at 0.15–0.30 MPa and is lowest
  at the morning and evening demand peaks, when the network's head losses are highest.
- The ripple is a sum of six sinusoids (periods 1–40 min, total about ±0.004 MPa) with phases drawn
  from (seed, district name): smooth "noise" that is a pure function of t, so every room of the
  district that asks at the same simulated time gets exactly the same pressure, in any order.
- An injected ``inlet_pressure_drop`` (district-wide: a main break or a pumping-station trip) pulls the
  pressure linearly to ``to_mpa`` over ``ramp_s`` from its start; several drops take the lowest.
  Clearing it restores the normal curve at once.
"""

from __future__ import annotations

import math

from tapline.sim.demand import relative_load
from tapline.sim.faults import Fault, FaultKind, check_fault
from tapline.sim.noise import stream

MIN_MPA = 0.10
MAX_MPA = 0.35


class DistrictSupply:
    """Inlet (municipal) pressure of one district as a pure function of simulated time."""

    def __init__(self, name: str, seed: int) -> None:
        rng = stream(seed, "district", name, "supply")
        self.name = name
        self.base_mpa = rng.uniform(0.26, 0.30)
        self.swing_mpa = rng.uniform(0.07, 0.11)
        self.shift_s = rng.uniform(-1200.0, 1200.0)
        self._ripple = [
            (
                rng.uniform(0.0004, 0.0012),
                2.0 * math.pi / rng.uniform(60.0, 2400.0),
                rng.uniform(0.0, 2 * math.pi),
            )
            for _ in range(6)
        ]
        self._drops: dict[str, Fault] = {}

    def normal_mpa(self, t_s: float) -> float:
        """The pressure without injected faults."""
        pressure = self.base_mpa - self.swing_mpa * relative_load(t_s + self.shift_s)
        for amplitude, omega, phase in self._ripple:
            pressure += amplitude * math.sin(omega * t_s + phase)
        return min(max(pressure, MIN_MPA), MAX_MPA)

    def pressure_mpa(self, t_s: float) -> float:
        """Inlet pressure (MPa) at ``t_s`` simulated seconds, honouring injected drops."""
        pressure = self.normal_mpa(t_s)
        lowest = pressure
        for fault in self._drops.values():
            elapsed = t_s - fault.start_s
            if elapsed < 0:
                continue
            ramp = fault.param("ramp_s")
            share = 1.0 if ramp <= 0 or elapsed >= ramp else elapsed / ramp
            lowest = min(lowest, pressure + (fault.param("to_mpa") - pressure) * share)
        return lowest

    def inject(self, fault: Fault) -> Fault:
        """Start a district-wide inlet_pressure_drop (from ``fault.start_s``); ValueError otherwise."""
        fault = check_fault(fault)
        if fault.kind is not FaultKind.INLET_PRESSURE_DROP:
            raise ValueError(f"a district supply takes only inlet_pressure_drop faults, got {fault.kind}")
        if fault.district != self.name or fault.site is not None:
            raise ValueError(f"fault {fault.id} does not target district {self.name} as a whole")
        if fault.id in self._drops:
            raise ValueError(f"fault {fault.id} is already injected")
        self._drops[fault.id] = fault
        return fault

    def clear(self, fault_id: str) -> None:
        """End an injected drop; KeyError if there is none with this id."""
        del self._drops[fault_id]

    @property
    def faults(self) -> list[Fault]:
        """Drops in effect or waiting for their start."""
        return list(self._drops.values())
