"""One behaviour suite for every telemetry store backend (SQLite on tmp_path, PostgreSQL on ``pg_url``).

Each PostgreSQL test gets its own schema (``search_path`` in the URL), so tests never see each other's
rows or rollup marks. Times are fixed (``NOW``), never the wall clock, so rollup and retention are exact.
"""

from __future__ import annotations

import math
import sqlite3
import uuid
from pathlib import Path

import psycopg
import pytest

from tapline.domain.model import Quality
from tapline.store.errors import StoreConfigurationError, StoreNotOpen, StoreUnavailable
from tapline.store.telemetry import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    HistoryPoint,
    Sample,
    StoreSettings,
    TelemetryStore,
    open_telemetry_store,
)
from tests.helpers import free_port
from tests.integration.store.common import LEVEL, NOW, OTHER_ROOM, PRESSURE, MakeStore, point, series_ids

# -- series ----------------------------------------------------------------------------------------------


async def test_ensure_series_ids_are_stable_across_reopen(make_store: MakeStore) -> None:
    async with make_store() as store:
        first = await store.ensure_series([PRESSURE, LEVEL, PRESSURE])
        again = await store.ensure_series([LEVEL, OTHER_ROOM])
    async with make_store() as store:
        reopened = await store.ensure_series([OTHER_ROOM, PRESSURE, LEVEL])

    assert set(first) == {PRESSURE, LEVEL}
    assert len({*first.values(), again[OTHER_ROOM]}) == 3
    assert again[LEVEL] == first[LEVEL]
    assert reopened == {**first, OTHER_ROOM: again[OTHER_ROOM]}


# -- write -----------------------------------------------------------------------------------------------


async def test_write_counts_inserted_rows(store: TelemetryStore) -> None:
    pressure, level = await series_ids(store, PRESSURE, LEVEL)
    batch = [Sample(pressure, NOW + i * 1000, 0.4 + i / 100, Quality.GOOD) for i in range(50)]
    batch += [Sample(level, NOW, 2, Quality.UNCERTAIN), Sample(level, NOW + 1000, True, 0)]

    assert await store.write(batch) == 52
    assert await store.write([]) == 0
    assert await store.count() == 52
    assert await store.history(level, NOW, NOW + 2000) == [point(NOW, 2.0, quality=1), point(NOW + 1000, 1.0)]


async def test_duplicates_never_make_a_second_row(store: TelemetryStore) -> None:
    (pressure,) = await series_ids(store, PRESSURE)
    batch = [Sample(pressure, NOW + i * 1000, float(i), 0) for i in range(10)]
    await store.write(batch)

    assert await store.write(batch) == 0  # a full replay
    overlap = batch[5:] + [Sample(pressure, NOW + i * 1000, float(i), 0) for i in range(10, 15)]
    assert await store.write(overlap) == 5  # a replay that reaches past what was stored
    twice = Sample(pressure, NOW + 20_000, 1.0, 0)
    assert await store.write([twice, twice]) == 1  # a duplicate inside one batch
    assert await store.count() == 16


async def test_out_of_order_and_historical_writes_land(store: TelemetryStore) -> None:
    (pressure,) = await series_ids(store, PRESSURE)
    live = [Sample(pressure, NOW + 2000, 0.42, 0), Sample(pressure, NOW, 0.40, 0)]
    three_days_ago = [Sample(pressure, NOW - 3 * DAY_MS + i, 0.30, 0) for i in range(3)]
    spanning_weeks = [
        Sample(pressure, NOW - 20 * DAY_MS, 0.1, 0),
        Sample(pressure, NOW - 10 * DAY_MS, 0.2, 0),
    ]

    assert await store.write(live) == 2
    assert await store.write(three_days_ago) == 3
    assert await store.write(spanning_weeks) == 2
    assert await store.count() == 7
    history = await store.history(pressure, NOW - 30 * DAY_MS, NOW + DAY_MS)
    assert [p.ts for p in history] == sorted(p.ts for p in history)
    assert [p.last for p in history] == [0.1, 0.2, 0.3, 0.3, 0.3, 0.40, 0.42]


# -- latest ----------------------------------------------------------------------------------------------


async def test_latest_is_the_newest_sample_per_series(store: TelemetryStore) -> None:
    pressure, level, other = await series_ids(store, PRESSURE, LEVEL, OTHER_ROOM)
    await store.write([Sample(pressure, NOW, 0.40, 0), Sample(pressure, NOW + 1000, 0.41, 0)])
    await store.write([Sample(level, NOW + 500, 2.5, 0)])
    await store.write([Sample(pressure, NOW - DAY_MS, 0.9, 3)])  # an older backfill arrives last

    assert await store.latest() == {
        pressure: Sample(pressure, NOW + 1000, 0.41, 0),
        level: Sample(level, NOW + 500, 2.5, 0),
    }
    assert await store.latest([level, other]) == {level: Sample(level, NOW + 500, 2.5, 0)}
    assert await store.latest([]) == {}


# -- history ---------------------------------------------------------------------------------------------


async def test_history_of_raw_rows_is_half_open_and_per_series(store: TelemetryStore) -> None:
    pressure, level = await series_ids(store, PRESSURE, LEVEL)
    await store.write([Sample(pressure, NOW + i * 1000, float(i), i % 2) for i in range(5)])
    await store.write([Sample(level, NOW + 1000, 9.0, 0)])

    assert await store.history(pressure, NOW + 1000, NOW + 4000) == [
        point(NOW + 1000, 1.0, quality=1),
        point(NOW + 2000, 2.0),
        point(NOW + 3000, 3.0, quality=1),
    ]
    assert await store.history(pressure, NOW + 10_000, NOW + 20_000) == []


async def test_history_aggregates_raw_rows_below_a_minute(store: TelemetryStore) -> None:
    (pressure,) = await series_ids(store, PRESSURE)
    values = [3.0, 1.0, 2.0, 8.0, 6.0]  # at 0, 4, 8, 12, 16 s
    await store.write(
        [Sample(pressure, NOW + i * 4000, v, 2 if v == 8.0 else 0) for i, v in enumerate(values)]
    )

    assert await store.history(pressure, NOW, NOW + MINUTE_MS, step_ms=10_000) == [
        HistoryPoint(NOW, 1.0, 3.0, 2.0, 2.0, 3, 0),
        HistoryPoint(NOW + 10_000, 6.0, 8.0, 7.0, 6.0, 2, 2),
    ]


# -- rollups ---------------------------------------------------------------------------------------------


async def test_rollup_computes_closed_minutes_and_hours(store: TelemetryStore) -> None:
    (pressure,) = await series_ids(store, PRESSURE)
    hour = NOW - 3 * HOUR_MS
    await store.write(
        [
            Sample(pressure, hour, 1.0, 0),
            Sample(pressure, hour + 10_000, 5.0, Quality.UNCERTAIN),
            Sample(pressure, hour + 20_000, 3.0, 0),
            Sample(pressure, hour + 60_000, 2.0, 0),
            Sample(pressure, hour + 90_000, 4.0, 0),
            Sample(pressure, hour + HOUR_MS + 5_000, 7.0, 0),  # its minute and hour are still open
        ]
    )

    assert await store.rollup(hour + HOUR_MS + 30_000) == 3  # two minutes, one hour
    assert await store.rollup(hour + HOUR_MS + 30_000) == 0  # nothing new

    assert await store.history(pressure, hour, hour + 2 * HOUR_MS, step_ms=MINUTE_MS) == [
        HistoryPoint(hour, 1.0, 5.0, 3.0, 3.0, 3, 1),
        HistoryPoint(hour + MINUTE_MS, 2.0, 4.0, 3.0, 4.0, 2, 0),
    ]
    assert await store.history(pressure, hour, hour + 2 * HOUR_MS, step_ms=HOUR_MS) == [
        HistoryPoint(hour, 1.0, 5.0, 3.0, 4.0, 5, 1),
    ]

    assert await store.rollup(hour + 2 * HOUR_MS) == 2  # the minute and the hour that have now closed
    hours = await store.history(pressure, hour, hour + 2 * HOUR_MS, step_ms=HOUR_MS)
    assert hours[1] == point(hour + HOUR_MS, 7.0)


async def test_rollup_recomputes_a_closed_bucket_after_late_data(store: TelemetryStore) -> None:
    (pressure,) = await series_ids(store, PRESSURE)
    hour = NOW - 3 * HOUR_MS
    await store.write([Sample(pressure, hour + s * 1000, v, 0) for s, v in ((0, 1.0), (10, 5.0), (20, 3.0))])
    await store.write([Sample(pressure, hour + 60_000, 4.0, 0)])
    await store.rollup(NOW)

    # A replay delivers a value inside the rolled-up minute, and one from two hours earlier.
    assert await store.write(
        [Sample(pressure, hour + 30_000, 10.0, 3), Sample(pressure, hour - HOUR_MS, 6.0, 0)]
    )
    assert await store.write([Sample(pressure, hour + 30_000, 10.0, 3)]) == 0  # and once more: harmless
    minutes = await store.history(pressure, hour, hour + HOUR_MS, step_ms=MINUTE_MS)
    assert minutes[0].count == 3  # not yet rolled up again

    assert await store.rollup(NOW) == 4  # two minutes, two hours
    assert await store.history(pressure, hour - HOUR_MS, hour + HOUR_MS, step_ms=MINUTE_MS) == [
        point(hour - HOUR_MS, 6.0),
        HistoryPoint(hour, 1.0, 10.0, 4.75, 10.0, 4, 3),
        point(hour + MINUTE_MS, 4.0),
    ]
    assert await store.history(pressure, hour - HOUR_MS, hour + HOUR_MS, step_ms=HOUR_MS) == [
        point(hour - HOUR_MS, 6.0),
        HistoryPoint(hour, 1.0, 10.0, 4.6, 4.0, 5, 3),
    ]


async def test_history_reads_the_level_its_step_asks_for(store: TelemetryStore) -> None:
    (pressure,) = await series_ids(store, PRESSURE)
    hour = NOW - 2 * HOUR_MS
    await store.write([Sample(pressure, hour + m * MINUTE_MS, float(m), 0) for m in range(60)])
    await store.rollup(NOW)
    # Written after the rollup: raw reads see it at once, rollup levels only after the next rollup.
    await store.write([Sample(pressure, hour + 30_000, 100.0, 0)])
    window = (pressure, hour, hour + HOUR_MS)

    assert len(await store.history(*window)) == 61
    assert (await store.history(*window, step_ms=30_000))[:2] == [
        point(hour, 0.0),
        point(hour + 30_000, 100.0),
    ]
    assert (await store.history(*window, step_ms=MINUTE_MS))[0] == point(hour, 0.0)
    five_minutes = await store.history(*window, step_ms=5 * MINUTE_MS)
    assert len(five_minutes) == 12
    assert five_minutes[1] == HistoryPoint(hour + 5 * MINUTE_MS, 5.0, 9.0, 7.0, 9.0, 5, 0)
    assert await store.history(*window, step_ms=HOUR_MS) == [HistoryPoint(hour, 0.0, 59.0, 29.5, 59.0, 60, 0)]

    await store.rollup(NOW)
    assert (await store.history(*window, step_ms=MINUTE_MS))[0] == HistoryPoint(
        hour, 0.0, 100.0, 50.0, 100.0, 2, 0
    )
    assert (await store.history(*window, step_ms=HOUR_MS))[0].max == 100.0


# -- retention -------------------------------------------------------------------------------------------


async def test_retention_drops_old_data_level_by_level(make_store: MakeStore) -> None:
    settings = StoreSettings(
        raw_retention_ms=2 * DAY_MS, rollup_1m_retention_ms=7 * DAY_MS, rollup_1h_retention_ms=60 * DAY_MS
    )
    async with make_store(settings) as store:
        (pressure,) = await series_ids(store, PRESSURE)
        old, older, recent = NOW - 3 * DAY_MS, NOW - 20 * DAY_MS, NOW - HOUR_MS
        await store.write([Sample(pressure, ts, 1.0, 0) for ts in (older, old, recent)])
        await store.rollup(NOW)

        assert await store.apply_retention(NOW) > 0
        assert await store.count() == 1
        assert await store.history(pressure, older, NOW) == [point(recent, 1.0)]
        minutes = await store.history(pressure, older, NOW, step_ms=MINUTE_MS)
        assert [p.ts for p in minutes] == [old, recent]
        hours = await store.history(pressure, older, NOW, step_ms=HOUR_MS)
        assert [p.ts for p in hours] == [older, old, recent]

        # Data older than the raw retention can still arrive (a long backfill); it lands.
        assert await store.write([Sample(pressure, old, 2.0, 0)]) == 1


async def test_reopen_keeps_data_and_rollup_marks(make_store: MakeStore) -> None:
    async with make_store() as store:
        (pressure,) = await series_ids(store, PRESSURE)
        await store.write([Sample(pressure, NOW - HOUR_MS + i * 1000, float(i), 0) for i in range(3)])
        await store.rollup(NOW)
    async with make_store() as store:
        assert await store.count() == 3
        assert await store.latest() == {pressure: Sample(pressure, NOW - HOUR_MS + 2000, 2.0, 0)}
        assert await store.rollup(NOW) == 0
        assert len(await store.history(pressure, NOW - HOUR_MS, NOW, step_ms=HOUR_MS)) == 1


# -- failures --------------------------------------------------------------------------------------------


async def test_a_store_that_is_not_open_says_so(make_store: MakeStore) -> None:
    store = make_store()
    with pytest.raises(StoreNotOpen):
        await store.count()
    await store.open()
    await store.close()
    await store.close()
    with pytest.raises(StoreNotOpen):
        await store.write([Sample(1, NOW, 1.0, 0)])


async def test_sqlite_in_a_missing_directory_is_a_configuration_error(tmp_path: Path) -> None:
    store = open_telemetry_store(f"sqlite:///{tmp_path / 'nowhere' / 'telemetry.db'}")
    with pytest.raises(StoreConfigurationError, match="does not exist"):
        await store.open()


async def test_sqlite_locked_by_another_writer_is_unavailable_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "telemetry.db"
    async with open_telemetry_store(f"sqlite:///{path}", StoreSettings(lock_timeout_ms=50)) as store:
        (pressure,) = await series_ids(store, PRESSURE)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StoreUnavailable, match="locked"):
                await store.write([Sample(pressure, NOW, 1.0, 0)])
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert await store.write([Sample(pressure, NOW, 1.0, 0)]) == 1


@pytest.mark.postgres
async def test_postgres_unreachable_is_unavailable() -> None:
    store = open_telemetry_store(
        f"postgresql://postgres@127.0.0.1:{free_port()}/tapline", StoreSettings(connect_timeout_s=2)
    )
    with pytest.raises(StoreUnavailable, match="PostgreSQL open failed"):
        await store.open()


@pytest.mark.postgres
async def test_postgres_connection_lost_is_unavailable_then_recovers(pg_url: str) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{pg_url}?options=-csearch_path%3D{schema}&application_name={schema}"
        async with open_telemetry_store(url) as store:
            (pressure,) = await series_ids(store, PRESSURE)
            admin.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = %s",
                (schema,),
            )
            batch = [Sample(pressure, NOW + i, 1.0, 0) for i in range(100)]
            with pytest.raises(StoreUnavailable):
                await store.write(batch)
            assert await store.write(batch) == 100  # the caller kept its batch and retried


async def test_non_finite_values_are_stored_not_rejected(store: TelemetryStore) -> None:
    """A broken transmitter's NaN must not make a batch unwritable (the caller would retry forever)."""
    pressure, level = await series_ids(store, PRESSURE, LEVEL)
    batch = [Sample(pressure, NOW, math.nan, Quality.BAD), Sample(level, NOW, math.inf, Quality.BAD)]
    batch.append(Sample(level, NOW - HOUR_MS, 1.0, 0))

    assert await store.write(batch) == 3
    assert await store.rollup(NOW + MINUTE_MS) > 0
    (raw,) = await store.history(pressure, NOW, NOW + 1)
    assert math.isnan(raw.last)
    assert raw.quality == Quality.BAD
    latest = await store.latest()
    assert math.isnan(latest[pressure].value)
    assert latest[level].value == math.inf
