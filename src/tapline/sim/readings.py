"""What the room's instruments report: true state → noise → resolution → sensor faults.

Rules:
- One reading per point of every device (``points``), every time, whether or not the device answers:
  the Modbus server decides what a silent device does; the physics keeps values ready for when it
  answers again.
- The PLC's own transmitters (inlet, outlet, tank level) are reported exactly as the PLC read them in
  the last sub-step, so a gateway sees what the control loop acted on. A tank-less set has no level
  transmitter: its unconnected input reads 0.000 m (the span's bottom, i.e. BAD).
- White noise is added only to non-zero readings: a stopped drive reports exactly 0 Hz / 0 A / 0 kW,
  a dead mains exactly 0 V, and the flow meter's low-flow cut-off gives exactly 0 m³/h.
- Readings are clamped to their instrument span (a transmitter saturates) before sensor faults, which
  may take them below it (broken wire).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from tapline.sim.points import ENV_POINTS, PLC_POINTS, POWER_POINTS, VFD_POINTS, WQ_POINTS, SimPoint

if TYPE_CHECKING:
    from tapline.sim.physics import RoomSim

Number = bool | int | float
_FLOW, _TOTAL = PLC_POINTS[3], PLC_POINTS[4]
_FREQUENCY, _CURRENT, _POWER = VFD_POINTS[2], VFD_POINTS[3], VFD_POINTS[4]
_CHLORINE, _TURBIDITY, _PH = WQ_POINTS
_TEMPERATURE, _HUMIDITY = ENV_POINTS[3], ENV_POINTS[4]
_VOLTAGE = POWER_POINTS[2]
LOW_FLOW_CUTOFF_M3H = 0.05
NOMINAL_VOLTAGE_V = 380.0


def _measure(point: SimPoint, value: float, gauss: float) -> float:
    """Add noise (``gauss`` is a standard normal draw), clamp to the span, round to the resolution."""
    if value != 0.0:
        value += point.noise * gauss
    if point.low is not None and value < point.low:
        value = point.low
    elif point.high is not None and value > point.high:
        value = point.high
    return round(value, point.digits)


def read_room(room: RoomSim, rng: random.Random) -> dict[str, Number]:
    """All readings of ``room`` now, using ``rng`` for measurement noise."""
    gauss = rng.gauss
    sensor = room.faults.sensor
    plc, fx, t = room.plc, room.faults, room.t_s
    flow = room.outlet_flow_m3h if room.outlet_flow_m3h >= LOW_FLOW_CUTOFF_M3H else 0.0
    values: dict[str, Number] = {
        "plc/InletPressure": room.measured_inlet,
        "plc/OutletPressure": room.measured_outlet,
        "plc/TankLevel": room.measured_level,
        "plc/Flow": sensor("plc/Flow", _measure(_FLOW, flow, gauss(0.0, 1.0))),
        "plc/TotalFlow": round(room.total_flow_m3, _TOTAL.digits),
        "plc/OutletPressureSP": round(plc.setpoint_mpa, 3),
        "plc/Mode": plc.mode,
    }
    for drive in room.drives:
        name = drive.name
        values[f"{name}/Running"] = drive.running
        values[f"{name}/Fault"] = drive.fault
        values[f"{name}/Frequency"] = _measure(_FREQUENCY, drive.frequency, gauss(0.0, 1.0))
        values[f"{name}/Current"] = _measure(_CURRENT, drive.current_a, gauss(0.0, 1.0))
        values[f"{name}/Power"] = _measure(_POWER, drive.power_kw, gauss(0.0, 1.0))
        values[f"{name}/FaultCode"] = drive.fault_code
        values[f"{name}/RunHours"] = round(drive.run_hours, 1)
        values[f"{name}/Starts"] = drive.starts
        values[f"{name}/RunCommand"] = drive.run_command
        values[f"{name}/Reset"] = False
    mains = fx.power_since is None
    ph = room.true_reading("wq/PH")
    values["wq/Chlorine"] = sensor("wq/Chlorine", _measure(_CHLORINE, room.chlorine, gauss(0.0, 1.0)))
    values["wq/Turbidity"] = sensor("wq/Turbidity", _measure(_TURBIDITY, room.turbidity, gauss(0.0, 1.0)))
    values["wq/PH"] = sensor("wq/PH", _measure(_PH, ph, gauss(0.0, 1.0)))
    values["env/Flood"] = fx.flood
    values["env/Door"] = fx.door
    values["env/Smoke"] = False
    values["env/Temperature"] = sensor(
        "env/Temperature", _measure(_TEMPERATURE, room.temperature, gauss(0.0, 1.0))
    )
    values["env/Humidity"] = sensor("env/Humidity", _measure(_HUMIDITY, room.humidity, gauss(0.0, 1.0)))
    volts = room.voltage_v if mains else 0.0
    values["power/Mains"] = mains
    values["power/UPS"] = fx.on_ups(t)
    values["power/Voltage"] = _measure(_VOLTAGE, volts, gauss(0.0, 1.0))
    values["power/Energy"] = round(room.energy_kwh, 2)
    return values
