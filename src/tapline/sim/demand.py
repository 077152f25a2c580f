"""Residential water demand of the compound a pump room serves.

Model:
- Demand at the room's reference pressure = households × litres per household per day × a diurnal
  factor × (1 + slow wander) × (1 + fast tap noise).
- The diurnal factor is a 24-point hourly profile of a Chinese residential compound (morning peak
  about 07:00, evening peak about 20:00, night minimum about 03:00, peak hour factor about 1.9 as in
  GB 50015's 1.8–2.5 range for housing), linearly interpolated and normalised to a mean of exactly 1,
  so ``households × m3_per_day`` is the mean daily volume.
- The slow wander (±8 %, correlation 10 min) makes days differ; the fast wander (±2 %, correlation
  15 s) is taps opening and closing. Both come from the room's own ``demand`` random stream.
- Residents' taps are orifices: the actual draw falls with the square root of the outlet pressure
  (see ``hydraulics``); this module only gives the draw at the reference pressure.
"""

from __future__ import annotations

import random

from tapline.sim.noise import Wander

DAY_S = 86_400.0

_RAW_PROFILE = (
    0.45, 0.30, 0.22, 0.20, 0.22, 0.40, 1.10, 1.90, 1.75, 1.25, 1.05, 1.20,
    1.30, 0.95, 0.80, 0.80, 0.90, 1.20, 1.60, 1.95, 2.05, 1.80, 1.25, 0.75,
)  # fmt: skip
_MEAN = sum(_RAW_PROFILE) / len(_RAW_PROFILE)
PROFILE: tuple[float, ...] = tuple(value / _MEAN for value in _RAW_PROFILE)
"""Hourly demand factors (value at hh:00), mean 1."""

PROFILE_PEAK = max(PROFILE)
PROFILE_MIN = min(PROFILE)
MORNING_PEAK_S = 7 * 3600.0
EVENING_PEAK_S = 20 * 3600.0
NIGHT_MIN_S = 3 * 3600.0


def diurnal_factor(t_s: float) -> float:
    """Demand factor at ``t_s`` seconds since local midnight (any day), mean 1 over a day."""
    hours = (t_s % DAY_S) / 3600.0
    index = int(hours)
    fraction = hours - index
    here = PROFILE[index]
    after = PROFILE[(index + 1) % 24]
    return here + (after - here) * fraction


def relative_load(t_s: float) -> float:
    """Where in the day's demand range ``t_s`` lies: 0 at the night minimum, 1 at the evening peak."""
    return (diurnal_factor(t_s) - PROFILE_MIN) / (PROFILE_PEAK - PROFILE_MIN)


class Demand:
    """The compound's draw at the reference pressure, in m³/h, advanced in simulated time."""

    __slots__ = ("_fast", "_slow", "mean_m3h", "shift_s", "value_m3h")

    SLOW_SIGMA = 0.08
    SLOW_TAU_S = 600.0
    FAST_SIGMA = 0.02
    FAST_TAU_S = 15.0

    def __init__(self, rng: random.Random, mean_m3h: float, shift_s: float, t_s: float) -> None:
        self._slow = Wander(rng, self.SLOW_SIGMA, self.SLOW_TAU_S)
        self._fast = Wander(rng, self.FAST_SIGMA, self.FAST_TAU_S)
        self.mean_m3h = mean_m3h
        self.shift_s = shift_s
        self.value_m3h = self.expected_m3h(t_s)

    def expected_m3h(self, t_s: float) -> float:
        """The noise-free draw at ``t_s``."""
        return self.mean_m3h * diurnal_factor(t_s + self.shift_s)

    def step(self, t_s: float, dt_s: float) -> float:
        """Advance to ``t_s`` (after a step of ``dt_s``) and return the draw in m³/h."""
        slow = self._slow.step(dt_s)
        fast = self._fast.step(dt_s)
        factor = (1.0 + slow) * (1.0 + fast)
        self.value_m3h = self.expected_m3h(t_s) * (factor if factor > 0.0 else 0.0)
        return self.value_m3h
