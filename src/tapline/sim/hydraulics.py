"""Pump and network hydraulics of a booster room, as pure functions on floats.

Model (SI-ish units as utilities use them: pressure MPa, head m, flow m³/h, power kW):
- Pump curve (per pump, affinity laws): H = h0·s² − k·Q², s = f/50 Hz. A check valve on every pump
  stops reverse flow, so a pump whose shut-off head is below the system head delivers nothing.
- Head across the pumps: H = (P_out − P_suction)·G with G = 101.97 m/MPa (water at 1000 kg/m³).
  Suction is the tank's water column (tank room) or the municipal inlet pressure (tank-less set).
- Downstream, residents' taps (and a burst pipe) are orifices: draw = c·√P_out.
- Tank-less sets have a bypass with a check valve from the inlet straight to the outlet; it carries
  water whenever the inlet pressure exceeds the outlet pressure: q = c_b·√(P_in − P_out).
- ``equilibrium_pressure`` solves pumps + bypass = draw. With all running pumps at one frequency
  (the normal case: the PLC drives them in step) it is closed-form; otherwise (a pump ramping up or
  down) bisection. The room relaxes towards it with a short time constant (pipe and pressure-vessel
  compliance), which keeps every step size stable.
- Shaft power = ρgQH / η with the efficiency parabola η = η_bep·x·(2 − x), x = Q / (Q_bep·s); the
  limit at Q → 0 is the finite shut-off power. Electrical power adds motor and drive losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

G_M_PER_MPA = 101.97
"""Metres of water column per MPa."""
KW_FACTOR = 367.2
"""Hydraulic kW = Q[m³/h] · H[m] / 367.2."""
MOTOR_EFFICIENCY = 0.90
DRIVE_EFFICIENCY = 0.97
LINE_VOLTAGE_V = 380.0
_SQRT3 = math.sqrt(3.0)
_BISECTIONS = 40


def pump_flow(scale: float, head_m: float, shutoff_head_m: float, curve_k: float) -> float:
    """Flow of one pump at speed ``scale`` (f/50) against ``head_m``; 0 below its check valve's opening."""
    available = shutoff_head_m * scale * scale - head_m
    return math.sqrt(available / curve_k) if available > 0.0 else 0.0


def _net_flow(
    pressure: float,
    scales: Sequence[float],
    suction: float,
    h0: float,
    k: float,
    draw: float,
    bypass: float,
    inlet: float,
) -> float:
    head = (pressure - suction) * G_M_PER_MPA
    total = 0.0
    for scale in scales:
        total += pump_flow(scale, head, h0, k)
    if bypass > 0.0 and inlet > pressure:
        total += bypass * math.sqrt(inlet - pressure)
    return total - draw * math.sqrt(pressure if pressure > 0.0 else 0.0)


def equilibrium_pressure(
    scales: Sequence[float],
    suction_mpa: float,
    shutoff_head_m: float,
    curve_k: float,
    draw_coeff: float,
    bypass_coeff: float = 0.0,
    inlet_mpa: float = 0.0,
) -> float:
    """Outlet pressure (MPa) at which the delivering pumps and the bypass match the draw ``c·√P``.

    ``scales`` are the pumps' speeds f/50 (only pumps that turn). ``bypass_coeff`` > 0 for tank-less sets.
    """
    bypass_only = 0.0
    if bypass_coeff > 0.0 and inlet_mpa > 0.0:
        cb2 = bypass_coeff * bypass_coeff
        bypass_only = cb2 * inlet_mpa / (cb2 + draw_coeff * draw_coeff)
    if not scales:
        return bypass_only
    first = scales[0]
    if all(abs(scale - first) < 1e-9 for scale in scales):
        n2 = float(len(scales)) ** 2
        lift = shutoff_head_m * first * first + suction_mpa * G_M_PER_MPA
        pumped = n2 * lift / (draw_coeff * draw_coeff * curve_k + n2 * G_M_PER_MPA)
        return pumped if pumped > bypass_only else bypass_only
    high = max(scales) ** 2 * shutoff_head_m / G_M_PER_MPA + suction_mpa
    if inlet_mpa > high:
        high = inlet_mpa
    low = 0.0
    for _ in range(_BISECTIONS):
        middle = 0.5 * (low + high)
        if (
            _net_flow(
                middle, scales, suction_mpa, shutoff_head_m, curve_k, draw_coeff, bypass_coeff, inlet_mpa
            )
            > 0
        ):
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def shaft_power_kw(
    flow_m3h: float, head_m: float, scale: float, bep_flow_m3h: float, bep_efficiency: float
) -> float:
    """Shaft power of one pump delivering ``flow_m3h`` against ``head_m`` at speed ``scale``."""
    if scale <= 0.0:
        return 0.0
    x = flow_m3h / (bep_flow_m3h * scale)
    if x > 1.9:
        x = 1.9  # far right of the curve: cap the efficiency fall-off instead of dividing by ~0
    # ρgQH/η with η = η_bep·x·(2−x) and Q = x·Q_bep·s, simplified so that Q → 0 stays finite.
    return head_m * bep_flow_m3h * scale / (KW_FACTOR * bep_efficiency * (2.0 - x))


def electrical_power_kw(shaft_kw: float) -> float:
    """Power drawn from the mains by a drive and motor delivering ``shaft_kw``."""
    return shaft_kw / (MOTOR_EFFICIENCY * DRIVE_EFFICIENCY)


def motor_current_a(electrical_kw: float, scale: float, rated_current_a: float) -> float:
    """Output current of a drive: load current at V/f voltage plus the motor's magnetising current."""
    if scale <= 0.0:
        return 0.0
    volts = LINE_VOLTAGE_V * (scale if scale > 0.1 else 0.1)
    load = electrical_kw * 1000.0 * MOTOR_EFFICIENCY / (_SQRT3 * volts * 0.88)
    magnetising = 0.3 * rated_current_a
    return math.sqrt(load * load + magnetising * magnetising)
