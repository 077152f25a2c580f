"""The gateway's durable local history: every reported value is written here before it is published.

Rules (DESIGN §2a):
- ``append`` commits before it returns; the caller publishes only after that, so a value the cloud
  may have seen is always also on disk here.
- Rows are numbered (``id``) in the order they were reported; backfill reads by id, replay by time,
  both in id order.
- Bounds and drop policy (``prune``): rows older than ``max_age_ms`` are removed; then, while more
  than ``max_rows`` remain, the oldest *telemetry* rows are removed. Event rows (interlock actions,
  points named ``Interlock/…``) are removed by age only, never to make room.
- Every removed row is counted, persistently, in one of two counters, split at the resume mark the
  caller passes (the highest id that was published and has outlived the dead-link detection window,
  see node.py): ``pruned`` (id <= mark: retention of data that left the gateway) and ``dropped``
  (id > mark: data that may never have reached the cloud — real loss, published as
  ``Gateway/HistoryDropped`` and logged). Nothing is ever removed without being counted.
- Durability: WAL with ``synchronous=FULL`` (every commit is fsynced, so a power cut loses nothing
  that ``append`` returned; the gateway commits one small transaction per polled device and cycle).
- The Sparkplug ``bdSeq``, the resume mark and the interlock snapshot live in the same file (one
  atomic transaction each), so a power cut can never make the gateway reuse the bdSeq of a session
  the host already saw die.
- sqlite3 calls run in a worker thread (``asyncio.to_thread``) on one connection guarded by a lock.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tapline.domain.model import Quality, Reading, Value

EVENT_PREFIX = "Interlock/"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    point TEXT NOT NULL,
    value,
    quality INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS history_ts ON history (ts);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class HistoryRow:
    id: int
    reading: Reading


@dataclass(frozen=True, slots=True)
class PruneResult:
    pruned: int  # rows removed that had left the gateway
    dropped: int  # rows removed that may never have reached the cloud


class HistoryError(Exception):
    """The history file cannot be opened or written."""


class History:
    """SQLite-backed, bounded, durable record of everything the gateway reported."""

    def __init__(self, path: Path, *, max_rows: int, max_age_ms: int) -> None:
        self.path = path
        self.max_rows = max_rows
        self.max_age_ms = max_age_ms
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise HistoryError(f"{path}: cannot open history: {exc}") from exc
        self._last_id = self._scalar("SELECT max(id) FROM history")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _scalar(self, sql: str, args: tuple[int | str, ...] = ()) -> int:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # --- meta (bdSeq, marks, counters) --------------------------------------------------------

    def _meta(self, key: str, default: int) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else default

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def next_bd_seq(self) -> int:
        """Advance and persist the bdSeq for a new MQTT connection (0..255, wrapping)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            value = (self._meta("bd_seq", -1) + 1) % 256
            self._set_meta("bd_seq", value)
            self._db.execute("COMMIT")
            return value

    def meta(self, key: str, default: int = 0) -> int:
        with self._lock:
            return self._meta(key, default)

    def set_meta(self, key: str, value: int) -> None:
        with self._lock:
            self._set_meta(key, value)

    @property
    def dropped(self) -> int:
        return self.meta("dropped")

    @property
    def pruned(self) -> int:
        return self.meta("pruned")

    @property
    def last_id(self) -> int:
        """Id of the newest row (0 when empty); rows are only ever appended above it."""
        return self._last_id

    def load_state(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def save_state(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO state(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # --- rows ---------------------------------------------------------------------------------

    def _append(self, readings: Sequence[Reading]) -> tuple[int, int]:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO history(ts, point, value, quality) VALUES (?, ?, ?, ?)",
                    [(r.ts, r.point, r.value, int(r.quality)) for r in readings],
                )
                last = int(self._db.execute("SELECT max(id) FROM history").fetchone()[0])
                self._db.execute("COMMIT")
            except sqlite3.Error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._last_id = last
            return last - len(readings) + 1, last

    async def append(self, readings: Sequence[Reading]) -> tuple[int, int]:
        """Durably record readings; returns the (first, last) ids written, contiguous."""
        if not readings:
            return self._last_id + 1, self._last_id
        try:
            return await asyncio.to_thread(self._append, readings)
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: append failed: {exc}") from exc

    def _rows(self, sql: str, args: tuple[int, ...]) -> list[HistoryRow]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [
            HistoryRow(int(r[0]), Reading(r[2], int(r[1]), _value(r[3]), Quality(int(r[4])))) for r in rows
        ]

    async def after_id(self, last_id: int, limit: int, upto_id: int | None = None) -> list[HistoryRow]:
        """Rows with ``last_id`` < id (<= ``upto_id``) in id order (backfill after an outage)."""
        return await asyncio.to_thread(
            self._rows,
            "SELECT id, ts, point, value, quality FROM history WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
            (last_id, upto_id if upto_id is not None else self._last_id, limit),
        )

    async def between(
        self, start_ms: int, end_ms: int, after_id: int, limit: int, upto_id: int | None = None
    ) -> list[HistoryRow]:
        """Rows with start <= ts < end and after_id < id (<= upto_id), in id order (a replay)."""
        return await asyncio.to_thread(
            self._rows,
            "SELECT id, ts, point, value, quality FROM history WHERE ts >= ? AND ts < ? AND id > ? "
            "AND id <= ? ORDER BY id LIMIT ?",
            (start_ms, end_ms, after_id, upto_id if upto_id is not None else self._last_id, limit),
        )

    def _prune(self, now_ms: int, resume_id: int) -> PruneResult:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            cutoff = now_ms - self.max_age_ms
            counts = self._db.execute(
                "SELECT count(*), coalesce(sum(id > ?), 0) FROM history WHERE ts < ?", (resume_id, cutoff)
            ).fetchone()
            self._db.execute("DELETE FROM history WHERE ts < ?", (cutoff,))
            removed, unpublished = int(counts[0]), int(counts[1])
            excess = int(self._db.execute("SELECT count(*) FROM history").fetchone()[0]) - self.max_rows
            if excess > 0:
                victims = (
                    "SELECT id FROM history WHERE substr(point, 1, ?) != ? ORDER BY id LIMIT ?",
                    (len(EVENT_PREFIX), EVENT_PREFIX, excess),
                )
                row = self._db.execute(
                    f"SELECT count(*), coalesce(sum(id > ?), 0) FROM ({victims[0]})",  # noqa: S608
                    (resume_id, *victims[1]),
                ).fetchone()
                self._db.execute(f"DELETE FROM history WHERE id IN ({victims[0]})", victims[1])  # noqa: S608
                removed += int(row[0])
                unpublished += int(row[1])
            result = PruneResult(pruned=removed - unpublished, dropped=unpublished)
            if result.pruned:
                self._set_meta("pruned", self._meta("pruned", 0) + result.pruned)
            if result.dropped:
                self._set_meta("dropped", self._meta("dropped", 0) + result.dropped)
            self._db.execute("COMMIT")
            return result

    async def prune(self, now_ms: int, resume_id: int) -> PruneResult:
        """Apply the age and size bounds (module rules); ids above ``resume_id`` count as dropped."""
        return await asyncio.to_thread(self._prune, now_ms, resume_id)

    async def count(self) -> int:
        return await asyncio.to_thread(self._scalar, "SELECT count(*) FROM history")


def _value(raw: object) -> Value:
    if raw is None:
        return math.nan  # SQLite stores a NaN (a broken transmitter's float) as NULL
    if isinstance(raw, bool | int | float | str):
        return raw
    return str(raw)
