"""The standard pump room's devices: which register map each uses and its Modbus unit id.

A room is served by one Modbus TCP gateway (or a PLC acting as one) on the room LAN; every field
device behind it answers on its own unit id. The simulator serves this layout and the demo writes
gateway configs from it; a real room's YAML may use any layout.
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


def layout_points(layout: list[DeviceSlot]) -> list[PointSpec]:
    """Every point of every device of a layout, as specs named ``device/Name``."""
    return [point.spec(slot.name) for slot in layout for point in slot.register_map.points]
