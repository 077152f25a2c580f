"""The gateway's durable local history: every reported value is written here before it is published.

Rules (DESIGN §2a):
- ``append`` commits before it returns; the caller publishes only after that, so a value the cloud
  may have seen is always also on disk here.
- Rows are numbered (``id``) in the order they were reported; backfill and replay read by id or by
  time, in order.
- The history is bounded by age and row count. Pruning removes the oldest rows first and adds them
  to a persistent ``dropped`` counter that is published as a node metric — loss is never silent.
- Durability: WAL with ``synchronous=FULL`` (every commit is fsynced; the measured cost on this class
  of disk is well under a millisecond per commit, and a gateway commits about once per poll cycle).
- The Sparkplug ``bdSeq`` lives in the same file (one atomic transaction per increment), so a power
  cut can never make the gateway reuse the bdSeq of a session the host already saw die.
- sqlite3 calls run in a worker thread (``asyncio.to_thread``) on one connection guarded by a lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tapline.domain.model import Quality, Reading, Value

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
"""


@dataclass(frozen=True, slots=True)
class HistoryRow:
    id: int
    reading: Reading


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
        except sqlite3.Error as exc:
            raise HistoryError(f"{path}: cannot open history: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- meta (bdSeq, counters) -------------------------------------------------------------
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

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._meta("dropped", 0)

    # --- rows ---------------------------------------------------------------------------------
    def _append(self, readings: Sequence[Reading]) -> int:
        with self._lock:
            self._db.execute("BEGIN")
            cursor = self._db.executemany(
                "INSERT INTO history(ts, point, value, quality) VALUES (?, ?, ?, ?)",
                [(r.ts, r.point, r.value, int(r.quality)) for r in readings],
            )
            del cursor
            last = self._db.execute("SELECT max(id) FROM history").fetchone()[0]
            self._db.execute("COMMIT")
            return int(last or 0)

    async def append(self, readings: Sequence[Reading]) -> int:
        """Durably record readings; returns the id of the last row written."""
        if not readings:
            return await asyncio.to_thread(self._last_id)
        try:
            return await asyncio.to_thread(self._append, readings)
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: append failed: {exc}") from exc

    def _last_id(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT max(id) FROM history").fetchone()
            return int(row[0] or 0)

    def _rows(self, sql: str, args: tuple[int, ...]) -> list[HistoryRow]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [
            HistoryRow(int(r[0]), Reading(r[2], int(r[1]), _value(r[3]), Quality(int(r[4])))) for r in rows
        ]

    async def after_id(self, last_id: int, limit: int) -> list[HistoryRow]:
        """Rows with id > ``last_id`` in order (backfill after an outage)."""
        return await asyncio.to_thread(
            self._rows,
            "SELECT id, ts, point, value, quality FROM history WHERE id > ? ORDER BY id LIMIT ?",
            (last_id, limit),
        )

    async def between(self, start_ms: int, end_ms: int, after_id: int, limit: int) -> list[HistoryRow]:
        """Rows with start <= ts < end and id > after_id, in id order (answering a replay request)."""
        return await asyncio.to_thread(
            self._rows,
            "SELECT id, ts, point, value, quality FROM history WHERE ts >= ? AND ts < ? AND id > ? "
            "ORDER BY id LIMIT ?",
            (start_ms, end_ms, after_id, limit),
        )

    def _prune(self, now_ms: int) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            removed = self._db.execute(
                "DELETE FROM history WHERE ts < ?", (now_ms - self.max_age_ms,)
            ).rowcount
            count = self._db.execute("SELECT count(*) FROM history").fetchone()[0]
            if count > self.max_rows:
                removed += self._db.execute(
                    "DELETE FROM history WHERE id IN (SELECT id FROM history ORDER BY id LIMIT ?)",
                    (count - self.max_rows,),
                ).rowcount
            if removed:
                self._set_meta("dropped", self._meta("dropped", 0) + removed)
            self._db.execute("COMMIT")
            return int(removed)

    async def prune(self, now_ms: int) -> int:
        """Apply the age and size bounds; returns rows removed (also added to ``dropped``)."""
        return await asyncio.to_thread(self._prune, now_ms)

    async def count(self) -> int:
        def _count() -> int:
            with self._lock:
                return int(self._db.execute("SELECT count(*) FROM history").fetchone()[0])

        return await asyncio.to_thread(_count)


def _value(raw: object) -> Value:
    if isinstance(raw, bool | int | float | str):
        return raw
    return str(raw)
