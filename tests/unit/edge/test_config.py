"""The room file: the example loads; every mistake is reported with file, line, field and problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tapline.edge.config import ConfigError, load_room

EXAMPLE = Path(__file__).parents[3] / "examples" / "room.yaml"

BASE = """\
site: PR-0042
district: qiaokou
buses:
  - {name: lan, host: 127.0.0.1, port: 5020}
devices:
  - {name: plc, bus: lan, unit: 1, map: booster_plc}
  - {name: vfd1, bus: lan, unit: 11, map: vfd}
  - {name: env, bus: lan, unit: 31, map: environment}
"""

INTERLOCKS = """\
interlocks:
  stop:
    - {point: plc/Mode, value: 2}
    - {point: vfd1/RunCommand, value: false}
  rules:
    - {name: DryRun, point: plc/TankLevel, trip: {below: 0.5}, release: {above: 1.0}}
    - {name: Flood, point: env/Flood, trip: {equals: true}}
"""


def room(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "room.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_room(path)
    return caught.value.problems


def test_example_room_file_loads_with_interlocks_and_overrides() -> None:
    config, maps = load_room(EXAMPLE)
    assert config.site == "PR-0001"
    assert [d.name for d in config.devices] == ["plc", "vfd1", "vfd2", "vfd3", "wq", "env", "power"]
    assert config.interlocks is not None
    assert [rule.name for rule in config.interlocks.rules] == ["DryRun", "Flood", "OverPressure"]
    assert maps["plc"].point("TankLevel").deadband == 0.01  # the room's override of the map
    assert maps["vfd1"].point("RunCommand").writable


def test_a_minimal_room_with_interlocks_loads(tmp_path: Path) -> None:
    config, maps = load_room(room(tmp_path, BASE + INTERLOCKS))
    assert config.poll.fast_s == 1.0
    assert set(maps) == {"plc", "vfd1", "env"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # out of range: line of the field, the field path, the problem and the value given
        (
            ("unit: 11", "unit: 300"),
            ":7: devices.1.unit: Input should be less than or equal to 247 (got 300)",
        ),
        # a typo in a key is an error, never silently ignored
        (("port: 5020", "prot: 5020"), ":4: buses.0.prot: Extra inputs are not permitted"),
        (("bus: lan, unit: 31", "bus: lane, unit: 31"), ":8: devices.2.bus: unknown bus 'lane'"),
        (("map: vfd}", "map: vdf}"), ":7: devices.1.map: unknown built-in register map 'vdf'"),
        (("name: vfd1", "name: plc"), ":7: devices.1.name: device name 'plc' is used twice"),
        (("unit: 11", "unit: 1"), ":7: devices.1.unit: unit 1 on bus lan is also plc"),
        (("site: PR-0042", "site: PR 42"), ":1: site: String should match pattern"),
        (("name: env", "name: Gateway"), ":8: devices.2.name: 'Gateway' is reserved"),
    ],
)
def test_errors_name_file_line_field_and_problem(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    path = room(tmp_path, BASE.replace(*change))
    found = problems(path)
    assert any(p.startswith(str(path)) and expected in p for p in found), found


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("plc/TankLevel", "plc/TankLvl"), "interlocks.rules.0.point: device 'plc' has no point 'TankLvl'"),
        (
            ("{point: plc/Mode", "{point: plc/InletPressure"),
            "interlocks.stop.0.point: plc/InletPressure is not writable",
        ),
        (
            ("RunCommand, value: false", "RunCommand, value: 3"),
            "interlocks.stop.1.value: vfd1/RunCommand takes true or false",
        ),
        (
            ("release: {above: 1.0}", "release: {above: 0.2}"),
            "release needs above >= trip.below (hysteresis)",
        ),
        (
            ("trip: {equals: true}", "trip: {below: 1}"),
            "interlocks.rules.1.trip: env/Flood: a true/false point needs 'equals'",
        ),
        (("trip: {below: 0.5}", "trip: {below: 0.5, above: 3}"), "give exactly one of above, below, equals"),
        (("name: Flood", "name: DryRun"), "interlock rule names must be unique: DryRun"),
        (("{point: plc/Mode", "{point: pump9/Mode"), "interlocks.stop.0.point: unknown device 'pump9'"),
    ],
)
def test_interlock_mistakes_are_refused_before_start(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    found = problems(room(tmp_path, (BASE + INTERLOCKS).replace(*change)))
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = BASE.replace("unit: 11", "unit: 300").replace("port: 5020", "port: 0")
    found = problems(room(tmp_path, text))
    assert len(found) == 2
    assert any("devices.1.unit" in p for p in found)
    assert any("buses.0.port" in p for p in found)


def test_unknown_point_override_names_the_point(tmp_path: Path) -> None:
    text = BASE.replace("map: booster_plc}", "map: booster_plc, points: {TankLevle: {deadband: 0.1}}}")
    assert any(
        ":6: devices.0.points.TankLevle: map 'booster_plc' has no point 'TankLevle'" in p
        for p in problems(room(tmp_path, text))
    )


def test_a_map_file_next_to_the_room_is_loaded_and_its_errors_are_reported(tmp_path: Path) -> None:
    maps_dir = tmp_path / "maps"
    maps_dir.mkdir()
    (maps_dir / "meter.yaml").write_text(
        yaml.safe_dump(
            {"model": "m", "points": [{"name": "Level", "table": "input", "address": 0, "type": "uint16"}]}
        )
    )
    text = BASE + "  - {name: meter, bus: lan, unit: 51, map: maps/meter.yaml}\n"
    _config, maps = load_room(room(tmp_path, text))
    assert maps["meter"].point("Level").address == 0
    (maps_dir / "meter.yaml").write_text("model: m\npoints: [{name: Level, table: input}]\n")
    found = problems(room(tmp_path, text))
    assert any("devices.3.map" in p and "meter.yaml" in p and "points.0.address" in p for p in found)


def test_unreadable_and_invalid_yaml_files(tmp_path: Path) -> None:
    assert "cannot read room file" in problems(tmp_path / "missing.yaml")[0]
    found = problems(room(tmp_path, "site: PR-1\nbuses: [\n  - {name: lan\n"))
    assert found[0].startswith(f"{tmp_path / 'room.yaml'}:")
    assert "not valid YAML" in found[0]
