"""The alarm side of the cloud as ``bootstrap.build_cloud`` wires it (engine, correlator, hub, journal
writer, alarm service) on a real store, and a real HTTP server for it: shared by the API and console
tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from tapline.alarms.correlate import Correlator
from tapline.alarms.engine import AlarmEngine
from tapline.alarms.hub import AlarmHub
from tapline.alarms.journal import JournalWriter
from tapline.alarms.service import AlarmService
from tapline.domain.model import Reading, Value
from tapline.ingest.alarm_feed import AlarmFeed
from tapline.ingest.live import LiveState
from tapline.services import Services
from tapline.store.alarm_journal import AlarmJournalStore
from tapline.store.relational import RelationalStore
from tapline.store.telemetry import open_telemetry_store
from tests.helpers import eventually, free_port
from tests.unit.alarms.kit import STEADY, T0

SITE, DISTRICT = "PR-0001", "jianghan"


@dataclass
class Cloud:
    """The alarm side of the cloud as ``bootstrap.build_cloud`` wires it, on a real store."""

    url: str
    relational: RelationalStore
    engine: AlarmEngine
    hub: AlarmHub
    feed: AlarmFeed
    writer: JournalWriter
    services: Services
    district: str = DISTRICT
    now: int = T0

    def send(self, at: int, values: dict[str, Value]) -> None:
        self.now = at
        self.feed.data(SITE, self.district, [Reading(p, at, v) for p, v in values.items()], at)


@contextlib.asynccontextmanager
async def cloud_on(
    url: str,
    prefix: str = "AL",
    district: str = DISTRICT,
    clock: Callable[[], int] | None = None,
    journal_interval_s: float = 0.5,
) -> AsyncIterator[Cloud]:
    """The alarm side on ``url``; the service's clock is ``clock``, else the last ``send``'s time.
    (PostgreSQL tests share one database per session: give each test its own district.)"""
    telemetry = open_telemetry_store(url)
    await telemetry.open()
    relational = RelationalStore(url)
    await relational.open()
    live = LiveState()
    live.register(SITE, district, "江汉花园1号泵房")
    correlator = Correlator()
    engine = AlarmEngine(STEADY, grouping=correlator, id_prefix=prefix)
    hub = AlarmHub()
    journal = AlarmJournalStore(relational)
    writer = JournalWriter(journal, interval_s=journal_interval_s)
    hub.add_sink(writer.take)
    services = Services(live, telemetry)
    cloud = Cloud(url, relational, engine, hub, AlarmFeed(engine, hub), writer, services, district)
    services.extras.update(
        alarms=engine,
        incidents=correlator,
        alarm_hub=hub,
        alarm_service=AlarmService(
            engine, correlator, clock or (lambda: cloud.now), hub=hub, journal=journal
        ),
    )
    try:
        yield cloud
    finally:
        await relational.close()
        await telemetry.close()


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a free loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    try:
        await eventually(started, timeout=10, interval=0.02, what="the HTTP server to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
