"""The simulator's point table agrees with the register maps the gateway uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import tapline
from tapline.sim.points import DEVICE_POINTS, SENSOR_POINTS, broken_wire_value, point_spec, room_points

MAPS = Path(tapline.__file__).parent / "registers" / "maps"
FILES = {"plc": "booster_plc.yaml", "vfd": "vfd.yaml", "wq": "water_quality.yaml", "env": "environment.yaml",
         "power": "power_meter.yaml"}  # fmt: skip
SIGNED_TYPES = {"int16", "int32", "float32"}


def _map(model: str) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = yaml.safe_load((MAPS / FILES[model]).read_text())["points"]
    return points


@pytest.mark.parametrize("model", sorted(FILES))
def test_point_table_matches_the_register_map(model: str) -> None:
    register_points = {point["name"]: point for point in _map(model)}
    sim_points = {point.name: point for point in DEVICE_POINTS[model]}
    assert list(sim_points) == list(register_points)
    for name, point in sim_points.items():
        register = register_points[name]
        assert point.writable == bool(register.get("writable", False)), name
        assert point.low == register.get("low"), name
        assert point.high == register.get("high"), name
        assert point.signed == (register["type"] in SIGNED_TYPES), name
        if "scale" in register:
            assert 10.0**-point.digits >= register["scale"] - 1e-12, name  # no finer than the register
        if register["type"] == "bool":
            assert point.kind == "bool", name


def test_room_points_and_lookup() -> None:
    paths = room_points(2)
    assert paths[:2] == ["plc/InletPressure", "plc/OutletPressure"]
    assert "vfd2/Starts" in paths
    assert "vfd3/Starts" not in paths
    assert point_spec("vfd4/Frequency").digits == 2
    with pytest.raises(KeyError):
        point_spec("plc/Nonsense")


def test_broken_wire_reads_at_or_below_the_span() -> None:
    assert broken_wire_value(point_spec("plc/OutletPressure")) == 0.0  # uint16: clamps at the span's bottom
    assert broken_wire_value(point_spec("wq/Chlorine")) == -1.25  # float32: 0 mA = −25 % of span
    assert broken_wire_value(point_spec("env/Temperature")) == -40.0
    for path in SENSOR_POINTS:
        spec = point_spec(path)
        assert spec.low is not None
        assert broken_wire_value(spec) <= spec.low
