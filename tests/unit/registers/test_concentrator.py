"""The concentrator map: one holding table of one unit id, 80 points, the devices' own point names."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapline.domain.model import DataType
from tapline.registers.blocks import plan_blocks
from tapline.registers.codec import decode_registers, encode_registers
from tapline.registers.layout import CONCENTRATOR_UNIT, concentrator_layout, room_layout, standard_layout
from tapline.registers.maps import MapError, Table, builtin_concentrator, builtin_map, load_concentrator_file

DIRECT = {"plc": "booster_plc", "wq": "water_quality", "env": "environment", "power": "power_meter"}


def test_the_whole_table_is_80_points_in_contiguous_holding_registers() -> None:
    table = builtin_concentrator("concentrator")
    points = [point for _, point in table.all_points()]
    assert len(points) == 80
    assert {point.table for point in points} == {Table.HOLDING}
    words = sorted(word for p in points for word in range(p.address, p.address + p.words))
    assert words == list(range(len(words)))  # no gap, no overlap: 0..93
    assert len(words) == 94
    assert len(plan_blocks(points, max_gap=0)) == 1  # one request of ≤ 125 registers reads the room


def test_each_slice_keeps_its_device_points_names_units_and_types() -> None:
    """Sparkplug names and alarm rules stay the same: every point of the device's own map is there,
    with the same engineering type, unit, span and writability; the concentrator only adds points."""
    for slot in concentrator_layout(4):
        direct = builtin_map(DIRECT.get(slot.name, "vfd"))
        mirrored = {p.name: p for p in slot.register_map.points}
        for point in direct.points:
            copy = mirrored[point.name]
            assert copy.engineering_type is point.engineering_type, (slot.name, point.name)
            assert (copy.unit, copy.low, copy.high, copy.writable) == (
                point.unit,
                point.low,
                point.high,
                point.writable,
            ), (slot.name, point.name)
            assert copy.poll == point.poll, (slot.name, point.name)
        if slot.name != "plc":
            assert mirrored["Online"].engineering_type is DataType.BOOL


def test_bits_mirrored_as_registers_round_trip_as_booleans() -> None:
    run = builtin_map("concentrator/vfd2").point("RunCommand")
    assert encode_registers(run, True) == [1]
    assert decode_registers(run, [1]) is True
    assert decode_registers(run, [0]) is False


def test_layouts() -> None:
    layout = room_layout("concentrator", 2)
    assert [slot.name for slot in layout] == ["plc", "vfd1", "vfd2", "wq", "env", "power"]
    assert {slot.unit for slot in layout} == {CONCENTRATOR_UNIT}
    assert room_layout("standard", 3) == standard_layout(3)
    with pytest.raises(ValueError, match="unknown room layout"):
        room_layout("star", 2)
    with pytest.raises(ValueError, match=r"1\.\.4 pumps"):
        concentrator_layout(5)
    with pytest.raises(MapError, match="no device 'vfd5'"):
        builtin_map("concentrator/vfd5")
    with pytest.raises(MapError, match="name one device's slice"):
        builtin_map("concentrator")


def test_overlap_across_devices_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "model: c\ndevices:\n"
        "  a: [{name: X, table: holding, address: 0, type: float32}]\n"
        "  b: [{name: X, table: holding, address: 1, type: uint16}]\n",
        encoding="utf-8",
    )
    with pytest.raises(MapError, match="b/X overlaps a/X at holding 1"):
        load_concentrator_file(path)
