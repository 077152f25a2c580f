"""``tapline bench flood`` on a small city: every alarm event reaches the journal and every console."""

from __future__ import annotations

from pathlib import Path

from tapline.bench.flood import FloodBench, run_flood_bench


async def test_a_small_flood_reaches_every_console_and_the_journal(tmp_path: Path) -> None:
    result = await run_flood_bench(
        FloodBench(
            db=f"sqlite:///{tmp_path / 'flood.db'}", rooms=20, districts=2, window_s=1, hold_s=6, drain_s=1
        )
    )
    assert result["events"] >= 20 * 6  # drives, smoke, flood… raised, then back to normal
    assert result["received"] == [result["events"]] * 2
    assert result["resyncs"] == [0, 0]
    assert result["journal_complete"] is True
    assert 0 < result["announced"] < result["events"]
    assert result["incidents"] >= 20
    assert result["push_p50_ms"] is not None
    assert result["push_p50_ms"] >= 0
