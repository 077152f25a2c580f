"""SQLite ``sample_blocks``: the pure packing of one (series, hour), and the store paths the shared
contract suite cannot reach (a series with a late minute waiting for the rollup, a block and rows of the
same hour, the byte cost of a packed hour)."""

from __future__ import annotations

import math
import random
import sqlite3
import struct
from array import array
from pathlib import Path

import pytest

from tapline.store import sqlite_telemetry
from tapline.store.sqlite_telemetry import SqliteTelemetryStore, pack_block, unpack_block
from tapline.store.telemetry import HOUR_MS, MINUTE_MS, Sample, SeriesKey, StoreSettings
from tests.integration.store.common import race_compactions_with_late_writes

HOUR = 1_741_600_800_000  # 2025-03-10 10:00 UTC, hour-aligned
NOW = HOUR + 5 * HOUR_MS


# -- packing -------------------------------------------------------------------------------------------


def test_a_regular_hour_is_t0_and_step_with_no_offsets_and_no_qualities() -> None:
    ts = [HOUR + 2_000 + i * 5_000 for i in range(720)]
    values = [0.4 + i / 1000 for i in range(720)]

    n, t0, step, offsets, vals, quals = pack_block(HOUR, ts, values, [0] * 720)

    assert (n, t0, step, offsets, quals) == (720, HOUR + 2_000, 5_000, None, None)
    assert vals == struct.pack("<720d", *values)  # little-endian float64, 8 bytes a value
    back_ts, back_values, back_qualities = unpack_block(HOUR, n, t0, step, offsets, vals, quals)
    assert isinstance(back_ts, range)  # regular timestamps are never materialised
    assert list(back_ts) == ts
    assert list(back_values) == values
    assert list(back_qualities) == [0] * 720


def test_one_value_has_step_zero() -> None:
    packed = pack_block(HOUR, [HOUR + 7], [1.5], [2])

    assert packed[:4] == (1, HOUR + 7, 0, None)
    assert [list(column) for column in unpack_block(HOUR, *packed)] == [[HOUR + 7], [1.5], [2]]


def test_irregular_timestamps_are_int32_offsets_from_the_hour() -> None:
    ts = [HOUR, HOUR + 7, HOUR + 1_000, HOUR + 3_599_999]
    qualities = [0, 3, 0, 1]

    n, t0, step, offsets, vals, quals = pack_block(HOUR, ts, [1.0, 2.0, 3.0, 4.0], qualities)

    assert step is None
    assert offsets == struct.pack("<4i", 0, 7, 1_000, 3_599_999)
    assert quals == struct.pack("<4h", *qualities)
    back_ts, _, back_qualities = unpack_block(HOUR, n, t0, step, offsets, vals, quals)
    assert list(back_ts) == ts
    assert list(back_qualities) == qualities


def test_null_values_come_back_as_nan() -> None:
    packed = pack_block(HOUR, [HOUR, HOUR + 1], [None, math.inf], [2, 0])

    _, values, _ = unpack_block(HOUR, *packed)
    assert math.isnan(values[0])
    assert values[1] == math.inf


def test_blocks_are_little_endian_on_a_big_endian_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a little-endian host ``_SWAP`` makes the columns big-endian: proof that the swap is applied."""
    monkeypatch.setattr(sqlite_telemetry, "_SWAP", True)
    ts, values = [HOUR, HOUR + 3, HOUR + 10], [1.0, -2.5, 1e300]

    packed = pack_block(HOUR, ts, values, [1, 0, 2])

    native = array("d", values)
    native.byteswap()
    assert packed[4] == native.tobytes()
    assert [list(column) for column in unpack_block(HOUR, *packed)] == [ts, values, [1, 0, 2]]


def test_a_block_whose_columns_disagree_with_n_is_refused() -> None:
    _, t0, step, offsets, vals, quals = pack_block(HOUR, [HOUR, HOUR + 5], [1.0, 2.0], [0, 0])

    with pytest.raises(ValueError, match="do not hold 3"):
        unpack_block(HOUR, 3, t0, step, offsets, vals, quals)
    with pytest.raises(ValueError, match="at least one"):
        pack_block(HOUR, [], [], [])


# -- store paths -----------------------------------------------------------------------------------------

PRESSURE = SeriesKey("PR-0001", "plc/OutletPressure")
LEVEL = SeriesKey("PR-0001", "plc/TankLevel")


async def test_a_series_waiting_for_a_late_rollup_is_packed_only_after_it(tmp_path: Path) -> None:
    async with SqliteTelemetryStore(str(tmp_path / "t.db")) as store:
        ids = await store.ensure_series([PRESSURE, LEVEL])
        pressure, level = ids[PRESSURE], ids[LEVEL]
        await store.write(
            [Sample(sid, HOUR + i * 60_000, float(i), 0) for sid in (pressure, level) for i in range(60)]
        )
        await store.rollup(NOW)
        await store.write([Sample(pressure, HOUR + 30_000, 99.0, 0)])  # late: its minute is dirty

        assert await store.compact(NOW) == 1  # the level only; the pressure's rows still feed the rollup
        await store.rollup(NOW)
        assert (await store.history(pressure, HOUR, HOUR + MINUTE_MS, step_ms=MINUTE_MS))[0].max == 99.0
        assert await store.compact(NOW) == 1
        assert await store.count() == 121


async def test_rows_beside_a_block_of_the_same_hour_are_merged_and_win(tmp_path: Path) -> None:
    """Defensive path: something wrote rows into a packed hour without unpacking it first."""
    path = tmp_path / "t.db"
    async with SqliteTelemetryStore(str(path)) as store:
        pressure = (await store.ensure_series([PRESSURE]))[PRESSURE]
        await store.write([Sample(pressure, HOUR + i * 10_000, float(i), 0) for i in range(6)])
        await store.rollup(NOW)
        assert await store.compact(NOW) == 1
        other = sqlite3.connect(path)
        with other:
            other.executemany(
                "INSERT INTO samples VALUES (?, ?, ?, ?)",
                [(pressure, HOUR + 10_000, 7.0, 1), (pressure, HOUR + 15_000, 8.0, 0)],
            )
        other.close()

        assert await store.compact(NOW) == 1
        assert await store.count() == 7
        raw = await store.history(pressure, HOUR, HOUR + 20_000)
        assert [(p.ts, p.last, p.quality) for p in raw] == [
            (HOUR, 0.0, 0),
            (HOUR + 10_000, 7.0, 1),
            (HOUR + 15_000, 8.0, 0),
        ]


async def test_a_packed_regular_hour_costs_under_ten_bytes_a_value(tmp_path: Path) -> None:
    """720 values at 5 s: 5,760 bytes of values a block, about a page and a half with key and header."""
    async with SqliteTelemetryStore(str(tmp_path / "t.db"), StoreSettings()) as store:
        ids = await store.ensure_series([SeriesKey("PR-0001", f"plc/P{i}") for i in range(40)])
        await store.write(
            [
                Sample(sid, HOUR + i * 5_000, 0.4 + (i % 97) / 1000, 0)
                for sid in ids.values()
                for i in range(720)
            ]
        )
        await store.rollup(NOW)
        assert await store.compact(NOW) == 40

        def bytes_on_disk(db: sqlite3.Connection) -> int:
            tables = "'sample_blocks', 'sqlite_autoindex_sample_blocks_1'"
            sql = f"SELECT sum(pgsize) FROM dbstat WHERE name IN ({tables})"
            return int(db.execute(sql).fetchone()[0])

        per_value = await store._run("size", bytes_on_disk) / (40 * 720)
        assert per_value < 10  # rows: ~26


async def test_compaction_beside_late_writes_and_a_second_compactor_loses_nothing(tmp_path: Path) -> None:
    """Three connections to one file (workers of one host): two compact while the third replays and
    backfills into the hours being packed. SQLite serialises the transactions; whatever the order, every
    value is stored once and the next rollup and compaction pack everything."""
    path = str(tmp_path / "t.db")
    async with (
        SqliteTelemetryStore(path) as a,
        SqliteTelemetryStore(path) as b,
        SqliteTelemetryStore(path) as c,
    ):
        # 300 series: several compaction chunks.
        keys = [SeriesKey(f"PR-{k:04d}", "plc/OutletPressure") for k in range(300)]
        ids = list((await a.ensure_series(keys)).values())
        hours = [HOUR - HOUR_MS, HOUR]
        first, odd, _, new, _ = await race_compactions_with_late_writes(
            a, b, c, ids, hours, minutes=20, chunk=500, now=NOW
        )

        assert new == len(odd)
        await a.rollup(NOW)
        assert await a.compact(NOW) > 0
        assert await a.compact(NOW) == 0
        assert await a.count() == len(first) + len(odd)
        for sid in (ids[0], ids[255], ids[256], ids[-1]):
            values = await c.history(sid, HOUR - HOUR_MS, HOUR + HOUR_MS)
            assert [p.ts for p in values] == [h + i * 60_000 for h in hours for i in range(20)]
            hourly = await b.history(sid, HOUR - HOUR_MS, HOUR + HOUR_MS, step_ms=HOUR_MS)
            assert [p.count for p in hourly] == [20, 20]


def _random_doubles(count: int) -> list[float]:
    """Doubles of every magnitude (random bit patterns: subnormals, 1e±300) plus sensor-like values."""
    rng = random.Random(7)
    bits = (struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(count))
    odd = [v for v in bits if not math.isnan(v) and v != 0.0]  # SQLite keeps NaN as NULL and -0.0 as 0
    return (
        odd
        + [rng.uniform(0, 16) for _ in range(count)]
        + [math.inf, -math.inf, 5e-324, 1.7976931348623157e308]
    )


@pytest.mark.parametrize("as_text", [True, False], ids=["as-text", "row-by-row"])
async def test_compaction_keeps_every_double_bit_for_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_text: bool
) -> None:
    """Compaction reads an hour as text (one step a series, see ``_HOUR_OF_SERIES_AS_TEXT``) when this
    SQLite prints doubles exactly, else row by row; either way every value comes back unchanged."""
    if not as_text:
        monkeypatch.setattr(sqlite_telemetry, "_text_round_trips", lambda db: False)
    values = _random_doubles(3_000)
    async with SqliteTelemetryStore(str(tmp_path / "t.db")) as store:
        pressure = (await store.ensure_series([PRESSURE]))[PRESSURE]
        await store.write([Sample(pressure, HOUR + i * 500, v, 0) for i, v in enumerate(values)])
        await store.rollup(NOW)
        assert await store.compact(NOW) == 1
        back = [p.last for p in await store.history(pressure, HOUR, HOUR + HOUR_MS)]

    assert struct.pack(f"<{len(back)}d", *back) == struct.pack(f"<{len(values)}d", *values)


async def test_compaction_restores_time_order_if_group_concat_loses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``group_concat`` does not promise its order before SQLite 3.44: read newest first to prove it."""
    reversed_sql = sqlite_telemetry._HOUR_OF_SERIES_AS_TEXT.replace("ORDER BY ts", "ORDER BY ts DESC")
    monkeypatch.setattr(sqlite_telemetry, "_HOUR_OF_SERIES_AS_TEXT", reversed_sql)
    batch = [(HOUR + t, float(t), t % 3) for t in (5, 9, 1_000, 2_000, 2_500)]
    async with SqliteTelemetryStore(str(tmp_path / "t.db")) as store:
        pressure = (await store.ensure_series([PRESSURE]))[PRESSURE]
        await store.write([Sample(pressure, *row) for row in batch])
        await store.rollup(NOW)
        assert await store.compact(NOW) == 1
        raw = await store.history(pressure, HOUR, HOUR + HOUR_MS)

    assert [(p.ts, p.last, p.quality) for p in raw] == batch
