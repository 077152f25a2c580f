"""Deterministic randomness for the simulator: derived seeds and slowly wandering signals.

Rules:
- The simulator never touches the global ``random`` module or the wall clock. Every stream is a
  ``random.Random`` seeded by ``derive_seed(seed, *names)``, e.g. ``derive_seed(seed, "PR-0001",
  "demand")``, so a room's trace depends only on (seed, site id, the calls made), never on how many
  other rooms exist or on the order they are created in.
- ``derive_seed`` uses BLAKE2b, not ``hash()``: Python salts ``hash(str)`` per process.
- ``Wander`` is an Ornstein–Uhlenbeck process (mean 0, standard deviation ``sigma``, correlation time
  ``tau_s``) advanced with its exact discretisation, so any step size gives the same statistics.
"""

from __future__ import annotations

import hashlib
import math
import random


def derive_seed(seed: int, *names: str) -> int:
    """A 64-bit seed for one named stream, stable across processes and Python versions."""
    text = "\x1f".join([str(seed), *names]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def stream(seed: int, *names: str) -> random.Random:
    """A private random stream for (seed, names)."""
    return random.Random(derive_seed(seed, *names))


class Wander:
    """A slowly wandering zero-mean signal (Ornstein–Uhlenbeck), e.g. demand or pH drift."""

    __slots__ = ("_decay", "_dt", "_innovation", "_rng", "sigma", "tau_s", "value")

    def __init__(self, rng: random.Random, sigma: float, tau_s: float, start: float | None = None) -> None:
        if sigma < 0 or tau_s <= 0:
            raise ValueError("Wander needs sigma >= 0 and tau_s > 0")
        self._rng = rng
        self.sigma = sigma
        self.tau_s = tau_s
        self.value = rng.gauss(0.0, sigma) if start is None else start
        self._dt = -1.0
        self._decay = 0.0
        self._innovation = 0.0

    def step(self, dt_s: float) -> float:
        """Advance by ``dt_s`` seconds and return the new value."""
        if dt_s != self._dt:  # exp/sqrt only when the step size changes
            self._dt = dt_s
            self._decay = math.exp(-dt_s / self.tau_s)
            self._innovation = self.sigma * math.sqrt(1.0 - self._decay * self._decay)
        self.value = self.value * self._decay + self._innovation * self._rng.gauss(0.0, 1.0)
        return self.value
