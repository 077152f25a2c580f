"""Gateway configuration: one YAML file per pump room, validated at start-up.

Rules:
- Everything the gateway does is in this file: buses (TCP, RTU, RTU over TCP), devices (unit id +
  register map, built-in by name or a YAML file path relative to the room file), poll periods,
  history bounds, and the local interlocks.
- Unknown keys are errors (a typo must not silently disable an interlock).
- An error names the file, the field path and what is wrong; the gateway refuses to start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tapline.registers.maps import MapError, RegisterMap, builtin_map, format_validation_error, load_map_file

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TcpBus(_Strict):
    """Modbus TCP (a room gateway or a device with Ethernet)."""

    name: Identifier
    kind: Literal["tcp", "rtu_over_tcp"] = "tcp"
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 1.0
    retries: Annotated[int, Field(ge=0, le=5)] = 1


class SerialBus(_Strict):
    """Modbus RTU on a serial line: one request in flight, by the protocol's nature."""

    name: Identifier
    kind: Literal["rtu"]
    port: str
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 1.0
    retries: Annotated[int, Field(ge=0, le=5)] = 1


Bus = Annotated[TcpBus | SerialBus, Field(discriminator="kind")]


class DeviceConfig(_Strict):
    name: Identifier
    bus: Identifier
    unit: Annotated[int, Field(ge=0, le=247)]
    map: str  # a built-in map name ("vfd") or a path to a map YAML file


class PollConfig(_Strict):
    fast_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    slow_s: Annotated[float, Field(gt=0, le=86400)] = 60.0
    full_refresh_s: Annotated[float, Field(gt=0, le=86400)] = 600.0
    offline_after_failures: Annotated[int, Field(ge=1, le=100)] = 3


class HistoryConfig(_Strict):
    path: str | None = None  # default: <data dir>/<site>.history.db
    max_age_h: Annotated[float, Field(gt=0)] = 24.0 * 7
    max_rows: Annotated[int, Field(gt=1000)] = 5_000_000


class RoomConfig(_Strict):
    """One pump room's gateway."""

    site: Identifier  # Sparkplug edge node id, e.g. PR-0001
    district: Identifier  # Sparkplug group id, e.g. jianghan
    name: str = ""
    buses: tuple[Bus, ...]
    devices: tuple[DeviceConfig, ...]
    poll: PollConfig = PollConfig()
    history: HistoryConfig = HistoryConfig()

    @model_validator(mode="after")
    def _references(self) -> RoomConfig:
        buses = [bus.name for bus in self.buses]
        if len(set(buses)) != len(buses):
            raise ValueError("bus names must be unique")
        names = [device.name for device in self.devices]
        if len(set(names)) != len(names):
            raise ValueError("device names must be unique")
        for device in self.devices:
            if device.bus not in buses:
                raise ValueError(f"device {device.name} uses unknown bus {device.bus!r}")
        units = [(device.bus, device.unit) for device in self.devices]
        if len(set(units)) != len(units):
            raise ValueError("two devices share a bus and unit id")
        return self


class ConfigError(ValueError):
    """The room file is invalid; the message says where and what."""


def resolve_map(reference: str, base: Path | None) -> RegisterMap:
    """A built-in map by name, or a map file relative to the room file."""
    if reference.endswith((".yaml", ".yml")):
        path = Path(reference)
        if not path.is_absolute() and base is not None:
            path = base / path
        return load_map_file(path)
    return builtin_map(reference)


def parse_room(raw: object, source: str) -> RoomConfig:
    try:
        return RoomConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from exc


def load_room(path: Path) -> tuple[RoomConfig, dict[str, RegisterMap]]:
    """Load a room file and every register map it references; ConfigError on any problem."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read room file: {exc}") from exc
    room = parse_room(raw, str(path))
    maps: dict[str, RegisterMap] = {}
    for index, device in enumerate(room.devices):
        try:
            maps[device.name] = resolve_map(device.map, path.parent)
        except MapError as exc:
            raise ConfigError(f"{path}: devices.{index}.map: {exc}") from exc
    return room, maps
