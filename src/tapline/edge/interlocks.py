"""Local interlocks: keep the pump room safe with no cloud, as a pure, table-driven state machine.

Rules:
- Each rule watches one point (``device/Name``). A reading gives a *signal*: TRIP (the trip condition
  holds), RELEASE (the release condition holds; by default "the trip condition does not"), or HOLD
  (inside the hysteresis band between them). Every state change of a rule is in ``TRANSITIONS``;
  the two timed ones (ARMING → TRIPPED after ``on_delay``, RELEASING → NORMAL after ``off_delay``)
  happen only once the condition has held for the whole delay.
- Only GOOD readings move a rule. A missing, stale, bad or uncertain value holds its state: a dead
  level transmitter neither trips nor releases the dry-run protection (the PLC's hard-wired low-low
  float switch stays the last line of defence).
- The pumps are inhibited while any rule is TRIPPED or RELEASING. When the inhibit starts, the current
  values of the ``stop`` points are captured and the ``stop`` writes are issued in order; when it ends,
  the ``release`` writes are issued, or by default the captured values are written back in reverse
  order (so the pumps that ran are started again, then control goes back to the PLC's own mode).
  Captured values equal to the stop value are not written back (there is nothing to undo).
- While inhibited, a stop point that reads back different from its stop value is written again, at
  most every ``reassert_s`` (the PLC or a local panel may undo our write; the interlock holds).
- ``refuses`` tells the command handler which remote writes to refuse while inhibited: any write of a
  stop point to something else than its stop value (no remote start into a dry tank or a flood).
- ``snapshot``/``restore`` carry the tripped rules and captured values across a gateway restart, so a
  restart during a trip still restores the room as it was before the trip.
- Pure: readings and ``now_ms`` in, effects out; no clock, no IO, no logging.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from tapline.domain.model import Quality, Value
from tapline.edge.config import InterlockConfig, InterlockRule, Threshold, WriteStep


class RuleState(Enum):
    NORMAL = "normal"
    ARMING = "arming"  # trip condition holds, waiting for on_delay
    TRIPPED = "tripped"
    RELEASING = "releasing"  # release condition holds, waiting for off_delay


class Signal(Enum):
    TRIP = "trip"
    HOLD = "hold"
    RELEASE = "release"


TRANSITIONS: Final[dict[tuple[RuleState, Signal], RuleState]] = {
    (RuleState.NORMAL, Signal.TRIP): RuleState.ARMING,
    (RuleState.NORMAL, Signal.HOLD): RuleState.NORMAL,
    (RuleState.NORMAL, Signal.RELEASE): RuleState.NORMAL,
    (RuleState.ARMING, Signal.TRIP): RuleState.TRIPPED,  # timed: on_delay
    (RuleState.ARMING, Signal.HOLD): RuleState.NORMAL,
    (RuleState.ARMING, Signal.RELEASE): RuleState.NORMAL,
    (RuleState.TRIPPED, Signal.TRIP): RuleState.TRIPPED,
    (RuleState.TRIPPED, Signal.HOLD): RuleState.TRIPPED,
    (RuleState.TRIPPED, Signal.RELEASE): RuleState.RELEASING,
    (RuleState.RELEASING, Signal.TRIP): RuleState.TRIPPED,
    (RuleState.RELEASING, Signal.HOLD): RuleState.TRIPPED,
    (RuleState.RELEASING, Signal.RELEASE): RuleState.NORMAL,  # timed: off_delay
}
TIMED: Final[frozenset[tuple[RuleState, Signal]]] = frozenset(
    {(RuleState.ARMING, Signal.TRIP), (RuleState.RELEASING, Signal.RELEASE)}
)
INHIBITING: Final = frozenset({RuleState.TRIPPED, RuleState.RELEASING})


# --- effects ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleTripped:
    rule: str
    point: str
    value: Value


@dataclass(frozen=True, slots=True)
class RuleReleased:
    rule: str
    point: str
    value: Value


@dataclass(frozen=True, slots=True)
class Act:
    """Writes for the IO layer to carry out in order; ``kind`` is stop, release or reassert."""

    kind: str
    writes: tuple[WriteStep, ...]
    rules: tuple[str, ...]


Effect = RuleTripped | RuleReleased | Act


@dataclass
class _Rule:
    config: InterlockRule
    state: RuleState = RuleState.NORMAL
    since_ms: int = 0


@dataclass
class Snapshot:
    """What survives a gateway restart: tripped rules and the values the stop writes overwrote."""

    tripped: list[str] = field(default_factory=list)
    saved: dict[str, bool | int | float] = field(default_factory=dict)


def _holds(threshold: Threshold, value: Value) -> bool:
    if threshold.equals is not None:
        return isinstance(value, bool | int) and bool(value) is threshold.equals
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    if threshold.above is not None:
        return value > threshold.above
    assert threshold.below is not None
    return value < threshold.below


def signal(rule: InterlockRule, value: Value) -> Signal:
    """Which way a reading pushes a rule."""
    if _holds(rule.trip, value):
        return Signal.TRIP
    if rule.release is None or _holds(rule.release, value):
        return Signal.RELEASE
    return Signal.HOLD


def _same(a: Value, b: Value) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool | int) and isinstance(b, bool | int) and bool(a) == bool(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(float(a) - float(b)) < 1e-9
    return a == b


class Interlocks:
    """The room's interlock rules and the pump inhibit they drive (see module rules)."""

    def __init__(self, config: InterlockConfig) -> None:
        self.config = config
        self.rules = {rule.name: _Rule(rule) for rule in config.rules}
        self._by_point: dict[str, list[_Rule]] = {}
        for rule in self.rules.values():
            self._by_point.setdefault(rule.config.point, []).append(rule)
        self._stop_points = {step.point: step.value for step in config.stop}
        self.latest: dict[str, Value] = {}
        self.saved: dict[str, bool | int | float] = {}
        self.inhibited = False
        self.trips = 0
        self._last_write_ms: int | None = None

    @property
    def points(self) -> frozenset[str]:
        """Every point the engine wants to see (rule inputs and stop points)."""
        return frozenset(self._by_point) | frozenset(self._stop_points)

    def active(self) -> tuple[str, ...]:
        """Names of the rules holding the pumps stopped now."""
        return tuple(name for name, rule in self.rules.items() if rule.state in INHIBITING)

    def observe(self, readings: Mapping[str, tuple[Value, Quality]], now_ms: int) -> list[Effect]:
        """Feed freshly polled values (``device/Name`` → value, quality); returns what to do."""
        effects: list[Effect] = []
        for path, (value, quality) in readings.items():
            if path in self._stop_points and quality is Quality.GOOD:
                self.latest[path] = value
            if quality is not Quality.GOOD:
                continue
            for rule in self._by_point.get(path, ()):
                effects += self._step(rule, signal(rule.config, value), value, now_ms)
        inhibited = bool(self.active())
        if inhibited and not self.inhibited:
            self.inhibited = True
            self.saved = {
                p: v for p, v in self.latest.items() if p in self._stop_points and not isinstance(v, str)
            }
            self._last_write_ms = now_ms
            effects.append(Act("stop", self.config.stop, self.active()))
        elif not inhibited and self.inhibited:
            self.inhibited = False
            self._last_write_ms = None
            effects.append(Act("release", self._release_writes(), ()))
            self.saved = {}
        elif inhibited:
            effects += self._reassert(readings, now_ms)
        return effects

    def _step(self, rule: _Rule, sig: Signal, value: Value, now_ms: int) -> list[Effect]:
        old = rule.state
        new = TRANSITIONS[(old, sig)]
        if (old, sig) in TIMED:
            delay_s = rule.config.on_delay_s if old is RuleState.ARMING else rule.config.off_delay_s
            if now_ms - rule.since_ms < delay_s * 1000:
                return []
        if new is old:
            return []
        rule.state, rule.since_ms = new, now_ms
        if new in (RuleState.ARMING, RuleState.RELEASING):
            return self._step(rule, sig, value, now_ms)  # a zero delay completes at once
        if new is RuleState.TRIPPED and old is RuleState.ARMING:
            self.trips += 1
            return [RuleTripped(rule.config.name, rule.config.point, value)]
        if new is RuleState.NORMAL and old is RuleState.RELEASING:
            return [RuleReleased(rule.config.name, rule.config.point, value)]
        return []

    def _release_writes(self) -> tuple[WriteStep, ...]:
        if self.config.release is not None:
            return self.config.release
        return tuple(
            WriteStep(point=point, value=self.saved[point])
            for point in reversed(list(self._stop_points))
            if point in self.saved and not _same(self.saved[point], self._stop_points[point])
        )

    def _reassert(self, readings: Mapping[str, tuple[Value, Quality]], now_ms: int) -> list[Effect]:
        if self._last_write_ms is not None and now_ms - self._last_write_ms < self.config.reassert_s * 1000:
            return []
        undone = tuple(
            step
            for step in self.config.stop
            if step.point in readings
            and readings[step.point][1] is Quality.GOOD
            and not _same(readings[step.point][0], step.value)
        )
        if not undone:
            return []
        self._last_write_ms = now_ms
        return [Act("reassert", undone, self.active())]

    def refuses(self, point: str, value: Value) -> str | None:
        """Why a remote write must be refused now, or None when the interlocks allow it."""
        if not self.inhibited or point not in self._stop_points:
            return None
        if _same(value, self._stop_points[point]):
            return None
        return f"interlock {', '.join(self.active())} holds the pumps stopped"

    # --- persistence --------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return Snapshot(tripped=list(self.active()), saved=dict(self.saved))

    def restore(self, snapshot: Snapshot, now_ms: int) -> None:
        """Resume after a restart: the tripped rules stay tripped until their release holds."""
        for name in snapshot.tripped:
            rule = self.rules.get(name)
            if rule is not None:
                rule.state, rule.since_ms = RuleState.TRIPPED, now_ms
        if self.active():
            self.inhibited = True
            self.saved = {p: v for p, v in snapshot.saved.items() if p in self._stop_points}
            self._last_write_ms = None  # re-assert the stop on the first readings


def rule_names(config: InterlockConfig | None) -> Sequence[str]:
    return [rule.name for rule in config.rules] if config is not None else []
