"""``tapline bench births`` on a few rooms: every birth is accepted, stored and its metadata recorded."""

from __future__ import annotations

from tapline.bench.births import BirthsBench, run_births_bench
from tapline.store.relational import RelationalStore


async def test_a_few_rooms_births_are_stored_and_measured(db_url: str) -> None:
    result = await run_births_bench(BirthsBench(db=db_url, rooms=4, points=30, districts=2))
    assert result["nbirth"] == 4
    assert result["dbirth"] >= 4
    assert result["rejected"] == 0
    assert result["stored"] == result["values"] == 4 * 30
    assert set(result["us_per_room"]) == {
        "receive", "decode_track", "flush", "series", "samples", "births_metadata", "flush_other"
    }  # fmt: skip
    assert result["total_us_per_room"] > 0
    assert (result["db_us_per_room"] is None) == db_url.startswith("sqlite")
    async with RelationalStore(db_url) as relational:
        points = [p for p in await relational.points() if p.site.startswith("PR-000")]
    assert len({(p.site, p.point) for p in points}) >= 4 * 30
