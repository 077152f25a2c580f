"""A plain MQTT subscriber for integration tests: everything that crosses the broker on some topics.

It is an independent witness: aiomqtt, not one of tapline's own MQTT adapters, so a test of those
adapters does not check them with themselves. Each message is kept as delivered (QoS, retain flag) with
its receive time; Sparkplug helpers (``of_type``, ``host_events``) read the same list. Shared by the
ingest, simulator and scale-out tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt

from tapline.mqtt import BrokerUrl
from tapline.sparkplug.host_session import Event, HostTracker


@dataclass(frozen=True, slots=True)
class Seen:
    """One message as the observer received it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    received_ms: int

    @property
    def type(self) -> str:
        """The Sparkplug message type (``NBIRTH``, ``DDATA``, …), or the topic's third level."""
        levels = self.topic.split("/")
        return levels[2] if len(levels) > 2 else ""

    def json(self) -> dict[str, object]:
        value: dict[str, object] = json.loads(self.payload)
        return value


class Observer:
    """Subscribes to ``topics`` (at ``qos``) on entering; keeps every message in ``seen``, in order."""

    def __init__(self, url: BrokerUrl | str, *topics: str, qos: int = 1) -> None:
        self.url = BrokerUrl.parse(url) if isinstance(url, str) else url
        self.topics = topics
        self.qos = qos
        self.seen: list[Seen] = []
        self._arrived = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Observer:
        self._task = asyncio.create_task(self._run(), name="observer")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._task.done():
            self._task.result()  # the connection failed: say why
        if not self._ready.is_set():
            raise AssertionError(f"observer not subscribed to {self.topics} within 10 s")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async with aiomqtt.Client(
            self.url.host, self.url.port, identifier=f"obs-{uuid.uuid4().hex[:8]}"
        ) as client:
            for topic in self.topics:
                await client.subscribe(topic, qos=self.qos)
            self._ready.set()
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                self.seen.append(
                    Seen(str(message.topic), payload, int(message.qos), bool(message.retain), _now_ms())
                )
                self._arrived.set()

    async def wait_for(self, check: Callable[[Seen], bool], timeout: float = 10.0) -> Seen:
        """The first message (already seen or arriving) for which ``check(message)`` is true."""
        checked = 0
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for seen in self.seen[checked:]:
                        if check(seen):
                            return seen
                    checked = len(self.seen)
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            topics = [seen.topic for seen in self.seen]
            raise AssertionError(f"timed out waiting on {self.topics}; seen {topics}") from None

    async def wait_count(self, count: int, message_type: str, timeout: float = 10.0) -> None:
        """Wait until ``count`` messages of ``message_type`` (see ``Seen.type``) have arrived."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.of_type(message_type)) < count:
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            got = len(self.of_type(message_type))
            raise AssertionError(
                f"{got} of {count} {message_type} within {timeout} s on {self.topics}"
            ) from None

    def of_type(self, message_type: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.type == message_type]

    def host_events(self, tracker: HostTracker | None = None) -> list[Event]:
        """Everything received, through a Sparkplug host tracker (commands are skipped)."""
        host = tracker or HostTracker()
        events: list[Event] = []
        for seen in self.seen:
            events += host.on_message(seen.topic, seen.payload, seen.received_ms)
        return events


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
