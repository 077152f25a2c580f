"""``compact``: raw rows of closed hours packed into one block per (series, hour), on every backend.

What a compacted hour must still do is everything an uncompacted one does — history at every level,
``latest``, ``count``, idempotent writes, late data recomputing rollups, retention — so these tests write,
roll up, compact and then check the same answers as before compaction. Fixtures come from the shared
store suite (``test_telemetry_store``): SQLite on tmp_path and a fresh PostgreSQL schema per test.
"""

from __future__ import annotations

import asyncio
import math

import psycopg
import pytest

from tapline.store.telemetry import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    HistoryPoint,
    Sample,
    SeriesKey,
    StoreSettings,
    TelemetryStore,
)
from tests.integration.store.common import (
    LEVEL,
    NOW,
    OTHER_ROOM,
    PRESSURE,
    MakeStore,
    point,
    race_compactions_with_late_writes,
    series_ids,
)

HOUR = NOW - 5 * HOUR_MS  # an hour long closed at NOW


async def _history_everywhere(store: TelemetryStore, series_id: int, start: int, end: int) -> list[object]:
    return [
        await store.history(series_id, start, end),
        await store.history(series_id, start, end, step_ms=15_000),
        await store.history(series_id, start, end, step_ms=MINUTE_MS),
        await store.history(series_id, start, end, step_ms=HOUR_MS),
    ]


async def test_compaction_keeps_every_answer(store: TelemetryStore) -> None:
    pressure, level, other = await series_ids(store, PRESSURE, LEVEL, OTHER_ROOM)
    regular = [Sample(pressure, HOUR + i * 5_000, 0.4 + (i % 7) / 100, 0) for i in range(720)]
    irregular = [Sample(level, HOUR + t, float(t % 13), 0) for t in (0, 7, 1_000, 1_003, 59_999, 3_599_999)]
    qualities = [Sample(other, HOUR + i * 60_000, float(i), i % 3) for i in range(60)]
    special = [Sample(other, HOUR + HOUR_MS + 1, math.nan, 2), Sample(other, HOUR + HOUR_MS + 2, 2.5, 0)]
    await store.write(regular + irregular + qualities + special)
    await store.rollup(NOW)
    window = (HOUR - HOUR_MS, NOW)
    before = {sid: await _history_everywhere(store, sid, *window) for sid in (pressure, level, other)}
    latest_before = await store.latest()

    assert await store.compact(NOW) == 4  # three series in HOUR, one in the hour after
    assert await store.compact(NOW) == 0  # nothing left to pack

    assert await store.count() == 720 + 6 + 60 + 2
    for sid in (pressure, level):
        assert await _history_everywhere(store, sid, *window) == before[sid]
    after_other = await store.history(other, *window)
    assert after_other[:60] == before[other][0][:60]  # type: ignore[index]
    assert after_other[60].ts == HOUR + HOUR_MS + 1
    assert math.isnan(after_other[60].last)
    assert after_other[61] == point(HOUR + HOUR_MS + 2, 2.5)
    latest = await store.latest()
    assert latest[pressure] == latest_before[pressure] == regular[-1]
    assert latest[level] == irregular[-1]
    assert latest[other].ts == HOUR + HOUR_MS + 2
    # A window that starts and ends inside a block returns only its part, half-open.
    assert await store.history(pressure, HOUR + 10_000, HOUR + 20_000) == [
        point(HOUR + 10_000, regular[2].value),
        point(HOUR + 15_000, regular[3].value),
    ]
    assert await store.latest([level]) == {level: irregular[-1]}


async def test_only_closed_rolled_up_hours_old_enough_are_compacted(make_store: MakeStore) -> None:
    async with make_store(StoreSettings(compact_after_ms=HOUR_MS)) as store:
        (pressure,) = await series_ids(store, PRESSURE)
        await store.write([Sample(pressure, NOW - h * HOUR_MS + 1_000, float(h), 0) for h in range(1, 5)])
        assert await store.compact(NOW) == 0  # nothing rolled up yet: the rollup still needs the rows
        await store.rollup(NOW - 2 * HOUR_MS + 30_000)
        # Rolled up to NOW - 2 h: hours NOW-4h and NOW-3h are closed and rolled up; NOW-3h closed at
        # NOW-2h, one hour ago: old enough. NOW-2h is not rolled up.
        assert await store.compact(NOW) == 2
        await store.rollup(NOW)
        assert await store.compact(NOW) == 1  # NOW-2h; NOW-1h closed too recently
        assert await store.compact(NOW + HOUR_MS) == 1
        assert await store.count() == 4
        assert [p.last for p in await store.history(pressure, NOW - DAY_MS, NOW)] == [4.0, 3.0, 2.0, 1.0]


async def test_writes_into_a_compacted_hour_stay_idempotent_and_recompute_rollups(
    store: TelemetryStore,
) -> None:
    (pressure,) = await series_ids(store, PRESSURE)
    batch = [Sample(pressure, HOUR + i * 10_000, float(i), 0) for i in range(360)]
    await store.write(batch)
    await store.rollup(NOW)
    assert await store.compact(NOW) == 1

    assert await store.write(batch[:100]) == 0  # a replay of what is packed: nothing new
    assert await store.count() == 360
    late = [Sample(pressure, HOUR + 5_000, 100.0, 1), batch[0]]  # one new value between two packed ones
    assert await store.write(late) == 1
    assert await store.count() == 361
    raw = await store.history(pressure, HOUR, HOUR + 20_000)
    assert raw == [point(HOUR, 0.0), point(HOUR + 5_000, 100.0, quality=1), point(HOUR + 10_000, 1.0)]

    await store.rollup(NOW)  # the late value's minute and hour are recomputed from all of the hour
    assert (await store.history(pressure, HOUR, HOUR + MINUTE_MS, step_ms=MINUTE_MS)) == [
        HistoryPoint(HOUR, 0.0, 100.0, 115.0 / 7, 5.0, 7, 1)
    ]
    assert (await store.history(pressure, HOUR, HOUR + HOUR_MS, step_ms=HOUR_MS))[0].count == 361
    assert await store.compact(NOW) == 1  # the hour is packed again
    assert await store.write(late) == 0
    assert await store.count() == 361
    assert (await store.history(pressure, HOUR, HOUR + 20_000))[1] == point(HOUR + 5_000, 100.0, quality=1)


async def test_compacted_data_survives_reopen_and_retention(make_store: MakeStore) -> None:
    settings = StoreSettings(raw_retention_ms=2 * DAY_MS)
    async with make_store(settings) as store:
        (pressure,) = await series_ids(store, PRESSURE)
        old, recent = NOW - 3 * DAY_MS, NOW - 5 * HOUR_MS
        await store.write(
            [Sample(pressure, ts + i * 1000, float(i), 0) for ts in (old, recent) for i in range(3)]
        )
        await store.rollup(NOW)
        assert await store.compact(NOW) == 2
    async with make_store(settings) as store:
        assert await store.count() == 6
        assert await store.apply_retention(NOW) > 0
        assert await store.count() == 3
        assert [p.ts for p in await store.history(pressure, old, NOW)] == [
            recent,
            recent + 1000,
            recent + 2000,
        ]
        assert await store.latest() == {pressure: Sample(pressure, recent + 2000, 2.0, 0)}


@pytest.mark.postgres
async def test_postgres_compaction_beside_late_writes_and_a_second_compactor_loses_nothing(
    make_pg_store: MakeStore,
) -> None:
    """Two connections (two workers on one database): one compacts while the other replays and backfills
    into the very hours being packed, and a third compacts at the same time. Whatever the interleaving,
    every value is stored once."""
    async with make_pg_store() as a, make_pg_store() as b, make_pg_store() as c:
        keys = [SeriesKey(f"PR-{k:04d}", "plc/OutletPressure") for k in range(700)]  # two slices
        ids = list((await a.ensure_series(keys)).values())
        hours = [HOUR - HOUR_MS, HOUR]
        first, odd, blocks_a, new, blocks_c = await race_compactions_with_late_writes(
            a, b, c, ids, hours, minutes=60, chunk=2_000, now=NOW
        )

        assert new == len(odd)
        assert blocks_a + blocks_c >= len(ids) * len(hours)  # every pair packed once, some again
        await a.rollup(NOW)
        await a.compact(NOW)
        assert await a.count() == len(first) + len(odd)
        for sid in (ids[0], ids[499], ids[500], ids[-1]):
            values = await b.history(sid, HOUR - HOUR_MS, HOUR + HOUR_MS)
            assert [p.ts for p in values] == [h + i * 60_000 for h in hours for i in range(60)]
        hourly = await b.history(ids[-1], HOUR - HOUR_MS, HOUR + HOUR_MS, step_ms=HOUR_MS)
        assert [p.count for p in hourly] == [60, 60]


@pytest.mark.postgres
async def test_postgres_writes_go_on_while_the_same_store_compacts(
    make_pg_store: MakeStore, pg_url: str
) -> None:
    """Compaction uses a connection of its own: the ingest's writes on the store's shared connection do
    not wait for it (packing an hour of a city takes minutes). Here another session holds the advisory
    lock of the hour being packed, so the compaction is stuck exactly there while live data arrives."""
    async with make_pg_store() as store:
        (pressure,) = await series_ids(store, PRESSURE)
        await store.write([Sample(pressure, HOUR + i * 1000, float(i), 0) for i in range(60)])
        await store.rollup(NOW)
        url = store._dsn  # type: ignore[attr-defined]  # the schema-scoped URL of this store
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as blocker:
            await blocker.execute("SELECT pg_advisory_lock(%s, %s)", (0x7A11, HOUR // HOUR_MS))
            compaction = asyncio.create_task(store.compact(NOW))
            await asyncio.sleep(0.3)
            assert not compaction.done()  # waiting for the hour's lock
            live = [Sample(pressure, NOW + i * 1000, 1.0, 0) for i in range(10)]
            assert await asyncio.wait_for(store.write(live), 5) == 10
            assert await asyncio.wait_for(store.history(pressure, NOW, NOW + HOUR_MS), 5) != []
            await blocker.execute("SELECT pg_advisory_unlock(%s, %s)", (0x7A11, HOUR // HOUR_MS))
            assert await asyncio.wait_for(compaction, 10) == 1
        assert await store.count() == 70


async def test_old_days_keep_their_rollups_and_late_data_recomputes_them(store: TelemetryStore) -> None:
    """Days long closed: PostgreSQL also packs their 1-minute rollups (one block per series and day); the
    answers at every level stay the same, and late data into such a day still recomputes its minute and
    hour (SQLite keeps its clustered rollup rows: the same answers)."""
    (pressure,) = await series_ids(store, PRESSURE)
    day = NOW - NOW % DAY_MS - 3 * DAY_MS
    stamps = [day + i * 30_000 for i in range(2 * 1440)]  # every 30 s of the whole day
    await store.write(
        [Sample(pressure, ts, float(i % 50), 1 if i % 100 == 0 else 0) for i, ts in enumerate(stamps)]
    )
    partial = day + DAY_MS + 10 * HOUR_MS  # the next day: a few minutes only
    await store.write([Sample(pressure, partial + m * MINUTE_MS, 7.0, 0) for m in (0, 1, 5)])
    await store.rollup(NOW)
    window = (day, day + 2 * DAY_MS)
    before = await _history_everywhere(store, pressure, *window)
    next_day = await _history_everywhere(store, pressure, day + DAY_MS, day + 2 * DAY_MS)

    assert await store.compact(NOW) > 0
    assert await _history_everywhere(store, pressure, *window) == before

    # A replay brings a new value into 10:00 of the packed day and repeats one already stored.
    late = day + 10 * HOUR_MS + 15_000
    assert await store.write([Sample(pressure, late, 1000.0, 0), Sample(pressure, stamps[0], 0.0, 0)]) == 1
    await store.rollup(NOW)
    minutes = await store.history(pressure, day + 10 * HOUR_MS, day + 10 * HOUR_MS + MINUTE_MS, MINUTE_MS)
    assert minutes == [HistoryPoint(day + 10 * HOUR_MS, 0.0, 1000.0, 1001.0 / 3, 1.0, 3, 1)]
    hours = await store.history(pressure, day, day + DAY_MS, step_ms=HOUR_MS)
    assert hours[10].count == 121
    assert hours[10].max == 1000.0
    assert [h.count for h in hours[:10]] == [120] * 10
    await store.compact(NOW)
    assert (
        await store.history(pressure, day + 10 * HOUR_MS, day + 10 * HOUR_MS + MINUTE_MS, MINUTE_MS)
    ) == minutes
    assert (await store.history(pressure, day, day + DAY_MS, step_ms=HOUR_MS)) == hours
    assert await _history_everywhere(store, pressure, day + DAY_MS, day + 2 * DAY_MS) == next_day
