"""Register maps: the YAML format that describes one Modbus device model.

Rules:
- A map lists points; each point names its table (coil, discrete, holding, input), its start address
  (0-based protocol address), its wire type and, for 32-bit types, the word order.
- ``value = raw * scale + offset``; booleans have no scale. The engineering datatype defaults from the
  wire type and scale (a scaled integer is a float), and can be set explicitly (``datatype: int``).
- Only points marked ``writable`` may ever be written, by the gateway or by anything else.
- Validation errors name the file, the point and the field (the gateway refuses to start on them).
- A *concentrator* map (a PLC or Modbus gateway that mirrors several field devices into one unit id's
  registers) lists its points per device under ``devices``; no two points of any device may share a
  register. ``builtin_map("concentrator/vfd1")`` is one device's slice of it, an ordinary map, so the
  room file keeps the device (and every Sparkplug point name) while all slices share one unit id.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tapline.domain.model import DataType, PointSpec

MAPS_DIR = Path(__file__).parent / "maps"
CONCENTRATOR_MAPS = frozenset({"concentrator"})
"""Built-in maps in the concentrator format (``devices:``), used by slice (``concentrator/plc``)."""


class Table(StrEnum):
    COIL = "coil"  # read/write bits (FC1, FC5/15)
    DISCRETE = "discrete"  # read-only bits (FC2)
    HOLDING = "holding"  # read/write registers (FC3, FC6/16)
    INPUT = "input"  # read-only registers (FC4)

    @property
    def is_bit(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)


class WireType(StrEnum):
    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"

    @property
    def words(self) -> int:
        return {WireType.BOOL: 1, WireType.INT16: 1, WireType.UINT16: 1}.get(self, 2)


class MapError(ValueError):
    """A register map or room file is invalid; the message names the file and field."""


class RegisterPoint(BaseModel):
    """One point of a device model, as it sits in the device's registers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]
    table: Table
    address: Annotated[int, Field(ge=0, le=65535)]
    type: WireType
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    datatype: DataType | None = None
    unit: str = ""
    low: float | None = None
    high: float | None = None
    poll: Literal["fast", "slow"] = "fast"
    deadband: Annotated[float, Field(ge=0.0)] = 0.0
    writable: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> RegisterPoint:
        if self.table.is_bit != (self.type is WireType.BOOL):
            raise ValueError(f"type {self.type.value} does not fit table {self.table.value}")
        if self.writable and self.table in (Table.DISCRETE, Table.INPUT):
            raise ValueError(f"a {self.table.value} point cannot be writable")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError("low must not exceed high")
        return self

    @property
    def words(self) -> int:
        return self.type.words

    @property
    def engineering_type(self) -> DataType:
        if self.datatype is not None:
            return self.datatype
        if self.type is WireType.BOOL:
            return DataType.BOOL
        if self.type is WireType.FLOAT32 or self.scale != 1.0 or self.offset != 0.0:
            return DataType.FLOAT
        return DataType.INT

    def spec(self, device: str) -> PointSpec:
        return PointSpec(
            device=device,
            name=self.name,
            datatype=self.engineering_type,
            unit=self.unit,
            low=self.low,
            high=self.high,
            writable=self.writable,
            description=self.description,
        )


class RegisterMap(BaseModel):
    """A device model's register map (one YAML file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    description: str = ""
    points: tuple[RegisterPoint, ...]

    @model_validator(mode="after")
    def _no_overlap(self) -> RegisterMap:
        names: set[str] = set()
        taken: dict[tuple[Table, int], str] = {}
        for point in self.points:
            if point.name in names:
                raise ValueError(f"point {point.name} appears twice")
            names.add(point.name)
            for word in range(point.address, point.address + point.words):
                other = taken.setdefault((point.table, word), point.name)
                if other != point.name:
                    raise ValueError(f"{point.name} overlaps {other} at {point.table.value} {word}")
        return self

    def point(self, name: str) -> RegisterPoint:
        for point in self.points:
            if point.name == name:
                return point
        raise KeyError(name)


class ConcentratorMap(BaseModel):
    """A register table that mirrors several devices into one unit id (one YAML file, see the rules)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    description: str = ""
    devices: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")], tuple[RegisterPoint, ...]]

    @model_validator(mode="after")
    def _no_overlap(self) -> ConcentratorMap:
        taken: dict[tuple[Table, int], str] = {}
        for device, points in self.devices.items():
            RegisterMap(model=f"{self.model}/{device}", points=points)  # names unique within a device
            for point in points:
                for word in range(point.address, point.address + point.words):
                    other = taken.setdefault((point.table, word), f"{device}/{point.name}")
                    if other != f"{device}/{point.name}":
                        raise ValueError(
                            f"{device}/{point.name} overlaps {other} at {point.table.value} {word}"
                        )
        return self

    def device_map(self, device: str) -> RegisterMap:
        """One device's slice of the table, as an ordinary register map."""
        points = self.devices.get(device)
        if points is None:
            raise MapError(
                f"concentrator map {self.model!r} has no device {device!r} (has {sorted(self.devices)})"
            )
        return RegisterMap(model=f"{self.model}/{device}", description=self.description, points=points)

    def all_points(self) -> list[tuple[str, RegisterPoint]]:
        """Every (device, point) of the table, in file order."""
        return [(device, point) for device, points in self.devices.items() for point in points]


def format_validation_error(source: str, error: ValidationError) -> str:
    """One line per problem: ``file: field.path: message``."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top)"
        lines.append(f"{source}: {where}: {item['msg']}")
    return "\n".join(lines)


_Model = TypeVar("_Model", bound=BaseModel)


def load_map_file(path: Path) -> RegisterMap:
    """Load and validate one register-map YAML file; MapError names the file and field on failure."""
    return _load(path, RegisterMap)


def load_concentrator_file(path: Path) -> ConcentratorMap:
    """Load and validate one concentrator map file; MapError names the file and field on failure."""
    return _load(path, ConcentratorMap)


def _load(path: Path, model: type[_Model]) -> _Model:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MapError(f"{path}: cannot read register map: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise MapError(format_validation_error(str(path), exc)) from exc


@cache
def builtin_concentrator(name: str) -> ConcentratorMap:
    """A concentrator map shipped with tapline (``concentrator``)."""
    path = MAPS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise MapError(f"unknown built-in concentrator map {name!r}")
    return load_concentrator_file(path)


@cache
def builtin_map(name: str) -> RegisterMap:
    """A register map shipped with tapline (``booster_plc``, ``vfd``, ``water_quality``, …), or one
    device's slice of a shipped concentrator map (``concentrator/vfd1``)."""
    if "/" in name:
        table, _, device = name.partition("/")
        return builtin_concentrator(table).device_map(device)
    path = MAPS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in MAPS_DIR.glob("*.yaml")))
        raise MapError(f"unknown built-in register map {name!r} (known: {known})")
    if name in CONCENTRATOR_MAPS:
        raise MapError(f"{name!r} is a concentrator's table: name one device's slice, e.g. {name}/plc")
    return load_map_file(path)
