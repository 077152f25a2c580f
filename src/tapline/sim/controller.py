"""The room's pump drives and its booster-set controller (PLC), as plain state machines.

Rules of the simulated PLC (what a typical 变频恒压供水 controller does):
- Pressure: one PI loop on the outlet-pressure transmitter sets a common frequency for every running
  pump (the pumps run in step). Output limits min_hz..max_hz, conditional integration (no wind-up).
  Its gains are scheduled on the plant gain dP/df that the controller computes from its pump curve
  and flow meter (as adaptive booster controllers do), so the loop behaves alike in every room and
  at every load, and stays stable at a 1 s scan.
- Staging (auto mode): one more pump when the frequency has been ≥ stage_up_hz (48 Hz) for
  stage_delay_s (30 s), up to the duty pumps; one pump less when it has been ≤ stage_down_hz (30 Hz)
  for stage_delay_s, down to one. A pump that faults is replaced at once by a healthy one.
- Rotation: a start takes the healthy stopped pump with the fewest run hours; a stop takes the pump that
  has run longest since its start; a pump that has run rotate_after_h (24 h) without a stop hands over
  to a rested one, so duty and standby swap and run hours even out. The handover is bumpless: the
  rested pump starts first and the tired one stops once the newcomer is up to speed.
- Drives ramp at 5 Hz/s, except for soft start and soft stop inside the operating range (above
  min_hz) at 0.2 Hz/s, which avoids water hammer and lets the pressure loop absorb a pump joining or
  leaving (a pump's flow jumps as it opens its check valve); a pump that has caught up with the common
  frequency follows it at the fast rate. An interlock stop uses the fast rate; a trip or a mains loss
  cuts the output at once.
- Modes: 0 auto (the PLC decides which pumps run; RunCommand coils show its decision and remote writes
  to them are overwritten), 1 manual and 2 remote (RunCommand coils decide; the PI still sets speed).
- Interlocks, in every mode, stop all pumps: no mains (restart 5 s after it returns); tank dry-run
  (level transmitter < 0.3 m, released > 0.8 m; a hard-wired low-low float switch at 0.2 m backs it up);
  tank-less low inlet (inlet transmitter < 0.05 MPa, released > 0.08 MPa); a hard-wired high-pressure
  switch (outlet > setpoint + 0.25 MPa, released below the setpoint).
- A transmitter reading at or below the bottom of its span (broken 4–20 mA loop) is ignored by the PLC:
  with a broken outlet transmitter it holds the last frequency and stops staging.
"""

from __future__ import annotations

from tapline.sim.hydraulics import G_M_PER_MPA
from tapline.sim.spec import RoomDesign, RoomSpec

PROPORTIONAL_GAIN = 0.58
INTEGRAL_GAIN_PER_S = 1.58
"""Loop gains Kp·dP/df and Ki·dP/df·1 s. With a 1 s scan and the outlet's 1 s lag (a = e^-1) the
closed loop is z² + (α·Kp' + α·Ki' − 1 − a)·z + (a − α·Kp') with α = 1 − a: Kp' = a/α and Ki' = 1/α
put both poles at 0 (deadbeat). Stability needs 2·Kp' + Ki' < 2(1 + a)/α = 4.3, so the loop tolerates
a plant-gain estimate about 1.5× off."""
PLANT_GAIN_LIMITS = (0.004, 0.08)
"""Bounds (MPa/Hz) on the estimated plant gain, so a bad flow reading cannot make the loop wild."""
RAMP_HZ_PER_S = 5.0
SOFT_RAMP_HZ_PER_S = 0.2
RESTART_DELAY_S = 5.0
DRY_RUN_STOP_M, DRY_RUN_RELEASE_M, LOW_LOW_SWITCH_M = 0.3, 0.8, 0.2
LOW_INLET_STOP_MPA, LOW_INLET_RELEASE_MPA = 0.05, 0.08
HIGH_PRESSURE_MARGIN_MPA = 0.25
BROKEN_BELOW = 0.0005


class Drive:
    """One pump drive: command coil, state, counters and the fault latch."""

    __slots__ = (
        "current_a",
        "fault",
        "fault_code",
        "flow_m3h",
        "frequency",
        "min_hz",
        "name",
        "power_kw",
        "run_command",
        "run_hours",
        "run_since_s",
        "running",
        "starts",
        "synced",
    )

    def __init__(self, name: str, run_hours: float, starts: int, min_hz: float) -> None:
        self.name = name
        self.min_hz = min_hz
        self.synced = False
        self.run_command = False
        self.running = False
        self.frequency = 0.0
        self.fault = False
        self.fault_code = 0
        self.run_hours = run_hours
        self.starts = starts
        self.run_since_s = 0.0
        self.flow_m3h = 0.0
        self.power_kw = 0.0
        self.current_a = 0.0

    def trip(self, code: int) -> None:
        """Latch a drive fault: the output switches off at once and the pump coasts down."""
        self.fault = True
        self.fault_code = code
        self.running = False
        self.frequency = 0.0

    def reset(self) -> None:
        """Clear the fault latch."""
        self.fault = False
        self.fault_code = 0

    def update(self, t_s: float, dt_s: float, command_hz: float, powered: bool, permitted: bool) -> bool:
        """Follow the run command; return True when the pump starts in this step."""
        started = False
        if not powered:
            self.running = False
            self.frequency = 0.0
            return False
        want = self.run_command and permitted and not self.fault
        if want and not self.running:
            self.running = True
            self.synced = False
            self.starts += 1
            self.run_since_s = t_s
            started = True
        elif not want:
            self.running = False
        frequency = self.frequency
        if self.running:
            target = command_hz
            soft = not self.synced and frequency >= self.min_hz
        else:
            target = 0.0
            soft = permitted and frequency > self.min_hz  # an interlock stops at the fast rate
        ramp = (SOFT_RAMP_HZ_PER_S if soft else RAMP_HZ_PER_S) * dt_s
        if abs(target - frequency) <= ramp:
            self.frequency = target
            self.synced = self.running
        elif frequency < target:
            self.frequency = frequency + ramp
        else:
            self.frequency = frequency - ramp
        if self.running:
            self.run_hours += dt_s / 3600.0
        return started


class Plc:
    """The booster-set controller: PI pressure loop, staging, rotation, interlocks and modes."""

    def __init__(self, spec: RoomSpec, design: RoomDesign, drives: list[Drive], setpoint_mpa: float) -> None:
        self.spec = spec
        self.design = design
        self.drives = drives
        self.mode = 0
        self.setpoint_mpa = setpoint_mpa
        self.integral_hz = self.design.min_hz
        self.command_hz = self.design.min_hz
        self.target_pumps = 1
        self.up_timer_s = 0.0
        self.down_timer_s = 0.0
        self.dry_run = False
        self.low_inlet = False
        self.high_pressure = False
        self.mains_back_s: float | None = None
        self.outlet_fault = False
        self.incoming: Drive | None = None

    def permitted(self) -> bool:
        """No interlock stops the pumps."""
        return not (self.dry_run or self.low_inlet or self.high_pressure or self.mains_back_s is not None)

    def interlocks(
        self,
        t_s: float,
        mains: bool,
        readings: tuple[float, float, float],
        true_level: float,
        true_outlet: float,
    ) -> None:
        """Update the interlock latches from the (inlet, outlet, level) transmitter readings and the
        hard-wired switches (low-low float switch, high-pressure switch) that act on the true state."""
        inlet, outlet, level = readings
        if not mains:
            self.mains_back_s = t_s + RESTART_DELAY_S
        elif self.mains_back_s is not None and t_s >= self.mains_back_s:
            self.mains_back_s = None
        if self.spec.tank:
            level_ok = level > BROKEN_BELOW
            if (level_ok and level < DRY_RUN_STOP_M) or true_level < LOW_LOW_SWITCH_M:
                self.dry_run = True
            elif self.dry_run and level_ok and level > DRY_RUN_RELEASE_M and true_level > LOW_LOW_SWITCH_M:
                self.dry_run = False
        elif inlet > BROKEN_BELOW:
            if inlet < LOW_INLET_STOP_MPA:
                self.low_inlet = True
            elif inlet > LOW_INLET_RELEASE_MPA:
                self.low_inlet = False
        if true_outlet > self.setpoint_mpa + HIGH_PRESSURE_MARGIN_MPA:
            self.high_pressure = True
        elif true_outlet < self.setpoint_mpa:
            self.high_pressure = False
        self.outlet_fault = outlet <= BROKEN_BELOW

    def plant_gain(self, outlet: float, flow_m3h: float, pumps: int) -> float:
        """dP/df (MPa/Hz) at the operating point, from the pump curve and the flow meter.

        With n pumps at speed s against draw c·√P: P = n²(h0·s² + P_s·G) / (c²·k + n²·G), so
        dP/df = 2·n²·h0·s / (50·(k·Q²/P + n²·G)).
        """
        design = self.design
        n2 = float(max(pumps, 1)) ** 2
        scale = self.command_hz / 50.0
        pressure = max(outlet, 0.05)
        gain = (
            2.0
            * n2
            * design.shutoff_head_m
            * scale
            / (50.0 * (design.curve_k * flow_m3h * flow_m3h / pressure + n2 * G_M_PER_MPA))
        )
        low, high = PLANT_GAIN_LIMITS
        return min(max(gain, low), high)

    def regulate(self, dt_s: float, outlet: float, flow_m3h: float, pumps: int) -> None:
        """PI step on the outlet-pressure reading; holds while no pump turns or the transmitter is broken."""
        if self.outlet_fault or pumps == 0:
            return
        gain = self.plant_gain(outlet, flow_m3h, pumps)
        kp, ki = PROPORTIONAL_GAIN / gain, INTEGRAL_GAIN_PER_S / gain
        error = self.setpoint_mpa - outlet
        spec = self.spec
        integral = self.integral_hz + ki * error * dt_s
        output = integral + kp * error
        if self.design.min_hz <= output <= spec.max_hz or (output > spec.max_hz) != (error > 0):
            self.integral_hz = min(max(integral, self.design.min_hz), spec.max_hz)
        self.command_hz = min(max(self.integral_hz + kp * error, self.design.min_hz), spec.max_hz)

    def schedule(self, t_s: float, dt_s: float) -> None:
        """Auto mode: decide how many and which pumps run (staging, replacement, rotation)."""
        for drive in self.drives:
            if drive.fault:
                drive.run_command = False
        if self.mode != 0 or not self.permitted():
            return
        spec = self.spec
        healthy = [drive for drive in self.drives if not drive.fault]
        limit = min(self.design.duty_pumps, len(healthy))
        running = [drive for drive in healthy if drive.run_command]
        if not self.outlet_fault:
            at_speed = all(drive.running and drive.frequency >= spec.stage_up_hz - 0.5 for drive in running)
            self.up_timer_s = (
                self.up_timer_s + dt_s if self.command_hz >= spec.stage_up_hz and at_speed else 0.0
            )
            self.down_timer_s = self.down_timer_s + dt_s if self.command_hz <= spec.stage_down_hz else 0.0
            if self.up_timer_s >= spec.stage_delay_s and self.target_pumps < limit:
                self.target_pumps += 1
                self.up_timer_s = 0.0
            if self.down_timer_s >= spec.stage_delay_s and self.target_pumps > 1:
                self.target_pumps -= 1
                self.down_timer_s = 0.0
        wanted = min(self.target_pumps, limit)
        incoming = self.incoming
        if incoming is not None and (not incoming.run_command or incoming.fault or incoming.synced):
            incoming = self.incoming = None  # at speed (or gone): the outgoing pump may stop now
        while len(running) < wanted:
            rested = min((d for d in healthy if not d.run_command), key=lambda d: d.run_hours)
            rested.run_command = True
            running.append(rested)
        while len(running) > wanted + (incoming is not None):
            longest = min((d for d in running if d is not incoming), key=lambda d: d.run_since_s)
            longest.run_command = False
            running.remove(longest)
        spare = [drive for drive in healthy if not drive.run_command]
        if running and spare and incoming is None:
            longest = min(running, key=lambda d: d.run_since_s)
            if longest.running and t_s - longest.run_since_s >= spec.rotate_after_h * 3600.0:
                self.incoming = min(spare, key=lambda d: d.run_hours)
                self.incoming.run_command = True

    def take_over(self) -> None:
        """Switching to auto: adopt the pumps that run now as the duty set."""
        self.target_pumps = max(1, sum(1 for drive in self.drives if drive.run_command and not drive.fault))
