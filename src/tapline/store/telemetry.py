"""The telemetry store protocol, its value types, and ``open_telemetry_store(url)``.

Rules:
- A series is one point of one room, ``SeriesKey(site, point)``; it gets a stable integer id on first use
  and every sample refers to that id, so a stored row is four numbers (narrow layout: one row per value).
  Sparkplug sends values of one room together but with RBE only the changed ones, so a wide row per room
  would be mostly holes; narrow rows keep replay, deadband and late data simple.
- Writes are idempotent on ``(series_id, ts)``: a replay or a duplicate never makes a second row, and
  ``write`` returns how many rows were new. This is what makes §2a's replay-from-the-committed-mark safe.
- A ``write`` is one transaction that is durable when it returns; when it raises, nothing was committed
  and the caller keeps its batch and retries (``StoreUnavailable``).
- Time is ``int`` milliseconds since the epoch (UTC), as everywhere in tapline; rollup buckets are aligned
  to the epoch (a 1-minute bucket starts at ``ts - ts % 60_000``) and closed when ``now >= start + width``.
- ``rollup(now_ms)`` and ``apply_retention(now_ms)`` take the clock as an argument: the store never reads
  the wall clock for them, so tests and backfills drive them exactly; the composition root schedules them.
- Rollups keep ``sum`` and ``count`` rather than the average so that buckets re-aggregate exactly; the
  quality of an aggregated bucket is the worst quality (highest ``Quality`` number) of its samples, so a
  trend shows that a bucket contains stale or bad values.

This module imports no database driver; ``open_telemetry_store`` imports the backend it needs.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, NamedTuple, Protocol, Self

from tapline.store.errors import StoreConfigurationError

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "MINUTE_MS",
    "HistoryPoint",
    "Resolution",
    "Sample",
    "SampleRow",
    "SeriesKey",
    "StoreSettings",
    "TelemetryStore",
    "bucket_start",
    "open_telemetry_store",
    "parse_store_url",
    "resolution_for_step",
]

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """Names one time series: a point (``device/Name``) of a pump room (``site``, e.g. ``PR-0001``)."""

    site: str
    point: str


SampleRow = tuple[int, int, float, int]
"""``(series_id, ts, value, quality)``: what ``write`` takes. A ``Sample`` is one; the ingest's writer
passes plain tuples, which cost a fifth of a NamedTuple's construction (its ``__new__`` is Python)."""


class Sample(NamedTuple):
    """One stored value: ``(series_id, ts, value, quality)``.

    A NamedTuple rather than a dataclass on purpose: it *is* the row tuple that ``executemany`` and
    binary COPY consume, so the write path passes the caller's objects straight to the driver without
    building a second tuple per value (the write path's budget is a few hundred nanoseconds a value).
    ``quality`` is a ``tapline.domain.model.Quality`` (an ``int``).
    """

    series_id: int
    ts: int
    value: float
    quality: int


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One point of a history answer; for a raw row ``min == max == avg == last == value``, count 1."""

    ts: int
    min: float
    max: float
    avg: float
    last: float
    count: int
    quality: int


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Tuning of a telemetry store; the defaults suit the cloud (durations in milliseconds)."""

    raw_retention_ms: int = 30 * DAY_MS
    rollup_1m_retention_ms: int = 400 * DAY_MS
    rollup_1h_retention_ms: int = 10 * 366 * DAY_MS
    compact_after_ms: int = 2 * HOUR_MS
    """Raw samples of an hour stay one row per value until the hour has been closed (and rolled up) this
    long; ``compact`` then packs them into one block per series and hour (see ``compact``)."""
    partitions_ahead_days: int = 2  # PostgreSQL: daily partitions kept ready ahead of the clock
    connect_timeout_s: float = 5.0  # PostgreSQL: give up connecting after this long
    lock_timeout_ms: int = 5_000  # wait this long for a lock, then StoreUnavailable

    def __post_init__(self) -> None:
        for name in (
            "raw_retention_ms",
            "rollup_1m_retention_ms",
            "rollup_1h_retention_ms",
            "compact_after_ms",
        ):
            if getattr(self, name) <= 0:
                raise StoreConfigurationError(f"{name} must be positive, got {getattr(self, name)}")
        if self.partitions_ahead_days < 0:
            raise StoreConfigurationError(
                f"partitions_ahead_days must be >= 0, got {self.partitions_ahead_days}"
            )


class Resolution(enum.Enum):
    """Which table a history query reads: raw samples, 1-minute or 1-hour rollups."""

    RAW = 0
    MINUTE = MINUTE_MS
    HOUR = HOUR_MS


def resolution_for_step(step_ms: int | None) -> Resolution:
    """Pick the coarsest stored level that is still finer than or equal to ``step_ms``.

    Raw below one minute (or with no step), 1-minute rollups below one hour, 1-hour rollups above.
    A step that is not a multiple of the level's width groups level buckets by their start.
    """
    if step_ms is None:
        return Resolution.RAW
    if step_ms <= 0:
        raise ValueError(f"step_ms must be positive, got {step_ms}")
    if step_ms < MINUTE_MS:
        return Resolution.RAW
    if step_ms < HOUR_MS:
        return Resolution.MINUTE
    return Resolution.HOUR


def bucket_start(ts: int, width: int) -> int:
    """Start of the epoch-aligned bucket of ``width`` ms that contains ``ts``."""
    return ts - ts % width


class TelemetryStore(Protocol):
    """Time series of point values; every method may raise ``StoreError`` (see ``errors``)."""

    async def open(self) -> None:
        """Connect, create the schema if missing (idempotent), and prepare partitions."""

    async def close(self) -> None:
        """Release the connection; safe to call twice."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def ensure_series(self, keys: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
        """Ids of the given series, created on first use; an id never changes."""
        ...

    async def write(self, samples: Sequence[SampleRow]) -> int:
        """Store samples in one transaction, ignoring ``(series_id, ts)`` already stored.

        Returns the number of rows newly inserted. Late samples (older than the rollup mark) mark their
        rollup buckets for recompute.
        """
        ...

    async def latest(self, series_ids: Sequence[int] | None = None) -> dict[int, Sample]:
        """The newest sample of each series (all series when ``series_ids`` is None)."""
        ...

    async def history(
        self, series_id: int, start: int, end: int, step_ms: int | None = None
    ) -> list[HistoryPoint]:
        """Values of one series in ``[start, end)``, aggregated to ``step_ms`` buckets when given.

        The level read follows ``resolution_for_step``; rollup levels only hold closed, rolled-up buckets.
        """
        ...

    async def rollup(self, now_ms: int) -> int:
        """Compute 1-minute and 1-hour rollups for buckets closed by ``now_ms``.

        Covers buckets since the previous call plus any older bucket that received a late sample.
        Returns the number of rollup rows written.
        """
        ...

    async def compact(self, now_ms: int) -> int:
        """Pack the raw samples of closed, rolled-up hours into one block per (series, hour).

        An hour ``H`` is due when ``H + 1 h + compact_after_ms <= now_ms`` and its minutes are rolled up.
        A block holds the hour's timestamps (a start and a step when they are regular, else the offsets),
        the float64 values and the qualities (none stored when all are good): about 8 bytes a value
        instead of a row per value. Every read (``history``, ``latest``, ``count``) sees blocks and rows
        alike; a write that reaches a compacted hour (a replay, a backfill) unpacks that series' block
        back into rows first, so duplicates are still detected and the rollup recomputes from rows; the
        next ``compact`` packs the hour again. Returns the number of blocks written.
        """
        ...

    async def apply_retention(self, now_ms: int) -> int:
        """Remove raw samples and rollups past their retention.

        Returns how much was removed, in the backend's unit (PostgreSQL: partitions dropped; SQLite:
        rows deleted); 0 means nothing was due. Use ``count()`` for rows.
        """
        ...

    async def count(self) -> int:
        """Number of raw samples stored (a full scan: for tests and benchmarks)."""
        ...


class StoreLifecycle:
    """``async with store:`` opens and closes it; shared by the backends."""

    single_writer: ClassVar[bool] = False
    """True when this store and the relational tables share one database writer (SQLite's file lock):
    a relational write then must not run beside a telemetry write, or one waits out the other's lock."""

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class StoreUrl(NamedTuple):
    """A parsed store URL: ``backend`` is ``sqlite`` or ``postgresql``; ``target`` is a path or DSN."""

    backend: str
    target: str


def parse_store_url(url: str) -> StoreUrl:
    """Split a ``--db`` URL into backend and target; raise ``StoreConfigurationError`` otherwise.

    ``sqlite:///relative.db`` and ``sqlite:////absolute/path.db`` follow SQLAlchemy's convention (so the
    same URL names the same file for Alembic); ``sqlite:///:memory:`` is an in-memory database.
    ``postgresql://``, ``postgres://`` and SQLAlchemy's ``postgresql+psycopg://`` are PostgreSQL.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise StoreConfigurationError(
            f"store URL must look like 'sqlite:///path' or 'postgresql://…': {url!r}"
        )
    if scheme == "sqlite":
        if not rest.startswith("/") or len(rest) < 2:
            raise StoreConfigurationError(f"SQLite URL must be 'sqlite:///path/to/file.db', got {url!r}")
        path = rest[1:]
        if "?" in path:
            raise StoreConfigurationError(f"SQLite URL takes no query parameters: {url!r}")
        return StoreUrl("sqlite", path)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return StoreUrl("postgresql", f"postgresql://{rest}")
    raise StoreConfigurationError(
        f"unsupported store URL scheme {scheme!r} in {url!r} (use sqlite or postgresql)"
    )


def open_telemetry_store(url: str, settings: StoreSettings | None = None) -> TelemetryStore:
    """Build the store for ``url`` (not yet connected: ``await store.open()`` or ``async with store``)."""
    parsed = parse_store_url(url)
    chosen = settings or StoreSettings()
    if parsed.backend == "sqlite":
        from tapline.store.sqlite_telemetry import SqliteTelemetryStore

        return SqliteTelemetryStore(parsed.target, chosen)
    from tapline.store.postgres_telemetry import PostgresTelemetryStore

    return PostgresTelemetryStore(parsed.target, chosen)
