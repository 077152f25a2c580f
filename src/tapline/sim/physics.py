"""Deterministic physics of one booster pump room: ``RoomSim``.

Model, per step of at most 1 s (``step`` sub-steps longer ones):
1. Demand: the compound's draw (``demand``) plus any burst-pipe leak, both orifices ``c·√P``.
2. The PLC reads its transmitters (inlet, outlet, tank level: true value + noise, quantised to the
   register, then any sensor fault), updates interlocks, stages/rotates pumps and runs its PI loop
   (``controller``). The drives follow their run commands and ramp (5 Hz/s, soft 0.2 Hz/s).
3. Hydraulics (``hydraulics``): the outlet pressure relaxes (τ = 1 s, network compliance) towards the
   pressure where pumps (+ tank-less bypass) deliver the draw; pump flows, shaft and electrical power
   and motor currents follow from the pump curve at that pressure.
4. Tank (tank rooms): level += (float-valve inflow − pump flow)·dt / area. The modulating float valve
   passes ``c_v·√P_inlet·opening``; overflow above the tank height is counted, never lost silently.
   Tank-less sets draw from the mains directly and stop on low inlet pressure.
5. Water quality: free chlorine is a stirred tank with first-order decay, ``dC/dt = Q_in(C_feed − C)/V
   − k·C``; a tank-less set passes the feed through. Turbidity and pH wander around per-site bases.
6. Counters and environment: TotalFlow integrates the outlet flow, Energy the drives' power plus 0.4 kW
   of auxiliaries; room temperature follows the day plus pump heat, humidity follows temperature.

Rules:
- Pure: no IO, no wall clock, no global random. Streams come from (seed, site id, purpose), so the
  same seed gives the identical trace and a different seed a different one.
- Physics noise (demand, PLC transmitters, wandering quantities) is drawn in ``step``; the white noise
  of the other readings is drawn in ``values`` from a stream re-seeded per step, so polling more or
  less often never changes the trace, and ``values`` is the same until the next step or write.
- Faults are applied by ``room_faults.RoomFaults``; this module asks it what is in effect.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from tapline.sim import hydraulics
from tapline.sim.commands import apply_write
from tapline.sim.controller import Drive, Plc
from tapline.sim.demand import DAY_S, Demand
from tapline.sim.faults import Fault
from tapline.sim.noise import Wander, derive_seed, stream
from tapline.sim.points import device_names
from tapline.sim.readings import read_room
from tapline.sim.room_faults import RoomFaults
from tapline.sim.spec import TANK_WATER_MPA_PER_M, RoomSpec, design_room, make_room_spec

__all__ = ["RoomSim", "RoomSpec", "RoomState", "make_room_spec"]

OUTLET_TAU_S = 1.0
RISER_RESIDUAL_MPA = 0.03
AUXILIARY_KW = 0.4
MAX_SUBSTEP_S = 1.0
_TWO_PI_PER_DAY = 2.0 * math.pi / DAY_S

Number = bool | int | float


@dataclass(frozen=True, slots=True)
class RoomState:
    """True (noise-free) physical state, for tests and evaluations; not what the gateway sees."""

    t_s: float
    inlet_mpa: float
    outlet_mpa: float
    setpoint_mpa: float
    tank_level_m: float
    tank_inflow_m3h: float
    pump_flow_m3h: float
    outlet_flow_m3h: float
    demand_m3h: float
    leak_m3h: float
    overflow_m3: float
    chlorine_mg_l: float
    command_hz: float
    running_pumps: int
    target_pumps: int
    electrical_kw: float


class RoomSim:
    """One simulated pump room: physics, PLC, drives, instruments and injected faults."""

    def __init__(self, spec: RoomSpec, seed: int, start_s: float = 0.0) -> None:
        self.spec = spec
        self.design = design = design_room(spec)
        site = spec.site_id
        init = stream(seed, site, "init")
        self._rng = stream(seed, site, "physics")
        self._report_seed = derive_seed(seed, site, "report")
        self._t = start_s
        self._steps = 0
        self._cache: dict[str, Number] | None = None
        self._demand = Demand(
            stream(seed, site, "demand"), design.mean_demand_m3h, spec.demand_shift_s, start_s
        )
        self.faults = RoomFaults(spec, self)

        days = init.uniform(200.0, 3000.0)
        self.drives = [
            Drive(
                f"vfd{i}",
                run_hours=(hours := days * 24 * init.uniform(0.25, 0.6)),
                starts=int(hours / 6),
                min_hz=design.min_hz,
            )
            for i in range(1, spec.pumps + 1)
        ]
        self.plc = Plc(spec, design, self.drives, spec.setpoint_mpa)
        self.total_flow_m3 = design.mean_demand_m3h * 24.0 * days
        self.energy_kwh = self.total_flow_m3 * init.uniform(0.2, 0.35)
        self.overflow_m3 = 0.0

        self.inlet_mpa = 0.22
        self.outlet_mpa = spec.setpoint_mpa
        draw = self._demand.value_m3h
        opening = min(1.0, draw / (design.valve_coeff * math.sqrt(self.inlet_mpa)))
        self.level_m = design.valve_top_m - design.valve_band_m * opening if spec.tank else 0.0
        self.tank_inflow_m3h = draw if spec.tank else 0.0
        self.pump_flow_m3h = draw
        self.outlet_flow_m3h = draw
        self.leak_m3h = 0.0
        self.electrical_kw = 0.0
        self._start_pumps(draw, init)

        self._feed = Wander(self._rng, 0.02, 7200.0)
        volume = max(self.level_m, 0.1) * spec.tank_area_m2
        mean, decay = design.mean_demand_m3h, spec.chlorine_decay_per_h * volume
        self.chlorine = spec.feed_chlorine_mg_l * (mean / (mean + decay) if spec.tank else 0.98)
        self._turbidity_base = init.uniform(0.08, 0.35)
        self.turbidity = self._turbidity_base
        self._turbidity_wander = Wander(self._rng, 0.15, 1800.0)
        self._ph = Wander(self._rng, 0.05, 3 * 3600.0)
        self._ph_base = init.uniform(7.0, 7.8)
        self._temperature_base = init.uniform(16.0, 24.0)
        self.temperature = self._temperature_base + self._daily_swing(start_s)
        self._humidity_base = init.uniform(55.0, 70.0)
        self.humidity = self._humidity_base
        self._climate = Wander(self._rng, 0.5, 3600.0)
        self._voltage = Wander(self._rng, 0.012, 900.0)
        self.voltage_v = hydraulics.LINE_VOLTAGE_V
        self.measured_inlet = self.measured_outlet = self.measured_level = 0.0
        self._read_plc_transmitters()

    def _start_pumps(self, draw: float, init: random.Random) -> None:
        """Begin in steady state: the fewest pumps that carry the draw below the stage-up frequency."""
        spec, design = self.spec, self.design
        suction = self.level_m * TANK_WATER_MPA_PER_M if spec.tank else self.inlet_mpa
        head = (spec.setpoint_mpa - suction) * hydraulics.G_M_PER_MPA
        count, hz = 1, spec.max_hz
        for count in range(1, design.duty_pumps + 1):
            per_pump = draw / count
            hz = 50.0 * math.sqrt(max(head + design.curve_k * per_pump**2, 0.0) / design.shutoff_head_m)
            if hz <= spec.stage_up_hz - 2.0:
                break
        hz = min(max(hz, design.min_hz), spec.max_hz)
        plc = self.plc
        plc.target_pumps, plc.integral_hz, plc.command_hz = count, hz, hz
        for drive in sorted(self.drives, key=lambda d: d.run_hours)[:count]:
            drive.run_command = drive.running = True
            drive.frequency = hz
            drive.synced = True
            drive.run_since_s = self._t - init.uniform(0.0, 20 * 3600.0)
        self._pump_power(suction, dry=False)

    @staticmethod
    def _daily_swing(t_s: float) -> float:
        return 3.0 * math.sin(_TWO_PI_PER_DAY * (t_s - 9 * 3600.0))

    # ----------------------------------------------------------------------------- public API
    @property
    def t_s(self) -> float:
        """Simulated seconds since local midnight of day 0."""
        return self._t

    def devices(self) -> list[str]:
        """The room's devices: plc, vfd1..vfdN, wq, env, power."""
        return device_names(self.spec.pumps)

    def device_online(self, device: str) -> bool:
        """Whether ``device`` answers Modbus now (device_offline, network_loss, power loss)."""
        if device not in self.devices():
            raise ValueError(f"{self.spec.site_id} has no device {device!r}")
        return self.faults.device_answers(device, self._t)

    def inject(self, fault: Fault) -> Fault:
        """Inject a fault (see ``faults``); returns it checked, with defaults filled in.

        A fault starting now shows at once in ``values`` (the PLC's transmitters are read again).
        """
        checked = self.faults.inject(fault, self._t)
        self._read_plc_transmitters()
        self._cache = None
        return checked

    def clear(self, fault_id: str) -> None:
        """End a fault; KeyError if this room has no such fault."""
        self.faults.clear(fault_id)
        self._read_plc_transmitters()
        self._cache = None

    def state(self) -> RoomState:
        """The true physical state (no noise, no sensor faults)."""
        return RoomState(
            t_s=self._t,
            inlet_mpa=self.inlet_mpa,
            outlet_mpa=self.outlet_mpa,
            setpoint_mpa=self.plc.setpoint_mpa,
            tank_level_m=self.level_m,
            tank_inflow_m3h=self.tank_inflow_m3h,
            pump_flow_m3h=self.pump_flow_m3h,
            outlet_flow_m3h=self.outlet_flow_m3h,
            demand_m3h=self._demand.value_m3h,
            leak_m3h=self.leak_m3h,
            overflow_m3=self.overflow_m3,
            chlorine_mg_l=self.chlorine,
            command_hz=self.plc.command_hz,
            running_pumps=sum(1 for drive in self.drives if drive.running),
            target_pumps=self.plc.target_pumps,
            electrical_kw=self.electrical_kw,
        )

    def true_reading(self, point: str) -> float:
        """The noise-free value a transmitter point would show (used to freeze a stuck sensor)."""
        readings = {
            "plc/InletPressure": self.inlet_mpa,
            "plc/OutletPressure": self.outlet_mpa,
            "plc/TankLevel": self.level_m if self.spec.tank else 0.0,
            "plc/Flow": self.outlet_flow_m3h,
            "wq/Chlorine": self.chlorine,
            "wq/Turbidity": self.turbidity,
            "wq/PH": self._ph_base + self._ph.value,
            "env/Temperature": self.temperature,
            "env/Humidity": self.humidity,
        }
        return readings[point]

    def step(self, dt_s: float, inlet_pressure_mpa: float) -> None:
        """Advance ``dt_s`` simulated seconds with the district's inlet pressure (sub-steps of ≤ 1 s)."""
        if dt_s < 0 or not math.isfinite(dt_s):
            raise ValueError(f"dt_s must be a finite number >= 0, got {dt_s}")
        if dt_s == 0:
            return
        count = max(1, math.ceil(dt_s / MAX_SUBSTEP_S - 1e-9))
        for _ in range(count):
            self._advance(dt_s / count, inlet_pressure_mpa)
        self._cache = None

    # ----------------------------------------------------------------------------- one sub-step
    def _advance(self, dt: float, inlet_supply: float) -> None:
        spec, design, plc, fx = self.spec, self.design, self.plc, self.faults
        self._t = t = self._t + dt
        self._steps += 1
        fx.activate_due(t)
        mains = fx.power_since is None
        inlet = self.inlet_mpa = fx.inlet(inlet_supply, t)
        demand = self._demand.step(t, dt)
        leak = self.leak_m3h = fx.leak_m3h

        self._read_plc_transmitters()
        readings = (self.measured_inlet, self.measured_outlet, self.measured_level)
        plc.interlocks(t, mains, readings, self.level_m, self.outlet_mpa)
        plc.schedule(t, dt)
        delivering = sum(1 for drive in self.drives if drive.flow_m3h > 0.0)
        if delivering == 0 and any(drive.running for drive in self.drives):
            delivering = 1
        plc.regulate(dt, self.measured_outlet, self.outlet_flow_m3h, delivering)
        permitted = plc.permitted()
        for drive in self.drives:
            if mains and permitted and drive.run_command and not drive.running and not drive.fault:
                code = fx.start_fails(drive)
                if code:
                    drive.trip(code)
                    continue
            drive.update(t, dt, plc.command_hz, mains, permitted)

        # hydraulics
        suction = self.level_m * TANK_WATER_MPA_PER_M if spec.tank else inlet
        dry = spec.tank and self.level_m < 0.05
        scales = [] if dry else [d.frequency * 0.02 for d in self.drives if d.frequency > 0.0]
        draw_coeff = (demand + leak) / math.sqrt(spec.setpoint_mpa)
        bypass = 0.0 if spec.tank else design.bypass_coeff
        target = hydraulics.equilibrium_pressure(
            scales, suction, design.shutoff_head_m, design.curve_k, draw_coeff, bypass, inlet
        )
        if spec.tank and target < RISER_RESIDUAL_MPA:
            target = RISER_RESIDUAL_MPA
        self.outlet_mpa += (target - self.outlet_mpa) * (1.0 - math.exp(-dt / OUTLET_TAU_S))
        self._pump_power(suction, dry)
        through_bypass = bypass * math.sqrt(inlet - self.outlet_mpa) if inlet > self.outlet_mpa else 0.0
        self.outlet_flow_m3h = self.pump_flow_m3h + through_bypass

        if spec.tank:
            opening = fx.valve_opening
            if opening is None:
                opening = min(1.0, max(0.0, (design.valve_top_m - self.level_m) / design.valve_band_m))
            self.tank_inflow_m3h = design.valve_coeff * math.sqrt(max(inlet, 0.0)) * opening
            self.level_m += (self.tank_inflow_m3h - self.pump_flow_m3h) * dt / 3600.0 / spec.tank_area_m2
            if self.level_m > spec.tank_height_m:
                self.overflow_m3 += (self.level_m - spec.tank_height_m) * spec.tank_area_m2
                self.level_m = spec.tank_height_m
        else:
            self.tank_inflow_m3h = 0.0
        self.total_flow_m3 += self.outlet_flow_m3h * dt / 3600.0
        if mains:
            self.energy_kwh += (self.electrical_kw + AUXILIARY_KW) * dt / 3600.0
        self._water_quality(dt)
        self._environment(t, dt)

    def _read_plc_transmitters(self) -> None:
        gauss, fx = self._rng.gauss, self.faults
        self.measured_inlet = fx.sensor("plc/InletPressure", round(self.inlet_mpa + gauss(0.0, 0.001), 3))
        self.measured_outlet = fx.sensor("plc/OutletPressure", round(self.outlet_mpa + gauss(0.0, 0.001), 3))
        level = round(self.level_m + gauss(0.0, 0.003), 3) if self.spec.tank else 0.0
        self.measured_level = fx.sensor("plc/TankLevel", level)

    def _pump_power(self, suction: float, dry: bool) -> None:
        design = self.design
        h0, k, bep, efficiency = (
            design.shutoff_head_m,
            design.curve_k,
            design.bep_flow_m3h,
            self.spec.pump_efficiency,
        )
        head = (self.outlet_mpa - suction) * hydraulics.G_M_PER_MPA
        flow = power = 0.0
        for drive in self.drives:
            if drive.frequency <= 0.0:
                drive.flow_m3h = drive.power_kw = drive.current_a = 0.0
                continue
            scale = drive.frequency * 0.02
            shutoff = h0 * scale * scale
            q = 0.0 if dry else hydraulics.pump_flow(scale, head, h0, k)
            shaft = hydraulics.shaft_power_kw(q, head if q > 0.0 else shutoff, scale, bep, efficiency)
            if dry:
                shaft *= 0.3  # a pump turning in air hardly loads its motor: the dry-run signature
            drive.flow_m3h = q
            drive.power_kw = hydraulics.electrical_power_kw(shaft)
            drive.current_a = hydraulics.motor_current_a(drive.power_kw, scale, design.rated_current_a)
            flow += q
            power += drive.power_kw
        self.pump_flow_m3h = flow
        self.electrical_kw = power

    def _water_quality(self, dt: float) -> None:
        spec, fx = self.spec, self.faults
        feed = fx.feed_chlorine
        if feed is None:
            feed = spec.feed_chlorine_mg_l + self._feed.step(dt)
        if spec.tank:
            volume = max(self.level_m, 0.1) * spec.tank_area_m2
            change = (
                self.tank_inflow_m3h * (feed - self.chlorine) / volume
                - spec.chlorine_decay_per_h * self.chlorine
            )
            self.chlorine = max(0.0, self.chlorine + change * dt / 3600.0)
        else:
            self.chlorine += (0.98 * feed - self.chlorine) * dt / 120.0
        spike = fx.turbidity_ntu
        target = (
            spike if spike is not None else self._turbidity_base * (1.0 + self._turbidity_wander.step(dt))
        )
        self.turbidity += (target - self.turbidity) * dt / 90.0

    def _environment(self, t: float, dt: float) -> None:
        weather = self._climate.step(dt)
        target = self._temperature_base + self._daily_swing(t) + weather + 0.05 * self.electrical_kw
        self.temperature += (target - self.temperature) * dt / 1800.0
        wet = (
            95.0
            if self.faults.flood
            else self._humidity_base - 1.5 * (self.temperature - self._temperature_base)
        )
        self.humidity += (min(wet - 2.0 * weather, 99.0) - self.humidity) * dt / 1200.0
        self.voltage_v = (
            hydraulics.LINE_VOLTAGE_V * (1.0 + self._voltage.step(dt)) - 0.05 * self.electrical_kw
        )

    # ----------------------------------------------------------------------------- readings and commands
    def values(self) -> dict[str, Number]:
        """Every point of every device as the instruments report it (noise, resolution, sensor faults)."""
        if self._cache is None:
            self._cache = self._read_all()
        return dict(self._cache)

    def _read_all(self) -> dict[str, Number]:
        return read_room(self, random.Random(self._report_seed + self._steps))

    def write(self, point: str, value: Number) -> None:
        """A command from a Modbus write; ValueError for unknown, read-only or out-of-range points/values."""
        apply_write(self, point, value)
        self._cache = None
