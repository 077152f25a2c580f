"""Alarm rules as data: a room template (YAML) of typed, frozen rules, with per-room profiles.

Rules:
- A rule is one row of data: what to watch (``point``, wildcards like ``vfd*/Fault`` give one alarm
  per pump), when it is abnormal (``kind``: limit, deviation from a reference point, rate of change,
  discrete state, communication loss, instrument fault), how to keep it quiet (deadband, on/off delays,
  design suppression ``suppressed_when``), and what it means (priority, ``cause`` for fault
  localisation, ``supply`` if the municipal supply can cause it, zh/en text).
- A room uses the template as is, or through a ``RoomProfile``: points the room does not have
  (a tank-less set has no level transmitter), rule overrides (a limit, a delay, a priority, enabled)
  and extra rules. Overrides are validated against the rule's own kind: a misspelt or foreign field
  is a ``RuleError``, never silently ignored.
- Process rules only ever see GOOD values; STALE, BAD and UNCERTAIN values (and readings at or beyond
  an instrument's span) are the business of the ``comms`` and ``instrument`` rules (see ``engine``).
- In ``suppressed_when`` and ``reference``, ``{device}`` stands for the device of the alarm's own
  point, so ``vfd*/Current`` is suppressed by the same pump's ``Running``.
- Pure data and pure predicates; the engine compiles them into its per-point index.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tapline.alarms.model import AlarmError
from tapline.domain.model import Value

TEMPLATES_DIR = Path(__file__).parent / "templates"
_ID = r"^[a-z][a-z0-9_]*$"
_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class RuleError(AlarmError, ValueError):
    """An invalid template, profile or override; the message names the file, rule and field."""


class Priority(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Cause(StrEnum):
    """What part of the room an alarm speaks about; the correlator's causal graph links these."""

    POWER = "power"
    DRIVE = "drive"
    PUMPS = "pumps"
    INLET = "inlet"
    TANK = "tank"
    OUTLET = "outlet"
    INSTRUMENT = "instrument"
    COMMS = "comms"
    WATER_QUALITY = "water_quality"
    FLOOD = "flood"
    FIRE = "fire"
    INTRUSION = "intrusion"
    ENVIRONMENT = "environment"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Text(_Frozen):
    zh: str
    en: str


class Condition(_Frozen):
    """``point op value`` on the room's latest GOOD value (unknown values never suppress)."""

    point: str
    op: Literal["eq", "ne", "lt", "le", "gt", "ge"] = "eq"
    value: bool | float

    def holds(self, value: Value) -> bool:
        if isinstance(value, str):
            return False
        op, limit = self.op, self.value
        if op == "eq":
            return value == limit
        if op == "ne":
            return value != limit
        if op == "lt":
            return value < limit
        if op == "le":
            return value <= limit
        if op == "gt":
            return value > limit
        return value >= limit


class Hours(_Frozen):
    """A daily window in local time (``start`` inclusive, ``end`` exclusive; may wrap midnight)."""

    start: Annotated[str, Field(pattern=_HHMM)]
    end: Annotated[str, Field(pattern=_HHMM)]
    utc_offset_h: Annotated[float, Field(ge=-14, le=14)] = 8.0

    def _minutes(self, ts_ms: int) -> tuple[int, int, int]:
        """(local minute of the day, start minute, end minute), in integer arithmetic: the alarm engine
        asks this for every reading of a point with an hours window (a ``datetime`` per call was 2 %
        of the ingest's CPU). Same answer as ``datetime.fromtimestamp(ts / 1000, UTC) +
        timedelta(hours=offset)`` for millisecond timestamps (tested)."""
        local = (ts_ms * 1000 + _offset_us(self.utc_offset_h)) // 60_000_000 % 1440
        return local, _hhmm(self.start), _hhmm(self.end)

    def contains(self, ts_ms: int) -> bool:
        now, start, end = self._minutes(ts_ms)
        return _inside(now, start, end)

    def next_change(self, ts_ms: int) -> int:
        """The first minute boundary after ``ts_ms`` at which ``contains`` changes."""
        now, start, end = self._minutes(ts_ms)
        if start == end:
            return ts_ms + 86_400_000
        boundary = end if _inside(now, start, end) else start
        wait = (boundary - now) % 1440 or 1440
        return ts_ms - ts_ms % 60_000 + wait * 60_000


def _inside(now: int, start: int, end: int) -> bool:
    return start <= now < end if start <= end else now >= start or now < end


@cache
def _hhmm(text: str) -> int:
    return int(text[:2]) * 60 + int(text[3:])


@cache
def _offset_us(hours: float) -> int:
    """A UTC offset in microseconds, as ``timedelta`` rounds it."""
    return timedelta(hours=hours) // timedelta(microseconds=1)


class _Rule(_Frozen):
    id: Annotated[str, Field(pattern=_ID)]
    priority: Priority
    cause: Cause
    text: Text
    on_delay_s: Annotated[float, Field(ge=0)] = 0.0
    off_delay_s: Annotated[float, Field(ge=0)] = 0.0
    latching: bool = False
    enabled: bool = True
    supply: bool = False
    suppressed_when: tuple[Condition, ...] = ()
    max_shelve_s: Annotated[float, Field(gt=0)] = 8 * 3600.0


class LimitRule(_Rule):
    """``point`` above (``high``) or below (``low``) ``limit``; clears ``deadband`` back inside."""

    kind: Literal["limit"] = "limit"
    point: str
    direction: Literal["high", "low"]
    limit: float
    deadband: Annotated[float, Field(ge=0)] = 0.0


class DeviationRule(_Rule):
    """``point`` more than ``offset`` above/below ``reference`` (e.g. outlet pressure vs setpoint)."""

    kind: Literal["deviation"] = "deviation"
    point: str
    reference: str
    direction: Literal["high", "low"]
    offset: Annotated[float, Field(gt=0)]
    deadband: Annotated[float, Field(ge=0)] = 0.0


class RateRule(_Rule):
    """``point`` rising/falling faster than ``per_minute``, measured over at least ``window_s``.

    With ``smoothing_s`` the rate is taken on the value smoothed with that time constant (first
    order), so a slow trend shows through an analyser's noise and resolution."""

    kind: Literal["rate"] = "rate"
    point: str
    direction: Literal["rise", "fall"]
    per_minute: Annotated[float, Field(gt=0)]
    window_s: Annotated[float, Field(gt=0)] = 10.0
    smoothing_s: Annotated[float, Field(ge=0)] = 0.0


class DiscreteRule(_Rule):
    """A boolean in its alarm state: per point (``each``), or for the room when ``all``/``any`` match.

    With ``working_hours`` it alarms only outside them (a door opened at night)."""

    kind: Literal["discrete"] = "discrete"
    point: str
    alarm_when: bool = True
    aggregate: Literal["each", "all", "any"] = "each"
    working_hours: Hours | None = None


class CommsRule(_Rule):
    """The room (Sparkplug node) or a device stopped answering: one alarm, whatever its points.

    A room counts as cut off when its node is dead or its devices are lost together: at least
    ``lost_min`` of them and at least ``lost_share`` of those it has (a room's network or gateway has
    failed, not N devices at once; a device polled slowly may not have noticed yet)."""

    kind: Literal["comms"] = "comms"
    scope: Literal["room", "device"]
    devices: str = "*"
    silent_after_s: Annotated[float, Field(gt=0)] | None = None
    lost_min: Annotated[int, Field(ge=1)] = 1
    lost_share: Annotated[float, Field(gt=0, le=1)] = 1.0


class InstrumentRule(_Rule):
    """A transmitter is broken or out of range: BAD/UNCERTAIN quality, outside its span, or at the
    bottom of a live-zero (4–20 mA) span, which a healthy transmitter on ``live_zero`` never reads."""

    kind: Literal["instrument"] = "instrument"
    points: tuple[str, ...] = ("*",)
    live_zero: tuple[str, ...] = ()


class PumpCurveRule(_Rule):
    """The pressure transmitter disagrees with the pumps (analytic redundancy).

    The running pumps, all at one speed s = f/50 Hz and sharing the measured flow Q, lift water by
    H = h0·s² − k·(Q/n)² (their curve), so the outlet must read ``suction`` + H/G. A reading more
    than ``tolerance`` MPa away from that is an instrument fault (stuck, drifting), not a pressure
    problem. The tolerance widens by what the flow and speed as reported (report-by-exception
    deadbands: ``flow_uncertainty_m3h``, ``speed_uncertainty_hz``) move the curve there: a small
    pump on the steep end of its curve gains 0.1 MPa per m³/h. Judged only in steady running:
    every turning pump within ``speed_spread_hz`` of the others and at least ``min_hz``; silent in
    rooms whose profile gives no curve (room values ``pump_shutoff_head_m`` h0 and ``pump_curve_k`` k)."""

    kind: Literal["pump_curve"] = "pump_curve"
    point: str
    frequency: str = "vfd*/Frequency"
    flow: str
    suction: str
    suction_is_level: bool = False  # suction read as a water column in m (a tank), else MPa
    tolerance: Annotated[float, Field(gt=0)]
    flow_uncertainty_m3h: Annotated[float, Field(ge=0)] = 0.6
    speed_uncertainty_hz: Annotated[float, Field(ge=0)] = 0.25
    min_hz: Annotated[float, Field(ge=0)] = 5.0
    speed_spread_hz: Annotated[float, Field(gt=0)] = 1.0
    shutoff_head_value: str = "pump_shutoff_head_m"
    curve_k_value: str = "pump_curve_k"


class FlatlineRule(_Rule):
    """A stuck transmitter: ``point`` has not moved more than ``band`` for ``window_s``.

    A live pressure transmitter in a pumped system always flickers by a few kPa (the gateway reports
    it every few seconds to half a minute); one frozen at exactly the setpoint leaves the pressure
    loop nothing to correct, so the pumps hold one speed and no other rule sees anything."""

    kind: Literal["flatline"] = "flatline"
    point: str
    band: Annotated[float, Field(ge=0)] = 0.0
    window_s: Annotated[float, Field(gt=0)]


class RefillRule(_Rule):
    """A tank that is not refilling: its level falls nearly as fast as the pumps draw.

    Mass balance over the time the pumps draw ``window_level_m`` of the tank's depth: inflow =
    drawn volume + area·Δlevel. Raised when the inflow is below ``max_inflow_share`` of what was drawn
    while the level was below the top water level less ``margin_m`` (the float valve should then be
    open). Silent in rooms whose profile gives no ``tank_area_m2`` / ``top_water_m``."""

    kind: Literal["refill"] = "refill"
    point: str
    flow: str
    max_inflow_share: Annotated[float, Field(ge=0, lt=1)] = 0.3
    window_level_m: Annotated[float, Field(gt=0)] = 0.05
    max_window_s: Annotated[float, Field(gt=0)] = 3600.0
    margin_m: Annotated[float, Field(ge=0)] = 0.25
    area_value: str = "tank_area_m2"
    top_value: str = "top_water_m"


Rule = Annotated[
    LimitRule
    | DeviationRule
    | RateRule
    | DiscreteRule
    | CommsRule
    | InstrumentRule
    | PumpCurveRule
    | FlatlineRule
    | RefillRule,
    Field(discriminator="kind"),
]
PROCESS_KINDS = frozenset({"limit", "deviation", "rate", "discrete", "pump_curve", "flatline", "refill"})


class RoomProfile(_Frozen):
    """What makes one room (or a class of rooms) differ from the template.

    ``values`` are the room's own facts that rules read by name (tank area, top water level, pump
    curve; see ``profiles``). They are not part of the rules, so rooms that differ only in size
    still share one compiled plan."""

    absent_points: tuple[str, ...] = ()
    rules: dict[str, dict[str, object]] = Field(default_factory=dict)
    extra_rules: tuple[Rule, ...] = ()
    values: dict[str, float] = Field(default_factory=dict)


class Template(_Frozen):
    """A room template: the rules every room of this kind gets, and named profiles."""

    name: str
    description: str = ""
    rules: tuple[Rule, ...]
    profiles: dict[str, RoomProfile] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Template:
        _check_unique(self.rules)
        for profile in self.profiles.values():
            self.for_room(profile)
        return self

    def for_room(self, profile: RoomProfile | None = None) -> RoomRules:
        """The template's rules with ``profile`` applied; RuleError for a bad override."""
        if profile is None:
            return RoomRules(tuple(r for r in self.rules if r.enabled), frozenset())
        known = {rule.id for rule in self.rules}
        unknown = sorted(set(profile.rules) - known)
        if unknown:
            raise RuleError(f"template {self.name}: profile overrides unknown rule(s) {unknown}")
        rules = [
            _override(rule, profile.rules[rule.id]) if rule.id in profile.rules else rule
            for rule in self.rules
        ]
        rules += profile.extra_rules
        _check_unique(rules)
        return RoomRules(tuple(r for r in rules if r.enabled), frozenset(profile.absent_points))

    def profile(self, name: str) -> RoomProfile:
        try:
            return self.profiles[name]
        except KeyError:
            raise RuleError(f"template {self.name} has no profile {name!r}") from None


@dataclass(frozen=True, slots=True)
class RoomRules:
    """The effective rules of a room (hashable, so rooms with equal rules share one compiled plan)."""

    rules: tuple[Rule, ...]
    absent_points: frozenset[str] = frozenset()


def _check_unique(rules: tuple[Rule, ...] | list[Rule]) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise RuleError(f"rule id {rule.id!r} appears twice")
        seen.add(rule.id)


def _override(rule: Rule, changes: dict[str, object]) -> Rule:
    if "id" in changes or "kind" in changes:
        raise RuleError(f"rule {rule.id}: an override cannot change id or kind")
    try:
        return type(rule).model_validate({**rule.model_dump(), **changes})
    except ValidationError as exc:
        raise RuleError(f"rule {rule.id}: bad override {changes}: {exc.errors()[0]['msg']}") from exc


def parse_template(raw: object, source: str = "<template>") -> Template:
    """Validate a template from parsed YAML; RuleError names ``source`` and the failing field."""
    try:
        return Template.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{source}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise RuleError("\n".join(lines)) from exc


def load_template(path: Path | None = None) -> Template:
    """Load a template YAML file (default: the shipped ``standard_room``)."""
    if path is None:
        return _standard()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RuleError(f"{path}: cannot read alarm template: {exc}") from exc
    return parse_template(raw, str(path))


@cache
def _standard() -> Template:
    return load_template(TEMPLATES_DIR / "standard_room.yaml")
