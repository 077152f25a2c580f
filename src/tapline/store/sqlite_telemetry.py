"""Telemetry store on SQLite: one file, one connection, one thread.

Why it looks like this:
- **One dedicated thread owns the connection.** Every call runs on a single-worker executor, so calls are
  serialised in arrival order without a lock and ``sqlite3`` itself enforces that no other thread ever
  touches the connection (``check_same_thread`` stays on). The event loop never blocks on disk. A caller
  cancelled mid-call does not cancel the work: the transaction still commits or rolls back whole, and a
  repeated write is harmless.
- **Layout.** ``samples(series_id, ts, value, quality)`` with ``PRIMARY KEY(series_id, ts) WITHOUT ROWID``:
  the primary key *is* the table (no second b-tree), it clusters each series' values for history reads,
  and it is the idempotency key: ``INSERT OR IGNORE`` turns a replayed or duplicate value into a no-op.
  ~1 M rows/s in the reference loop (reference/performance.md §1.3); through this store, 200 k values in
  10 k batches ran at 520–580 k values/s. ``value`` is nullable only because SQLite stores a NaN as NULL
  (read back as NaN): a broken transmitter's NaN must not make a whole batch unwritable.
- **Durability.** WAL with ``synchronous=FULL``: a write is on disk when ``write`` returns. The ingest
  advances its committed mark (DESIGN §2a) after a write returns and never asks for that data again, so a
  commit that a power cut could take back (``NORMAL`` in WAL mode) would be silent loss; ``FULL`` costs
  nothing measurable on this machine (§1.3: 1.6 M rows/s either way).
- **Time-range scans without a time index.** Rollup and retention need "all series between t0 and t1";
  instead of a second index on ``ts`` (which would slow every write) they join ``series`` to ``samples``,
  so SQLite seeks the primary key once per series.
- **Late data.** ``telemetry_meta.minute_mark`` is the end of what ``rollup`` has covered; a write with
  samples older than it records their (series, minute) in ``rollup_dirty`` (inside the same transaction),
  and the next ``rollup`` recomputes exactly those buckets.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import TypeVar

from tapline.store.errors import StoreConfigurationError, StoreError, StoreNotOpen, StoreUnavailable
from tapline.store.telemetry import (
    HOUR_MS,
    MINUTE_MS,
    HistoryPoint,
    Resolution,
    Sample,
    SampleRow,
    SeriesKey,
    StoreLifecycle,
    StoreSettings,
    bucket_start,
    resolution_for_step,
)

__all__ = ["SqliteTelemetryStore"]

SCHEMA_VERSION = 1

_T = TypeVar("_T")


def _float(stored: float | None) -> float:
    """A stored value back as a float: SQLite keeps NaN as NULL."""
    return float("nan") if stored is None else stored


_SCHEMA = """
CREATE TABLE IF NOT EXISTS telemetry_meta (key TEXT PRIMARY KEY, value INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    point TEXT NOT NULL,
    UNIQUE (site, point)
);
CREATE TABLE IF NOT EXISTS samples (
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value REAL,  -- NULL is how SQLite stores a NaN (a broken sensor must not poison a batch)
    quality INTEGER NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_1m (
    series_id INTEGER NOT NULL, bucket INTEGER NOT NULL,
    min REAL, max REAL, sum REAL, count INTEGER NOT NULL, last REAL, quality INTEGER NOT NULL,
    PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_1h (
    series_id INTEGER NOT NULL, bucket INTEGER NOT NULL,
    min REAL, max REAL, sum REAL, count INTEGER NOT NULL, last REAL, quality INTEGER NOT NULL,
    PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_dirty (
    series_id INTEGER NOT NULL, bucket INTEGER NOT NULL, PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;
INSERT OR IGNORE INTO telemetry_meta (key, value) VALUES ('minute_mark', NULL), ('hour_mark', NULL);
"""

# Rollup of raw samples in [?1, ?2) for every series. ``CROSS JOIN`` makes SQLite keep the join order
# (series first), so it seeks each series' primary-key range instead of scanning ``samples``. The inner
# query aggregates; the outer join fetches the value at the bucket's newest timestamp (``last``) by
# primary-key lookup.
_ROLLUP_MINUTES_RANGE = """
INSERT OR REPLACE INTO rollup_1m (series_id, bucket, min, max, sum, count, last, quality)
SELECT g.series_id, g.bucket, g.mn, g.mx, g.sm, g.n, s.value, g.q
FROM (
    SELECT x.series_id, x.ts - x.ts % 60000 AS bucket, min(x.value) AS mn, max(x.value) AS mx,
           sum(x.value) AS sm, count(*) AS n, max(x.ts) AS last_ts, max(x.quality) AS q
    FROM series r CROSS JOIN samples x ON x.series_id = r.id AND x.ts >= ?1 AND x.ts < ?2
    GROUP BY x.series_id, bucket
) g JOIN samples s ON s.series_id = g.series_id AND s.ts = g.last_ts
"""

_ROLLUP_MINUTES_DIRTY = """
INSERT OR REPLACE INTO rollup_1m (series_id, bucket, min, max, sum, count, last, quality)
SELECT g.series_id, g.bucket, g.mn, g.mx, g.sm, g.n, s.value, g.q
FROM (
    SELECT d.series_id, d.bucket, min(x.value) AS mn, max(x.value) AS mx,
           sum(x.value) AS sm, count(*) AS n, max(x.ts) AS last_ts, max(x.quality) AS q
    FROM rollup_dirty d JOIN samples x
      ON x.series_id = d.series_id AND x.ts >= d.bucket AND x.ts < d.bucket + 60000
    GROUP BY d.series_id, d.bucket
) g JOIN samples s ON s.series_id = g.series_id AND s.ts = g.last_ts
"""

_ROLLUP_HOURS_RANGE = """
INSERT OR REPLACE INTO rollup_1h (series_id, bucket, min, max, sum, count, last, quality)
SELECT g.series_id, g.bucket, g.mn, g.mx, g.sm, g.n, m.last, g.q
FROM (
    SELECT x.series_id, x.bucket - x.bucket % 3600000 AS bucket, min(x.min) AS mn, max(x.max) AS mx,
           sum(x.sum) AS sm, sum(x.count) AS n, max(x.bucket) AS last_bucket, max(x.quality) AS q
    FROM series r CROSS JOIN rollup_1m x ON x.series_id = r.id AND x.bucket >= ?1 AND x.bucket < ?2
    GROUP BY x.series_id, 2
) g JOIN rollup_1m m ON m.series_id = g.series_id AND m.bucket = g.last_bucket
"""

# Hours (before the hour mark ?1) that contain a recomputed minute.
_ROLLUP_HOURS_DIRTY = """
INSERT OR REPLACE INTO rollup_1h (series_id, bucket, min, max, sum, count, last, quality)
SELECT g.series_id, g.bucket, g.mn, g.mx, g.sm, g.n, m.last, g.q
FROM (
    SELECT h.series_id, h.hour AS bucket, min(x.min) AS mn, max(x.max) AS mx,
           sum(x.sum) AS sm, sum(x.count) AS n, max(x.bucket) AS last_bucket, max(x.quality) AS q
    FROM (SELECT DISTINCT series_id, bucket - bucket % 3600000 AS hour FROM rollup_dirty
          WHERE bucket < ?1) h
    JOIN rollup_1m x ON x.series_id = h.series_id AND x.bucket >= h.hour AND x.bucket < h.hour + 3600000
    GROUP BY h.series_id, h.hour
) g JOIN rollup_1m m ON m.series_id = g.series_id AND m.bucket = g.last_bucket
"""

_HISTORY_RAW = "SELECT ts, value, quality FROM samples WHERE series_id = ? AND ts >= ? AND ts < ? ORDER BY ts"

_HISTORY_RAW_STEP = """
SELECT g.b, g.mn, g.mx, g.sm / g.n, s.value, g.n, g.q
FROM (
    SELECT ts - ts % ?4 AS b, min(value) AS mn, max(value) AS mx, sum(value) AS sm, count(*) AS n,
           max(ts) AS last_ts, max(quality) AS q
    FROM samples WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3 GROUP BY b
) g JOIN samples s ON s.series_id = ?1 AND s.ts = g.last_ts
ORDER BY g.b
"""

_HISTORY_ROLLUP_STEP = """
SELECT g.b, g.mn, g.mx, g.sm / g.n, r.last, g.n, g.q
FROM (
    SELECT bucket - bucket % ?4 AS b, min(min) AS mn, max(max) AS mx, sum(sum) AS sm, sum(count) AS n,
           max(bucket) AS last_bucket, max(quality) AS q
    FROM {table} WHERE series_id = ?1 AND bucket >= ?2 AND bucket < ?3 GROUP BY b
) g JOIN {table} r ON r.series_id = ?1 AND r.bucket = g.last_bucket
ORDER BY g.b
"""

# Retention. ``series_id IN (SELECT id FROM series)`` makes SQLite seek the primary key once per series
# instead of scanning the whole table.
_DELETE_SAMPLES = "DELETE FROM samples WHERE series_id IN (SELECT id FROM series) AND ts < ?"
_DELETE_DIRTY = "DELETE FROM rollup_dirty WHERE series_id IN (SELECT id FROM series) AND bucket < ?"
_DELETE_ROLLUP_1M = "DELETE FROM rollup_1m WHERE series_id IN (SELECT id FROM series) AND bucket < ?"
_DELETE_ROLLUP_1H = "DELETE FROM rollup_1h WHERE series_id IN (SELECT id FROM series) AND bucket < ?"

# SQLite result codes (primary code = extended code & 0xFF) that mean "try again later".
_TRANSIENT_CODES = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_NOMEM,
    sqlite3.SQLITE_PROTOCOL,
}


def _translate(exc: sqlite3.Error, action: str) -> StoreError:
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", type(exc).__name__)
    message = f"SQLite {action} failed: {exc} ({name})"
    if code is not None and code & 0xFF in _TRANSIENT_CODES:
        return StoreUnavailable(message)
    return StoreError(message)


_ROWS_PER_INSERT = 8000
_SERIES_IDS = (
    "SELECT json_group_array(json_array(s.id, s.site, s.point)) FROM json_each(?) AS k"
    " JOIN series AS s ON s.site = json_extract(k.value, '$[0]') AND s.point = json_extract(k.value, '$[1]')"
)
"""Rows per ``INSERT`` statement (32,000 parameters; SQLite allows 32,766)."""


@lru_cache(maxsize=16)  # the full-size statement and the last few batch tails
def _insert_rows(count: int) -> str:
    """``INSERT OR IGNORE … VALUES (?, ?, ?, ?), …`` for ``count`` rows.

    Why not ``executemany`` with one row a step: ``sqlite3`` releases the GIL around every
    ``sqlite3_step`` and must take it back after each row. While the event loop thread runs Python
    (the ingest decoding messages), each take-back waits for a GIL switch, and a 20,000-row batch
    was measured at 3 s instead of 45 ms on the benchmark box (docs/benchmarks.md). One step per
    8,000 rows makes that three handoffs per 20,000-row batch; the doubles are bound as they are.
    """
    values = ", ".join(["(?, ?, ?, ?)"] * count)
    return f"INSERT OR IGNORE INTO samples (series_id, ts, value, quality) VALUES {values}"  # noqa: S608 - placeholders only


class SqliteTelemetryStore(StoreLifecycle):
    """``TelemetryStore`` on one SQLite file (``:memory:`` for a throwaway database)."""

    single_writer = True

    def __init__(self, path: str, settings: StoreSettings | None = None) -> None:
        self._path = path
        self._settings = settings or StoreSettings()
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._db is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tapline-sqlite")
        loop = asyncio.get_running_loop()
        try:
            self._db = await loop.run_in_executor(executor, self._connect)
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            raise _translate(exc, f"open of {self._path!r}") from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor = executor

    def _connect(self) -> sqlite3.Connection:
        if self._path != ":memory:":
            directory = os.path.dirname(os.path.abspath(self._path))
            if not os.path.isdir(directory):
                raise StoreConfigurationError(
                    f"SQLite database {self._path!r}: directory {directory!r} does not exist"
                )
        db = sqlite3.connect(self._path, isolation_level=None)  # explicit BEGIN/COMMIT below
        try:
            db.execute(f"PRAGMA busy_timeout = {int(self._settings.lock_timeout_ms)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")  # see the module docstring: durable on return
            db.execute("PRAGMA cache_size = -65536")  # 64 MiB of page cache
            db.execute("PRAGMA temp_store = MEMORY")
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            version = db.execute("SELECT value FROM telemetry_meta WHERE key = 'schema_version'").fetchone()
            if version is None:
                db.execute("INSERT INTO telemetry_meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            elif version[0] > SCHEMA_VERSION:
                raise StoreConfigurationError(
                    f"SQLite database {self._path!r} has telemetry schema {version[0]}, "
                    f"newer than this tapline ({SCHEMA_VERSION})"
                )
            db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        return db

    async def close(self) -> None:
        db, executor = self._db, self._executor
        self._db = self._executor = None
        if db is None or executor is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, db.close)
        finally:
            executor.shutdown(wait=True)

    async def _run(self, action: str, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` on the connection's thread; translate driver errors at this one place."""
        db, executor = self._db, self._executor
        if db is None or executor is None:
            raise StoreNotOpen(f"telemetry store {self._path!r} is not open")

        def guarded() -> _T:
            try:
                return work(db)
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

        try:
            return await asyncio.get_running_loop().run_in_executor(executor, guarded)
        except sqlite3.Error as exc:
            raise _translate(exc, action) from exc

    # -- series ----------------------------------------------------------------------------------------

    async def ensure_series(self, keys: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
        unique = list(dict.fromkeys(keys))

        def work(db: sqlite3.Connection) -> dict[SeriesKey, int]:
            # Few statements, one row out: see ``_insert_rows`` for why per-row steps are avoided.
            db.execute("BEGIN IMMEDIATE")
            for start in range(0, len(unique), _ROWS_PER_INSERT * 2):  # two parameters a row
                part = unique[start : start + _ROWS_PER_INSERT * 2]
                values = ", ".join(["(?, ?)"] * len(part))
                db.execute(
                    f"INSERT OR IGNORE INTO series (site, point) VALUES {values}",  # noqa: S608 - placeholders only
                    [text for key in part for text in (key.site, key.point)],
                )
            pairs = json.dumps([(key.site, key.point) for key in unique])
            (found,) = db.execute(_SERIES_IDS, (pairs,)).fetchone()
            db.execute("COMMIT")
            return {SeriesKey(site, point): int(series) for series, site, point in json.loads(found or "[]")}

        return await self._run("ensure_series", work)

    # -- write -----------------------------------------------------------------------------------------

    async def write(self, samples: Sequence[SampleRow]) -> int:
        if not samples:
            return 0
        oldest = min(map(itemgetter(1), samples))

        def work(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            mark = db.execute("SELECT value FROM telemetry_meta WHERE key = 'minute_mark'").fetchone()[0]
            inserted = 0
            for start in range(0, len(samples), _ROWS_PER_INSERT):
                rows = samples[start : start + _ROWS_PER_INSERT]
                flat = list(chain.from_iterable(rows))
                inserted += db.execute(_insert_rows(len(rows)), flat).rowcount
            if mark is not None and oldest < mark:
                late = {(s[0], s[1] - s[1] % MINUTE_MS) for s in samples if s[1] < mark}
                db.executemany("INSERT OR IGNORE INTO rollup_dirty (series_id, bucket) VALUES (?, ?)", late)
            db.execute("COMMIT")
            return inserted

        return await self._run("write", work)

    # -- reads -----------------------------------------------------------------------------------------

    async def latest(self, series_ids: Sequence[int] | None = None) -> dict[int, Sample]:
        sql = (
            "SELECT x.series_id, x.ts, x.value, x.quality FROM series r CROSS JOIN samples x"
            " ON x.series_id = r.id AND x.ts = (SELECT max(ts) FROM samples WHERE series_id = r.id)"
        )
        params: tuple[str, ...] = ()
        if series_ids is not None:
            sql += " WHERE r.id IN (SELECT value FROM json_each(?))"
            params = (json.dumps([int(i) for i in series_ids]),)

        def work(db: sqlite3.Connection) -> dict[int, Sample]:
            return {
                series: Sample(series, ts, _float(value), quality)
                for series, ts, value, quality in db.execute(sql, params)
            }

        return await self._run("latest", work)

    async def history(
        self, series_id: int, start: int, end: int, step_ms: int | None = None
    ) -> list[HistoryPoint]:
        resolution = resolution_for_step(step_ms)

        def work(db: sqlite3.Connection) -> list[HistoryPoint]:
            if step_ms is None:
                rows = db.execute(_HISTORY_RAW, (series_id, start, end))
                points = []
                for ts, stored, quality in rows:
                    value = _float(stored)
                    points.append(HistoryPoint(ts, value, value, value, value, 1, quality))
                return points
            if resolution is Resolution.RAW:
                sql = _HISTORY_RAW_STEP
            else:
                table = "rollup_1m" if resolution is Resolution.MINUTE else "rollup_1h"
                sql = _HISTORY_ROLLUP_STEP.format(table=table)
            return [
                HistoryPoint(b, _float(low), _float(high), _float(avg), _float(last), n, quality)
                for b, low, high, avg, last, n, quality in db.execute(sql, (series_id, start, end, step_ms))
            ]

        return await self._run("history", work)

    async def count(self) -> int:
        def work(db: sqlite3.Connection) -> int:
            return int(db.execute("SELECT count(*) FROM samples").fetchone()[0])

        return await self._run("count", work)

    # -- maintenance -----------------------------------------------------------------------------------

    async def rollup(self, now_ms: int) -> int:
        def work(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            marks = dict(
                db.execute("SELECT key, value FROM telemetry_meta WHERE key IN ('minute_mark', 'hour_mark')")
            )
            minute_mark, hour_mark = marks["minute_mark"], marks["hour_mark"]
            if minute_mark is None:  # first rollup ever: start at the oldest sample
                oldest = db.execute(
                    "SELECT min((SELECT min(ts) FROM samples WHERE series_id = r.id)) FROM series r"
                ).fetchone()[0]
                if oldest is None:
                    db.execute("COMMIT")
                    return 0
                # Never start past the caller's clock, even if a sample is from the future.
                minute_mark = bucket_start(min(oldest, now_ms), MINUTE_MS)
                hour_mark = bucket_start(min(oldest, now_ms), HOUR_MS)
            new_minute_mark = max(minute_mark, bucket_start(now_ms, MINUTE_MS))
            new_hour_mark = max(hour_mark, bucket_start(now_ms, HOUR_MS))
            written = 0
            if new_minute_mark > minute_mark:
                written += db.execute(_ROLLUP_MINUTES_RANGE, (minute_mark, new_minute_mark)).rowcount
            written += db.execute(_ROLLUP_MINUTES_DIRTY).rowcount
            if new_hour_mark > hour_mark:
                written += db.execute(_ROLLUP_HOURS_RANGE, (hour_mark, new_hour_mark)).rowcount
            written += db.execute(_ROLLUP_HOURS_DIRTY, (hour_mark,)).rowcount
            db.execute("DELETE FROM rollup_dirty")
            db.executemany(
                "UPDATE telemetry_meta SET value = ? WHERE key = ?",
                [(new_minute_mark, "minute_mark"), (new_hour_mark, "hour_mark")],
            )
            db.execute("COMMIT")
            return written

        return await self._run("rollup", work)

    async def apply_retention(self, now_ms: int) -> int:
        settings = self._settings
        cutoffs = (
            (_DELETE_SAMPLES, now_ms - settings.raw_retention_ms),
            (_DELETE_DIRTY, now_ms - settings.raw_retention_ms),
            (_DELETE_ROLLUP_1M, now_ms - settings.rollup_1m_retention_ms),
            (_DELETE_ROLLUP_1H, now_ms - settings.rollup_1h_retention_ms),
        )

        def work(db: sqlite3.Connection) -> int:
            removed = 0
            db.execute("BEGIN IMMEDIATE")
            for sql, cutoff in cutoffs:
                removed += db.execute(sql, (cutoff,)).rowcount
            db.execute("COMMIT")
            return removed

        return await self._run("apply_retention", work)
