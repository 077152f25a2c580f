"""Trend queries over what the ingest stored: raw values, or buckets of ``step`` from the right level.

Rules:
- No step: raw values. A step picks the level with ``resolution_for_step`` (raw below 1 minute,
  1-minute rollups below 1 hour, 1-hour rollups above).
- Rollup levels only hold buckets closed before the last rollup run (``rolled_up_to``). The answer is
  therefore read from the rollup level up to the step-aligned boundary before that point, and from raw
  samples, aggregated here to the same step, after it — so the newest buckets are never missing. With
  no rollup run known, everything is aggregated from raw samples.
- A step-aligned boundary keeps every bucket whole on one side: a level bucket ``b`` belongs to step
  bucket ``b - b % step``, which is before the boundary exactly when ``b`` is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tapline.store.telemetry import (
    HistoryPoint,
    Resolution,
    SeriesKey,
    TelemetryStore,
    bucket_start,
    resolution_for_step,
)

__all__ = ["PointHistory", "aggregate", "point_history"]

_LEVEL_NAMES = {Resolution.RAW: "raw", Resolution.MINUTE: "1m", Resolution.HOUR: "1h"}


@dataclass(frozen=True, slots=True)
class PointHistory:
    site: str
    point: str
    step_ms: int | None
    resolution: str
    values: list[HistoryPoint]


def aggregate(raw: Sequence[HistoryPoint], step_ms: int) -> list[HistoryPoint]:
    """Raw points (in time order) grouped into ``step_ms`` buckets, as the store aggregates them."""
    out: list[HistoryPoint] = []
    bucket: list[HistoryPoint] = []
    start = None
    for point in raw:
        b = point.ts - point.ts % step_ms
        if b != start and bucket:
            out.append(_bucket(start, bucket))  # type: ignore[arg-type]  # start is set with bucket
            bucket = []
        start = b
        bucket.append(point)
    if bucket and start is not None:
        out.append(_bucket(start, bucket))
    return out


def _plain(point: HistoryPoint) -> HistoryPoint:
    """Plain ``int``/``float`` fields: PostgreSQL's ``sum(bigint)`` comes back as ``Decimal``."""
    return HistoryPoint(
        int(point.ts),
        float(point.min),
        float(point.max),
        float(point.avg),
        float(point.last),
        int(point.count),
        int(point.quality),
    )


def _bucket(start: int, points: list[HistoryPoint]) -> HistoryPoint:
    values = [p.last for p in points]
    return HistoryPoint(
        ts=start,
        min=min(values),
        max=max(values),
        avg=sum(values) / len(values),
        last=values[-1],
        count=len(values),
        quality=max(p.quality for p in points),
    )


async def point_history(
    store: TelemetryStore,
    site: str,
    point: str,
    start: int,
    end: int,
    step_ms: int | None,
    rolled_up_to: int | None,
) -> PointHistory:
    """History of one point (see the module rules)."""
    series_id = (await store.ensure_series([SeriesKey(site, point)]))[SeriesKey(site, point)]
    resolution = resolution_for_step(step_ms)
    if step_ms is None:
        return PointHistory(site, point, None, "raw", await store.history(series_id, start, end))
    if resolution is Resolution.RAW:
        return PointHistory(site, point, step_ms, "raw", await store.history(series_id, start, end, step_ms))
    boundary = start
    if rolled_up_to is not None:
        boundary = bucket_start(bucket_start(rolled_up_to, resolution.value), step_ms)
        boundary = min(max(boundary, start), end)
    values: list[HistoryPoint] = []
    if boundary > start:
        values += map(_plain, await store.history(series_id, start, boundary, step_ms))
    if boundary < end:
        values += aggregate(await store.history(series_id, boundary, end), step_ms)
    return PointHistory(site, point, step_ms, _LEVEL_NAMES[resolution], values)
