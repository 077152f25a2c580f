"""Relational state on SQLite and PostgreSQL: Alembic migrations on open, births metadata, commit marks,
bounded dead letters; and the same tables next to the telemetry store on one URL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from tapline.store.errors import StoreNotOpen, StoreUnavailable
from tapline.store.relational import (
    VERSION_TABLE,
    DeadLetter,
    DeviceRow,
    NodeMark,
    PointRow,
    RelationalStore,
    SiteRow,
    sqlalchemy_url,
)
from tapline.store.telemetry import StoreLifecycle, open_telemetry_store


@pytest.fixture
def url(db_url: str) -> str:
    return db_url


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_migrations_run_on_open_next_to_the_telemetry_tables_and_are_idempotent(url: str) -> None:
    telemetry = open_telemetry_store(url)
    await telemetry.open()
    async with RelationalStore(url), RelationalStore(url):  # a second open finds the schema at head
        pass
    await telemetry.close()
    engine = create_engine(sqlalchemy_url(url))
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        version = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    engine.dispose()
    assert {"sites", "devices", "points", "node_marks", "dead_letters", VERSION_TABLE} <= tables
    assert {"alarm_events", "alarms", "users"} <= tables
    assert {"series", "samples"} <= tables  # the telemetry store's, untouched
    assert version == "0002"


async def test_the_migrated_schema_is_what_the_code_queries(url: str) -> None:
    """The tables the modules declare (``metadata``) and what the migrations built never drift."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import tapline.store.alarm_journal  # noqa: F401 - registers its tables in ``metadata``
    from tapline.store.relational import metadata

    async with RelationalStore(url):
        pass
    ours = set(metadata.tables)

    def include(obj: Any, name: str | None, kind: str, _reflected: bool, _other: Any) -> bool:
        # Other owners' tables (the telemetry store's, Alembic's own) are not compared.
        return (name if kind == "table" else obj.table.name) in ours

    engine = create_engine(sqlalchemy_url(url))
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include})
        drift = compare_metadata(context, metadata)
    engine.dispose()
    assert drift == []


@pytest.mark.postgres
async def test_processes_starting_together_migrate_once(pg_url: str) -> None:
    stores = [RelationalStore(pg_url) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    await asyncio.gather(*(s.close() for s in stores))


async def test_births_upsert_and_configured_names_survive(url: str) -> None:
    site = unique("PR")
    async with RelationalStore(url) as db:
        await db.register_sites([SiteRow(site, "jianghan", "江汉花园1号泵房")])
        point = PointRow(site, "plc/OutletPressure", "plc", "Double", "MPa", 0.0, 1.6, 1)
        await db.record_births(
            [SiteRow(site, "jianghan", site, 3, 10)], [DeviceRow(site, "plc", 10)], [point]
        )
        renamed = PointRow(site, "plc/OutletPressure", "plc", "Double", "bar", 0.0, 16.0, 2)
        await db.record_births(
            [SiteRow(site, "jianghan", site, 4, 20)], [DeviceRow(site, "plc", 20)], [renamed]
        )
        [row] = [s for s in await db.sites() if s.id == site]
        assert row == SiteRow(site, "jianghan", "江汉花园1号泵房", 4, 20)
        assert list(await db.points(site)) == [renamed]
        assert [d for d in await db.devices() if d.site == site] == [DeviceRow(site, "plc", 20)]


async def test_commit_marks_persist_and_never_move_back(url: str) -> None:
    district, site = unique("d"), unique("PR")
    async with RelationalStore(url) as db:
        await db.save_marks([NodeMark(district, site, 5_000)], now_ms=1)
        await db.save_marks([NodeMark(district, site, 4_000)], now_ms=2)
    async with RelationalStore(url) as db:
        assert NodeMark(district, site, 5_000) in await db.load_marks()


async def test_dead_letters_keep_reason_topic_and_bounded_payload(url: str) -> None:
    reason = unique("r")[:32]
    async with RelationalStore(url) as db:
        letters = [
            DeadLetter.of(k, f"spBv1.0/g/DDATA/n{k}", reason, "bad", bytes([k]) * 70_000) for k in range(5)
        ]
        await db.add_dead_letters(letters)
        kept = await db.dead_letters(reason=reason)
        assert [d.topic for d in kept] == [f"spBv1.0/g/DDATA/n{k}" for k in reversed(range(5))]
        assert {(len(d.payload), d.payload_size) for d in kept} == {(64 * 1024, 70_000)}
        await db.prune_dead_letters(keep=2)
        assert len(await db.dead_letters(limit=1000)) == 2


async def test_unreachable_or_closed_database_raises_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        await RelationalStore("postgresql://nobody@127.0.0.1:1/none").open()
    db = RelationalStore(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(StoreNotOpen):
        await db.load_marks()


async def test_the_writer_loop_never_waits_for_births_metadata_and_a_final_flush_writes_it(url: str) -> None:
    """``BatchWriter.flush(background=True)`` (the writer loop): a slow relational write runs beside
    the next telemetry batch on PostgreSQL, in turn with it on SQLite (one writer); births that arrive
    meanwhile are kept, and a plain ``flush`` leaves nothing behind."""
    from tapline.domain.model import Reading
    from tapline.ingest.marks import CommitMarks
    from tapline.ingest.metrics import IngestCounters
    from tapline.ingest.writer import BatchWriter

    telemetry = open_telemetry_store(url)
    relational = RelationalStore(url)
    await telemetry.open()
    await relational.open()
    gate = asyncio.Event()
    record_births = relational.record_births

    async def slow_births(
        sites: Sequence[SiteRow], devices: Sequence[DeviceRow], points: Sequence[PointRow]
    ) -> None:
        await gate.wait()
        await record_births(sites, devices, points)

    relational.record_births = slow_births  # type: ignore[method-assign,assignment]
    writer = BatchWriter(telemetry, relational, CommitMarks(), IngestCounters())
    one_writer = isinstance(telemetry, StoreLifecycle) and telemetry.single_writer
    site, other = unique("PR"), unique("PR")
    try:
        writer.site_born(SiteRow(site, "jianghan", site, 1, 1_000))
        writer.add(site, (Reading("plc/Flow", 1_000, 1.5),))
        first = asyncio.create_task(writer.flush(background=True))
        await asyncio.sleep(0.3)
        assert first.done() is not one_writer  # SQLite: births and telemetry take turns
        writer.site_born(SiteRow(other, "jianghan", other, 1, 2_000))  # arrives while births are written
        writer.add(site, (Reading("plc/Flow", 2_000, 1.6),))
        second = asyncio.create_task(writer.flush(background=True))
        await asyncio.sleep(0.3)
        assert second.done() is not one_writer
        gate.set()
        assert (await first, await second) == (1, 1)
        await writer.flush()
        stored = {row.id for row in await relational.sites()}
        assert {site, other} <= stored
        assert not writer.has_work
    finally:
        gate.set()
        await relational.close()
        await telemetry.close()


async def test_a_city_of_births_in_one_call_with_repeats_keeps_the_last_declaration(url: str) -> None:
    """Many rows (several multi-row statements on SQLite) and the same point twice in one batch."""
    site = unique("PR-BIG")
    rows = [
        PointRow(site, f"vfd{n % 50}/P{n}", f"vfd{n % 50}", "Double", "kW", 0.0, 55.0, 1)
        for n in range(5_000)
    ]
    rows.append(PointRow(site, "vfd0/P0", "vfd0", "Double", "MW", 0.0, 0.055, 2))
    async with RelationalStore(url) as store:
        await store.record_births([SiteRow(site, "jianghan", site)], [DeviceRow(site, "vfd0", 1)], rows)
        points = {p.point: p for p in await store.points(site)}
    assert len(points) == 5_000
    assert (points["vfd0/P0"].unit, points["vfd0/P0"].updated_ms) == ("MW", 2)
    assert points["vfd49/P4999"].unit == "kW"
