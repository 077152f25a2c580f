"""Telemetry store on SQLite: one file, one connection, one thread.

Why it looks like this:
- **One dedicated thread owns the connection.** Every call runs on a single-worker executor, so calls are
  serialised in arrival order without a lock and ``sqlite3`` itself enforces that no other thread ever
  touches the connection (``check_same_thread`` stays on). The event loop never blocks on disk. A caller
  cancelled mid-call does not cancel the work: the transaction still commits or rolls back whole, and a
  repeated write is harmless.
- **Layout.** Recent raw data is ``samples(series_id, ts, value, quality)`` with ``PRIMARY KEY(series_id,
  ts) WITHOUT ROWID``: the primary key *is* the table (no second b-tree), it clusters each series' values
  for history reads, and it is the idempotency key: ``INSERT OR IGNORE`` turns a replayed or duplicate
  value into a no-op. ~1 M rows/s in the reference loop (reference/performance.md §1.3); through this
  store, 200 k values in 10 k batches ran at 520–580 k values/s. ``value`` is nullable only because
  SQLite stores a NaN as NULL (read back as NaN): a broken transmitter's NaN must not make a whole batch
  unwritable. Closed hours move to ``sample_blocks`` (below).
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
- **Blocks for closed hours** (``compact``, issue #7). A row costs ~26 B a value (key, REAL, quality and
  b-tree overhead, for a float64 of 8); once an hour is closed, rolled up and ``compact_after_ms`` old,
  nothing but a late write changes it, so ``compact`` packs each series' hour into one
  ``sample_blocks(series_id, hour, n, t0, step, offsets, vals, quals)`` row: timestamps as ``t0`` and a
  ``step`` when regular (the usual poll) else int32 offsets, values as a float64 array, qualities as an
  int16 array or NULL when all are GOOD — ~8–9 B a value. Arrays are little-endian on every host and are
  (un)packed by ``array`` in C; 8.6 B a value on disk for 5 s data (a rowid table: see the comment at
  ``_SCHEMA``). One hour per block because history windows, rollups and retention all think in hours,
  and a late write then unpacks at most an hour of one series. Compaction reads a series' hour in one
  step, as exact text, not row by row: see ``_HOUR_OF_SERIES_AS_TEXT`` for why (the GIL).
- **The invariant.** The data of any (series, hour) is in exactly one place: rows or one block. Reads
  (``history``, ``latest``, ``count``) take both and never meet a timestamp twice; rollups read only rows,
  which is why only hours the rollup has covered (``H + 1 h <= minute_mark``) and that have no minute
  waiting in ``rollup_dirty`` are packed. Packing an hour (insert the blocks, delete the rows) is one
  transaction per hour and chunk of series, so a crash leaves either the rows or the blocks.
- **Late writes into a packed hour.** ``write`` first turns the blocks of the (series, hour)s it touches
  back into rows, in the same transaction, then inserts as always: duplicates of packed values are still
  ignored and not counted, and the late-data path recomputes the rollup from all of the hour's rows; the
  next ``compact`` packs the hour again. Live data never pays for this: ``telemetry_meta.compact_mark``
  (end of the newest packed hour, read in the write's transaction because another process may compact)
  is older than any live batch, so the check is one comparison.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import sys
from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache, partial
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, TypeVar, cast

from tapline.logs import get_logger
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

__all__ = ["SqliteTelemetryStore", "pack_block", "unpack_block"]

SCHEMA_VERSION = 2
"""2: ``sample_blocks`` and ``compact_mark``. A tapline that knows only 1 would not see packed hours, so it
must refuse a version-2 file rather than answer with holes."""

_log = get_logger(__name__)

_T = TypeVar("_T")


def _float(stored: float | None) -> float:
    """A stored value back as a float: SQLite keeps NaN as NULL."""
    return float("nan") if stored is None else stored


# -- blocks ----------------------------------------------------------------------------------------------
#
# A block is the raw data of one series in one closed hour, column by column, little-endian whatever the
# host: timestamps as ``t0`` and a ``step`` when they are regular (the common case: a 5 s poll) else as
# int32 offsets from the hour, values as float64 (NaN kept), qualities as int16 or nothing when all are
# GOOD. ``array`` converts a whole column in C; nothing here loops over values in Python except the
# irregular-offset and NULL→NaN conversions, which are list comprehensions over one block.

_NAN = float("nan")
_SWAP = sys.byteorder != "little"  # blocks are always little-endian so a file moves between hosts

BlockColumns = tuple[int, int, int | None, bytes | None, bytes, bytes | None]
"""``(n, t0, step, offsets, vals, quals)``: a block's stored columns after ``(series_id, hour)``."""


def _le_bytes(column: array[Any]) -> bytes:
    """A column's bytes in little-endian order."""
    if _SWAP:
        column = array(column.typecode, column)
        column.byteswap()
    return column.tobytes()


def _from_le(typecode: str, data: bytes) -> array[Any]:
    column = array(typecode)
    column.frombytes(data)
    if _SWAP:
        column.byteswap()
    return column


def pack_block(
    hour: int, ts: Sequence[int], values: Sequence[float | None], qualities: Sequence[int]
) -> BlockColumns:
    """Pack one series' samples of the hour starting at ``hour`` (ts ascending, unique, inside the hour).

    ``None`` values (how SQLite hands back a stored NaN) become NaN, so a block never needs a null mask.
    """
    n = len(ts)
    if n == 0:
        raise ValueError("a block holds at least one sample")
    t0 = ts[0]
    gap = ts[1] - t0 if n > 1 else 0
    step: int | None = gap
    offsets: bytes | None = None
    if n > 1 and tuple(ts) != tuple(range(t0, t0 + n * gap, gap)):  # C-speed "all gaps equal"
        step = None
        offsets = _le_bytes(array("i", [t - hour for t in ts]))
    floats = cast("Sequence[float]", values)
    if None in values:
        floats = [_NAN if v is None else v for v in values]
    vals = _le_bytes(array("d", floats))
    quals = _le_bytes(array("h", qualities)) if any(qualities) else None
    return n, t0, step, offsets, vals, quals


def unpack_block(
    hour: int,
    n: int,
    t0: int,
    step: int | None,
    offsets: bytes | None,
    vals: bytes,
    quals: bytes | None,
) -> tuple[Sequence[int], Sequence[float], Sequence[int]]:
    """A block's columns back: timestamps (a ``range`` when regular), values (NaN kept), qualities.

    All three support ``bisect`` and slicing, so a window inside the block is cut without a loop.
    """
    ts: Sequence[int]
    if step is not None:
        ts = range(t0, t0 + (n - 1) * step + 1, step or 1)
    elif offsets is not None:
        ts = [hour + offset for offset in _from_le("i", offsets)]
    else:
        raise ValueError(f"block of hour {hour}: neither step nor offsets")
    values: Sequence[float] = _from_le("d", vals)
    qualities: Sequence[int] = _from_le("h", quals) if quals is not None else [0] * n
    if len(ts) != n or len(values) != n or len(qualities) != n:
        raise ValueError(f"block of hour {hour}: columns do not hold {n} samples")
    return ts, values, qualities


# ``sample_blocks`` is a rowid table (its primary key a separate index), not WITHOUT ROWID, on purpose.
# A WITHOUT ROWID table is an index b-tree, whose cells keep at most ~1,000 bytes on the page (4 KiB pages)
# and spill the rest to overflow pages with 489 bytes kept local: an hour of 5 s values (5.8 kB) then
# takes 489 bytes plus two overflow pages, 12.2 bytes a value. A rowid table's leaf keeps up to 4,061
# bytes, so the same block is ~1.7 kB on a shared leaf plus exactly one full overflow page: 8.6 bytes a
# value (``dbstat``, 200 series x 24 h; 1 s data: 8.1 either way). The index on (series_id, hour) costs
# ~20 bytes and one more seek per block: nothing next to the block itself.
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
CREATE TABLE IF NOT EXISTS sample_blocks (
    series_id INTEGER NOT NULL,
    hour INTEGER NOT NULL,  -- epoch-aligned start of the hour
    n INTEGER NOT NULL,     -- values in the block
    t0 INTEGER NOT NULL,    -- first timestamp
    step INTEGER,           -- regular timestamps: t0 + i * step (0 when n = 1), else NULL and ...
    offsets BLOB,           -- ... int32 little-endian ts - hour
    vals BLOB NOT NULL,     -- float64 little-endian, NaN kept
    quals BLOB,             -- int16 little-endian, NULL when every quality is 0 (GOOD)
    PRIMARY KEY (series_id, hour)
);  -- a rowid table on purpose: see the comment above
INSERT OR IGNORE INTO telemetry_meta (key, value)
VALUES ('minute_mark', NULL), ('hour_mark', NULL), ('compact_mark', NULL);
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

_HISTORY_ROLLUP_STEP = """
SELECT g.b, g.mn, g.mx, g.sm / g.n, r.last, g.n, g.q
FROM (
    SELECT bucket - bucket % ?4 AS b, min(min) AS mn, max(max) AS mx, sum(sum) AS sm, sum(count) AS n,
           max(bucket) AS last_bucket, max(quality) AS q
    FROM {table} WHERE series_id = ?1 AND bucket >= ?2 AND bucket < ?3 GROUP BY b
) g JOIN {table} r ON r.series_id = ?1 AND r.bucket = g.last_bucket
ORDER BY g.b
"""

_BLOCKS_IN_WINDOW = """
SELECT hour, n, t0, step, offsets, vals, quals FROM sample_blocks
WHERE series_id = ? AND hour > ? AND hour < ? ORDER BY hour
"""
"""Blocks of one series that overlap ``[start, end)``: ``hour > start - 1 h`` and ``hour < end``."""

_BLOCK_COLUMNS = "n, t0, step, offsets, vals, quals"

# The newest row and the newest block of each series, by primary-key seeks. Only the block's last value,
# quality and offset are fetched (``substr`` of a BLOB counts bytes), not its columns.
_LATEST = """
SELECT r.id, x.ts, x.value, x.quality, b.hour, b.n, b.t0, b.step,
       substr(b.offsets, 4 * b.n - 3, 4), substr(b.vals, 8 * b.n - 7, 8), substr(b.quals, 2 * b.n - 1, 2)
FROM series r
LEFT JOIN samples x ON x.series_id = r.id AND x.ts = (SELECT max(ts) FROM samples WHERE series_id = r.id)
LEFT JOIN sample_blocks b
  ON b.series_id = r.id AND b.hour = (SELECT max(hour) FROM sample_blocks WHERE series_id = r.id)
"""

# Blocks named by a JSON list of ``[series_id, hour]`` pairs (a write that reaches compacted hours).
_BLOCKS_BY_KEY = f"""
SELECT b.series_id, b.hour, {_BLOCK_COLUMNS} FROM json_each(?) AS k
JOIN sample_blocks AS b
  ON b.series_id = json_extract(k.value, '$[0]') AND b.hour = json_extract(k.value, '$[1]')
"""  # noqa: S608 - a constant column list

_DELETE_BLOCKS_BY_KEY = """
DELETE FROM sample_blocks WHERE rowid IN (
    SELECT b.rowid FROM json_each(?) AS k
    JOIN sample_blocks AS b
      ON b.series_id = json_extract(k.value, '$[0]') AND b.hour = json_extract(k.value, '$[1]')
)
"""

# Compaction. The oldest row at or after ?1 (one primary-key seek per series, as in ``rollup``).
_OLDEST_ROW_FROM = (
    "SELECT min((SELECT min(ts) FROM samples WHERE series_id = r.id AND ts >= ?)) FROM series r"
)

# A compaction chunk reads the hour of one series in ONE step, as text: ``sqlite3`` releases the GIL
# around every step and must win it back after each, which costs up to the switch interval while the
# event loop runs Python (the ingest decoding). Row by row, one hour of 200 series (144 k values) took
# 0.4 s on a quiet loop but 10 s beside a busy one; as text (one step a series) 0.5–1 s on a quiet loop
# (printing and parsing cost more than fetching) and 1.2 s beside the busy one, so the pause the ingest's
# writes can see behind a chunk stays bounded whatever the load. The text must give back the float64:
# ``printf`` with the ``!`` flag prints 17 significant digits (without it SQLite stops at 16), which
# round-trips exactly below 1e100 on SQLite 3.40 (1 M random doubles: no difference; above, its scaling
# loses a bit, so those print 18 digits: no difference either). ``_text_round_trips`` checks the SQLite
# build at open with hard cases, and compaction falls back to rows if it fails. ``group_concat`` keeps
# the subquery's order in practice but does not promise it (before 3.44): the caller checks.
_VALUE_AS_TEXT = (
    "CASE WHEN {v} IS NULL THEN 'nan' WHEN abs({v}) < 1e100 THEN printf('%!.17g', {v})"
    " ELSE printf('%!.17e', {v}) END"
)
_HOUR_OF_SERIES_AS_TEXT = f"""
SELECT count(*), group_concat(ts), group_concat({_VALUE_AS_TEXT.format(v="value")}), group_concat(quality)
FROM (SELECT ts, value, quality FROM samples WHERE series_id = ? AND ts >= ? AND ts < ? ORDER BY ts)
"""  # noqa: S608 - constants
_ROUND_TRIP_PROBES = (
    0.1, 1 / 3, 0.4 + 3 / 100, 2.718281828459045, 123456.78901234567, -987.6543210987654, 9007199254740993.0,
    1e23, 9.999999999999999e99, 1.0000000000000001e100, -1.1545580616824966e232, -1.566228692651259e302,
    1.7976931348623157e308, -1.7976931348623157e308, 2.2250738585072014e-308, 5e-324, 1e-300, math.inf,
    -math.inf,
)  # fmt: skip
"""Doubles whose text form is hard to get exact: 17-digit values, both sides of 1e100, extremes."""

# Rows of series ids in (?1, ?2] and the hour [?3, ?4) go in one statement; ``_HOUR_BLOCKS`` finds blocks
# already there (a late write's rows beside a block: defensive).
_HOUR_DELETE = """
DELETE FROM samples WHERE series_id IN (SELECT id FROM series WHERE id > ?1 AND id <= ?2)
  AND ts >= ?3 AND ts < ?4
"""
_HOUR_BLOCKS = f"""
SELECT b.series_id, {_BLOCK_COLUMNS} FROM series r CROSS JOIN sample_blocks b
  ON b.series_id = r.id AND b.hour = ?3
WHERE r.id > ?1 AND r.id <= ?2
"""  # noqa: S608 - a constant column list
_SERIES_PER_CHUNK = 64
"""Series per compaction transaction, each its own call on the connection's thread: the writes queued
behind compaction wait for one chunk at most (64 series of 5 s data: ~0.2–0.4 s, of 1 s data ~1–2 s on
the benchmark box), and a chunk's memory is bounded. A commit per chunk costs one fsync: nothing."""

# Retention. ``series_id IN (SELECT id FROM series)`` makes SQLite seek the primary key once per series
# instead of scanning the whole table.
_DELETE_SAMPLES = "DELETE FROM samples WHERE series_id IN (SELECT id FROM series) AND ts < ?"
_DELETE_DIRTY = "DELETE FROM rollup_dirty WHERE series_id IN (SELECT id FROM series) AND bucket < ?"
_DELETE_ROLLUP_1M = "DELETE FROM rollup_1m WHERE series_id IN (SELECT id FROM series) AND bucket < ?"
_DELETE_ROLLUP_1H = "DELETE FROM rollup_1h WHERE series_id IN (SELECT id FROM series) AND bucket < ?"
_DELETE_BLOCKS = "DELETE FROM sample_blocks WHERE series_id IN (SELECT id FROM series) AND hour <= ?"
"""Blocks whose whole hour is past the cutoff (``hour + 1 h <= cutoff``; the parameter is cutoff - 1 h)."""

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


# -- reading and packing raw data ------------------------------------------------------------------------

RawPoint = tuple[int, float, int]
"""``(ts, value, quality)`` of one raw value, from a row or a block (NaN for a stored NULL)."""


def _raw(db: sqlite3.Connection, series_id: int, start: int, end: int) -> list[RawPoint]:
    """Raw values of one series in ``[start, end)``, ascending, from rows and blocks alike.

    A (series, hour) is in exactly one of the two, so concatenating and sorting (two presorted runs for
    Timsort) never meets a timestamp twice. A block is cut to the window by bisection, not a loop.
    """
    points = [
        (ts, _float(stored), quality)
        for ts, stored, quality in db.execute(_HISTORY_RAW, (series_id, start, end))
    ]
    blocks = db.execute(_BLOCKS_IN_WINDOW, (series_id, start - HOUR_MS, end)).fetchall()
    if not blocks:
        return points
    had_rows = bool(points)
    for hour, *columns in blocks:
        ts, values, qualities = unpack_block(hour, *columns)
        low, high = bisect_left(ts, start), bisect_left(ts, end)
        points.extend(zip(ts[low:high], values[low:high], qualities[low:high], strict=True))
    if had_rows:
        points.sort(key=itemgetter(0))
    return points


def _aggregate(points: Sequence[RawPoint], step_ms: int) -> list[HistoryPoint]:
    """Raw values grouped into ``step_ms`` buckets, with the semantics the SQL aggregate had.

    Like SQL's ``min``/``max``/``sum`` over a nullable column, NaN (a stored NULL) is skipped by
    min, max and sum but counted; ``avg = sum / count``; ``last`` is the value at the newest timestamp
    (NaN included); the quality is the worst. Done in Python because a packed hour is not rows; ``sum``
    adds left to right in time order as SQLite's ``sum`` does (before 3.43), so packing does not change
    an answer's last bits.
    """
    if not points:
        return []
    ts, values, qualities = zip(*points, strict=True)
    answer: list[HistoryPoint] = []
    i, n = 0, len(ts)
    while i < n:
        bucket = ts[i] - ts[i] % step_ms
        j = bisect_left(ts, bucket + step_ms, i)
        present = [v for v in values[i:j] if v == v]  # NaN is the only value != itself
        count = j - i
        if present:
            low, high, avg = min(present), max(present), sum(present) / count
        else:
            low = high = avg = _NAN
        answer.append(HistoryPoint(bucket, low, high, avg, values[j - 1], count, max(qualities[i:j])))
        i = j
    return answer


def _restore_blocks(db: sqlite3.Connection, keys: set[tuple[int, int]]) -> int:
    """Turn the blocks of the given ``(series_id, hour)`` back into rows (inside the caller's transaction).

    A write that reaches a compacted hour calls this before inserting, so ``INSERT OR IGNORE`` sees the
    packed values as rows: a replayed value is still a duplicate, ``write`` still counts only new values,
    and the late-data rollup recomputes the hour from all of its rows. The next ``compact`` packs it again.
    """
    found = db.execute(_BLOCKS_BY_KEY, (json.dumps(sorted(keys)),)).fetchall()
    if not found:
        return 0
    rows: list[tuple[int, int, float, int]] = []
    for series, hour, *columns in found:
        ts, values, qualities = unpack_block(hour, *columns)
        rows.extend(zip(repeat(series), ts, values, qualities))
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        part = rows[start : start + _ROWS_PER_INSERT]
        db.execute(_insert_rows(len(part)), list(chain.from_iterable(part)))
    db.execute(_DELETE_BLOCKS_BY_KEY, (json.dumps([(row[0], row[1]) for row in found]),))
    _log.debug("sqlite_blocks_unpacked", blocks=len(found), rows=len(rows))
    return len(found)


def _merge_block(
    hour: int,
    columns: Sequence[Any],
    ts: Sequence[int],
    values: Sequence[float | None],
    qualities: Sequence[int],
) -> tuple[list[int], list[float], list[int]]:
    """An existing block of the hour merged with rows of the same hour; on the same ts the row wins.

    Defensive: writes unpack a block before adding rows, so both exist only if something else wrote.
    """
    old_ts, old_values, old_qualities = unpack_block(hour, *columns)
    merged = dict(zip(old_ts, zip(old_values, old_qualities, strict=True), strict=True))
    merged.update(
        zip(ts, zip([_NAN if v is None else v for v in values], qualities, strict=True), strict=True)
    )
    order = sorted(merged)
    return order, [merged[t][0] for t in order], [merged[t][1] for t in order]


def _oldest_row_from(db: sqlite3.Connection, since: int) -> int | None:
    """The oldest raw row's timestamp at or after ``since`` (``None`` when there is none)."""
    oldest: int | None = db.execute(_OLDEST_ROW_FROM, (since,)).fetchone()[0]
    return oldest


def _text_round_trips(db: sqlite3.Connection) -> bool:
    """Whether this SQLite's ``_VALUE_AS_TEXT`` gives back every probe double bit for bit."""
    probes = ", ".join(["(?)"] * len(_ROUND_TRIP_PROBES))  # bound as doubles: nothing parses them
    as_text = _VALUE_AS_TEXT.format(v="column1")
    sql = f"SELECT group_concat({as_text}) FROM (VALUES {probes})"  # noqa: S608 - constants and placeholders
    (text,) = db.execute(sql, _ROUND_TRIP_PROBES).fetchone()
    return text is not None and [float(t) for t in text.split(",")] == list(_ROUND_TRIP_PROBES)


def _hour_of_series(
    db: sqlite3.Connection, series: int, hour: int, as_text: bool
) -> tuple[Sequence[int], Sequence[float | None], Sequence[int]] | None:
    """The raw values of one series in one hour, ascending; ``None`` when it has none there."""
    if not as_text:
        rows = db.execute(_HISTORY_RAW, (series, hour, hour + HOUR_MS)).fetchall()
        if not rows:
            return None
        ts_column, value_column, quality_column = zip(*rows, strict=True)
        return ts_column, value_column, quality_column
    n, ts_text, values_text, qualities_text = db.execute(
        _HOUR_OF_SERIES_AS_TEXT, (series, hour, hour + HOUR_MS)
    ).fetchone()
    if not n:
        return None
    ts = list(map(int, ts_text.split(",")))
    values = array("d", map(float, values_text.split(",")))
    qualities = list(map(int, qualities_text.split(",")))
    if not len(ts) == len(values) == len(qualities) == n:
        raise StoreError(f"series {series}, hour {hour}: {n} rows but {len(ts)} timestamps read")
    if ts != sorted(ts):  # group_concat did not keep the order: put it back
        order = sorted(range(n), key=ts.__getitem__)
        ts = [ts[i] for i in order]
        values = array("d", [values[i] for i in order])
        qualities = [qualities[i] for i in order]
    return ts, values, qualities


def _compact_chunk(db: sqlite3.Connection, hour: int, after_id: int, last_id: int, as_text: bool) -> int:
    """Pack the rows of series ids in ``(after_id, last_id]`` in ``hour`` into blocks: one transaction.

    Reading, writing the blocks and deleting the rows commit together, so a crash leaves either the rows
    or the blocks, never neither or both. A series with a minute of this hour waiting in ``rollup_dirty``
    is left as rows: that recompute reads rows, and packing them first would lose the late value from
    the rollup; the next ``compact`` after the rollup takes it.
    """
    db.execute("BEGIN IMMEDIATE")
    compact_mark = db.execute("SELECT value FROM telemetry_meta WHERE key = 'compact_mark'").fetchone()[0]
    params = (after_id, last_id, hour, hour + HOUR_MS)
    dirty = {
        series
        for (series,) in db.execute(
            "SELECT DISTINCT series_id FROM rollup_dirty WHERE bucket >= ? AND bucket < ?",
            (hour, hour + HOUR_MS),
        )
    }
    existing: dict[int, list[Any]] = {}
    if compact_mark is not None and hour < compact_mark:  # only then can a block of this hour exist
        existing = {series: columns for series, *columns in db.execute(_HOUR_BLOCKS, params[:3])}
    blocks: list[tuple[Any, ...]] = []
    kept = 0  # series left as rows: a minute of theirs waits for the rollup
    (ids,) = db.execute(
        "SELECT json_group_array(id) FROM series WHERE id > ? AND id <= ?", params[:2]
    ).fetchone()
    for series in json.loads(ids):
        columns = _hour_of_series(db, series, hour, as_text)
        if columns is None:
            continue
        if series in dirty:
            kept += 1
            continue
        if series in existing:
            columns = _merge_block(hour, existing[series], *columns)
        blocks.append((series, hour, *pack_block(hour, *columns)))
    if not blocks:
        db.execute("COMMIT")
        return 0
    # One statement, not executemany: one GIL round trip (see _HOUR_OF_SERIES_AS_TEXT) instead of one a block.
    db.execute(_insert_blocks(len(blocks)), list(chain.from_iterable(blocks)))
    if kept:
        db.executemany(
            "DELETE FROM samples WHERE series_id = ? AND ts >= ? AND ts < ?",
            [(block[0], hour, hour + HOUR_MS) for block in blocks],
        )
    else:
        db.execute(_HOUR_DELETE, params)
    if compact_mark is None or compact_mark < hour + HOUR_MS:
        db.execute("UPDATE telemetry_meta SET value = ? WHERE key = 'compact_mark'", (hour + HOUR_MS,))
    db.execute("COMMIT")
    return len(blocks)


@lru_cache(maxsize=4)
def _insert_blocks(count: int) -> str:
    """``INSERT OR REPLACE INTO sample_blocks … VALUES (…), …`` for ``count`` blocks (8 parameters each)."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * count)
    columns = "series_id, hour, n, t0, step, offsets, vals, quals"
    return f"INSERT OR REPLACE INTO sample_blocks ({columns}) VALUES {values}"  # noqa: S608 - placeholders only


class SqliteTelemetryStore(StoreLifecycle):
    """``TelemetryStore`` on one SQLite file (``:memory:`` for a throwaway database)."""

    single_writer = True

    def __init__(self, path: str, settings: StoreSettings | None = None) -> None:
        self._path = path
        self._settings = settings or StoreSettings()
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._text_exact = False  # set at open: see _HOUR_OF_SERIES_AS_TEXT

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
            elif version[0] < SCHEMA_VERSION:  # the script above added what is new; nothing moves
                db.execute(
                    "UPDATE telemetry_meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,)
                )
            db.execute("COMMIT")
            self._text_exact = _text_round_trips(db)
        except BaseException:
            db.close()
            raise
        if not self._text_exact:
            _log.warning("sqlite_float_text_inexact", effect="compaction reads rows one by one")
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
            marks = dict(
                db.execute(
                    "SELECT key, value FROM telemetry_meta WHERE key IN ('minute_mark', 'compact_mark')"
                )
            )
            mark, compact_mark = marks["minute_mark"], marks.get("compact_mark")
            if compact_mark is not None and oldest < compact_mark:  # live data never gets here
                # Unpack first, so the insert below sees packed values as rows (duplicates, late data).
                touched = {(s[0], s[1] - s[1] % HOUR_MS) for s in samples if s[1] < compact_mark}
                _restore_blocks(db, touched)
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
        sql = _LATEST
        params: tuple[str, ...] = ()
        if series_ids is not None:
            sql += " WHERE r.id IN (SELECT value FROM json_each(?))"
            params = (json.dumps([int(i) for i in series_ids]),)

        def work(db: sqlite3.Connection) -> dict[int, Sample]:
            newest: dict[int, Sample] = {}
            for series, ts, stored, quality, hour, n, t0, step, offset, val, qual in db.execute(sql, params):
                if hour is not None and (ts is None or ts < hour):  # the block holds the newest value
                    last_ts = t0 + (n - 1) * step if step is not None else hour + _from_le("i", offset)[0]
                    last_q = _from_le("h", qual)[0] if qual is not None else 0
                    newest[series] = Sample(series, last_ts, _from_le("d", val)[0], last_q)
                elif ts is not None:
                    newest[series] = Sample(series, ts, _float(stored), quality)
            return newest

        return await self._run("latest", work)

    async def history(
        self, series_id: int, start: int, end: int, step_ms: int | None = None
    ) -> list[HistoryPoint]:
        resolution = resolution_for_step(step_ms)

        def work(db: sqlite3.Connection) -> list[HistoryPoint]:
            if step_ms is None:
                return [HistoryPoint(t, v, v, v, v, 1, q) for t, v, q in _raw(db, series_id, start, end)]
            if resolution is Resolution.RAW:
                return _aggregate(_raw(db, series_id, start, end), step_ms)
            table = "rollup_1m" if resolution is Resolution.MINUTE else "rollup_1h"
            sql = _HISTORY_ROLLUP_STEP.format(table=table)
            return [
                HistoryPoint(b, _float(low), _float(high), _float(avg), _float(last), n, quality)
                for b, low, high, avg, last, n, quality in db.execute(sql, (series_id, start, end, step_ms))
            ]

        return await self._run("history", work)

    async def count(self) -> int:
        def work(db: sqlite3.Connection) -> int:
            sql = "SELECT (SELECT count(*) FROM samples) + (SELECT coalesce(sum(n), 0) FROM sample_blocks)"
            return int(db.execute(sql).fetchone()[0])

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

    async def compact(self, now_ms: int) -> int:
        """See ``TelemetryStore.compact``; one transaction per hour and chunk of series.

        Each chunk is its own call on the connection's thread, so a write queued behind a long compaction
        (a week of backlog after an upgrade) waits for one chunk, not for the whole backlog.
        """
        after = self._settings.compact_after_ms

        def plan(db: sqlite3.Connection) -> tuple[int, int] | None:
            (minute_mark,) = db.execute(
                "SELECT value FROM telemetry_meta WHERE key = 'minute_mark'"
            ).fetchone()
            if minute_mark is None:  # never rolled up: every row is still needed by the rollup
                return None
            through = bucket_start(min(now_ms - after, minute_mark), HOUR_MS)  # hours ending by here
            return through, int(db.execute("SELECT coalesce(max(id), 0) FROM series").fetchone()[0])

        planned = await self._run("compact", plan)
        if planned is None:
            return 0
        through, last_id = planned
        written, hours, cursor = 0, 0, -(2**63)
        while True:
            oldest = await self._run("compact", partial(_oldest_row_from, since=cursor))
            if oldest is None or bucket_start(oldest, HOUR_MS) + HOUR_MS > through:
                break
            hour = bucket_start(oldest, HOUR_MS)
            for after_id in range(0, last_id, _SERIES_PER_CHUNK):
                chunk = partial(
                    _compact_chunk,
                    hour=hour,
                    after_id=after_id,
                    last_id=after_id + _SERIES_PER_CHUNK,
                    as_text=self._text_exact,
                )
                written += await self._run("compact", chunk)
            hours += 1
            cursor = hour + HOUR_MS
        if written:
            _log.info("sqlite_compacted", blocks=written, hours=hours, through=through)
        return written

    async def apply_retention(self, now_ms: int) -> int:
        settings = self._settings
        cutoffs = (
            (_DELETE_SAMPLES, now_ms - settings.raw_retention_ms),
            (_DELETE_DIRTY, now_ms - settings.raw_retention_ms),
            (_DELETE_ROLLUP_1M, now_ms - settings.rollup_1m_retention_ms),
            (_DELETE_ROLLUP_1H, now_ms - settings.rollup_1h_retention_ms),
            # A block goes when all of its hour is past the cutoff: the hour that straddles it stays whole
            # (at most an hour of raw data beyond retention, instead of unpacking a block to trim it).
            (_DELETE_BLOCKS, now_ms - settings.raw_retention_ms - HOUR_MS),
        )

        def work(db: sqlite3.Connection) -> int:
            removed = 0
            db.execute("BEGIN IMMEDIATE")
            for sql, cutoff in cutoffs:
                removed += db.execute(sql, (cutoff,)).rowcount
            db.execute("COMMIT")
            return removed

        return await self._run("apply_retention", work)
