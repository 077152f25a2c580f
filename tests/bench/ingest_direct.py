"""Rough ingest throughput: pre-encoded Sparkplug payloads fed straight into ``IngestService.on_message``.

No broker: this measures the host application itself — tracker (decode, seq, aliases), latest-value
cache, batching, commit marks, and the store write — with the real writer task running beside the feed.

    .venv/bin/python -m tests.bench.ingest_direct --db sqlite:////tmp/bench.db --sites 200 --messages 100
    .venv/bin/python -m tests.bench.ingest_direct --db postgresql://postgres@127.0.0.1/bench ...
    .venv/bin/python -m tests.bench.ingest_direct --db none ...   (a store that only counts)

Each message is one DDATA of one device with ``--points`` values (aliases, no datatypes, like a gateway).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tapline import logs
from tapline.domain.model import DataType, PointSpec, Reading
from tapline.ingest.host import IngestService, IngestSettings
from tapline.ingest.live import LiveState
from tapline.mqtt import Message
from tapline.sparkplug.edge_session import EdgeNodeSession
from tapline.store.relational import RelationalStore
from tapline.store.telemetry import (
    HistoryPoint,
    Sample,
    SampleRow,
    SeriesKey,
    StoreLifecycle,
    open_telemetry_store,
)

T0 = 1_767_225_600_000


class CountingStore(StoreLifecycle):
    """A store that keeps nothing: the ceiling of the ingest path without a database."""

    def __init__(self) -> None:
        self.rows = 0
        self._ids: dict[SeriesKey, int] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ensure_series(self, keys: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
        return {k: self._ids.setdefault(k, len(self._ids) + 1) for k in keys}

    async def write(self, samples: Sequence[SampleRow]) -> int:
        self.rows += len(samples)
        return len(samples)

    async def latest(self, series_ids: Sequence[int] | None = None) -> dict[int, Sample]:
        return {}

    async def history(
        self, series_id: int, start: int, end: int, step_ms: int | None = None
    ) -> list[HistoryPoint]:
        return []

    async def rollup(self, now_ms: int) -> int:
        return 0

    async def compact(self, now_ms: int) -> int:
        return 0

    async def apply_retention(self, now_ms: int) -> int:
        return 0

    async def count(self) -> int:
        return self.rows


@dataclass
class Result:
    values: int
    messages: int
    seconds: float
    decode_seconds: float

    @property
    def values_per_s(self) -> float:
        return self.values / self.seconds


def payloads(sites: int, messages: int, points: int, run: str) -> tuple[list[Message], list[Message], int]:
    """(births, data in arrival order, values): ``messages`` DDATA per site, round-robin over sites."""
    specs = [PointSpec("plc", f"P{k:03d}", DataType.FLOAT) for k in range(points)]
    births: list[Message] = []
    per_site: list[list[Message]] = []
    for s in range(sites):
        session = EdgeNodeSession(f"bench{run}", f"PR-{run}-{s:05d}", 1)
        births.append(Message(*session.nbirth([], T0)))
        births.append(Message(*session.dbirth("plc", [(spec, 0.0, T0) for spec in specs], T0)))
        data = []
        for m in range(messages):
            ts = T0 + (m + 1) * 1000
            readings = [Reading(spec.path, ts, 0.1 + 0.001 * ((m + k) % 500)) for k, spec in enumerate(specs)]
            data.append(Message(*session.ddata("plc", readings, ts)))
        per_site.append(data)
    ordered = [per_site[s][m] for m in range(messages) for s in range(sites)]
    return births, ordered, sites * messages * points


async def run(db: str, sites: int, messages: int, points: int, batch: int) -> Result:
    run_id = f"{time.time_ns() % 10**8}"
    births, data, values = payloads(sites, messages, points, run_id)
    store = CountingStore() if db == "none" else open_telemetry_store(db)
    await store.open()
    relational = None if db == "none" else RelationalStore(db)
    if relational is not None:
        await relational.open()
    host = IngestService(
        store, LiveState(), IngestSettings(batch_size=batch, batch_age_s=0.2), relational=relational
    )
    for message in births:
        await host.on_message(message)
    await host.flush()
    writer = asyncio.create_task(host.run_writer())
    started = time.perf_counter()
    decode = 0.0
    for k, message in enumerate(data):
        t = time.perf_counter()
        await host.on_message(message)
        decode += time.perf_counter() - t
        if k % 50 == 0:
            await asyncio.sleep(0)  # let the writer cut batches, as the MQTT loop would
    writer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writer
    await host.flush()
    elapsed = time.perf_counter() - started
    stored = host.counters.stored + host.counters.duplicates
    assert stored >= values, (stored, values)
    if relational is not None:
        await relational.close()
    await store.close()
    return Result(values, len(data), elapsed, decode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="none")
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--points", type=int, default=30)
    parser.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args()
    logs.configure("warning")
    result = asyncio.run(run(args.db, args.sites, args.messages, args.points, args.batch))
    alone = result.values / result.decode_seconds
    print(
        f"{args.db}: {result.values} values in {result.messages} messages, {result.seconds:.2f} s"
        f" -> {result.values_per_s:,.0f} values/s (on_message alone: {alone:,.0f}/s)"
    )


if __name__ == "__main__":
    main()
