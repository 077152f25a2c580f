"""Block-read planning: fewest requests, within Modbus limits, gaps bridged only when cheap."""

from __future__ import annotations

import pytest

from tapline.registers.blocks import plan_blocks
from tapline.registers.layout import standard_layout
from tapline.registers.maps import RegisterPoint, builtin_map


def reg(name: str, address: int, type_: str = "uint16", table: str = "input") -> RegisterPoint:
    return RegisterPoint.model_validate({"name": name, "table": table, "address": address, "type": type_})


def test_contiguous_registers_merge_into_one_block() -> None:
    blocks = plan_blocks([reg("A", 0), reg("B", 1), reg("C", 2, "float32")])
    assert [(b.address, b.count) for b in blocks] == [(0, 4)]


def test_small_gap_is_bridged_large_gap_splits() -> None:
    blocks = plan_blocks([reg("A", 0), reg("B", 5), reg("C", 100)], max_gap=8)
    assert [(b.address, b.count) for b in blocks] == [(0, 6), (100, 1)]


def test_block_never_exceeds_125_registers() -> None:
    points = [reg(f"P{i}", i * 2, "float32") for i in range(100)]  # 200 contiguous registers
    blocks = plan_blocks(points)
    assert all(b.count <= 125 for b in blocks)
    assert sum(len(b.points) for b in blocks) == 100
    assert len(blocks) == 2


def test_tables_never_mix() -> None:
    blocks = plan_blocks([reg("A", 0), reg("B", 1, table="holding")])
    assert {b.table.value for b in blocks} == {"input", "holding"}


def test_decode_block_values_by_offset() -> None:
    [block] = plan_blocks([reg("A", 10), reg("B", 12)])
    assert block.decode([7, 0, 9]) == {"A": 7, "B": 9}
    with pytest.raises(ValueError, match="of 3"):
        block.decode([7])


def test_standard_room_needs_few_requests() -> None:
    """A 3-pump room's fast points fit in a handful of requests (one per table per device)."""
    total = 0
    for slot in standard_layout(3):
        fast = [p for p in slot.register_map.points if p.poll == "fast"]
        total += len(plan_blocks(fast))
    points = sum(len(slot.register_map.points) for slot in standard_layout(3))
    assert points >= 45
    assert total <= 4 * len(standard_layout(3))


def test_builtin_maps_load() -> None:
    assert builtin_map("vfd").point("Frequency").unit == "Hz"
