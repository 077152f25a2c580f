"""Telemetry store on PostgreSQL (psycopg 3, async): partitioned narrow table, COPY-based idempotent writes.

Why it looks like this:
- **Layout.** ``samples(series_id, ts, value, quality)`` with ``PRIMARY KEY(series_id, ts)``, partitioned by
  range on ``ts`` into one partition per UTC day. The primary key is the idempotency key and serves
  history reads of one series; a BRIN index on ``ts`` (a few pages per partition, nearly free to maintain
  for data that arrives in time order, summarised by autovacuum as ranges fill) serves the rollup's
  "everything between t0 and t1" scans. Daily partitions make retention a ``DROP TABLE`` instead of a
  vacuum-heavy ``DELETE``. ``rollup_1m`` and ``rollup_1h`` are partitioned the same way with 7- and 28-day
  partitions (they are 60× and 3,600× smaller). There is no DEFAULT partition: a row in it would make
  every later partition creation scan it; instead partitions are created ahead for the next days and on
  demand for a batch that falls outside (a backfill from days ago), before the write transaction.
- **Compaction: one row per series and hour once the hour is old.** A row per value costs ≈ 100 B with
  its key; ``compact`` packs every closed, rolled-up hour older than ``compact_after_ms`` into
  ``sample_blocks`` — the float64 values as an array, timestamps as ``t0 + i * step`` when regular (else
  int4 offsets from the hour), qualities only when one is not good: ≈ 8.5 B a value. The packing is one
  statement per hour and 500 series inside PostgreSQL (``DELETE … RETURNING`` into ``array_agg``). For
  any (series, hour) the values are in the rows or in a block, never both: reads union the two; a write
  that reaches a packed hour first unpacks the blocks it touches (in its own transaction, after taking
  the hour's advisory lock, so it waits for a compaction of that hour) and queues the hour in
  ``compact_dirty`` to be packed again. ``compact_mark`` (``FOR UPDATE`` by compaction, ``FOR SHARE`` by
  writes) tells a write whether it reaches a packed hour.
- **Idempotent COPY, fast in the common case.** COPY cannot skip duplicates, and ``INSERT … ON CONFLICT``
  is slow. A batch is therefore first COPYed (binary) straight into ``samples`` inside a savepoint — live
  data almost never repeats, and this path ran at 490–600 k rows/s here. If the key is already there (a
  replay, a retry after an unknown outcome) the savepoint is rolled back and the batch goes the safe way:
  binary COPY into a session-temporary staging table (not WAL-logged, emptied at commit), then
  ``INSERT INTO samples SELECT … ON CONFLICT DO NOTHING`` (~230 k new rows/s, ~400 k/s when all are
  duplicates). Either way one transaction, and ``write`` returns the rows that were new.
- **Durability.** The server's ``synchronous_commit`` decides (on by default): a write is durable when
  ``write`` returns. Nothing is acknowledged before COMMIT.
- **Late data and rollups across processes.** ``telemetry_meta.minute_mark`` is the end of what rollup has
  covered. A write locks that row ``FOR SHARE`` and marks (series, minute) of samples older than it in
  ``rollup_dirty``; ``rollup`` locks it ``FOR UPDATE``. So a rollup never advances the mark past a write
  that is still in flight, even with several ingest workers on one database (DESIGN §8).
- **One connection, serialised by a lock**, in autocommit mode with explicit transactions (so partition
  DDL commits on its own, before the write that needs it). A broken
  connection surfaces as ``StoreUnavailable`` and is replaced on the next call, so the caller's retry
  after the database comes back just works.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql

from tapline.logs import get_logger
from tapline.store.errors import StoreConfigurationError, StoreError, StoreNotOpen, StoreUnavailable
from tapline.store.telemetry import (
    DAY_MS,
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

log = get_logger(__name__)

__all__ = ["PARTITION_WIDTHS", "PostgresTelemetryStore", "days_touched", "partition_name"]

SCHEMA_VERSION = 3  # 2: sample_blocks, compact_dirty, compact_mark; 3: rollup_1m_blocks (compaction)

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

# Partition width of each partitioned table, in ms (epoch-aligned).
PARTITION_WIDTHS = {
    "samples": DAY_MS,
    "sample_blocks": DAY_MS,
    "rollup_1m": 7 * DAY_MS,
    "rollup_1m_blocks": 7 * DAY_MS,
    "rollup_1h": 28 * DAY_MS,
}

_ROLLUP_COLUMNS = (
    "series_id bigint NOT NULL, bucket bigint NOT NULL, min float8 NOT NULL, max float8 NOT NULL,"
    " sum float8 NOT NULL, count bigint NOT NULL, last float8 NOT NULL,"
)
# Autosummarize has autovacuum index each block range soon after it fills; an unsummarised range always
# matches, so without it a fresh partition would be read whole. The default 128-page range (~18 k rows)
# is under 0.1 s of data at the target rate; 32-page ranges measured ~10 % slower writes here.
_BRIN = " WITH (autosummarize = on)"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS telemetry_meta (key text PRIMARY KEY, value bigint)",
    "INSERT INTO telemetry_meta (key, value) VALUES ('minute_mark', NULL), ('hour_mark', NULL)"
    " ON CONFLICT DO NOTHING",
    "CREATE TABLE IF NOT EXISTS series (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    " site text NOT NULL, point text NOT NULL, UNIQUE (site, point))",
    "CREATE TABLE IF NOT EXISTS samples (series_id bigint NOT NULL, ts bigint NOT NULL,"
    " value float8 NOT NULL, quality smallint NOT NULL, PRIMARY KEY (series_id, ts)) PARTITION BY RANGE (ts)",
    "CREATE INDEX IF NOT EXISTS samples_ts_brin ON samples USING brin (ts)" + _BRIN,
    f"CREATE TABLE IF NOT EXISTS rollup_1m ({_ROLLUP_COLUMNS} quality smallint NOT NULL,"
    " PRIMARY KEY (series_id, bucket)) PARTITION BY RANGE (bucket)",
    "CREATE INDEX IF NOT EXISTS rollup_1m_bucket_brin ON rollup_1m USING brin (bucket)" + _BRIN,
    f"CREATE TABLE IF NOT EXISTS rollup_1h ({_ROLLUP_COLUMNS} quality smallint NOT NULL,"
    " PRIMARY KEY (series_id, bucket)) PARTITION BY RANGE (bucket)",
    "CREATE INDEX IF NOT EXISTS rollup_1h_bucket_brin ON rollup_1h USING brin (bucket)" + _BRIN,
    "CREATE TABLE IF NOT EXISTS rollup_dirty (series_id bigint NOT NULL, bucket bigint NOT NULL,"
    " PRIMARY KEY (series_id, bucket))",
    # Compaction (see the module docstring): one row per (series, hour) once the hour is packed.
    "CREATE TABLE IF NOT EXISTS sample_blocks (series_id bigint NOT NULL, hour bigint NOT NULL,"
    " n integer NOT NULL, t0 bigint NOT NULL, step integer, offsets integer[], vals float8[] NOT NULL,"
    " quals smallint[], PRIMARY KEY (series_id, hour)) PARTITION BY RANGE (hour)",
    "CREATE TABLE IF NOT EXISTS compact_dirty (hour bigint PRIMARY KEY)",
    "INSERT INTO telemetry_meta (key, value) VALUES ('compact_mark', NULL) ON CONFLICT DO NOTHING",
    # The 1-minute rollups of a day long closed: one row per (series, day); ``offsets`` (minute of the
    # day) only when some minute is missing.
    "CREATE TABLE IF NOT EXISTS rollup_1m_blocks (series_id bigint NOT NULL, day bigint NOT NULL,"
    " offsets smallint[], mins float8[] NOT NULL, maxs float8[] NOT NULL, sums float8[] NOT NULL,"
    " counts integer[] NOT NULL, lasts float8[] NOT NULL, quals smallint[],"
    " PRIMARY KEY (series_id, day)) PARTITION BY RANGE (day)",
    "CREATE TABLE IF NOT EXISTS rollup_pack_dirty (day bigint PRIMARY KEY)",
    "INSERT INTO telemetry_meta (key, value) VALUES ('rollup_pack_mark', NULL) ON CONFLICT DO NOTHING",
)
_SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('tapline.store.telemetry.schema'))"
_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS samples_staging (series_id bigint, ts bigint, value float8,"
    " quality smallint) ON COMMIT DELETE ROWS"
)
_PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
_PGCOPY_TRAILER = b"\xff\xff"
_pack_row = struct.Struct("!hiqiqidih").pack
"""One row of binary COPY: 4 fields, each a length and its value (int8, int8, float8, int2)."""
_COPY_BLOCK_ROWS = 10_000
_COPY_SAMPLES = "COPY samples (series_id, ts, value, quality) FROM STDIN (FORMAT BINARY)"
_COPY_STAGING = "COPY samples_staging (series_id, ts, value, quality) FROM STDIN (FORMAT BINARY)"
_INSERT_FROM_STAGING = (
    "INSERT INTO samples (series_id, ts, value, quality)"
    " SELECT series_id, ts, value, quality FROM samples_staging ON CONFLICT DO NOTHING"
)
_MARK_DIRTY = (
    "INSERT INTO rollup_dirty (series_id, bucket)"
    " SELECT DISTINCT series_id, ts - ts %% 60000 FROM samples_staging WHERE ts < %s ON CONFLICT DO NOTHING"
)
_LOCK_MARKS = "SELECT key, value FROM telemetry_meta WHERE key IN ('minute_mark', 'hour_mark') FOR UPDATE"
_PARTITIONS = """
SELECT p.relname, c.relname, pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
WHERE i.inhparent IN ('samples'::regclass, 'sample_blocks'::regclass, 'rollup_1m'::regclass,
                      'rollup_1m_blocks'::regclass, 'rollup_1h'::regclass)
"""
_BOUND = re.compile(r"FROM \('?(-?\d+)'?\)")

_ROLLUP_MINUTES_RANGE = """
INSERT INTO rollup_1m (series_id, bucket, min, max, sum, count, last, quality)
SELECT g.series_id, g.bucket, g.mn, g.mx, g.sm, g.n, s.value, g.q
FROM (
    SELECT series_id, ts - ts %% 60000 AS bucket, min(value) AS mn, max(value) AS mx, sum(value) AS sm,
           count(*) AS n, max(ts) AS last_ts, max(quality) AS q
    FROM samples WHERE ts >= %(lo)s AND ts < %(hi)s GROUP BY 1, 2
) g JOIN samples s ON s.series_id = g.series_id AND s.ts = g.last_ts AND s.ts >= %(lo)s AND s.ts < %(hi)s
ON CONFLICT (series_id, bucket) DO UPDATE SET min = EXCLUDED.min, max = EXCLUDED.max, sum = EXCLUDED.sum,
    count = EXCLUDED.count, last = EXCLUDED.last, quality = EXCLUDED.quality
"""
_ROLLUP_MINUTES_DIRTY = """
INSERT INTO rollup_1m (series_id, bucket, min, max, sum, count, last, quality)
SELECT g.series_id, g.bucket, g.mn, g.mx, g.sm, g.n, s.value, g.q
FROM (
    SELECT d.series_id, d.bucket, min(x.value) AS mn, max(x.value) AS mx, sum(x.value) AS sm,
           count(*) AS n, max(x.ts) AS last_ts, max(x.quality) AS q
    FROM rollup_dirty d JOIN samples x
      ON x.series_id = d.series_id AND x.ts >= d.bucket AND x.ts < d.bucket + 60000
    GROUP BY d.series_id, d.bucket
) g JOIN samples s ON s.series_id = g.series_id AND s.ts = g.last_ts
ON CONFLICT (series_id, bucket) DO UPDATE SET min = EXCLUDED.min, max = EXCLUDED.max, sum = EXCLUDED.sum,
    count = EXCLUDED.count, last = EXCLUDED.last, quality = EXCLUDED.quality
"""
_ROLLUP_HOURS_RANGE = """
INSERT INTO rollup_1h (series_id, bucket, min, max, sum, count, last, quality)
SELECT g.series_id, g.bucket, g.mn, g.mx, g.sm, g.n, m.last, g.q
FROM (
    SELECT series_id, bucket - bucket %% 3600000 AS bucket, min(min) AS mn, max(max) AS mx, sum(sum) AS sm,
           sum(count) AS n, max(bucket) AS last_bucket, max(quality) AS q
    FROM rollup_1m WHERE bucket >= %(lo)s AND bucket < %(hi)s GROUP BY 1, 2
) g JOIN rollup_1m m ON m.series_id = g.series_id AND m.bucket = g.last_bucket
  AND m.bucket >= %(lo)s AND m.bucket < %(hi)s
ON CONFLICT (series_id, bucket) DO UPDATE SET min = EXCLUDED.min, max = EXCLUDED.max, sum = EXCLUDED.sum,
    count = EXCLUDED.count, last = EXCLUDED.last, quality = EXCLUDED.quality
"""
_ROLLUP_HOURS_DIRTY = """
INSERT INTO rollup_1h (series_id, bucket, min, max, sum, count, last, quality)
SELECT g.series_id, g.bucket, g.mn, g.mx, g.sm, g.n, m.last, g.q
FROM (
    SELECT h.series_id, h.hour AS bucket, min(x.min) AS mn, max(x.max) AS mx, sum(x.sum) AS sm,
           sum(x.count) AS n, max(x.bucket) AS last_bucket, max(x.quality) AS q
    FROM (SELECT DISTINCT series_id, bucket - bucket %% 3600000 AS hour FROM rollup_dirty
          WHERE bucket < %(before)s) h
    JOIN rollup_1m x ON x.series_id = h.series_id AND x.bucket >= h.hour AND x.bucket < h.hour + 3600000
    GROUP BY h.series_id, h.hour
) g JOIN rollup_1m m ON m.series_id = g.series_id AND m.bucket = g.last_bucket
ON CONFLICT (series_id, bucket) DO UPDATE SET min = EXCLUDED.min, max = EXCLUDED.max, sum = EXCLUDED.sum,
    count = EXCLUDED.count, last = EXCLUDED.last, quality = EXCLUDED.quality
"""

# Every raw value of one series in [start, end): the rows not packed yet plus the values of the packed
# blocks that overlap the window (a block holds one hour; for any (series, hour) the values are in exactly
# one of the two, see ``compact``). ``unnest`` of the three arrays zips them, padding a missing
# ``offsets`` (regular timestamps: t0 + i * step) or ``quals`` (all good) with NULLs.
_POINTS = """
SELECT ts, value, quality FROM samples WHERE series_id = %(id)s AND ts >= %(start)s AND ts < %(end)s
UNION ALL
SELECT x.ts, x.v, x.q FROM sample_blocks b CROSS JOIN LATERAL (
    SELECT CASE WHEN b.step IS NULL THEN b.hour + u.o ELSE b.t0 + (u.i - 1) * b.step END AS ts,
           u.v, coalesce(u.q, 0::smallint) AS q
    FROM unnest(b.offsets, b.vals, b.quals) WITH ORDINALITY AS u(o, v, q, i)
) x
WHERE b.series_id = %(id)s AND b.hour > %(start)s - 3600000 AND b.hour < %(end)s
  AND x.ts >= %(start)s AND x.ts < %(end)s
"""
_HISTORY_RAW = "SELECT ts, value, quality FROM (" + _POINTS + ") p ORDER BY ts"  # noqa: S608 (constants)
# One pass over the series' values, no self-join: "last" is the newest value of each bucket, taken by an
# ordered aggregate (the join to fetch it read every page a second time; docs/benchmarks.md, query).
_HISTORY_RAW_STEP = (
    """
SELECT ts - ts %% %(step)s::bigint AS b, min(value), max(value), avg(value),
       (array_agg(value ORDER BY ts DESC))[1], count(*), max(quality)
FROM ("""
    + _POINTS
    + """) p
GROUP BY 1 ORDER BY 1
"""
)
_HISTORY_ROLLUP_STEP = """
SELECT bucket - bucket %% %(step)s::bigint AS b, min(min), max(max), sum(sum) / sum(count),
       (array_agg(last ORDER BY bucket DESC))[1], sum(count), max(quality)
FROM {source} WHERE series_id = %(id)s AND bucket >= %(start)s AND bucket < %(end)s
GROUP BY 1 ORDER BY 1
"""
# The 1-minute rollups of one series: rows, and the minutes of the packed days (as ``_POINTS`` does for
# raw values). Also what a rollup of hours reads back when it recomputes a packed day's hour.
_MINUTES = """
(SELECT series_id, bucket, min, max, sum, count, last, quality FROM rollup_1m
 UNION ALL
 SELECT b.series_id, b.day + (coalesce(u.o::integer, u.i::integer - 1)) * 60000::bigint, u.mn, u.mx, u.sm,
        u.c, u.l, coalesce(u.q, 0::smallint)
 FROM rollup_1m_blocks b CROSS JOIN LATERAL
      unnest(b.offsets, b.mins, b.maxs, b.sums, b.counts, b.lasts, b.quals) WITH ORDINALITY
      AS u(o, mn, mx, sm, c, l, q, i)
 WHERE b.series_id = %(id)s AND b.day > %(start)s - 86400000 AND b.day < %(end)s
) m
"""
_LATEST = """
SELECT r.id, x.ts, x.value, x.quality FROM series r
CROSS JOIN LATERAL (
    (SELECT ts, value, quality FROM samples WHERE series_id = r.id ORDER BY ts DESC LIMIT 1)
    UNION ALL
    (SELECT CASE WHEN b.step IS NULL THEN b.hour + b.offsets[b.n] ELSE b.t0 + (b.n - 1)::bigint * b.step END,
            b.vals[b.n], coalesce(b.quals[b.n], 0::smallint)
     FROM sample_blocks b WHERE b.series_id = r.id ORDER BY b.hour DESC LIMIT 1)
    ORDER BY 1 DESC LIMIT 1
) x
"""
_COUNT = "SELECT (SELECT count(*) FROM samples) + (SELECT coalesce(sum(n), 0) FROM sample_blocks)"

# -- compaction (see ``compact``) ------------------------------------------------------------------------
_COMPACT_LOCK_CLASS = 0x7A11  # pg_advisory_xact_lock(class, hour number): one lock per hour being packed
_LOCK_COMPACT_MARK = (
    "SELECT (SELECT value FROM telemetry_meta WHERE key = 'compact_mark' FOR UPDATE),"
    " (SELECT value FROM telemetry_meta WHERE key = 'minute_mark')"
)
# The rows of (series range, hour) leave ``samples`` and become one block per series, in one statement:
# timestamps are checked for a regular step (then only t0 and step are kept), qualities are dropped
# when all are good (0).
_COMPACT_SLICE = """
WITH moved AS (
    DELETE FROM samples WHERE series_id >= %(a)s AND series_id < %(b)s AND ts >= %(lo)s AND ts < %(hi)s
    RETURNING series_id, ts, value, quality
), g AS (
    SELECT series_id, count(*)::integer AS n, min(ts) AS t0, max(ts) AS t1,
           array_agg((ts - %(lo)s)::integer ORDER BY ts) AS offs,
           array_agg(value ORDER BY ts) AS vals, array_agg(quality ORDER BY ts) AS quals,
           max(quality) AS worst
    FROM moved GROUP BY series_id
), s AS (
    SELECT g.*, CASE
        WHEN n = 1 THEN 0
        WHEN (t1 - t0) %% (n - 1) = 0 AND (t1 - t0) / (n - 1) <= 2147483647
             AND offs = ARRAY(SELECT generate_series((t0 - %(lo)s)::integer, (t1 - %(lo)s)::integer,
                                                     ((t1 - t0) / (n - 1))::integer))
        THEN ((t1 - t0) / (n - 1))::integer
    END AS step
    FROM g
)
INSERT INTO sample_blocks (series_id, hour, n, t0, step, offsets, vals, quals)
SELECT series_id, %(lo)s, n, t0, step, CASE WHEN step IS NULL THEN offs END, vals,
       CASE WHEN worst <> 0 THEN quals END
FROM s
"""
# Unpacks the blocks of ``(series_id, hour)`` pairs given by ``{pairs}`` back into rows.
_UNPACK = """
WITH gone AS (
    DELETE FROM sample_blocks b USING ({pairs}) k
    WHERE b.series_id = k.series_id AND b.hour = k.hour
    RETURNING b.*
)
INSERT INTO samples (series_id, ts, value, quality)
SELECT g.series_id, CASE WHEN g.step IS NULL THEN g.hour + u.o ELSE g.t0 + (u.i - 1) * g.step END, u.v,
       coalesce(u.q, 0::smallint)
FROM gone g CROSS JOIN LATERAL unnest(g.offsets, g.vals, g.quals) WITH ORDINALITY AS u(o, v, q, i)
ON CONFLICT DO NOTHING
"""
_STAGED_PACKED_PAIRS = (
    "SELECT DISTINCT series_id, ts - ts %% 3600000 AS hour FROM samples_staging WHERE ts < %(mark)s"
)
_SLICE_PAIRS = (
    "SELECT series_id, hour FROM sample_blocks"
    " WHERE hour = %(lo)s AND series_id >= %(a)s AND series_id < %(b)s"
)
_PACK_MINUTES_SLICE = """
WITH moved AS (
    DELETE FROM rollup_1m WHERE series_id >= %(a)s AND series_id < %(b)s AND bucket >= %(lo)s
      AND bucket < %(hi)s
    RETURNING series_id, bucket, min, max, sum, count, last, quality
), g AS (
    SELECT series_id, count(*) AS n, array_agg(((bucket - %(lo)s) / 60000)::smallint ORDER BY bucket) AS offs,
           array_agg(min ORDER BY bucket) AS mins, array_agg(max ORDER BY bucket) AS maxs,
           array_agg(sum ORDER BY bucket) AS sums, array_agg(count::integer ORDER BY bucket) AS counts,
           array_agg(last ORDER BY bucket) AS lasts, array_agg(quality ORDER BY bucket) AS quals,
           max(quality) AS worst
    FROM moved GROUP BY series_id
)
INSERT INTO rollup_1m_blocks (series_id, day, offsets, mins, maxs, sums, counts, lasts, quals)
SELECT series_id, %(lo)s, CASE WHEN n < 1440 THEN offs END, mins, maxs, sums, counts, lasts,
       CASE WHEN worst <> 0 THEN quals END
FROM g
"""
_UNPACK_MINUTES = """
WITH gone AS (
    DELETE FROM rollup_1m_blocks b USING ({pairs}) k
    WHERE b.series_id = k.series_id AND b.day = k.day
    RETURNING b.*
)
INSERT INTO rollup_1m (series_id, bucket, min, max, sum, count, last, quality)
SELECT g.series_id, g.day + (coalesce(u.o::integer, u.i::integer - 1)) * 60000::bigint, u.mn, u.mx, u.sm,
       u.c, u.l, coalesce(u.q, 0::smallint)
FROM gone g CROSS JOIN LATERAL
     unnest(g.offsets, g.mins, g.maxs, g.sums, g.counts, g.lasts, g.quals) WITH ORDINALITY
     AS u(o, mn, mx, sm, c, l, q, i)
ON CONFLICT DO NOTHING
"""
_DIRTY_PACKED_DAYS = (
    "SELECT DISTINCT series_id, bucket - bucket %% 86400000 AS day FROM rollup_dirty WHERE bucket < %(mark)s"
)
_SLICE_DAYS = (
    "SELECT series_id, day FROM rollup_1m_blocks"
    " WHERE day = %(lo)s AND series_id >= %(a)s AND series_id < %(b)s"
)
_ROLLUP_LOCK = f"SELECT pg_advisory_xact_lock({0x7A12})"
"""Held by ``rollup`` and by each slice packing 1-minute rollups: the two never touch rollup_1m at once."""
_COMPACT_SLICE_SERIES = 500
"""Series per compaction statement: bounds its memory (500 × 3,600 one-second values ≈ 40 MB of arrays)."""

_SERIES_LOOKUP = (
    "SELECT s.id, s.site, s.point FROM series s"
    " JOIN unnest(%s::text[], %s::text[]) AS k(site, point) ON s.site = k.site AND s.point = k.point"
)


def partition_name(table: str, start: int) -> str:
    """``samples_20250301``: the table and the UTC date its partition starts on."""
    return f"{table}_{datetime.fromtimestamp(start / 1000, UTC):%Y%m%d}"


def days_touched(samples: Sequence[SampleRow], oldest: int, newest: int) -> list[int]:
    """Start (ms) of every UTC day that holds a sample; ``oldest``/``newest`` bound the batch's ``ts``."""
    first, last = bucket_start(oldest, DAY_MS), bucket_start(newest, DAY_MS)
    if last - first <= 2 * DAY_MS:  # the usual batch: one day, or a backfill crossing a midnight
        return list(range(first, last + DAY_MS, DAY_MS))
    return sorted({s[1] - s[1] % DAY_MS for s in samples})


class PostgresTelemetryStore(StoreLifecycle):
    """``TelemetryStore`` on PostgreSQL 15+ (the tables live in the connection's ``search_path``)."""

    def __init__(self, dsn: str, settings: StoreSettings | None = None) -> None:
        self._dsn = dsn
        self._settings = settings or StoreSettings()
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()
        self._is_open = False
        # table -> {partition start: partition name}; None means "read it from the catalog again".
        self._partitions: dict[str, dict[int, str]] | None = None

    # -- connection and error boundary -----------------------------------------------------------------

    async def _connection(self) -> Connection:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        await self._discard()
        self._conn = conn = await self._connect()
        return conn

    async def _connect(self) -> Connection:
        conn = await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, connect_timeout=max(1, round(self._settings.connect_timeout_s))
        )
        try:
            await conn.execute(
                "SELECT set_config('lock_timeout', %s, false)", (f"{self._settings.lock_timeout_ms}ms",)
            )
            await conn.execute(_STAGING)
        except BaseException:
            await conn.close()
            raise
        return conn

    @asynccontextmanager
    async def _private_session(self, action: str) -> AsyncIterator[Connection]:
        """A connection of its own for a long job (compaction), so the store's shared connection — the
        ingest writer's — is never held for it: packing an hour of a city takes minutes, and writes
        must go on meanwhile. Errors are translated as in ``_session``."""
        if not self._is_open:
            raise StoreNotOpen("PostgreSQL telemetry store is not open")
        conn: Connection | None = None
        try:
            conn = await self._connect()
            yield conn
        except psycopg.Error as exc:
            if conn is None or conn.closed or conn.broken:
                raise StoreUnavailable(f"PostgreSQL {action} failed: {exc}") from exc
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                raise StoreUnavailable(f"PostgreSQL {action} failed: {exc}") from exc
            raise StoreError(f"PostgreSQL {action} failed: {exc} (SQLSTATE {exc.sqlstate})") from exc
        finally:
            if conn is not None and not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        self._partitions = None
        if conn is not None and not conn.closed:
            # It is being thrown away because it failed; a failure to close it tells nothing more.
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    @asynccontextmanager
    async def _session(self, action: str, *, opening: bool = False) -> AsyncIterator[Connection]:
        """The connection, exclusively, with driver errors translated (the module's one boundary)."""
        if not self._is_open and not opening:
            raise StoreNotOpen("PostgreSQL telemetry store is not open")
        async with self._lock:
            try:
                yield await self._connection()
            except psycopg.Error as exc:
                conn = self._conn
                lost = conn is None or conn.closed or conn.broken
                if lost or isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                    await self._discard()
                    raise StoreUnavailable(f"PostgreSQL {action} failed: {exc}") from exc
                raise StoreError(f"PostgreSQL {action} failed: {exc} (SQLSTATE {exc.sqlstate})") from exc
            except asyncio.CancelledError:
                await self._discard()  # a statement may still be running on it; start clean next time
                raise

    # -- lifecycle -------------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._is_open:
            return
        async with self._session("open", opening=True) as conn:
            async with conn.transaction():
                await conn.execute(_SCHEMA_LOCK)  # two processes starting together create it once
                for statement in _SCHEMA:
                    await conn.execute(statement)
                cursor = await conn.execute("SELECT value FROM telemetry_meta WHERE key = 'schema_version'")
                row = await cursor.fetchone()
                if row is None:
                    await conn.execute(
                        "INSERT INTO telemetry_meta VALUES ('schema_version', %s)", (SCHEMA_VERSION,)
                    )
                elif row[0] > SCHEMA_VERSION:
                    raise StoreConfigurationError(
                        f"PostgreSQL telemetry schema {row[0]} is newer than this tapline ({SCHEMA_VERSION})"
                    )
            await self._ensure_ahead(conn, int(time.time() * 1000))
        self._is_open = True

    async def close(self) -> None:
        self._is_open = False
        async with self._lock:
            await self._discard()

    # -- partitions ------------------------------------------------------------------------------------

    async def _known_partitions(self, conn: Connection) -> dict[str, dict[int, str]]:
        if self._partitions is None:
            known: dict[str, dict[int, str]] = {table: {} for table in PARTITION_WIDTHS}
            cursor = await conn.execute(_PARTITIONS)
            for parent, name, bound in await cursor.fetchall():
                match = _BOUND.search(bound or "")
                if match:
                    known[parent][int(match.group(1))] = name
            self._partitions = known
        return self._partitions

    async def _ensure_partitions(self, conn: Connection, days: Iterable[int]) -> None:
        """Create the partitions (of all three tables) covering each given UTC day, outside transactions."""
        known = await self._known_partitions(conn)
        for day in days:
            for table, width in PARTITION_WIDTHS.items():
                start = bucket_start(day, width)
                if start in known[table]:
                    continue
                name = partition_name(table, start)
                statement = sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                )
                # Another process may have created it a moment ago: that is what we wanted.
                with contextlib.suppress(psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
                    await conn.execute(
                        statement.format(
                            sql.Identifier(name),
                            sql.Identifier(table),
                            sql.Literal(start),
                            sql.Literal(start + width),
                        )
                    )
                known[table][start] = name

    async def _ensure_ahead(self, conn: Connection, now_ms: int) -> None:
        today = bucket_start(now_ms, DAY_MS)
        await self._ensure_partitions(
            conn, [today + k * DAY_MS for k in range(self._settings.partitions_ahead_days + 1)]
        )

    # -- series ----------------------------------------------------------------------------------------

    async def ensure_series(self, keys: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
        unique = list(dict.fromkeys(keys))
        async with self._session("ensure_series") as conn, conn.transaction():
            ids = await self._lookup_series(conn, unique)
            missing = [k for k in unique if k not in ids]
            if missing:
                # Insert only the missing keys: ON CONFLICT would still burn an identity value per key.
                await conn.execute(
                    "INSERT INTO series (site, point) SELECT * FROM unnest(%s::text[], %s::text[])"
                    " ON CONFLICT DO NOTHING",
                    ([k.site for k in missing], [k.point for k in missing]),
                )
                ids.update(await self._lookup_series(conn, missing))
        return ids

    @staticmethod
    async def _lookup_series(conn: Connection, keys: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
        cursor = await conn.execute(_SERIES_LOOKUP, ([k.site for k in keys], [k.point for k in keys]))
        return {SeriesKey(site, point): int(id_) for id_, site, point in await cursor.fetchall()}

    # -- write -----------------------------------------------------------------------------------------

    async def write(self, samples: Sequence[SampleRow]) -> int:
        if not samples:
            return 0
        oldest = min(map(itemgetter(1), samples))
        newest = max(map(itemgetter(1), samples))
        days = days_touched(samples, oldest, newest)
        async with self._session("write") as conn:
            await self._ensure_partitions(conn, days)
            try:
                return await self._write_batch(conn, samples, oldest)
            except psycopg.errors.CheckViolation:
                # "no partition for row": another process dropped one (retention) since we cached the
                # catalog. Re-read it, create what is missing, and try once more.
                self._partitions = None
                await self._ensure_partitions(conn, days)
                return await self._write_batch(conn, samples, oldest)

    async def _write_batch(self, conn: Connection, samples: Sequence[SampleRow], oldest: int) -> int:
        async with conn.transaction():
            cursor = await conn.execute(
                "SELECT key, value FROM telemetry_meta WHERE key IN ('minute_mark', 'compact_mark') FOR SHARE"
            )
            marks: dict[str, int | None] = dict(await cursor.fetchall())
            mark, packed_to = marks.get("minute_mark"), marks.get("compact_mark")
            late = mark is not None and oldest < mark
            if not late:
                try:
                    async with conn.transaction():  # a savepoint: the optimistic direct COPY
                        await self._copy(conn, _COPY_SAMPLES, samples)
                except psycopg.errors.UniqueViolation:
                    pass  # some rows are stored already (a replay): take the idempotent path below
                else:
                    return len(samples)
            await self._copy(conn, _COPY_STAGING, samples)
            if packed_to is not None and oldest < packed_to:
                await self._unpack_for_staged(conn, packed_to)
            cursor = await conn.execute(_INSERT_FROM_STAGING)
            inserted = cursor.rowcount
            if late:
                await conn.execute(_MARK_DIRTY, (mark,))
            return inserted

    @staticmethod
    async def _unpack_for_staged(conn: Connection, packed_to: int) -> None:
        """A batch reaches packed hours (a replay, a backfill): unpack the blocks of the (series, hour)
        pairs it touches back into rows first, so the insert below skips what is already stored and the
        rollup recomputes from complete rows; ``compact_dirty`` has ``compact`` pack those hours again.
        Each hour's advisory lock (taken in hour order: no deadlock between two such writes) waits for a
        ``compact`` that is packing that hour right now."""
        params = {"mark": packed_to}
        cursor = await conn.execute(
            "SELECT DISTINCT ts - ts %% 3600000 FROM samples_staging WHERE ts < %(mark)s ORDER BY 1", params
        )
        hours = [int(row[0]) for row in await cursor.fetchall()]
        for hour in hours:
            await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_COMPACT_LOCK_CLASS, hour // HOUR_MS))
        await conn.execute(_UNPACK.format(pairs=_STAGED_PACKED_PAIRS), params)
        await conn.execute(
            "INSERT INTO compact_dirty (hour) SELECT unnest(%s::bigint[]) ON CONFLICT DO NOTHING", (hours,)
        )

    @staticmethod
    async def _copy(conn: Connection, statement: str, samples: Sequence[SampleRow]) -> None:
        """Binary COPY in block mode: the rows are packed here with one ``struct`` call each, about a
        third of ``write_row``'s cost (a dumper per field, an await per row)."""
        async with conn.cursor() as cursor, cursor.copy(statement) as copy:
            for start in range(0, len(samples), _COPY_BLOCK_ROWS):
                block = samples[start : start + _COPY_BLOCK_ROWS]
                rows = b"".join([_pack_row(4, 8, s, 8, t, 8, v, 2, q) for s, t, v, q in block])
                await copy.write((_PGCOPY_HEADER if start == 0 else b"") + rows)
            await copy.write(_PGCOPY_TRAILER if samples else _PGCOPY_HEADER + _PGCOPY_TRAILER)

    # -- reads -----------------------------------------------------------------------------------------

    async def latest(self, series_ids: Sequence[int] | None = None) -> dict[int, Sample]:
        async with self._session("latest") as conn:
            if series_ids is None:
                cursor = await conn.execute(_LATEST)
            else:
                cursor = await conn.execute(_LATEST + " WHERE r.id = ANY(%s::bigint[])", ([*series_ids],))
            rows = await cursor.fetchall()
        return {row[0]: Sample(*row) for row in rows}

    async def history(
        self, series_id: int, start: int, end: int, step_ms: int | None = None
    ) -> list[HistoryPoint]:
        resolution = resolution_for_step(step_ms)
        async with self._session("history") as conn:
            params = {"id": series_id, "start": start, "end": end, "step": step_ms}
            if step_ms is None:
                cursor = await conn.execute(_HISTORY_RAW, params)
                return [HistoryPoint(ts, v, v, v, v, 1, q) for ts, v, q in await cursor.fetchall()]
            if resolution is Resolution.RAW:
                cursor = await conn.execute(_HISTORY_RAW_STEP, params)
            else:
                source = sql.SQL(_MINUTES) if resolution is Resolution.MINUTE else sql.Identifier("rollup_1h")
                query = sql.SQL(_HISTORY_ROLLUP_STEP).format(source=source)
                cursor = await conn.execute(query, params)
            return [HistoryPoint(*row) for row in await cursor.fetchall()]

    async def count(self) -> int:
        async with self._session("count") as conn:
            cursor = await conn.execute(_COUNT)
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    # -- maintenance -----------------------------------------------------------------------------------

    async def rollup(self, now_ms: int) -> int:
        async with self._session("rollup") as conn:
            await self._ensure_ahead(conn, now_ms)
            known = await self._known_partitions(conn)
            async with conn.transaction():
                cursor = await conn.execute(_LOCK_MARKS)
                marks = dict(await cursor.fetchall())
                minute_mark, hour_mark = marks["minute_mark"], marks["hour_mark"]
                await self._unpack_dirty_minutes(conn)
                if minute_mark is None:  # first rollup ever: start at the oldest partition
                    if not known["samples"]:
                        return 0
                    # Never start past the caller's clock (partitions are made ahead of it).
                    minute_mark = hour_mark = bucket_start(min(min(known["samples"]), now_ms), HOUR_MS)
                new_minute_mark = max(minute_mark, bucket_start(now_ms, MINUTE_MS))
                new_hour_mark = max(hour_mark, bucket_start(now_ms, HOUR_MS))
                written = 0
                if new_minute_mark > minute_mark:
                    cursor = await conn.execute(
                        _ROLLUP_MINUTES_RANGE, {"lo": minute_mark, "hi": new_minute_mark}
                    )
                    written += cursor.rowcount
                written += (await conn.execute(_ROLLUP_MINUTES_DIRTY, {})).rowcount
                if new_hour_mark > hour_mark:
                    cursor = await conn.execute(_ROLLUP_HOURS_RANGE, {"lo": hour_mark, "hi": new_hour_mark})
                    written += cursor.rowcount
                written += (await conn.execute(_ROLLUP_HOURS_DIRTY, {"before": hour_mark})).rowcount
                await conn.execute("DELETE FROM rollup_dirty")
                await conn.execute(
                    "UPDATE telemetry_meta SET value = CASE key WHEN 'minute_mark' THEN %s::bigint"
                    " ELSE %s::bigint END WHERE key IN ('minute_mark', 'hour_mark')",
                    (new_minute_mark, new_hour_mark),
                )
                return written

    async def compact(self, now_ms: int) -> int:
        """Pack the rows of due hours into blocks (``TelemetryStore.compact``), and the 1-minute rollups
        of due days (``_pack_minutes``); the number of (raw) blocks.

        First the ``compact_mark`` moves forward (under ``FOR UPDATE``: writes that decided under the old
        mark have committed, later ones see the new mark and unpack what they touch below it). Then each
        due hour — new ones since the last run and ``compact_dirty`` ones that late writes reopened — is
        packed in slices of ``_COMPACT_SLICE_SERIES`` series, each slice one transaction holding the
        hour's advisory lock (a late write into that hour waits for it). A day partition of ``samples``
        left empty is truncated, which frees its space at once (deleted rows would otherwise wait for
        VACUUM).
        """
        after = self._settings.compact_after_ms
        async with self._private_session("compact") as conn:
            # From the catalog, not the cache: another worker may have created older partitions since
            # this store read it, and a first run starts at the oldest one — starting later would move
            # the mark past rows that were never packed.
            self._partitions = None
            known = await self._known_partitions(conn)
            async with conn.transaction():
                cursor = await conn.execute(_LOCK_COMPACT_MARK)
                row = await cursor.fetchone()
                old_mark, minute_mark = row if row else (None, None)
                if minute_mark is None:
                    return 0  # nothing rolled up yet: the rollup still needs every row
                due_before = min(bucket_start(now_ms - after, HOUR_MS), bucket_start(minute_mark, HOUR_MS))
                advanced = await self._advance_mark(
                    conn,
                    "compact_mark",
                    old_mark,
                    due_before,
                    HOUR_MS,
                    known["samples"],
                    "compact_dirty",
                    "hour",
                )
                if advanced is None:
                    return 0
                new_mark, hours = advanced
            cursor = await conn.execute("SELECT min(id), max(id) FROM series")
            row = await cursor.fetchone()
            ids = None if row is None or row[0] is None else (int(row[0]), int(row[1]))
            written = 0
            unpack = _UNPACK.format(pairs=_SLICE_PAIRS)
            for hour in hours:
                lock = ("SELECT pg_advisory_xact_lock(%s, %s)", (_COMPACT_LOCK_CLASS, hour // HOUR_MS))
                written += await self._pack_slices(
                    conn, hour, hour + HOUR_MS, ids, lock, unpack, _COMPACT_SLICE
                )
                await conn.execute("DELETE FROM compact_dirty WHERE hour = %s", (hour,))
            await self._reclaim(conn, "samples", new_mark, set(hours))
            minute_blocks = await self._pack_minutes(conn, now_ms, ids)
        if written or minute_blocks:
            log.info(
                "telemetry_compacted",
                blocks=written,
                hours=len(hours),
                compacted_to=new_mark,
                rollup_day_blocks=minute_blocks,
            )
        return written

    @staticmethod
    async def _advance_mark(
        conn: Connection,
        key: str,
        old_mark: int | None,
        due_before: int,
        width: int,
        partitions: dict[int, str],
        dirty_table: str,
        dirty_column: str,
    ) -> tuple[int, list[int]] | None:
        """Move the packing mark ``key`` to ``due_before`` (never back) and list every ``width`` bucket
        now due: those since the old mark, and those below it that late data reopened (``dirty_table``).
        A first run starts at the oldest partition. None: no data yet. Called holding the mark's lock."""
        if old_mark is None:
            if not partitions:
                return None
            old_mark = min(bucket_start(min(partitions), width), due_before)
        new_mark = max(due_before, old_mark)
        await conn.execute("UPDATE telemetry_meta SET value = %s WHERE key = %s", (new_mark, key))
        query = sql.SQL("SELECT {column} FROM {table} WHERE {column} < %s").format(
            column=sql.Identifier(dirty_column), table=sql.Identifier(dirty_table)
        )
        cursor = await conn.execute(query, (new_mark,))
        due = {int(r[0]) for r in await cursor.fetchall()}
        due.update(range(old_mark, new_mark, width))
        return new_mark, sorted(due)

    @staticmethod
    async def _pack_slices(
        conn: Connection,
        lo: int,
        hi: int,
        ids: tuple[int, int] | None,
        lock: tuple[str, tuple[int, ...]],
        unpack: str,
        pack: str,
    ) -> int:
        """Pack ``[lo, hi)`` of every series with ``pack``, ``_COMPACT_SLICE_SERIES`` series (of the id
        range ``ids``) a transaction holding ``lock``; the blocks written. Each slice first runs
        ``unpack``: a block already there for a pair with rows would be replaced, so it is merged back
        into the rows first (defensive: the write path keeps a pair in one form)."""
        if ids is None:
            return 0
        written = 0
        for a in range(ids[0], ids[1] + 1, _COMPACT_SLICE_SERIES):
            params = {"lo": lo, "hi": hi, "a": a, "b": a + _COMPACT_SLICE_SERIES}
            async with conn.transaction():
                await conn.execute(*lock)
                await conn.execute(unpack, params)
                written += (await conn.execute(pack, params)).rowcount
        return written

    async def _reclaim(self, conn: Connection, table: str, mark: int, times: set[int]) -> None:
        """Give back the space of the rows just packed out of ``table`` (``samples`` or ``rollup_1m``):
        truncate its partitions that lie wholly below ``mark`` and hold no row any more; vacuum the
        others (today's, this week's), whose new rows then reuse the space. Not left to autovacuum: it
        may be off (as on the benchmark box) or far behind, and the partitions would keep every deleted
        row's space until they are dropped."""
        known, width = (await self._known_partitions(conn))[table], PARTITION_WIDTHS[table]
        for start in sorted({bucket_start(t, width) for t in times}):
            name = known.get(start)
            if name is None:
                continue
            partition = sql.Identifier(name)
            emptied = False
            if start + width <= mark:
                try:
                    async with conn.transaction():
                        lock = sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE NOWAIT").format(partition)
                        await conn.execute(lock)
                        query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(partition)
                        row = await (await conn.execute(query)).fetchone()
                        if row is not None and not row[0]:
                            await conn.execute(sql.SQL("TRUNCATE {}").format(partition))
                            emptied = True
                except psycopg.errors.LockNotAvailable:
                    pass  # a late write is using it; vacuum now, a later run truncates it
            if not emptied:
                await conn.execute(sql.SQL("VACUUM {}").format(partition))

    @staticmethod
    async def _unpack_dirty_minutes(conn: Connection) -> None:
        """Late data reached a day whose 1-minute rollups are packed: unpack that series' day back into
        rows, so the minute and hour recomputes below read and upsert rows; the day is packed again by
        the next ``compact`` (``rollup_pack_dirty``). Under ``_ROLLUP_LOCK``: never beside a packing."""
        await conn.execute(_ROLLUP_LOCK)
        cursor = await conn.execute("SELECT value FROM telemetry_meta WHERE key = 'rollup_pack_mark'")
        row = await cursor.fetchone()
        if row is None or row[0] is None:
            return
        params = {"mark": row[0]}
        cursor = await conn.execute(_UNPACK_MINUTES.format(pairs=_DIRTY_PACKED_DAYS), params)
        if cursor.rowcount:
            await conn.execute(
                "INSERT INTO rollup_pack_dirty (day) SELECT DISTINCT bucket - bucket %% 86400000"
                " FROM rollup_dirty WHERE bucket < %(mark)s ON CONFLICT DO NOTHING",
                params,
            )

    async def _pack_minutes(self, conn: Connection, now_ms: int, ids: tuple[int, int] | None) -> int:
        """Pack the 1-minute rollups of each due day (closed, rolled up into hours, ``compact_after_ms``
        old) into one row per series and day; the number of blocks. A 7-day trend then reads 7 rows of a
        series instead of 10,080 scattered over the partition (the rollup writes a minute of every series
        at a time), and a minute costs ≈ 38 B instead of ≈ 130 B."""
        known = await self._known_partitions(conn)
        async with conn.transaction():
            await conn.execute(_ROLLUP_LOCK)
            cursor = await conn.execute(
                "SELECT key, value FROM telemetry_meta WHERE key IN ('hour_mark', 'rollup_pack_mark')"
            )
            marks: dict[str, int | None] = dict(await cursor.fetchall())
            hour_mark, old_mark = marks.get("hour_mark"), marks.get("rollup_pack_mark")
            if hour_mark is None:
                return 0
            due_before = min(
                bucket_start(now_ms - self._settings.compact_after_ms, DAY_MS),
                bucket_start(hour_mark, DAY_MS),
            )
            advanced = await self._advance_mark(
                conn,
                "rollup_pack_mark",
                old_mark,
                due_before,
                DAY_MS,
                known["rollup_1m"],
                "rollup_pack_dirty",
                "day",
            )
            if advanced is None:
                return 0
            new_mark, days = advanced
        written = 0
        unpack = _UNPACK_MINUTES.format(pairs=_SLICE_DAYS)
        for day in days:
            lock = (_ROLLUP_LOCK, ())
            written += await self._pack_slices(
                conn, day, day + DAY_MS, ids, lock, unpack, _PACK_MINUTES_SLICE
            )
            await conn.execute("DELETE FROM rollup_pack_dirty WHERE day = %s", (day,))
        await self._reclaim(conn, "rollup_1m", new_mark, set(days))
        return written

    async def apply_retention(self, now_ms: int) -> int:
        settings = self._settings
        retention = {
            "samples": settings.raw_retention_ms,
            "sample_blocks": settings.raw_retention_ms,
            "rollup_1m": settings.rollup_1m_retention_ms,
            "rollup_1m_blocks": settings.rollup_1m_retention_ms,
            "rollup_1h": settings.rollup_1h_retention_ms,
        }
        dropped = 0
        async with self._session("apply_retention") as conn:
            known = await self._known_partitions(conn)
            for table, keep in retention.items():
                width, cutoff = PARTITION_WIDTHS[table], now_ms - keep
                for start in sorted(known[table]):
                    if start + width > cutoff:
                        break
                    name = known[table].pop(start)
                    await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
                    dropped += 1
            await conn.execute(
                "DELETE FROM rollup_dirty WHERE bucket < %s", (now_ms - settings.raw_retention_ms,)
            )
            await conn.execute(
                "DELETE FROM compact_dirty WHERE hour < %s", (now_ms - settings.raw_retention_ms,)
            )
            await conn.execute(
                "DELETE FROM rollup_pack_dirty WHERE day < %s", (now_ms - settings.rollup_1m_retention_ms,)
            )
            await self._ensure_ahead(conn, now_ms)
        return dropped
