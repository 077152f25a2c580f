"""What a simulated pump room is (``RoomSpec``) and how its equipment is sized (``design_room``).

Rules:
- A ``RoomSpec`` is data: frozen, validated on construction, and everything left ``None`` is sized
  from the rest by ``design_room``, so ``RoomSpec("PR-0001", "jianghan", households=1500)`` gets pumps
  big enough for 1,500 households.
- ``make_room_spec`` varies rooms deterministically from (seed, site id) only.

Sizing (engineering defaults, documented here so a reviewer can argue with them):
- Mean demand = households × m³ per household per day / 24; design peak = mean × profile peak × 1.25.
- ``pumps − 1`` duty pumps and one standby (a 2-pump room runs one duty pump). Each pump delivers
  design peak / duty pumps × 1.05 at 50 Hz against the design head, so at the 48 Hz stage-up
  threshold the duty pumps together just cover the design peak.
- Design head = setpoint − suction (tank room: the tank's water column; tank-less set: 0.22 MPa mains).
- Shut-off head = 2.9 × design head: booster-set curves are steep enough that the drive frequency
  spans about 30–50 Hz over a day (the field range in domain.md §8 is about 25–50 Hz); with a flat
  curve the 30 Hz destage threshold could never be reached.
- Minimum drive frequency: 25 Hz with a tank; 15 Hz for a tank-less set, whose pumps only add the
  difference between the mains and the setpoint and must idle slowly when the mains nearly suffice.
- Tank volume (``make_room_spec``) ≈ 22 % of the maximum day's use (CJJ 140 / GB 50015: 20–25 %).
- The inlet float valve passes 1.4 × design peak at 0.20 MPa fully open and closes proportionally
  over its last 0.6 m below the top water level (tank height − 0.3 m).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tapline.sim import hydraulics
from tapline.sim.demand import PROFILE_PEAK
from tapline.sim.noise import stream

NOMINAL_INLET_MPA = 0.22
SHUTOFF_HEAD_RATIO = 2.9
PEAK_MARGIN = 1.25
VALVE_CAPACITY = 1.4
VALVE_BAND_M = 0.6
TOP_WATER_GAP_M = 0.3
TANK_WATER_MPA_PER_M = 0.00981
TANK_MIN_HZ = 25.0
TANKLESS_MIN_HZ = 15.0
MOTOR_SIZES_KW = (1.5, 2.2, 3.0, 4.0, 5.5, 7.5, 11.0, 15.0, 18.5, 22.0, 30.0, 37.0, 45.0, 55.0)


@dataclass(frozen=True, slots=True)
class RoomSpec:
    """One booster pump room. ``None`` fields are sized by ``design_room``."""

    site_id: str
    district: str
    pumps: int = 3
    tank: bool = True
    tank_area_m2: float = 20.0
    tank_height_m: float = 4.0
    households: int = 600
    setpoint_mpa: float = 0.45
    household_m3_per_day: float = 0.55
    demand_shift_s: float = 0.0
    max_duty_pumps: int | None = None
    pump_shutoff_head_m: float | None = None
    pump_curve_k: float | None = None
    pump_rated_flow_m3h: float | None = None
    pump_efficiency: float = 0.72
    motor_rated_kw: float | None = None
    feed_chlorine_mg_l: float = 0.45
    chlorine_decay_per_h: float = 0.08
    stage_up_hz: float = 48.0
    stage_down_hz: float = 30.0
    stage_delay_s: float = 30.0
    rotate_after_h: float = 24.0
    min_hz: float | None = None
    max_hz: float = 50.0
    ups_runtime_s: float = 7200.0

    def __post_init__(self) -> None:
        problems = []
        if not 2 <= self.pumps <= 4:
            problems.append(f"pumps must be 2..4, got {self.pumps}")
        if self.households <= 0 or self.household_m3_per_day <= 0:
            problems.append("households and household_m3_per_day must be positive")
        if not 0.20 <= self.setpoint_mpa <= 0.80:
            problems.append(f"setpoint_mpa must be 0.20..0.80, got {self.setpoint_mpa}")
        if self.tank and (self.tank_area_m2 <= 0 or self.tank_height_m <= 1.0):
            problems.append("a tank needs area > 0 and height > 1 m")
        if self.max_duty_pumps is not None and not 1 <= self.max_duty_pumps <= self.pumps:
            problems.append("max_duty_pumps must be 1..pumps")
        if not 0 < (self.min_hz or 15.0) < self.stage_down_hz < self.stage_up_hz <= self.max_hz:
            problems.append("need 0 < min_hz < stage_down_hz < stage_up_hz <= max_hz")
        if not 0 < self.pump_efficiency < 1 or self.chlorine_decay_per_h < 0:
            problems.append("pump_efficiency must be in (0, 1) and chlorine_decay_per_h >= 0")
        if problems:
            raise ValueError(f"invalid RoomSpec {self.site_id}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class RoomDesign:
    """Derived sizing of a room's equipment (see the module docstring)."""

    duty_pumps: int
    min_hz: float
    mean_demand_m3h: float
    design_peak_m3h: float
    design_suction_mpa: float
    design_head_m: float
    shutoff_head_m: float
    curve_k: float
    rated_flow_m3h: float
    bep_flow_m3h: float
    motor_kw: float
    rated_current_a: float
    valve_coeff: float
    valve_top_m: float
    valve_band_m: float
    bypass_coeff: float


def design_room(spec: RoomSpec) -> RoomDesign:
    """Size pumps, motors, float valve and bypass for ``spec``."""
    duty = spec.max_duty_pumps or max(1, spec.pumps - 1)
    mean = spec.households * spec.household_m3_per_day / 24.0
    peak = mean * PROFILE_PEAK * PEAK_MARGIN
    top = spec.tank_height_m - TOP_WATER_GAP_M
    suction = (top - VALVE_BAND_M / 2) * TANK_WATER_MPA_PER_M if spec.tank else NOMINAL_INLET_MPA
    head = max((spec.setpoint_mpa - suction) * hydraulics.G_M_PER_MPA, 5.0)
    rated = spec.pump_rated_flow_m3h or peak / duty * 1.05
    shutoff = spec.pump_shutoff_head_m or SHUTOFF_HEAD_RATIO * head
    k = spec.pump_curve_k or (shutoff - head) / (rated * rated)
    bep = 0.85 * rated
    shaft = hydraulics.shaft_power_kw(rated, head, 1.0, bep, spec.pump_efficiency)
    motor = spec.motor_rated_kw or next((s for s in MOTOR_SIZES_KW if s >= shaft * 1.1), MOTOR_SIZES_KW[-1])
    current = motor * 1000.0 / (math.sqrt(3.0) * hydraulics.LINE_VOLTAGE_V * 0.86 * 0.9)
    return RoomDesign(
        duty_pumps=duty,
        min_hz=spec.min_hz or (TANK_MIN_HZ if spec.tank else TANKLESS_MIN_HZ),
        mean_demand_m3h=mean,
        design_peak_m3h=peak,
        design_suction_mpa=suction,
        design_head_m=head,
        shutoff_head_m=shutoff,
        curve_k=k,
        rated_flow_m3h=rated,
        bep_flow_m3h=bep,
        motor_kw=motor,
        rated_current_a=current,
        valve_coeff=VALVE_CAPACITY * peak / math.sqrt(0.20),
        valve_top_m=top,
        valve_band_m=VALVE_BAND_M,
        bypass_coeff=peak / math.sqrt(0.03),
    )


def district_feed_chlorine(district: str, seed: int) -> float:
    """Free chlorine (mg/L) of the municipal water reaching a district: 0.35–0.55."""
    return round(stream(seed, "district", district, "chlorine").uniform(0.35, 0.55), 3)


def make_room_spec(site_id: str, district: str, seed: int) -> RoomSpec:
    """A varied but deterministic room for (seed, site id): 2–4 pumps, 120–2,500 households,
    setpoint 0.35–0.60 MPa, about 10 % tank-less sets."""
    rng = stream(seed, "room", site_id, "spec")
    households = int(min(2500, max(120, rng.lognormvariate(math.log(550), 0.5))))
    if households < 300:
        pumps = 2 if rng.random() < 0.8 else 3
    elif households > 1200:
        pumps = 4 if rng.random() < 0.7 else 3
    else:
        pumps = rng.choice((2, 3, 3, 3, 3, 4))
    per_household = round(rng.uniform(0.45, 0.65), 3)
    tank = rng.random() >= 0.10
    height = rng.choice((3.0, 3.5, 4.0, 4.0, 4.5))
    volume = 0.22 * households * per_household * 1.3
    area = max(4.0, round(volume / (height - TOP_WATER_GAP_M) * 2) / 2)
    return RoomSpec(
        site_id=site_id,
        district=district,
        pumps=pumps,
        tank=tank,
        tank_area_m2=area,
        tank_height_m=height,
        households=households,
        setpoint_mpa=round(rng.uniform(0.35, 0.60), 2),
        household_m3_per_day=per_household,
        demand_shift_s=round(rng.uniform(-1800.0, 1800.0)),
        feed_chlorine_mg_l=round(district_feed_chlorine(district, seed) + rng.uniform(-0.04, 0.04), 3),
        chlorine_decay_per_h=round(rng.uniform(0.05, 0.12), 3),
    )
