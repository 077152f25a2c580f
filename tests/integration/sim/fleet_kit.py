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


class CuttableLink:
    """A TCP forwarder to the broker whose connections ``cut()`` aborts (no DISCONNECT: Wills fire)."""

    def __init__(self, target: BrokerUrl) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def __aenter__(self) -> CuttableLink:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.target.host, self.target.port)
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        for task in (
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
