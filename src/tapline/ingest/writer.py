"""Batched, idempotent writes of everything the host application received.

Rules:
- The hot path (``add``) appends one chunk per Sparkplug message — no per-value work, no IO. ``flush``
  cuts the batch and the commit-mark candidates at the same instant, writes the telemetry in one store
  call, and only when that returns advances the marks (``CommitMarks.written``) — DESIGN §2a.
- A telemetry write that fails (or is cancelled) keeps the batch, in order, for the next flush; the
  marks stay where they were. Writes are idempotent on (series, ts), so retrying after an unknown
  outcome is harmless.
- Relational side effects of the same flush — births metadata, dead letters, commit marks — are written
  after the telemetry (by the writer loop in a task of their own, so they never hold up the next
  telemetry batch); if the relational store fails they are kept and retried (a mark saved late is
  only a longer replay after a restart, never a loss).
- Bounded: dead letters beyond ``dead_letter_buffer`` between two flushes are counted and dropped; the
  caller sheds values beyond its limit (see ``IngestService``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from itertools import repeat

from tapline.domain.model import Reading, ReadingBlock
from tapline.ingest.marks import CommitMarks, NodeKey
from tapline.ingest.metrics import IngestCounters
from tapline.logs import get_logger
from tapline.store.errors import StoreError
from tapline.store.relational import DeadLetter, DeviceRow, NodeMark, PointRow, RelationalStore, SiteRow
from tapline.store.telemetry import SampleRow, SeriesKey, TelemetryStore

__all__ = ["BatchWriter"]

log = get_logger(__name__)

Chunk = tuple[str, Sequence[Reading]]
"""(site, readings of one message)."""


class BatchWriter:
    """Pending telemetry and relational side effects, written together by ``flush``."""

    def __init__(
        self,
        store: TelemetryStore,
        relational: RelationalStore | None,
        marks: CommitMarks,
        counters: IngestCounters,
        *,
        dead_letter_buffer: int = 1_000,
        marks_every_s: float = 0.0,
    ) -> None:
        self.store = store
        self.relational = relational
        self.marks = marks
        self.counters = counters
        self.dead_letter_buffer = dead_letter_buffer
        self.marks_every_s = marks_every_s
        self._marks_saved_at = -float("inf")  # monotonic seconds of the last marks write
        self._persisted: set[NodeKey] = set()  # nodes with a mark saved (later ones may wait)
        self.pending_values = 0
        self._chunks: list[Chunk] = []
        self._series: dict[str, dict[str, int]] = {}  # site -> point -> series id
        self._sites: dict[str, SiteRow] = {}
        self._devices: dict[tuple[str, str], DeviceRow] = {}
        self._points: dict[tuple[str, str], list[PointRow]] = {}  # (site, device) -> its births' points
        self._dead_letters: list[DeadLetter] = []
        self._marks: dict[NodeKey, NodeMark] = {}
        self._lock = asyncio.Lock()
        self._relational_task: asyncio.Task[None] | None = None

    # --- hot path -------------------------------------------------------------------------------------

    def add(self, site: str, readings: Sequence[Reading]) -> None:
        self._chunks.append((site, readings))
        self.pending_values += len(readings)

    def remember_series(self, ids: dict[SeriesKey, int]) -> None:
        for key, series_id in ids.items():
            self._series.setdefault(key.site, {})[key.point] = series_id

    # --- relational side effects ----------------------------------------------------------------------

    def site_born(self, row: SiteRow) -> None:
        self._sites[row.id] = row

    def device_born(self, row: DeviceRow, points: Sequence[PointRow]) -> None:
        """Keep a DBIRTH's metadata for the next flush: a device's points as one list (a city's births
        declare 400,000 points; nothing here is per point unless the device is born twice between two
        flushes — then the newer declaration of each point wins, as ever)."""
        key = (row.site, row.name)
        self._devices[key] = row
        pending = self._points.get(key)
        self._points[key] = list(points) if pending is None else _newest(pending, points)

    def dead_letter(self, letter: DeadLetter) -> None:
        if len(self._dead_letters) >= self.dead_letter_buffer:
            self.counters.dead_letters_dropped += 1
            return
        self._dead_letters.append(letter)
        self.counters.dead_letters += 1

    @property
    def has_work(self) -> bool:
        """Values, births or dead letters waiting to be written. Not commit marks: the background
        flushes save those at most every ``marks_every_s`` (a later save only means a longer replay
        after a restart), so they would keep this true for up to that long after the data is stored."""
        return bool(self._chunks or self._sites or self._devices or self._dead_letters)

    # --- flush ----------------------------------------------------------------------------------------

    async def flush(self, *, background: bool = False) -> int:
        """Write everything pending; raise ``StoreError`` (keeping the batch) if the telemetry write fails.

        ``background``: the relational side effects (births metadata, dead letters, commit marks) go to
        a task of their own instead of being awaited, so a slow relational write — a thousand rooms'
        births are ~90,000 rows — never holds up the telemetry (which the next flush writes meanwhile).
        Not on a ``single_writer`` store (SQLite): there the two would only take turns at the file lock.
        A flush without it first waits for that task, then writes what is left: after it returns,
        everything received before it is stored.
        """
        async with self._lock:
            chunks, values = self._chunks, self.pending_values
            self._chunks, self.pending_values = [], 0
            cut = self.marks.cut()
            inserted = 0
            if chunks:
                try:
                    inserted = await self._write(chunks)
                except BaseException as exc:  # also cancellation: a final flush at shutdown still has it
                    self._chunks = chunks + self._chunks
                    self.pending_values += values
                    if isinstance(exc, StoreError):
                        self.counters.store_failures += 1
                    raise
            for mark in self.marks.written(cut):
                self._marks[(mark.district, mark.site)] = mark
        running = self._relational_task
        if background and not getattr(self.store, "single_writer", False):
            if running is None or running.done():
                self._relational_task = asyncio.create_task(
                    self._write_relational(throttled=True), name="ingest-relational-writes"
                )
            return inserted
        if running is not None and not running.done():
            await asyncio.shield(running)  # a cancelled final flush must not cancel that write
        await self._write_relational()
        return inserted

    async def _write(self, chunks: list[Chunk]) -> int:
        samples = self._samples(chunks)
        if samples is None:
            await self._resolve_series(chunks)
            samples = self._samples(chunks)
            assert samples is not None
        started = time.perf_counter()
        inserted = await self.store.write(samples)
        self.counters.write_seconds.observe(time.perf_counter() - started)
        self.counters.write_rows.observe(len(samples))
        self.counters.batches += 1
        self.counters.stored += inserted
        self.counters.duplicates += len(samples) - inserted
        return inserted

    def _samples(self, chunks: list[Chunk]) -> list[SampleRow] | None:
        """Rows for the store, or None if a series id is not known yet. Strings are not telemetry.

        Plain tuples, not ``Sample``: this runs once per value (see ``SampleRow``)."""
        samples: list[SampleRow] = []
        extend = samples.extend
        series = self._series
        empty: dict[str, int] = {}
        total = 0
        for site, readings in chunks:
            ids = series.get(site, empty)
            total += len(readings)
            try:
                if type(readings) is ReadingBlock:  # no strings on the fast path: columns zipped in C
                    values = readings.values
                    extend(
                        zip(
                            map(ids.__getitem__, readings.points),
                            readings.ts,
                            map(float, values),
                            repeat(readings.quality, len(values)),
                            strict=True,
                        )
                    )
                    continue
                extend(
                    [
                        (ids[r.point], r.ts, float(r.value), r.quality)
                        for r in readings
                        if type(r.value) is not str
                    ]
                )
            except KeyError:
                return None
        self.counters.not_numeric += total - len(samples)
        return samples

    async def _resolve_series(self, chunks: list[Chunk]) -> None:
        """Create or look up the series of every point not seen before, in one store call.

        Plain (site, point) tuples until the call (a city's births bring 400,000 new points): sets and
        sorts of tuples run in C, a ``SeriesKey`` per reading and a key function did not."""
        series = self._series
        empty: dict[str, int] = {}
        missing: set[tuple[str, str]] = set()
        for site, readings in chunks:
            known = series.get(site, empty)
            names = set(readings.points) if type(readings) is ReadingBlock else {r.point for r in readings}
            missing.update((site, point) for point in names if point not in known)
        keys = [SeriesKey(site, point) for site, point in sorted(missing)]
        self.remember_series(await self.store.ensure_series(keys))

    async def _write_relational(self, *, throttled: bool = False) -> None:
        """Write the pending relational side effects; what fails (or is cancelled) is kept for the next
        flush, behind anything newer that arrived meanwhile (births are upserts: newer wins).

        ``throttled`` (the background flushes): commit marks at most every ``marks_every_s``; until
        then they stay pending, the newest per node (a later save covers the earlier ones). Not a
        node's first mark: without one a restarted host could not ask that node for anything."""
        sites, devices, points = self._sites, self._devices, self._points
        letters, marks = self._dead_letters, self._marks
        if (
            throttled
            and time.monotonic() - self._marks_saved_at < self.marks_every_s
            and self._persisted.issuperset(marks)  # a room's first mark is never held back
        ):
            marks = {}  # kept in self._marks for a later flush
        else:
            self._marks = {}
        self._sites, self._devices, self._points, self._dead_letters = {}, {}, {}, []
        relational = self.relational
        if relational is None:
            self._marks = {}
            return
        now = int(time.time() * 1000)
        try:
            if sites or devices or points:
                await relational.record_births(
                    list(sites.values()),
                    list(devices.values()),
                    [p for rows in points.values() for p in rows],
                )
                sites, devices, points = {}, {}, {}
            if letters:
                await relational.add_dead_letters(letters)
                letters = []
            if marks:
                await relational.save_marks(list(marks.values()), now)
                self._persisted.update(marks)
                marks = {}
                self._marks_saved_at = time.monotonic()
        except StoreError as exc:
            self.counters.relational_failures += 1
            log.warning("relational_write_failed", error=str(exc))
        finally:
            self._sites = {**sites, **self._sites}
            self._devices = {**devices, **self._devices}
            for key, rows in self._points.items():  # kept, behind anything newer
                older = points.get(key)
                points[key] = rows if older is None else _newest(older, rows)
            self._points = points
            self._dead_letters = letters + self._dead_letters
            self._marks = {**marks, **self._marks}


def _newest(older: Sequence[PointRow], newer: Sequence[PointRow]) -> list[PointRow]:
    """One device's points from two births: each point as the newer birth declared it, if it did."""
    by_point = {p.point: p for p in older}
    by_point.update({p.point: p for p in newer})
    return list(by_point.values())
