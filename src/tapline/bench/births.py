"""``tapline bench births``: what one room's birth costs the cloud, phase by phase (issue 7).

Why: when a whole city comes online (5,000 NBIRTH + ~45,000 DBIRTH, 400,000 series) the ingest spends
most of its CPU on births, and ``bench ingest`` only shows it as a worse µs-per-value figure mixed with
broker, generator and backlog effects. This bench isolates the births, repeatably and without a broker:

1. The fleet generator's own ``RoomFeed`` encodes every room's NBIRTH and DBIRTHs (the wire tapline's
   gateways and ``tapline sim fleet`` send), before anything is timed.
2. The cloud is wired as ``bootstrap.build_cloud`` wires it (ingest, latest-value cache, alarm engine
   and feed, stores, journal) on ``--db`` — a fresh database: series and births metadata are new.
3. **receive**: every payload goes straight to ``IngestService.on_message`` (what the MQTT receive loop
   calls), so decode, the host tracker, the cache, the alarm feed and the writer's buffers run exactly
   as in production; ``decode_track`` is the share spent inside ``HostTracker.on_message``.
4. **flush**: one ``IngestService.flush`` writes it all: ``series`` (``TelemetryStore.ensure_series``),
   ``samples`` (``TelemetryStore.write``, the births' values), ``births_metadata``
   (``RelationalStore.record_births``) and the rest (row building, commit marks).

Figures are CPU, not wall time, so they hold on a shared box: this process's CPU (``time.process_time``:
every thread, so the stores' worker threads are in it) per phase, and on PostgreSQL the database
backends' CPU (``/proc``), each also per room birth (µs). Run it twice on two fresh databases and
compare medians; a few hundred to a couple of thousand rooms give stable figures.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tapline.bench.ingest import postgres_backend_pids
from tapline.bench.procstat import cpu_seconds
from tapline.bootstrap import build_cloud
from tapline.ingest.host import IngestSettings
from tapline.mqtt import BrokerUrl, Message
from tapline.sim.district import DistrictSupply
from tapline.sim.fleet import FleetSpec, RoomFeed, plan_rooms
from tapline.sim.names import DISTRICTS
from tapline.sparkplug.topics import MessageType, Topic

__all__ = ["BirthsBench", "encode_births", "run_births_bench"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class BirthsBench:
    db: str
    rooms: int = 1_000
    points: int = 80
    districts: int = 8
    seed: int = 1


def encode_births(bench: BirthsBench, now_ms: int) -> list[tuple[str, bytes]]:
    """Every room's NBIRTH and DBIRTHs as the fleet generator publishes them, room after room."""
    spec = FleetSpec(sites=bench.rooms, points=bench.points, districts=bench.districts, seed=bench.seed)
    plans = plan_rooms(spec)
    supplies = {name: DistrictSupply(name, spec.seed) for name in {plan.district for plan in plans}}
    messages: list[tuple[str, bytes]] = []
    for plan in plans:
        feed = RoomFeed(plan, spec, supplies[plan.district], spec.offset_ms(plan.index, spec.sites))
        feed.new_session()
        messages += feed.births(now_ms)
    return messages


class _Meter:
    """CPU of this process (all threads) and of the database backends, split into named phases."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.cpu: dict[str, float] = {}
        self.db_cpu: dict[str, float] = {}
        self._baseline: dict[int, float] = {}

    def _backends(self) -> dict[int, float]:
        if not self.db.startswith("postgresql"):
            return {}
        return {pid: cpu_seconds([pid]) for pid in postgres_backend_pids(self.db)}

    def start(self) -> tuple[float, dict[int, float]]:
        return time.process_time(), self._backends()

    def stop(self, name: str, started: tuple[float, dict[int, float]]) -> None:
        cpu = time.process_time() - started[0]
        backends = self._backends()
        db = sum(now - started[1].get(pid, 0.0) for pid, now in backends.items())
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu
        self.db_cpu[name] = self.db_cpu.get(name, 0.0) + db

    def timed(self, name: str, call: Callable[..., Awaitable[_T]]) -> Callable[..., Awaitable[_T]]:
        """``call`` with its process CPU added to ``name`` (the caller subtracts it from its phase)."""

        async def wrapper(*args: Any, **kwargs: Any) -> _T:
            before = time.process_time()
            try:
                return await call(*args, **kwargs)
            finally:
                self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - before

        return wrapper


async def run_births_bench(bench: BirthsBench) -> dict[str, Any]:
    """Encode, receive and flush ``bench.rooms`` rooms' births once; return the figures (module doc)."""
    now_ms = time.time_ns() // 1_000_000
    started = time.process_time()
    messages = encode_births(bench, now_ms)
    encode_s = time.process_time() - started
    kinds = {MessageType.NBIRTH: 0, MessageType.DBIRTH: 0}
    for topic, _ in messages:
        kinds[Topic.parse(topic).type] += 1
    names = tuple(DISTRICTS[: bench.districts])
    cloud = await build_cloud(
        bench.db,
        BrokerUrl.parse("mqtt://127.0.0.1:9"),  # the MQTT side is not started (module docstring)
        settings=IngestSettings(groups=names, batch_size=1 << 30, max_pending_values=1 << 30),
    )
    ingest = cloud.ingest
    meter = _Meter(bench.db)
    tracker_cpu = 0.0
    track = ingest.tracker.on_message

    def tracked(topic: str, payload: bytes, now: int) -> Any:
        nonlocal tracker_cpu
        before = time.process_time()
        try:
            return track(topic, payload, now)
        finally:
            tracker_cpu += time.process_time() - before

    ingest.tracker.on_message = tracked  # type: ignore[method-assign,assignment]
    store, relational = ingest.writer.store, ingest.writer.relational
    assert relational is not None  # build_cloud always opens it
    store.ensure_series = meter.timed("series", store.ensure_series)  # type: ignore[method-assign,assignment]
    store.write = meter.timed("samples", store.write)  # type: ignore[method-assign,assignment]
    relational.record_births = meter.timed(  # type: ignore[method-assign,assignment]
        "births_metadata", relational.record_births
    )
    try:
        phase = meter.start()
        for topic, payload in messages:
            await ingest.on_message(Message(topic, payload))
        meter.stop("receive", phase)
        values = ingest.counters.readings
        phase = meter.start()
        await ingest.flush()
        meter.stop("flush", phase)
        stored = ingest.counters.stored
        rejected = ingest.counters.rejected
    finally:
        await cloud.close()
    cpu = meter.cpu
    cpu["decode_track"] = tracker_cpu
    cpu["flush_other"] = cpu["flush"] - sum(
        cpu.get(name, 0.0) for name in ("series", "samples", "births_metadata")
    )
    per_room = 1e6 / bench.rooms
    total = cpu["receive"] + cpu["flush"]
    db_total = sum(meter.db_cpu.values())
    order = ("receive", "decode_track", "flush", "series", "samples", "births_metadata", "flush_other")
    return {
        "rooms": bench.rooms,
        "points": bench.points,
        "db": bench.db.split("://", 1)[0],
        "nbirth": kinds[MessageType.NBIRTH],
        "dbirth": kinds[MessageType.DBIRTH],
        "payload_bytes": sum(len(payload) for _, payload in messages),
        "values": values,
        "stored": stored,
        "rejected": rejected,
        "encode_cpu_s": round(encode_s, 3),
        "cpu_s": {name: round(cpu.get(name, 0.0), 3) for name in order},
        "us_per_room": {name: round(cpu.get(name, 0.0) * per_room) for name in order},
        "ingest_us_per_room": round(total * per_room),
        "db_cpu_s": round(db_total, 3) if meter.db_cpu and bench.db.startswith("postgresql") else None,
        "db_us_per_room": round(db_total * per_room) if bench.db.startswith("postgresql") else None,
        "total_us_per_room": round((total + db_total) * per_room),
    }
