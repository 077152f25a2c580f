"""``ReadingBlock``: columns that behave as the tuple of their ``Reading``s."""

from __future__ import annotations

import pytest

from tapline.domain.model import Quality, Reading, ReadingBlock, rows_of

POINTS = ("plc/Flow", "vfd1/Running")
BLOCK = ReadingBlock(POINTS, (1_000, 1_001), [0.5, True], Quality.UNCERTAIN)
SAME = (
    Reading("plc/Flow", 1_000, 0.5, Quality.UNCERTAIN),
    Reading("vfd1/Running", 1_001, True, Quality.UNCERTAIN),
)


def test_a_block_is_the_sequence_of_its_readings() -> None:
    assert len(BLOCK) == 2
    assert list(BLOCK) == list(SAME)
    assert BLOCK[1] == SAME[1]
    assert BLOCK[-1] == SAME[1]
    assert BLOCK[:1] == SAME[:1]
    assert BLOCK == SAME
    assert SAME == BLOCK
    assert list(SAME) == BLOCK
    assert hash(BLOCK) == hash(SAME)
    assert ReadingBlock(POINTS, (1_000, 1_001), [0.5, True], Quality.GOOD) != BLOCK
    assert BLOCK != "plc/Flow"
    assert "ReadingBlock" in repr(BLOCK)


def test_rows_are_plain_tuples_of_the_same_fields() -> None:
    assert list(rows_of(BLOCK)) == [tuple(r) for r in SAME]
    assert list(rows_of(SAME)) == list(SAME)


def test_columns_of_unequal_length_are_refused() -> None:
    with pytest.raises(ValueError, match="unequal length"):
        ReadingBlock(POINTS, (1_000,), [0.5, True], Quality.GOOD)
