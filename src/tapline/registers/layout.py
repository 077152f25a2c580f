"""The standard pump room's devices: which register map each uses and its Modbus unit id.

A room is served by one Modbus TCP gateway (or a PLC acting as one) on the room LAN. Two layouts:

- ``standard``: every field device behind it answers on its own unit id with its own map, so a cycle
  needs one block read per (device, table) — 13 for a 2-pump room;
- ``concentrator``: the booster PLC mirrors every device into one holding table of its own unit id
  (``maps/concentrator.yaml``). The devices and their point names stay the same — each is a slice of
  that table on the same unit id — so Sparkplug names, alarm rules and commands do not change, while
  the gateway reads the whole room in one request (it merges devices that share a unit id).

The simulator serves either and writes gateway configs from it; a real room's YAML may use any layout.
"""

from __future__ import annotations

from dataclasses import dataclass

from tapline.domain.model import PointSpec
from tapline.registers.maps import RegisterMap, builtin_map


@dataclass(frozen=True, slots=True)
class DeviceSlot:
    """One device in a room: its name (the Sparkplug device id), unit id and register map name."""

    name: str
    unit: int
    map_name: str

    @property
    def register_map(self) -> RegisterMap:
        return builtin_map(self.map_name)


def standard_layout(pumps: int) -> list[DeviceSlot]:
    """Devices of a standard room with ``pumps`` pump drives (DESIGN §5)."""
    if not 1 <= pumps <= 8:
        raise ValueError(f"a room has 1..8 pumps, got {pumps}")
    slots = [DeviceSlot("plc", 1, "booster_plc")]
    slots += [DeviceSlot(f"vfd{n}", 10 + n, "vfd") for n in range(1, pumps + 1)]
    slots += [
        DeviceSlot("wq", 21, "water_quality"),
        DeviceSlot("env", 31, "environment"),
        DeviceSlot("power", 41, "power_meter"),
    ]
    return slots


CONCENTRATOR_UNIT = 1
LAYOUTS = ("standard", "concentrator")


def concentrator_layout(pumps: int) -> list[DeviceSlot]:
    """The devices of a room with ``pumps`` pump drives, all mirrored by the PLC on one unit id."""
    if not 1 <= pumps <= 4:
        raise ValueError(f"the concentrator table has room for 1..4 pumps, got {pumps}")
    names = ["plc", *(f"vfd{n}" for n in range(1, pumps + 1)), "wq", "env", "power"]
    return [DeviceSlot(name, CONCENTRATOR_UNIT, f"concentrator/{name}") for name in names]


def room_layout(name: str, pumps: int) -> list[DeviceSlot]:
    """The named layout (``standard`` or ``concentrator``) of a room with ``pumps`` pumps."""
    if name == "standard":
        return standard_layout(pumps)
    if name == "concentrator":
        return concentrator_layout(pumps)
    raise ValueError(f"unknown room layout {name!r} (known: {', '.join(LAYOUTS)})")


def layout_points(layout: list[DeviceSlot]) -> list[PointSpec]:
    """Every point of every device of a layout, as specs named ``device/Name``."""
    return [point.spec(slot.name) for slot in layout for point in slot.register_map.points]
