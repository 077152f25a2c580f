"""Gateway configuration: one YAML file per pump room, validated at start-up.

Rules:
- Several devices may share one unit id on a bus when their maps use disjoint registers: a PLC or
  Modbus gateway that concentrates the room's instruments into one table (``concentrator/plc``,
  ``concentrator/vfd1`` …). They keep their own names and points; the poller reads them together.
- Everything the gateway does is in this file: buses (TCP, RTU, RTU over TCP), devices (unit id +
  register map, built-in by name or a YAML file path relative to the room file, with per-point
  overrides of poll class and deadband), poll periods, history bounds, and the local interlocks.
- Unknown keys are errors (a typo must not silently disable an interlock).
- Every problem is reported as ``file:line: field.path: what is wrong (got …)``, all of them at once,
  and the gateway refuses to start. Cross-references (a device's bus, an interlock's point, a write
  that is not whitelisted) are checked against the register maps after they are loaded, with the
  same format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from tapline.registers.maps import MapError, RegisterMap, RegisterPoint, WireType, builtin_map, load_map_file

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
PointPath = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z][A-Za-z0-9_]*$")]
Loc = tuple[str | int, ...]
Problem = Callable[[Loc, str], None]

RESERVED_DEVICE_NAMES = frozenset({"Gateway", "Interlock", "Device", "Bus", "Node Control"})
"""Top-level names of node metrics; a device with one of these names would be ambiguous in history."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TcpBus(_Strict):
    """Modbus TCP (a room gateway or a device with Ethernet), or RTU frames tunnelled over TCP."""

    name: Identifier
    kind: Literal["tcp", "rtu_over_tcp"] = "tcp"
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 1.0
    retries: Annotated[int, Field(ge=0, le=5)] = 1
    max_gap: Annotated[int, Field(ge=0, le=100)] = 8  # unused registers a block read may bridge


class SerialBus(_Strict):
    """Modbus RTU on a serial line: one request in flight, by the protocol's nature."""

    name: Identifier
    kind: Literal["rtu"]
    port: str
    baudrate: Annotated[int, Field(ge=1200, le=921_600)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 1.0
    retries: Annotated[int, Field(ge=0, le=5)] = 1
    max_gap: Annotated[int, Field(ge=0, le=100)] = 16  # a request costs ~10 register times on a line


def _bus_kind(value: object) -> str:
    """Which bus model validates an entry: ``kind`` may be left out for TCP."""
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return "rtu" if kind == "rtu" else "tcp"


Bus = Annotated[Annotated[TcpBus, Tag("tcp")] | Annotated[SerialBus, Tag("rtu")], Discriminator(_bus_kind)]


class PointOverride(_Strict):
    """Room-specific changes to one point of a device's register map."""

    poll: Literal["fast", "slow"] | None = None
    deadband: Annotated[float, Field(ge=0.0)] | None = None


class DeviceConfig(_Strict):
    name: Identifier
    bus: Identifier
    unit: Annotated[int, Field(ge=0, le=247)]
    map: str  # a built-in map name ("vfd") or a path to a map YAML file
    points: dict[str, PointOverride] = Field(default_factory=dict)


class PollConfig(_Strict):
    fast_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    slow_s: Annotated[float, Field(gt=0, le=86400)] = 60.0
    full_refresh_s: Annotated[float, Field(gt=0, le=86400)] = 600.0
    offline_after_failures: Annotated[int, Field(ge=1, le=100)] = 3
    offline_retry_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0

    @model_validator(mode="after")
    def _slow_not_faster(self) -> PollConfig:
        if self.slow_s < self.fast_s:
            raise ValueError(f"slow_s ({self.slow_s}) must not be shorter than fast_s ({self.fast_s})")
        return self


class HistoryConfig(_Strict):
    """Bounds of the durable local history (see history.py for the drop policy)."""

    path: str | None = None  # default: <data dir>/<site>.history.db
    max_age_h: Annotated[float, Field(gt=0, le=24 * 366)] = 24.0 * 7
    max_rows: Annotated[int, Field(ge=1000)] = 5_000_000


class Threshold(_Strict):
    """One side of an interlock condition: exactly one of ``above``, ``below``, ``equals``."""

    above: float | None = None
    below: float | None = None
    equals: bool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Threshold:
        given = [name for name in ("above", "below", "equals") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of above, below, equals (got {given or 'none'})")
        return self


class WriteStep(_Strict):
    """One Modbus write of an interlock action: a writable point and the value to write."""

    point: PointPath
    value: bool | int | float


class InterlockRule(_Strict):
    """A condition on one point that, while it holds, keeps the pumps stopped."""

    name: Annotated[str, Field(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=40)]
    point: PointPath
    trip: Threshold
    release: Threshold | None = None  # default: the trip condition no longer holds
    on_delay_s: Annotated[float, Field(ge=0, le=3600)] = 0.0
    off_delay_s: Annotated[float, Field(ge=0, le=86400)] = 0.0
    description: str = ""

    @model_validator(mode="after")
    def _hysteresis(self) -> InterlockRule:
        trip, release = self.trip, self.release
        if release is None:
            return self
        if trip.below is not None and (release.above is None or release.above < trip.below):
            raise ValueError("with trip.below, release needs above >= trip.below (hysteresis)")
        if trip.above is not None and (release.below is None or release.below > trip.above):
            raise ValueError("with trip.above, release needs below <= trip.above (hysteresis)")
        if trip.equals is not None and release.equals != (not trip.equals):
            raise ValueError(f"with trip.equals {trip.equals}, release must be equals {not trip.equals}")
        return self


class InterlockConfig(_Strict):
    """Local protection that works without the cloud (see interlocks.py)."""

    stop: tuple[WriteStep, ...] = Field(min_length=1)  # what stops every pump on this room's PLC
    release: tuple[WriteStep, ...] | None = None  # default: restore what ``stop`` overwrote
    reassert_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    rules: tuple[InterlockRule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> InterlockConfig:
        names = [rule.name for rule in self.rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"interlock rule names must be unique: {', '.join(duplicates)}")
        return self


class RoomConfig(_Strict):
    """One pump room's gateway."""

    site: Identifier  # Sparkplug edge node id, e.g. PR-0001
    district: Identifier  # Sparkplug group id, e.g. jianghan
    name: str = ""
    buses: tuple[Bus, ...]
    devices: tuple[DeviceConfig, ...]
    poll: PollConfig = PollConfig()
    history: HistoryConfig = HistoryConfig()
    interlocks: InterlockConfig | None = None


class ConfigError(ValueError):
    """The room file is invalid; the message has one line per problem, each saying where and what."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- locating problems in the YAML text -----------------------------------------------------------


def _yaml_lines(text: str) -> dict[Loc, int]:
    """1-based line of every mapping value and sequence item, keyed by its path."""
    lines: dict[Loc, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, path: Loc) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else str(key.start_mark.line)
                walk(value, (*path, name))
                lines[(*path, name)] = key.start_mark.line + 1  # the key's line reads best
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    if root is not None:
        walk(root, ())
    return lines


def _line(lines: Mapping[Loc, int], loc: Loc) -> int | None:
    """The line of the deepest part of ``loc`` found in the file (union tags like 'tcp' are skipped)."""
    found: int | None = lines.get(())
    path: Loc = ()
    for part in loc:
        key = str(part) if not isinstance(part, int) else part
        if (*path, key) in lines:
            path = (*path, key)
            found = lines[path]
    return found


def _where(source: str, lines: Mapping[Loc, int], loc: Loc) -> str:
    line = _line(lines, loc)
    field = ".".join(str(part) for part in loc) or "(top)"
    return f"{source}:{line}: {field}" if line else f"{source}: {field}"


def _problems(source: str, lines: Mapping[Loc, int], error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        loc: Loc = tuple(part for part in item["loc"] if part not in ("tcp", "rtu_over_tcp", "rtu"))
        message = str(item["msg"]).removeprefix("Value error, ")
        value = item.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float | bool) else ""
        problems.append(f"{_where(source, lines, loc)}: {message}{shown}")
    return problems


# --- loading ---------------------------------------------------------------------------------------


def resolve_map(reference: str, base: Path | None) -> RegisterMap:
    """A built-in map by name, or a map file relative to the room file."""
    if reference.endswith((".yaml", ".yml")):
        path = Path(reference)
        if not path.is_absolute() and base is not None:
            path = base / path
        return load_map_file(path)
    return builtin_map(reference)


def apply_overrides(register_map: RegisterMap, overrides: Mapping[str, PointOverride]) -> RegisterMap:
    """The map with this room's per-point poll class and deadband changes applied."""
    if not overrides:
        return register_map
    points = []
    for point in register_map.points:
        change = overrides.get(point.name)
        if change is not None:
            update = {key: value for key, value in change.model_dump().items() if value is not None}
            point = point.model_copy(update=update)
        points.append(point)
    return register_map.model_copy(update={"points": tuple(points)})


def parse_room(
    raw: object, source: str, *, base: Path | None = None, text: str | None = None
) -> tuple[RoomConfig, dict[str, RegisterMap]]:
    """Validate a room document and resolve its register maps; ConfigError lists every problem."""
    lines = _yaml_lines(text) if text is not None else {}
    try:
        room = RoomConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_problems(source, lines, exc)) from exc
    problems: list[str] = []
    maps: dict[str, RegisterMap] = {}

    def problem(loc: Loc, message: str) -> None:
        problems.append(f"{_where(source, lines, loc)}: {message}")

    _check_names(room, problem)
    for index, device in enumerate(room.devices):
        try:
            register_map = resolve_map(device.map, base)
        except MapError as exc:
            problem(("devices", index, "map"), str(exc).replace("\n", "; "))
            continue
        known = {point.name for point in register_map.points}
        for name in device.points:
            if name not in known:
                problem(("devices", index, "points", name), f"map {device.map!r} has no point {name!r}")
        maps[device.name] = apply_overrides(register_map, device.points)
    _check_shared_units(room, maps, problem)
    if room.interlocks is not None:
        _check_interlocks(room.interlocks, maps, problem)
    if problems:
        raise ConfigError(problems)
    return room, maps


def _check_names(room: RoomConfig, problem: Problem) -> None:
    if not room.buses:
        problem(("buses",), "a room needs at least one bus")
    if not room.devices:
        problem(("devices",), "a room needs at least one device")
    seen_buses: set[str] = set()
    for index, bus in enumerate(room.buses):
        if bus.name in seen_buses:
            problem(("buses", index, "name"), f"bus name {bus.name!r} is used twice")
        seen_buses.add(bus.name)
    seen: set[str] = set()
    for index, device in enumerate(room.devices):
        if device.name in seen:
            problem(("devices", index, "name"), f"device name {device.name!r} is used twice")
        if device.name in RESERVED_DEVICE_NAMES:
            problem(("devices", index, "name"), f"{device.name!r} is reserved for gateway metrics")
        seen.add(device.name)
        if device.bus not in seen_buses:
            problem(("devices", index, "bus"), f"unknown bus {device.bus!r} (buses: {sorted(seen_buses)})")


def _check_shared_units(room: RoomConfig, maps: Mapping[str, RegisterMap], problem: Problem) -> None:
    """Devices on one (bus, unit) must not claim the same register: one of them would be misread."""
    taken: dict[tuple[str, int, str, int], tuple[str, str]] = {}
    for index, device in enumerate(room.devices):
        register_map = maps.get(device.name)
        if register_map is None:
            continue
        clash: tuple[str, str, str, int] | None = None
        for point in register_map.points:
            for word in range(point.address, point.address + point.words):
                key = (device.bus, device.unit, point.table.value, word)
                other = taken.setdefault(key, (device.name, point.name))
                if other[0] != device.name and clash is None:
                    clash = (other[0], f"{other[0]}/{other[1]}", point.table.value, word)
        if clash is not None:
            other_device, other_point, table, word = clash
            problem(
                ("devices", index, "unit"),
                f"unit {device.unit} on bus {device.bus} is also {other_device}, and their maps overlap "
                f"at {table} {word} ({other_point}); only devices with disjoint registers may share a unit",
            )


def _find(maps: Mapping[str, RegisterMap], path: str) -> RegisterPoint | str:
    device, _, name = path.partition("/")
    register_map = maps.get(device)
    if register_map is None:
        return f"unknown device {device!r} (devices: {sorted(maps)})"
    for point in register_map.points:
        if point.name == name:
            return point
    return f"device {device!r} has no point {name!r}"


def _check_interlocks(config: InterlockConfig, maps: Mapping[str, RegisterMap], problem: Problem) -> None:
    for index, rule in enumerate(config.rules):
        point = _find(maps, rule.point)
        if isinstance(point, str):
            problem(("interlocks", "rules", index, "point"), point)
            continue
        thresholds = [rule.trip] + ([rule.release] if rule.release else [])
        is_bool = point.type is WireType.BOOL
        for threshold in thresholds:
            if is_bool != (threshold.equals is not None):
                kind = "a true/false point needs 'equals'" if is_bool else "a number needs above/below"
                problem(("interlocks", "rules", index, "trip"), f"{rule.point}: {kind}")
                break
    steps: Iterable[tuple[str, int, WriteStep]] = [("stop", i, s) for i, s in enumerate(config.stop)]
    if config.release is not None:
        steps = [*steps, *(("release", i, s) for i, s in enumerate(config.release))]
    for section, index, step in steps:
        point = _find(maps, step.point)
        if isinstance(point, str):
            problem(("interlocks", section, index, "point"), point)
        elif not point.writable:
            problem(("interlocks", section, index, "point"), f"{step.point} is not writable in its map")
        elif (point.type is WireType.BOOL) != isinstance(step.value, bool):
            want = "true or false" if point.type is WireType.BOOL else "a number"
            problem(("interlocks", section, index, "value"), f"{step.point} takes {want}, got {step.value!r}")


def load_room(path: Path) -> tuple[RoomConfig, dict[str, RegisterMap]]:
    """Load a room file and every register map it references; ConfigError on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read room file: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError([f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}"]) from exc
    return parse_room(raw, str(path), base=path.parent, text=text)
