"""The points a simulated room produces, as data: names, resolution, span and measurement noise.

Rules:
- The names and spans follow DESIGN §5 and the register maps in ``tapline/registers/maps`` (a unit
  test checks this table against the YAML, so the two cannot drift apart).
- ``digits`` is the reported resolution: the register's scale for integer registers (0.001 MPa,
  0.01 Hz, 0.1 h …) and the instrument's display resolution for float32 registers.
- ``noise`` is the standard deviation of white measurement noise added when the value is read.
- ``signed`` says whether the register can carry values below zero (int16, float32). It decides what a
  broken 4–20 mA loop reads (see ``broken_wire_value``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["bool", "int", "float"]


@dataclass(frozen=True, slots=True)
class SimPoint:
    """One point of a device as the simulator produces it."""

    name: str
    kind: Kind
    digits: int = 0
    low: float | None = None
    high: float | None = None
    noise: float = 0.0
    signed: bool = False
    writable: bool = False


PLC_POINTS = (
    SimPoint("InletPressure", "float", 3, 0.0, 1.0, noise=0.001),
    SimPoint("OutletPressure", "float", 3, 0.0, 1.6, noise=0.001),
    SimPoint("TankLevel", "float", 3, 0.0, 5.0, noise=0.003),
    SimPoint("Flow", "float", 2, 0.0, 400.0, noise=0.1, signed=True),
    SimPoint("TotalFlow", "float", 2, signed=True),
    SimPoint("OutletPressureSP", "float", 3, 0.20, 0.80, writable=True),
    SimPoint("Mode", "int", 0, 0, 2, writable=True),
)
VFD_POINTS = (
    SimPoint("Running", "bool"),
    SimPoint("Fault", "bool"),
    SimPoint("Frequency", "float", 2, 0.0, 50.0, noise=0.01),
    SimPoint("Current", "float", 2, 0.0, 100.0, noise=0.05),
    SimPoint("Power", "float", 2, 0.0, 55.0, noise=0.02),
    SimPoint("FaultCode", "int"),
    SimPoint("RunHours", "float", 1),
    SimPoint("Starts", "int"),
    SimPoint("RunCommand", "bool", writable=True),
    SimPoint("Reset", "bool", writable=True),
)
WQ_POINTS = (
    SimPoint("Chlorine", "float", 2, 0.0, 5.0, noise=0.005, signed=True),
    SimPoint("Turbidity", "float", 3, 0.0, 20.0, noise=0.005, signed=True),
    SimPoint("PH", "float", 2, 0.0, 14.0, noise=0.01, signed=True),
)
ENV_POINTS = (
    SimPoint("Flood", "bool"),
    SimPoint("Door", "bool"),
    SimPoint("Smoke", "bool"),
    SimPoint("Temperature", "float", 1, -20.0, 60.0, noise=0.05, signed=True),
    SimPoint("Humidity", "float", 1, 0.0, 100.0, noise=0.3),
)
POWER_POINTS = (
    SimPoint("Mains", "bool"),
    SimPoint("UPS", "bool"),
    SimPoint("Voltage", "float", 1, 0.0, 500.0, noise=0.3),
    SimPoint("Energy", "float", 2, signed=True),
)

DEVICE_POINTS: dict[str, tuple[SimPoint, ...]] = {
    "plc": PLC_POINTS,
    "vfd": VFD_POINTS,
    "wq": WQ_POINTS,
    "env": ENV_POINTS,
    "power": POWER_POINTS,
}
"""Points per device model (``vfd`` stands for every ``vfdN``)."""

SENSOR_POINTS = frozenset(
    {
        "plc/InletPressure",
        "plc/OutletPressure",
        "plc/TankLevel",
        "plc/Flow",
        "wq/Chlorine",
        "wq/Turbidity",
        "wq/PH",
        "env/Temperature",
        "env/Humidity",
    }
)
"""Analogue transmitters that sensor faults (stuck, drift, broken wire) may target."""

PLC_SENSORS = frozenset({"plc/InletPressure", "plc/OutletPressure", "plc/TankLevel"})
"""Transmitters the room PLC itself controls and protects on."""


def device_names(pumps: int) -> list[str]:
    """The devices of a room with ``pumps`` pumps, in Sparkplug device order."""
    return ["plc", *(f"vfd{index}" for index in range(1, pumps + 1)), "wq", "env", "power"]


def device_model(device: str) -> str:
    """``vfd3`` → ``vfd``; other device names are their own model."""
    return "vfd" if device.startswith("vfd") and device[3:].isdigit() else device


def point_spec(path: str) -> SimPoint:
    """The ``SimPoint`` for ``device/Name``; KeyError if there is none."""
    device, _, name = path.partition("/")
    for point in DEVICE_POINTS.get(device_model(device), ()):
        if point.name == name:
            return point
    raise KeyError(path)


def room_points(pumps: int) -> list[str]:
    """Every point path of a room, device by device."""
    return [
        f"{device}/{point.name}"
        for device in device_names(pumps)
        for point in DEVICE_POINTS[device_model(device)]
    ]


def broken_wire_value(point: SimPoint) -> float:
    """What a transmitter with an open 4–20 mA loop reads.

    0 mA is 25 % of the span below its low end. A register that can carry it (int16, float32) reports
    exactly that (e.g. wq/Chlorine → −1.25 mg/L); an unsigned register (uint16 pressures, level,
    humidity) reports the bottom of its span, exactly ``low`` (0.000 MPa), because the analogue input
    clamps there. Either way the value is at or beyond the span end, which a gateway must read as BAD;
    healthy readings never sit exactly on it (a stopped tank room still shows its riser's residual
    head, about 0.03 MPa).
    """
    low = point.low if point.low is not None else 0.0
    high = point.high if point.high is not None else low + 1.0
    return round(low - 0.25 * (high - low), point.digits) if point.signed else low
