"""The store's pure helpers: URL parsing, level choice, bucket and partition arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tapline.store.errors import StoreConfigurationError
from tapline.store.postgres_telemetry import PARTITION_WIDTHS, days_touched, partition_name
from tapline.store.telemetry import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    Resolution,
    Sample,
    StoreSettings,
    bucket_start,
    open_telemetry_store,
    parse_store_url,
    resolution_for_step,
)

DAY = int(datetime(2025, 3, 10, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("url", "backend", "target"),
    [
        ("sqlite:////var/lib/tapline/telemetry.db", "sqlite", "/var/lib/tapline/telemetry.db"),
        ("sqlite:///data/telemetry.db", "sqlite", "data/telemetry.db"),
        ("sqlite:///:memory:", "sqlite", ":memory:"),
        ("postgresql://u@db:5432/tapline", "postgresql", "postgresql://u@db:5432/tapline"),
        ("postgres://db/tapline", "postgresql", "postgresql://db/tapline"),
        (
            "postgresql+psycopg://db/tapline?sslmode=require",
            "postgresql",
            "postgresql://db/tapline?sslmode=require",
        ),
    ],
)
def test_store_urls_name_a_backend_and_a_target(url: str, backend: str, target: str) -> None:
    assert parse_store_url(url) == (backend, target)


@pytest.mark.parametrize(
    "url",
    ["mysql://db/tapline", "telemetry.db", "sqlite://", "sqlite:///", "sqlite:///x.db?mode=ro", "influx://x"],
)
def test_unusable_store_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(StoreConfigurationError):
        open_telemetry_store(url)


def test_settings_refuse_impossible_retention() -> None:
    with pytest.raises(StoreConfigurationError, match="raw_retention_ms"):
        StoreSettings(raw_retention_ms=0)
    with pytest.raises(StoreConfigurationError, match="partitions_ahead_days"):
        StoreSettings(partitions_ahead_days=-1)


@pytest.mark.parametrize(
    ("step", "resolution"),
    [
        (None, Resolution.RAW),
        (1, Resolution.RAW),
        (MINUTE_MS - 1, Resolution.RAW),
        (MINUTE_MS, Resolution.MINUTE),
        (15 * MINUTE_MS, Resolution.MINUTE),
        (HOUR_MS - 1, Resolution.MINUTE),
        (HOUR_MS, Resolution.HOUR),
        (DAY_MS, Resolution.HOUR),
    ],
)
def test_the_step_picks_the_level(step: int | None, resolution: Resolution) -> None:
    assert resolution_for_step(step) is resolution


@pytest.mark.parametrize("step", [0, -MINUTE_MS])
def test_a_step_must_be_positive(step: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        resolution_for_step(step)


def test_buckets_are_aligned_to_the_epoch() -> None:
    assert bucket_start(DAY + 59_999, MINUTE_MS) == DAY
    assert bucket_start(DAY + 60_000, MINUTE_MS) == DAY + 60_000
    assert bucket_start(DAY + HOUR_MS - 1, HOUR_MS) == DAY
    assert bucket_start(DAY + 1, DAY_MS) == DAY


def test_days_touched_by_a_batch() -> None:
    same_day = [Sample(1, DAY + 5, 0.0, 0), Sample(1, DAY + 10, 0.0, 0)]
    assert days_touched(same_day, DAY + 5, DAY + 10) == [DAY]
    across_midnight = [Sample(1, DAY - 1, 0.0, 0), Sample(1, DAY, 0.0, 0)]
    assert days_touched(across_midnight, DAY - 1, DAY) == [DAY - DAY_MS, DAY]
    far_apart = [Sample(1, DAY, 0.0, 0), Sample(1, DAY - 30 * DAY_MS, 0.0, 0), Sample(2, DAY + 7, 0.0, 0)]
    assert days_touched(far_apart, DAY - 30 * DAY_MS, DAY + 7) == [DAY - 30 * DAY_MS, DAY]


def test_partition_names_carry_the_start_date() -> None:
    assert partition_name("samples", DAY) == "samples_20250310"
    assert (
        partition_name("rollup_1h", bucket_start(DAY, PARTITION_WIDTHS["rollup_1h"])) == "rollup_1h_20250213"
    )
