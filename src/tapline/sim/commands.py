"""Commands written to a simulated room (what a Modbus write does), with their validation.

Rules:
- Writable points are exactly the register maps' writable ones: ``plc/OutletPressureSP`` (0.20–0.80
  MPa), ``plc/Mode`` (0 auto, 1 manual, 2 remote), ``vfdN/RunCommand`` and ``vfdN/Reset`` (coils).
  Anything else, a wrong type, or a value out of range raises ValueError (the Modbus server answers
  ILLEGAL_VALUE), and nothing changes.
- A RunCommand is honoured only in manual or remote mode; in auto mode the PLC owns the coils, so the
  write is accepted on the wire but has no effect (read-back shows the PLC's own decision).
- Reset is momentary: writing true clears the drive's fault latch unless the fault's cause is still
  there (an injected pump_trip or a triggered standby_fail that has not been cleared); false does nothing.
- Switching back to auto, the PLC adopts the pumps that run at that moment as its duty set.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tapline.domain.model import split_point
from tapline.sim.points import point_spec

if TYPE_CHECKING:
    from tapline.sim.physics import RoomSim

Number = bool | int | float
MODES = {0: "auto", 1: "manual", 2: "remote"}


def _number(point: str, value: Number) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{point} takes a number, got {value!r}")
    return float(value)


def _flag(point: str, value: Number) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{point} takes a boolean, got {value!r}")


def apply_write(room: RoomSim, point: str, value: Number) -> None:
    """Apply a write of ``value`` to ``point`` in ``room``; ValueError if it is not allowed."""
    device, name = split_point(point)
    if device not in room.devices():
        raise ValueError(f"{room.spec.site_id} has no device {device!r}")
    try:
        spec = point_spec(point)
    except KeyError:
        raise ValueError(f"unknown point {point!r}") from None
    if not spec.writable:
        raise ValueError(f"{point} is read-only")
    plc = room.plc
    if point == "plc/OutletPressureSP":
        setpoint = _number(point, value)
        if not 0.20 <= setpoint <= 0.80:
            raise ValueError(f"{point} must be within 0.20..0.80 MPa, got {setpoint}")
        plc.setpoint_mpa = setpoint
    elif point == "plc/Mode":
        number = _number(point, value)
        if not number.is_integer() or int(number) not in MODES:
            raise ValueError(f"{point} must be 0 (auto), 1 (manual) or 2 (remote), got {value!r}")
        mode = int(number)
        if mode == 0 and plc.mode != 0:
            plc.take_over()
        plc.mode = mode
    else:
        drive = next(drive for drive in room.drives if drive.name == device)
        flag = _flag(point, value)
        if name == "RunCommand":
            if plc.mode != 0:
                drive.run_command = flag
        elif flag and drive.fault and not room.faults.cause_active(drive):
            drive.reset()
