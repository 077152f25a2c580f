"""The points a booster PLC adds when it serves the room as its Modbus concentrator.

Rules:
- Every value comes from the room's physics: the mirrored devices' own readings (``RoomSim.values``),
  the PLC's protection latches and the spec's tank area. Nothing here keeps state, so a concentrator
  room and a standard room with the same seed show the same instruments.
- ``device/Online`` is the PLC's link to a mirrored device (``RoomSim.device_online``). While it is
  false the PLC keeps serving the last values it read from that device (``modbus_server`` freezes
  them), as real concentrators do; the PLC itself has no ``Online`` point: when it is down, nothing
  answers.
- Drive speed is that of a 2-pole motor with 2 % slip (2,940 rpm at 50 Hz); output voltage follows the
  drives' linear V/f curve up to the mains voltage; total active power is the drives' power over a
  97 % drive efficiency (what the room's meter sees of the pumps).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tapline.sim import hydraulics
from tapline.sim.points import device_names

if TYPE_CHECKING:
    from tapline.sim.physics import RoomSim

Number = bool | int | float
RATED_RPM_AT_50HZ = 2940.0
DRIVE_EFFICIENCY = 0.97


def concentrator_values(room: RoomSim, values: dict[str, Number]) -> dict[str, Number]:
    """The concentrator's own points for ``room``, given the instruments' readings ``values``."""
    extra: dict[str, Number] = {}
    drives = [f"vfd{n}" for n in range(1, room.spec.pumps + 1)]
    mains = float(values.get("power/Voltage", hydraulics.LINE_VOLTAGE_V))
    total_kw = 0.0
    for drive in drives:
        hz = float(values.get(f"{drive}/Frequency", 0.0))
        extra[f"{drive}/Speed"] = round(hz * RATED_RPM_AT_50HZ / 50.0)
        extra[f"{drive}/OutputVoltage"] = round(min(hydraulics.LINE_VOLTAGE_V * hz / 50.0, mains), 1)
        total_kw += float(values.get(f"{drive}/Power", 0.0))
    extra["plc/RunningPumps"] = sum(1 for drive in drives if values.get(f"{drive}/Running"))
    extra["plc/DryRunStop"] = room.plc.dry_run
    extra["plc/LowInletStop"] = room.plc.low_inlet
    extra["plc/HighPressureStop"] = room.plc.high_pressure
    level = max(float(values.get("plc/TankLevel", 0.0)), 0.0) if room.spec.tank else 0.0
    extra["plc/TankVolume"] = round(level * room.spec.tank_area_m2, 1)
    extra["power/ActivePower"] = round(total_kw / DRIVE_EFFICIENCY, 2)
    for device in device_names(room.spec.pumps)[1:]:
        extra[f"{device}/Online"] = room.device_online(device)
    return extra
