"""Writes to field devices: remote commands (DCMD) and interlock actions, each read back.

Rules:
- Only points marked ``writable`` in their register map may be written: the map is the whitelist.
- A value is checked before anything goes on the wire: booleans for coils, numbers for registers,
  integers for integer points, within the point's engineering range (``low``/``high``) when the map
  gives one, and encodable in its registers. A write the interlocks forbid (a pump start while the
  dry-run protection holds) is refused too. A refusal says why.
- A write is confirmed only by reading the point back from the device; the read-back value (not the
  requested one) is what the caller reports in the next DDATA.
- Pure decisions (``check``) are separate from the IO (``PointWriter.write``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tapline.domain.model import DataType, Value
from tapline.edge.modbus_io import BusClient
from tapline.registers.blocks import plan_blocks
from tapline.registers.codec import EncodeError, encode_bit, encode_registers
from tapline.registers.maps import RegisterMap, RegisterPoint


@dataclass(frozen=True, slots=True)
class Target:
    """A device the gateway may write to."""

    name: str
    unit: int
    bus: BusClient
    register_map: RegisterMap

    def point(self, name: str) -> RegisterPoint | None:
        for point in self.register_map.points:
            if point.name == name:
                return point
        return None


class Refused(Exception):
    """A write that must not be carried out; the message says why."""


def check(
    target: Target | None,
    point_name: str,
    value: Value,
    *,
    online: bool = True,
    interlock: Callable[[str, Value], str | None] | None = None,
) -> tuple[RegisterPoint, bool | int | float]:
    """Validate a requested write; return the point and the value to write, or raise ``Refused``."""
    if target is None:
        raise Refused("unknown device")
    point = target.point(point_name)
    if point is None:
        raise Refused(f"{target.name} has no point {point_name!r}")
    if not point.writable:
        raise Refused(f"{target.name}/{point_name} is not writable")
    if not online:
        raise Refused(f"{target.name} is not answering")
    kind = point.engineering_type
    if kind is DataType.BOOL:
        if not isinstance(value, bool):
            raise Refused(f"{point_name} takes true or false, got {value!r}")
        checked: bool | int | float = value
    else:
        if isinstance(value, bool | str) or not math.isfinite(value):
            raise Refused(f"{point_name} takes a number, got {value!r}")
        if kind is DataType.INT:
            if float(value) != int(value):
                raise Refused(f"{point_name} takes an integer, got {value!r}")
            checked = int(value)
        else:
            checked = float(value)
        if (point.low is not None and checked < point.low) or (
            point.high is not None and checked > point.high
        ):
            raise Refused(f"{point_name} must be within {point.low}..{point.high}, got {value!r}")
    if interlock is not None:
        reason = interlock(f"{target.name}/{point_name}", checked)
        if reason is not None:
            raise Refused(reason)
    try:
        if point.table.is_bit:
            encode_bit(point, checked)
        else:
            encode_registers(point, checked)
    except EncodeError as exc:
        raise Refused(str(exc)) from exc
    return point, checked


class PointWriter:
    """Carries out checked writes and reads the point back (raises ``ModbusIOError`` on failure)."""

    def __init__(self, targets: Mapping[str, Target]) -> None:
        self.targets = dict(targets)

    async def write(self, device: str, point: RegisterPoint, value: bool | int | float) -> dict[str, Value]:
        """Write, then read back; returns the read-back values of the point's block."""
        target = self.targets[device]
        if point.table.is_bit:
            await target.bus.write(target.unit, point.table, point.address, [encode_bit(point, value)])
        else:
            await target.bus.write(target.unit, point.table, point.address, encode_registers(point, value))
        block = plan_blocks([point])[0]
        data = await target.bus.read(target.unit, block.table, block.address, block.count)
        return block.decode(data)


def confirmed(requested: Value, readback: Value) -> bool:
    """Whether the read-back shows the requested value (to the register's resolution)."""
    if isinstance(requested, bool) or isinstance(readback, bool):
        return bool(requested) == bool(readback)
    if isinstance(requested, int | float) and isinstance(readback, int | float):
        return abs(float(requested) - float(readback)) <= 1e-6 + 1e-3 * abs(float(requested))
    return requested == readback
