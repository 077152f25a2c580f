"""R5w: the ingest's own storage writer alone, on the same database, beside R5 (the COPY ceiling).

Why a separate figure: performance.md §9.4 asks that "the storage writer reaches ≥ 50 % of R5". The
benchmark's ``ratio_copy`` divides the *whole pipeline's* stored rate (receive, decode, alarms, cache,
writer) by R5, which says how far the pipeline is from the database's limit, not how good the writer is.
This measures the writer on its own: the rows arrive as the ingest hands them over — one chunk of
``Reading``s per Sparkplug message (``BatchWriter.add``), series ids already known (steady state) — and
are flushed every ``batch_size`` values as the writer loop does, through the real ``TelemetryStore``
(binary COPY into the partitioned ``samples`` with its primary key on PostgreSQL; multi-row INSERTs on
SQLite). The time counts ``add`` + ``flush`` (row tuples, COPY packing, the transaction, commit); the
rate is values per second of that time.

It runs in a store of its own (PostgreSQL: a fresh schema, dropped after; SQLite: a temporary file
beside the run's database), so the run's loss and duplicate counts never see these rows.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tapline.domain.model import Quality, Reading, ReadingBlock
from tapline.ingest.marks import CommitMarks
from tapline.ingest.metrics import IngestCounters
from tapline.ingest.writer import BatchWriter
from tapline.store.telemetry import SeriesKey, open_telemetry_store, parse_store_url

__all__ = ["writer_reference"]

T0 = 1_767_225_600_000
POINTS_PER_ROOM = 80
VALUES_PER_MESSAGE = 10  # one DDATA of one device, as the fleet sends (benchmarks.md, ingest)


def _chunks(count: int) -> tuple[list[SeriesKey], list[tuple[str, Sequence[Reading]]]]:
    """``count`` values as the ingest's writer receives them: rooms × 80 points, one reading per point
    and second, 10 readings a message, each message one ``ReadingBlock`` (as the host tracker makes)."""
    rooms = max(1, min(1_000, count // (POINTS_PER_ROOM * 10)))
    names = [f"d{p // VALUES_PER_MESSAGE}/P{p:02d}" for p in range(POINTS_PER_ROOM)]
    keys = [SeriesKey(f"PR-{r:04d}", name) for r in range(rooms) for name in names]
    shapes = {  # one shared tuple of names per message shape, as the tracker caches them
        first: tuple(names[first : first + VALUES_PER_MESSAGE])
        for first in range(0, POINTS_PER_ROOM, VALUES_PER_MESSAGE)
    }
    chunks: list[tuple[str, Sequence[Reading]]] = []
    made, second = 0, 0
    while made < count:
        ts = T0 + second * 1000
        for r in range(rooms):
            site = f"PR-{r:04d}"
            for first in range(0, POINTS_PER_ROOM, VALUES_PER_MESSAGE):
                size = min(VALUES_PER_MESSAGE, count - made)
                points = shapes[first] if size == VALUES_PER_MESSAGE else shapes[first][:size]
                values = [0.5 + (p * 7 + second) % 97 for p in range(first, first + size)]
                chunks.append((site, ReadingBlock(points, (ts,) * size, values, Quality.GOOD)))
                made += size
                if made >= count:
                    return keys, chunks
        second += 1
    return keys, chunks


@contextlib.contextmanager
def _scratch_store_url(db: str) -> Any:
    parsed = parse_store_url(db)
    if parsed.backend == "sqlite":
        handle, name = tempfile.mkstemp(prefix="tapline-wref-", suffix=".db", dir=Path(parsed.target).parent)
        os.close(handle)
        try:
            yield f"sqlite:///{name}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(name + suffix).unlink(missing_ok=True)
        return
    import psycopg

    schema = f"bench_wref_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(parsed.target, autocommit=True) as pg:
        pg.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in parsed.target else "?"
    try:
        yield f"{parsed.target}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(parsed.target, autocommit=True) as pg:
            pg.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def writer_reference(db: str, count: int, batch_size: int = 20_000) -> dict[str, Any]:
    """R5w (see the module docstring): values/s of ``BatchWriter`` + ``TelemetryStore.write`` alone."""
    keys, chunks = _chunks(count)
    with _scratch_store_url(db) as url:
        store = open_telemetry_store(url)
        async with store:
            writer = BatchWriter(store, None, CommitMarks(), IngestCounters())
            writer.remember_series(await store.ensure_series(keys))
            stored = 0
            started = time.perf_counter()
            for site, readings in chunks:
                writer.add(site, readings)
                if writer.pending_values >= batch_size:
                    stored += await writer.flush()
            stored += await writer.flush()
            elapsed = time.perf_counter() - started
            counted = await store.count()
    if stored != count or counted != count:
        raise RuntimeError(f"writer reference stored {stored} (counted {counted}) of {count} values")
    return {
        "rows": count,
        "seconds": round(elapsed, 3),
        "values_per_s": round(count / elapsed),
        "method": f"BatchWriter.add per message ({VALUES_PER_MESSAGE} values) + flush every {batch_size:,}"
        " values through the real TelemetryStore, series ids known, in a scratch schema/file",
    }
