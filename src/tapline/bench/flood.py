"""``tapline bench flood``: the alarm side of the cloud during an alarm flood (issue 7: "≤ 2 s during a
flood when every room raises alarms within 10 s").

What runs: the cloud as ``bootstrap.build_cloud`` wires it (alarm engine with the incident correlator,
alarm hub, journal writer into the real store, optional notifier), its HTTP API served by uvicorn in
this process, and ``--consoles`` live-push clients (``GET /api/v1/stream``, real HTTP) in this process
too — the clients' CPU is counted against the cloud, as a pessimist would. The ingest's MQTT side is
not started: readings go straight into the ``AlarmFeed`` exactly where ``IngestService`` hands them
over, and a ticker task calls ``AlarmFeed.tick`` every ``tick_s`` like the ingest's loop. So the figure
is the alarm path only; transport latency (gateway → broker → ingest) is what ``bench ingest`` times.

The scenario: every room reports healthy values; then each room, at a random moment inside a
``window_s`` window, loses two pump drives (fault, stopped), floods, smokes, drains its tank and
over-pressures its outlet — about ten alarms a room, most of them after their rules' on-delays (2 to
30 s); ``hold_s`` later every room recovers, again at random moments inside a ``window_s`` window
(the return-to-normal transitions flood the path a second time).

Reported (JSON): alarm events published and received by each console, peak events per second,
``push_p50_ms`` / ``push_p99_ms`` / ``push_max_ms`` (console receive time − the transition's time: the
reading's time for immediate alarms, the moment the on-delay ran out for delayed ones, so the ticker's
granularity is included) over every transition, and ``raise_push_*`` over the activations alone,
``journal_lag_max_ms`` (the oldest event still waiting for the database,
sampled every 100 ms), whether every event reached the journal, the announced alarms and incidents an
operator was shown (fault localisation at work), CPU seconds and peak RSS of the process.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn

from tapline.alarms.engine import AlarmEngine
from tapline.alarms.hub import AlarmHub
from tapline.alarms.journal import JournalWriter
from tapline.api.app import create_app
from tapline.bench.ingest import percentile
from tapline.bench.procstat import rss_mb
from tapline.bootstrap import build_cloud, demo_users
from tapline.domain.model import Reading, Value
from tapline.ingest.alarm_feed import AlarmFeed
from tapline.ingest.host import IngestSettings
from tapline.mqtt import BrokerUrl

__all__ = ["FLOOD", "HEALTHY", "FloodBench", "run_flood_bench"]

HEALTHY: dict[str, Value] = {
    "plc/InletPressure": 0.22,
    "plc/OutletPressure": 0.452,
    "plc/OutletPressureSP": 0.45,
    "plc/TankLevel": 3.2,
    "plc/Flow": 31.5,
    "plc/Mode": 0,
    **{f"vfd{n}/Running": n < 3 for n in (1, 2, 3)},
    **{f"vfd{n}/Fault": False for n in (1, 2, 3)},
    **{f"vfd{n}/Frequency": 41.0 if n < 3 else 0.0 for n in (1, 2, 3)},
    **{f"vfd{n}/Current": 12.5 if n < 3 else 0.0 for n in (1, 2, 3)},
    **{f"vfd{n}/FaultCode": 0 for n in (1, 2, 3)},
    "wq/Chlorine": 0.31,
    "wq/Turbidity": 0.21,
    "wq/PH": 7.3,
    "env/Flood": False,
    "env/Door": False,
    "env/Smoke": False,
    "env/Temperature": 21.0,
    "env/Humidity": 61.0,
    "power/Mains": True,
    "power/UPS": False,
    "power/Voltage": 381.0,
}
FLOOD: dict[str, Value] = {
    "vfd1/Fault": True,
    "vfd1/FaultCode": 8976,
    "vfd1/Running": False,
    "vfd2/Fault": True,
    "vfd2/FaultCode": 8976,
    "vfd2/Running": False,
    "env/Flood": True,
    "env/Smoke": True,
    "plc/TankLevel": 0.2,
    "plc/OutletPressure": 1.5,
}
"""A bad day in one room: two drives trip, water on the floor, smoke, an empty tank, a stuck PRV."""


@dataclass(frozen=True, slots=True)
class FloodBench:
    db: str
    rooms: int = 5_000
    districts: int = 8
    window_s: float = 10.0
    hold_s: float = 40.0
    drain_s: float = 8.0
    consoles: int = 2
    tick_s: float = 0.25
    notify: Path | None = None
    seed: int = 1


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Console:
    """One live-push client: keeps (receive time, transition time) of every alarm frame."""

    def __init__(self) -> None:
        self.latencies: list[int] = []
        self.raised: list[int] = []  # of the activations alone (the alarms the flood is about)
        self.frames = 0
        self.resyncs = 0

    async def run(self, base: str, ready: asyncio.Event) -> None:
        async with (
            httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10.0, read=None)) as http,
            http.stream("GET", "/api/v1/stream") as sse,
        ):
            ready.set()
            event = ""
            async for line in sse.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                    self.resyncs += event == "resync"
                elif line.startswith("data: ") and event == "alarm":
                    self.frames += 1
                    data = orjson.loads(line[6:])
                    latency = wall_ms() - data["at"]
                    self.latencies.append(latency)
                    if data["event"] == "activate":
                        self.raised.append(latency)


async def _ticker(feed: AlarmFeed, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        feed.tick(wall_ms())


async def _feed_all(feed: AlarmFeed, rooms: list[tuple[str, str]], values: dict[str, Value]) -> None:
    """Every room reports ``values`` now (yielding now and then, as a receive loop would)."""
    for i, (site, district) in enumerate(rooms):
        now = wall_ms()
        feed.data(site, district, [Reading(p, now, v) for p, v in values.items()], now)
        if i % 200 == 199:
            await asyncio.sleep(0)


async def _spread(
    feed: AlarmFeed, rooms: list[tuple[str, str]], values: dict[str, Value], window_s: float, seed: int
) -> None:
    """Each room reports ``values`` at a random moment inside the window, in time order."""
    rng = random.Random(seed)  # noqa: S311 - a benchmark schedule, not a secret
    loop = asyncio.get_running_loop()
    start = loop.time()
    schedule = sorted((rng.uniform(0, window_s), site, district) for site, district in rooms)
    for offset, site, district in schedule:
        delay = start + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now = wall_ms()
        feed.data(site, district, [Reading(p, now, v) for p, v in values.items()], now)


async def _sample_journal_lag(journal: JournalWriter, out: list[int]) -> None:
    while True:
        oldest = journal.oldest_pending_at
        if oldest is not None:
            out.append(wall_ms() - oldest)
        await asyncio.sleep(0.1)


async def run_flood_bench(bench: FloodBench) -> dict[str, Any]:
    """Run the flood scenario once and return its figures (see the module docstring)."""
    names = [f"fd{n}" for n in range(bench.districts)]
    rooms = [(f"PR-F{n:05d}", names[n % bench.districts]) for n in range(bench.rooms)]
    cloud = await build_cloud(
        bench.db,
        BrokerUrl.parse("mqtt://127.0.0.1:9"),  # the MQTT side is not started (module docstring)
        settings=IngestSettings(groups=tuple(names)),
        notify=bench.notify,
    )
    assert cloud.journal is not None  # build_cloud always writes the journal
    journal = cloud.journal
    engine: AlarmEngine = cloud.services.extras["alarms"]
    hub: AlarmHub = cloud.services.extras["alarm_hub"]
    feed = AlarmFeed(engine, hub)
    for site, district in rooms:
        cloud.live.register(site, district, site)
        engine.configure(site, district)
    shown: list[int] = []
    per_second: Counter[int] = Counter()

    def count(event: Any) -> None:
        per_second[event.at // 1000] += 1
        if event.announced:
            shown.append(event.at)

    hub.add_sink(count)
    app = create_app(cloud.services, demo_users("bench-flood"), public_read=True)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    consoles = [_Console() for _ in range(bench.consoles)]
    lags: list[int] = []
    cpu0, started = _cpu_s(), wall_ms()
    try:
        async with asyncio.TaskGroup() as tasks:  # the background tasks are cancelled at the end
            serving = tasks.create_task(server.serve(), name="http")
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to await
                await asyncio.sleep(0.02)
            port = server.servers[0].sockets[0].getsockname()[1]
            background = [
                serving,
                tasks.create_task(_ticker(feed, bench.tick_s), name="ticker"),
                tasks.create_task(_sample_journal_lag(journal, lags), name="lag"),
                tasks.create_task(journal.run(), name="journal"),
            ]
            if cloud.notifier is not None:
                background.append(tasks.create_task(cloud.notifier.run(), name="notify"))
            for console in consoles:
                ready = asyncio.Event()
                background.append(tasks.create_task(console.run(f"http://127.0.0.1:{port}", ready)))
                await ready.wait()
            await _feed_all(feed, rooms, HEALTHY)
            await asyncio.sleep(2)
            flood_start = wall_ms()
            await _spread(feed, rooms, FLOOD, bench.window_s, bench.seed)
            await asyncio.sleep(max(0.0, bench.hold_s - bench.window_s))
            await _spread(feed, rooms, HEALTHY, bench.window_s, bench.seed + 1)
            await asyncio.sleep(bench.drain_s)
            flood_end = wall_ms()
            server.should_exit = True
            for task in background[1:]:
                task.cancel()
    finally:
        await journal.flush()
        cpu = _cpu_s() - cpu0
        await cloud.close()
    latencies = consoles[0].latencies
    incidents = cloud.services.extras["incidents"].incidents()
    return {
        "rooms": bench.rooms,
        "districts": bench.districts,
        "window_s": bench.window_s,
        "consoles": bench.consoles,
        "db": bench.db.split("://", 1)[0],
        "events": hub.published,
        "events_per_room": round(hub.published / bench.rooms, 2),
        "peak_events_per_s": max(per_second.values()) if per_second else 0,
        "received": [c.frames for c in consoles],
        "resyncs": [c.resyncs for c in consoles],
        "push_p50_ms": percentile(latencies, 50),
        "push_p99_ms": percentile(latencies, 99),
        "push_max_ms": max(latencies) if latencies else None,
        "push_p99_ms_all_consoles": percentile([x for c in consoles for x in c.latencies], 99),
        "raise_push_p50_ms": percentile(consoles[0].raised, 50),
        "raise_push_p99_ms": percentile(consoles[0].raised, 99),
        "raise_push_max_ms": max(consoles[0].raised) if consoles[0].raised else None,
        "journal_written": journal.written,
        "journal_complete": journal.written == hub.published and journal.dropped == 0,
        "journal_lag_max_ms": max(lags) if lags else 0,
        "announced": len(shown),
        "incidents": len(incidents),
        "flood_s": round((flood_end - flood_start) / 1000, 1),
        "wall_s": round((wall_ms() - started) / 1000, 1),
        "cpu_s": round(cpu, 2),
        "peak_rss_mb": rss_mb(os.getpid(), "VmHWM"),
    }
