"""A plain subscriber for the fleet tests: everything published under some groups, with receive times."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from tapline.domain.model import Value
from tapline.mqtt import BrokerUrl
from tapline.mqtt_fast import FastClient
from tapline.sparkplug.host_session import Data, Event, HostTracker, Rejected, RequestRebirth


@dataclass
class Observer:
    """Collects ``(topic, payload, received_ms)`` of everything under the watched topics."""

    client: FastClient
    received: list[tuple[str, bytes, int]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def of_type(self, message_type: str) -> list[tuple[str, bytes, int]]:
        return [item for item in self.received if item[0].split("/")[2] == message_type]

    async def wait_for(self, count: int, message_type: str, timeout: float = 10.0) -> None:
        """Wait until ``count`` messages of ``message_type`` have arrived (an event, not a poll)."""
        async with asyncio.timeout(timeout):
            while len(self.of_type(message_type)) < count:
                self.arrived.clear()
                await self.arrived.wait()

    def host_events(self, tracker: HostTracker | None = None) -> list[Event]:
        """Everything received, through a Sparkplug host tracker (commands are skipped)."""
        host = tracker or HostTracker()
        events: list[Event] = []
        for topic, payload, received_ms in self.received:
            events += host.on_message(topic, payload, received_ms)
        return events


def problems(events: Sequence[Event]) -> list[Event]:
    return [event for event in events if isinstance(event, Rejected | RequestRebirth)]


def received_values(events: Sequence[Event]) -> set[tuple[str, str, int, Value]]:
    """``(site, point, ts, value)`` of every reading a host got."""
    return {
        (event.node, reading.point, reading.ts, reading.value)
        for event in events
        if isinstance(event, Data)
        for reading in event.readings
    }


@contextlib.asynccontextmanager
async def observing(url: str, topics: Sequence[str]) -> AsyncIterator[Observer]:
    client = FastClient(BrokerUrl.parse(url), f"observer-{uuid.uuid4().hex[:8]}")
    await client.connect()
    await client.subscribe(list(topics), qos=0)
    observer = Observer(client)

    async def collect() -> None:
        async for message in client.messages():
            observer.received.append((message.topic, message.payload, time.time_ns() // 1_000_000))
            observer.arrived.set()

    task = asyncio.create_task(collect())
    try:
        yield observer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await client.disconnect()
