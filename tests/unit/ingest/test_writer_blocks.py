"""``BatchWriter`` writes a ``ReadingBlock`` exactly as it writes the same readings one by one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tapline.domain.model import Quality, Reading, ReadingBlock
from tapline.ingest.marks import CommitMarks
from tapline.ingest.metrics import IngestCounters
from tapline.ingest.writer import BatchWriter
from tapline.store.telemetry import SeriesKey, open_telemetry_store

T0 = 1_767_225_600_000
POINTS = ("plc/Flow", "plc/Mode", "vfd1/Running")


async def _stored(path: Path, chunks: list[tuple[str, Sequence[Reading]]]) -> list[tuple[object, ...]]:
    """Write ``chunks`` through a writer into a fresh SQLite store; every stored row, per series name."""
    store = open_telemetry_store(f"sqlite:///{path}")
    async with store:
        writer = BatchWriter(store, None, CommitMarks(), IngestCounters())
        for site, readings in chunks:
            writer.add(site, readings)
        stored = await writer.flush()
        ids = await store.ensure_series([SeriesKey(site, p) for site in ("PR-1", "PR-2") for p in POINTS])
        rows = [
            (key.site, key.point, h.ts, h.last, h.quality)
            for key, series in ids.items()
            for h in await store.history(series, T0, T0 + 10_000)
        ]
    assert stored == len(rows)
    return sorted(rows)


async def test_a_block_is_stored_as_its_readings_would_be(tmp_path: Path) -> None:
    values: list[list[bool | int | float]] = [[0.5, 2, True], [0.75, -3, False]]
    blocks: list[tuple[str, Sequence[Reading]]] = [
        ("PR-1", ReadingBlock(POINTS, (T0, T0, T0 + 1), values[0], Quality.GOOD)),
        ("PR-2", ReadingBlock(POINTS, (T0 + 5,) * 3, values[1], Quality.UNCERTAIN)),
    ]
    singles: list[tuple[str, Sequence[Reading]]] = [(site, tuple(block)) for site, block in blocks]
    from_blocks = await _stored(tmp_path / "blocks.db", blocks)  # series ids unknown: resolved first
    assert from_blocks == await _stored(tmp_path / "singles.db", singles)
    assert ("PR-2", "plc/Mode", T0 + 5, -3.0, Quality.UNCERTAIN) in from_blocks
    assert len(from_blocks) == 6


async def test_blocks_and_single_readings_mix_in_one_batch(tmp_path: Path) -> None:
    chunks: list[tuple[str, Sequence[Reading]]] = [
        ("PR-1", ReadingBlock(POINTS[:2], (T0, T0), [1.0, 4], Quality.GOOD)),
        ("PR-1", (Reading("vfd1/Running", T0, True), Reading("plc/Flow", T0 + 1, "text is not telemetry"))),
    ]
    rows = await _stored(tmp_path / "mixed.db", chunks)
    assert [row[1:3] for row in rows] == [("plc/Flow", T0), ("plc/Mode", T0), ("vfd1/Running", T0)]
