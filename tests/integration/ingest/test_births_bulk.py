"""``record_births`` as bulk statements keeps the row-by-row upsert rules, repeats in one call included."""

from __future__ import annotations

import uuid

from tapline.store.relational import DeviceRow, PointRow, RelationalStore, SiteRow


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_repeats_in_one_call_apply_in_order_as_row_by_row_upserts(db_url: str) -> None:
    """PostgreSQL refuses one row twice per statement: repeats go in later rounds, same result."""
    site, other = unique("PR"), unique("PR")
    sites = [
        SiteRow(site, "jianghan", "first name", 3, 10),
        SiteRow(other, "qiaokou", other, None, None),
        SiteRow(site, "hanyang", "second name", None, None),  # keeps the name, bdSeq and birth
        SiteRow(site, "wuchang", "third name", 5, None),
    ]
    devices = [DeviceRow(site, "plc", 10), DeviceRow(site, "plc", 30), DeviceRow(other, "plc", 5)]
    points = [
        PointRow(site, "plc/Flow", "plc", "Double", "m3/h", 0.0, 100.0, 10),
        PointRow(site, "plc/Flow", "plc", "Float", "L/s", None, None, 30),
        PointRow(other, "Uptime", None, "Int64", "", None, None, 5),
    ]
    async with RelationalStore(db_url) as db:
        await db.record_births(sites, devices, points)
        await db.record_births([], [], [])
        stored = {s.id: s for s in await db.sites()}
        assert stored[site] == SiteRow(site, "wuchang", "first name", 5, 10)
        assert stored[other] == SiteRow(other, "qiaokou", other, None, None)
        assert [d for d in await db.devices() if d.site == site] == [DeviceRow(site, "plc", 30)]
        assert await db.points(site) == [points[1]]
        assert await db.points(other) == [points[2]]
        # and again in a later transaction (PostgreSQL: the session's staging tables are reused)
        await db.record_births([SiteRow(site, "jianghan", "x", None, 40)], [], points[:1])
        assert {s.id: s for s in await db.sites()}[site] == SiteRow(site, "jianghan", "first name", 5, 40)
        assert await db.points(site) == [points[0]]
